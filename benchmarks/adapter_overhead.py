"""What the model adapter costs: attack throughput on a network brought from outside medart.

One torchvision network (random weights: throughput does not depend on them) that expects
ImageNet-normalised input, one batch of real chest X-rays, deterministic BIM; image·steps per
second of

- ``torchattacks``, ``art``: the libraries called directly on the bare network, the
  normalisation given as a leading module (torchattacks) or as ART's ``preprocessing``;
- ``medart-torchattacks``, ``medart-art``: ``medart.attacks.make_attack`` on the
  :class:`~medart.models.adapter.AdaptedClassifier` of that network (normalisation inside it);
- ``medart-plain``: medart's torchattacks backend on the bare network with its normalisation
  module, no adapter: the adapter's own cost within medart;
- ``medart-pt2``: medart's ART backend on the adapter of the network exported with
  ``torch.export`` and reloaded as MLflow's ``pt2`` format is (unflattened).

Runs are interleaved (:func:`benchlib.interleaved`); ratios are paired per round, medians and
quartiles. The issue's target: the adapter costs at most 5 % of throughput (ratio ≥ 0.95).

    PYTHONPATH=$PWD python benchmarks/adapter_overhead.py --data-dir ../shared/data
"""

from __future__ import annotations

import click
import numpy as np
import torch
import torchvision

import benchlib
from medart.attacks import make_attack, make_spec
from medart.models.adapter import NORMALISATIONS, AdaptedClassifier, InputContract

MEAN, STD = NORMALISATIONS["imagenet"]
RATIOS = {"medart-art/art": ("medart-art", "art"), "medart-torchattacks/torchattacks": ("medart-torchattacks", "torchattacks"),
          "medart-torchattacks/medart-plain": ("medart-torchattacks", "medart-plain"),
          "medart-pt2/medart-art": ("medart-pt2", "medart-art")}
TARGET = 0.95


class Normalize(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def variants(network: torch.nn.Module, x: torch.Tensor, steps: int, eps: float, device: torch.device) -> dict:
    """name → (x, y) → adversarial x on the CPU."""
    import torchattacks
    from art.attacks.evasion import BasicIterativeMethod
    from art.estimators.classification import PyTorchClassifier

    from medart.models import programs

    spec = make_spec("bim", eps, steps=steps)
    contract = InputContract(mean=MEAN, std=STD)
    adapter = AdaptedClassifier(network, ["a", "b"], contract, name="resnet18").to(device)
    plain = torch.nn.Sequential(Normalize(), network).to(device).eval()
    program = torch.export.export(plain, (x[:2].to(device),), dynamic_shapes=({0: torch.export.Dim.AUTO},))
    unflattened, layout = programs.from_exported(program)
    pt2 = AdaptedClassifier(unflattened, ["a", "b"], InputContract(size=x.shape[-1]), name="resnet18 pt2", layout=layout).to(device)
    classifier = PyTorchClassifier(network, loss=torch.nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]), nb_classes=2,
                                   clip_values=(0.0, 1.0), preprocessing=(np.array(MEAN).reshape(3, 1, 1), np.array(STD).reshape(3, 1, 1)),
                                   device_type="gpu" if device.type == "cuda" else "cpu")
    art = BasicIterativeMethod(classifier, eps=eps, eps_step=spec.step_size, max_iter=steps, batch_size=len(x), verbose=False)
    direct = torchattacks.BIM(plain, eps=eps, alpha=spec.step_size, steps=steps)

    def medart(model, backend):
        attack = make_attack(model, spec, 2, backend, len(x), str(device))
        return lambda x, y: attack.generate(x, y)

    for p in network.parameters():
        p.requires_grad_(False)  # as medart freezes them while attacking
    return {"torchattacks": lambda x, y: direct(x.to(device), y.to(device)).cpu(),
            "art": lambda x, y: torch.from_numpy(art.generate(x.numpy(), y=y.numpy())),
            "medart-torchattacks": medart(adapter, "torchattacks"), "medart-art": medart(adapter, "art"),
            "medart-plain": medart(plain, "torchattacks"), "medart-pt2": medart(pt2, "art")}


