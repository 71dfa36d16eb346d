"""Attack throughput: medart's backends against the libraries called directly and a bare loop.

On one model (the paper's ResNet-50 head, randomly initialised: throughput does not depend on the
weights), one batch of images per input size and the same BIM/PGD settings, it measures
image·steps per second of

- ``bare``: a plain PyTorch loop doing the same steps (gradient sign step, projection onto the
  ε-ball and [0, 1]) — the floor on this hardware;
- ``torchattacks``: ``torchattacks.BIM`` / ``PGD`` called directly;
- ``art``: ART's ``PyTorchClassifier`` + ``BasicIterativeMethod`` / ``ProjectedGradientDescent``
  called directly, with the settings medart uses (``clip_values=(0, 1)``, ``preprocessing=None``,
  labels passed);
- ``medart-art``, ``medart-torchattacks``: ``medart.attacks.make_attack(...).generate``.

Every variant takes the batch as a CPU tensor (NumPy for ART) and returns it on the CPU, and the
model's weights are frozen (``requires_grad=False``) for all of them, as medart does while
attacking. Runs are interleaved (each round calls every variant once, rotating the order) after
one untimed warm-up call each; medians over the rounds, and the ratios are computed per round
(paired) and summarised by their median and quartiles.

    PYTHONPATH=$PWD python benchmarks/attack_throughput.py --data-dir ../shared/data
"""

from __future__ import annotations

from typing import Callable

import click
import numpy as np
import torch
import torch.nn.functional as F

import benchlib
from medart.attacks import AttackSpec
from medart.budget import Eps
from medart.cli import options

VARIANTS = ("bare", "torchattacks", "art", "medart-torchattacks", "medart-art")
RATIOS = {  # name → (numerator, denominator): throughput of the first relative to the second
    "medart-art/art": ("medart-art", "art"),
    "medart-torchattacks/torchattacks": ("medart-torchattacks", "torchattacks"),
    "art/bare": ("art", "bare"),
    "torchattacks/bare": ("torchattacks", "bare"),
    "medart-art/bare": ("medart-art", "bare"),
    "medart-torchattacks/bare": ("medart-torchattacks", "bare"),
}
ADAPTER_TARGET, FLOOR_TARGET, ADAPTER_SIZES = 0.95, 0.9, (28, 64)


Attack = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x, y) on the CPU → x_adv on the CPU


def bare_loop(model: torch.nn.Module, spec: AttackSpec, device: torch.device) -> Attack:
    """The attack written out in PyTorch: what the hardware allows for these steps."""

    def run(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x, y = x.to(device), y.to(device)
        adv = x.clone()
        if spec.random_start:
            adv = (adv + torch.empty_like(adv).uniform_(-spec.eps, spec.eps)).clamp_(0.0, 1.0)
        for _ in range(spec.steps):
            adv.requires_grad_(True)
            grad, = torch.autograd.grad(F.cross_entropy(model(adv), y), adv)
            adv = adv.detach() + spec.step_size * grad.sign()
            adv = torch.min(torch.max(adv, x - spec.eps), x + spec.eps).clamp_(0.0, 1.0)
        return adv.cpu()

    return run


def torchattacks_direct(model: torch.nn.Module, spec: AttackSpec, device: torch.device) -> Attack:
    import torchattacks

    if spec.random_start:
        attack = torchattacks.PGD(model, eps=spec.eps, alpha=spec.step_size, steps=spec.steps, random_start=True)
    else:
        attack = torchattacks.BIM(model, eps=spec.eps, alpha=spec.step_size, steps=spec.steps)
    return lambda x, y: attack(x.to(device), y.to(device)).cpu()


def art_direct(model: torch.nn.Module, spec: AttackSpec, device: torch.device, input_shape: tuple[int, ...], num_classes: int,
               batch: int) -> Attack:
    from art.attacks.evasion import BasicIterativeMethod, ProjectedGradientDescent
    from art.estimators.classification import PyTorchClassifier

    classifier = PyTorchClassifier(model=model, loss=torch.nn.CrossEntropyLoss(), input_shape=input_shape,
                                   nb_classes=num_classes, clip_values=(0.0, 1.0), preprocessing=None,
                                   device_type="gpu" if device.type == "cuda" else "cpu")
    common = dict(eps=spec.eps, eps_step=spec.step_size, max_iter=spec.steps, batch_size=batch, verbose=False)
    if spec.random_start:
        attack = ProjectedGradientDescent(classifier, norm=np.inf, num_random_init=1, **common)
    else:
        attack = BasicIterativeMethod(classifier, **common)
    return lambda x, y: torch.from_numpy(attack.generate(x=x.numpy(), y=y.numpy()))


def medart_backend(model: torch.nn.Module, spec: AttackSpec, device: torch.device, backend: str, num_classes: int,
                   batch: int) -> Attack:
    from medart.attacks import make_attack

    attack = make_attack(model, spec, num_classes, backend, batch_size=batch, device=str(device))
    return lambda x, y: attack.generate(x, y, seed=0)


def measure(model: torch.nn.Module, spec: AttackSpec, x: torch.Tensor, y: torch.Tensor, device: torch.device, repeats: int,
            progress: Callable[[str], None] | None) -> dict:
    """Timings, throughputs and paired ratios of every variant on one batch."""
    n, num_classes = len(x), 2
    fns = {
        "bare": bare_loop(model, spec, device),
        "torchattacks": torchattacks_direct(model, spec, device),
        "art": art_direct(model, spec, device, tuple(x.shape[1:]), num_classes, n),
        "medart-torchattacks": medart_backend(model, spec, device, "torchattacks", num_classes, n),
        "medart-art": medart_backend(model, spec, device, "art", num_classes, n),
    }
    outputs = {name: fn(x, y) for name, fn in fns.items()}  # also the warm-up call
    for name, adv in outputs.items():
        if (adv - x).abs().max() > spec.eps + 1e-6 or adv.min() < 0 or adv.max() > 1:
            raise AssertionError(f"{name} left the ε-ball or [0, 1]")
    timings = benchlib.interleaved({name: (lambda fn=fn: fn(x, y)) for name, fn in fns.items()}, repeats, device,
                                   warmup=0, progress=progress)
    variants = {}
    for name in VARIANTS:
        wall = benchlib.spread(timings.wall[name])
        variants[name] = {
            "wall_seconds": wall,
            "cpu_seconds": benchlib.spread(timings.cpu[name]),
            "image_steps_per_s": n * spec.steps / wall["median"],
        }
    out = {
        "variants": variants,
        "ratios": {label: timings.paired_ratio(a, b) for label, (a, b) in RATIOS.items()},
        # process CPU seconds: what each variant costs, whatever else the machine is running
        "cpu_ratios": {label: timings.paired_ratio(a, b, cpu=True) for label, (a, b) in RATIOS.items()},
    }
    if not spec.random_start:  # a deterministic attack: every variant should take the very same steps
        out["max_abs_diff_from_bare"] = {name: float((adv - outputs["bare"]).abs().max()) for name, adv in outputs.items()}
    return out


def tables(results: list[dict]) -> tuple[str, str]:
    throughput = benchlib.markdown_table(
        ["size", "batch", "attack", "steps", *VARIANTS],
        [[f"{r['size']}px", r["batch"], r["attack"], r["steps"],
          *[f"{r['variants'][v]['image_steps_per_s']:.1f}" for v in VARIANTS]] for r in results])
    ratios = benchlib.markdown_table(
        ["size", "attack", "measure", *RATIOS],
        [[f"{r['size']}px", r["attack"], measure, *[benchlib.median_quartiles(r[key][k]) for k in RATIOS]]
         for r in results for measure, key in (("wall", "ratios"), ("CPU", "cpu_ratios"))])
    return throughput, ratios


def check_targets(results: list[dict]) -> list[dict]:
    """The issue's targets, each with the measured value (median of the paired ratios)."""
    checks = []
    for r in results:
        if r["size"] in ADAPTER_SIZES:
            for backend in ("art", "torchattacks"):
                key = f"medart-{backend}/{backend}"
                value, cpu = r["ratios"][key]["median"], r["cpu_ratios"][key]["median"]
                checks.append({"target": f"medart-{backend} ≥ {ADAPTER_TARGET} × {backend} called directly",
                               "size": r["size"], "attack": r["attack"], "value": value, "met": value >= ADAPTER_TARGET,
                               "value_cpu": cpu, "met_cpu": cpu >= ADAPTER_TARGET})
        best = max(r["ratios"]["medart-art/bare"]["median"], r["ratios"]["medart-torchattacks/bare"]["median"])
        best_cpu = max(r["cpu_ratios"]["medart-art/bare"]["median"], r["cpu_ratios"]["medart-torchattacks/bare"]["median"])
        checks.append({"target": f"fastest medart backend ≥ {FLOOR_TARGET} × bare loop", "size": r["size"],
                       "attack": r["attack"], "value": best, "met": best >= FLOOR_TARGET,
                       "value_cpu": best_cpu, "met_cpu": best_cpu >= FLOOR_TARGET})
    return checks


@click.command(cls=benchlib.BenchmarkCommand, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--sizes", default="28,64,224", show_default=True, help="Input sides in pixels, comma-separated.")
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="Images in the batch for sizes below 128. Default: 32 on CPU, 64 on GPU.")
@click.option("--large-batch-size", type=click.IntRange(min=1), default=None,
              help="Images in the batch for sizes of 128 and more. Default: 8 on CPU, 64 on GPU.")
@click.option("--attacks", default="pgd", show_default=True, help="bim and/or pgd, comma-separated.")
@click.option("--steps", type=click.IntRange(min=1), default=5, show_default=True, help="Gradient steps per attack.")
@click.option("--eps", type=options.Eps(), default="1/255", show_default=True,
              help="L∞ radius; the step size is ε/10 for PGD, ε/steps for BIM.")
@click.option("--repeats", type=click.IntRange(min=1), default=5, show_default=True, help="Interleaved timed rounds.")
@click.option("--arch", type=click.Choice(["resnet50", "resnet18", "resnet34"]), default="resnet50", show_default=True)
@click.option("--data-dir", envvar="MEDART_DATA_DIR", default=None,
              help="Folder of pneumoniamnist.npz (its Train images, resized); uniform random pixels without it.")
@click.option("--device", default="auto", show_default=True, help="'auto' (CUDA when present), 'cpu' or 'cuda[:N]'.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="torch CPU threads (default: torch's choice).")
@click.option("--output", type=click.Path(dir_okay=False), default=None,
              help="Result JSON. Default: benchmarks/results/attack_throughput-<cpu|cuda>.json.")
@click.option("--tracking-uri", default=None, help="MLflow tracking URI (default $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db).")
@click.option("--progress/--no-progress", default=True, show_default=True)
def main(sizes, batch_size, large_batch_size, attacks, steps, eps, repeats, arch, data_dir, device, threads, output,
         tracking_uri, progress) -> None:
    """Image·steps per second of BIM/PGD: bare loop, torchattacks, ART, and medart through each backend."""
    from medart.attacks import make_spec, parse_names
    from medart.models.evaluation import resolve_device
    from medart.models.resnet import build_model

    if threads:
        torch.set_num_threads(threads)
    dev = resolve_device(device)
    cuda = dev.type == "cuda"
    batch_size = batch_size or (64 if cuda else 32)
    large_batch_size = large_batch_size or (64 if cuda else 8)
    side_list = benchlib.parse_ints(sizes, "--sizes")
    names = parse_names(attacks, ("bim", "pgd"))
    env = benchlib.environment(dev)

    torch.manual_seed(0)
    model = build_model(2, arch, pretrained="none").eval().to(dev)
    for p in model.parameters():
        p.requires_grad_(False)
    results = []
    for side in side_list:
        batch = large_batch_size if side >= 128 else batch_size
        x, y, source = benchlib.chest_xrays(batch, side, data_dir)
        for name in names:
            spec = make_spec(name, eps, steps=steps, step_size=None if name == "pgd" else bim_step_size(eps, steps))
            label = f"{side}px {name} ×{batch}"
            say = (lambda msg, label=label: click.echo(f"  {label}: {msg}", err=True)) if progress else None
            r = measure(model, spec, x, y, dev, repeats, say)
            results.append({"size": side, "batch": batch, "attack": name, "steps": spec.steps, "eps": spec.eps,
                            "step_size": spec.step_size, "data": source, **r})

    throughput, ratios = tables(results)
    checks = check_targets(results)
    payload = {
        "benchmark": "attack_throughput", **env,
        "config": {"sizes": side_list, "batch_size": batch_size, "large_batch_size": large_batch_size, "attacks": names,
                   "steps": steps, "eps": eps, "repeats": repeats, "arch": arch, "threads": torch.get_num_threads()},
        "model": f"MedResNet {arch}, random initialisation (throughput does not depend on the weights), 2 classes, "
                 "eval mode, weights frozen for every variant",
        "results": results, "targets": checks,
    }
    path = benchlib.write_json(output or benchlib.RESULTS / f"attack_throughput-{dev.type}.json", payload)
    metrics = {}
    for r in results:
        key = f"{r['size']}px.{r['attack']}"
        metrics |= {f"{key}.{v}.image_steps_per_s": r["variants"][v]["image_steps_per_s"] for v in VARIANTS}
        metrics |= {f"{key}.ratio.{k.replace('/', '_vs_')}": r["ratios"][k]["median"] for k in RATIOS}
    run_id = benchlib.log_run(tracking_uri, f"attack-throughput-{dev.type}", payload["config"], metrics, payload,
                              "attack_throughput.json", {"throughput.md": throughput, "ratios.md": ratios})
    click.echo(f"image·steps/s (median of {repeats} interleaved rounds; {benchlib.machine_label(env)}):\n{throughput}")
    click.echo(f"throughput ratios (wall-clock, and process CPU time), median [quartiles] of the per-round ratios:\n{ratios}")
    for c in checks:
        click.echo(f"{'MET ' if c['met'] else 'MISS'} {c['target']} at {c['size']}px {c['attack']}: {c['value']:.3f} wall-clock, "
                   f"{c['value_cpu']:.3f} CPU time ({'met' if c['met_cpu'] else 'missed'})")
    click.echo(f"wrote {path}; MLflow run {run_id}")


def bim_step_size(eps: Eps, steps: int) -> float:
    """BIM's step size ε/steps (the paper's ε/40 for 40 steps), so the steps can reach the ε-ball."""
    return eps / steps


if __name__ == "__main__":
    main()