@click.command(cls=benchlib.BenchmarkCommand, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--size", type=click.IntRange(min=16), default=64, show_default=True, help="Input side in pixels.")
@click.option("--batch-size", type=click.IntRange(min=2), default=32, show_default=True)
@click.option("--steps", type=click.IntRange(min=1), default=5, show_default=True, help="BIM steps.")
@click.option("--repeats", type=click.IntRange(min=1), default=5, show_default=True, help="Interleaved timed rounds.")
@click.option("--data-dir", envvar="MEDART_DATA_DIR", default=None, help="Folder of pneumoniamnist.npz (else random pixels).")
@click.option("--device", default="auto", show_default=True)
@click.option("--output", type=click.Path(dir_okay=False), default=None,
              help="Result file. Default: benchmarks/results/adapter_overhead-<device>.json.")
@click.option("--tracking-uri", default=None, help="MLflow tracking URI (default $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db).")
def main(size, batch_size, steps, repeats, data_dir, device, output, tracking_uri) -> None:
    """Attack throughput of adapted networks against the same network attacked directly."""
    from medart.models.evaluation import resolve_device

    dev, eps = resolve_device(device), 1 / 255
    x, y, data = benchlib.chest_xrays(batch_size, size, data_dir)
    torch.manual_seed(0)
    fns = variants(torchvision.models.resnet18(num_classes=2).eval().to(dev), x, steps, eps, dev)
    outputs = {name: fn(x, y) for name, fn in fns.items()}  # also the warm-up call
    timings = benchlib.interleaved({n: (lambda fn=fn: fn(x, y)) for n, fn in fns.items()}, repeats, dev, warmup=0)
    throughput = {n: batch_size * steps / benchlib.spread(timings.wall[n])["median"] for n in fns}
    ratios = {k: timings.paired_ratio(a, b) for k, (a, b) in RATIOS.items()}
    cpu_ratios = {k: timings.paired_ratio(a, b, cpu=True) for k, (a, b) in RATIOS.items()}
    differences = {n: float((adv - outputs["art"]).abs().max()) for n, adv in outputs.items()}
    checks = [{"target": f"{k} ≥ {TARGET}", "value": ratios[k]["median"], "met": ratios[k]["median"] >= TARGET,
               "value_cpu": cpu_ratios[k]["median"], "met_cpu": cpu_ratios[k]["median"] >= TARGET} for k in list(RATIOS)[:3]]
    env = benchlib.environment(dev)
    payload = {"config": {"arch": "resnet18", "size": size, "batch": batch_size, "attack": "bim", "steps": steps, "eps": eps,
                          "repeats": repeats, "data": data, "normalisation": "imagenet"},
               "environment": env, "image_steps_per_s": throughput, "ratios": ratios, "cpu_ratios": cpu_ratios,
               "max_abs_diff_from_art": differences, "checks": checks}
    path = benchlib.write_json(output or benchlib.RESULTS / f"adapter_overhead-{dev.type}.json", payload)
    table = benchlib.markdown_table(["measure", *RATIOS], [[m, *[benchlib.median_quartiles(r[k]) for k in RATIOS]]
                                                          for m, r in (("wall", ratios), ("CPU", cpu_ratios))])
    run_id = benchlib.log_run(tracking_uri, f"adapter-overhead-{dev.type}", payload["config"],
                              {f"ratio.{k}": v["median"] for k, v in ratios.items()}, payload, "adapter_overhead.json",
                              {"adapter_overhead.md": table})
    click.echo(f"image·steps/s ({benchlib.machine_label(env)}): " + ", ".join(f"{n} {v:.1f}" for n, v in throughput.items()))
    click.echo(f"throughput ratios, median [quartiles] of the per-round ratios:\n{table}")
    click.echo("max |x_adv − ART's| per variant: " + ", ".join(f"{n} {v:.1e}" for n, v in differences.items()))
    for c in checks:
        click.echo(f"{'MET ' if c['met'] else 'MISS'} {c['target']}: {c['value']:.3f} wall-clock, {c['value_cpu']:.3f} CPU")
    click.echo(f"wrote {path}; MLflow run {run_id}")


if __name__ == "__main__":
    main()
