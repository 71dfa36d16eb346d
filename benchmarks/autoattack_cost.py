"""What AutoAttack costs against PGD: wall time per image of medart's ``autoattack`` (the standard
version unless ``--steps`` says otherwise) and of the paper's PGD, on the same images, in both
backends, with the robust accuracy each reaches and which of AutoAttack's parts broke the images.

AutoAttack's cost depends on the model: its first part, APGD-CE, runs on every image, and each
later part only on the images the earlier ones left correct, with Square spending all its queries
on every image nobody breaks. So the cost is measured on a trained model (``--model-uri``); a
randomly initialised one (no ``--model-uri``) measures the machine rather than the attack.

Runs are interleaved (:func:`benchlib.interleaved`: each round calls every variant once, rotating
the order, after one untimed PGD warm-up); the AutoAttack/PGD time ratio is paired per round,
median and quartiles. The recorded result was measured on the small CNN of
``medart train --dataset pneumonia --arch smallcnn --pretrained none --epochs 10``:

    PYTHONPATH=$PWD python benchmarks/autoattack_cost.py --data-dir ../shared/data \\
        --model-uri models:/medart-pneumonia@champion
"""

from __future__ import annotations

import click
import torch

import benchlib
from medart.attacks import make_attack, make_spec
from medart.attacks.specs import SQUARE_QUERIES_PER_STEP
from medart.attacks.specs import BACKENDS
from medart.cli import options


@click.command(cls=benchlib.BenchmarkCommand, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--model-uri", default=None, help="A registered model, e.g. models:/medart-pneumonia@champion (else --arch, random).")
@click.option("--arch", default="smallcnn", show_default=True, help="MedResNet architecture when no --model-uri is given.")
@click.option("--size", type=click.IntRange(min=16), default=28, show_default=True, help="Input side in pixels.")
@click.option("--n", "n_images", type=click.IntRange(min=1), default=16, show_default=True, help="Chest X-rays attacked per call.")
@click.option("--eps", type=options.Eps(), default="2/255", show_default=True, help="L∞ radius, e.g. 2/255.")
@click.option("--steps", type=click.IntRange(min=1), default=100, show_default=True,
              help="AutoAttack's APGD/FAB steps (Square gets 50 queries a step); 100 is the standard version.")
@click.option("--repeats", type=click.IntRange(min=1), default=3, show_default=True, help="Interleaved timed rounds.")
@click.option("--data-dir", envvar="MEDART_DATA_DIR", default=None, help="Folder of pneumoniamnist.npz (else random pixels).")
@click.option("--device", default="auto", show_default=True)
@click.option("--output", type=click.Path(dir_okay=False), default=None,
              help="Result file. Default: benchmarks/results/autoattack_cost-<device>.json.")
@click.option("--tracking-uri", default=None, help="MLflow tracking URI (default $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db).")
def main(model_uri, arch, size, n_images, eps, steps, repeats, data_dir, device, output, tracking_uri) -> None:
    """Wall time per image of AutoAttack against PGD, paired over interleaved rounds, both backends."""
    from medart.models.evaluation import resolve_device

    from medart import tracking

    dev = resolve_device(device)
    tracking.configure(tracking_uri)  # the store a models:/ URI is read from, and the run goes to
    model, model_label = benchlib.benchmark_model(model_uri, arch, dev)
    x, y, data = benchlib.chest_xrays(n_images, size, data_dir)
    specs = {"pgd": make_spec("pgd", eps), "autoattack": make_spec("autoattack", eps, steps)}
    last: dict[str, torch.Tensor] = {}
    breaks: dict[str, dict[str, int]] = {}

    def variant(attack_name: str, backend: str):
        def call():
            attack = make_attack(model, specs[attack_name], 2, backend, n_images, str(dev))
            last[f"{attack_name}/{backend}"] = attack.generate(x, y, seed=0)
            if attack_name == "autoattack":
                breaks[backend] = dict(attack.breaks)
        return call

    fns = {f"{a}/{b}": variant(a, b) for b in BACKENDS for a in specs}
    for b in BACKENDS:
        fns[f"pgd/{b}"]()  # warm-up: AutoAttack's first round is long enough to warm itself
    timings = benchlib.interleaved(fns, repeats, dev, warmup=0)
    per_image = {name: {k: v / n_images if k != "n" else v for k, v in benchlib.spread(t).items()}
                 for name, t in timings.wall.items()}
    ratios = {b: timings.paired_ratio(f"pgd/{b}", f"autoattack/{b}") for b in BACKENDS}  # AutoAttack's time / PGD's
    with torch.no_grad():
        clean = float((model(x.to(dev)).argmax(1).cpu() == y).float().mean())
        accuracy = {name: float((model(adv.to(dev)).argmax(1).cpu() == y).float().mean()) for name, adv in last.items()}
    env = benchlib.environment(dev)
    payload = {"benchmark": "autoattack_cost", **env, "config": {"model": model_label, "size": size, "n": n_images, "eps": eps, "autoattack_steps": steps,
                          "square_queries": steps * SQUARE_QUERIES_PER_STEP, "repeats": repeats, "data": data},
               "seconds_per_image": per_image, "time_ratio_autoattack_over_pgd": ratios,
               "clean_acc": clean, "robust_acc": accuracy, "autoattack_broken_by": breaks}
    path = benchlib.write_json(output or benchlib.RESULTS / f"autoattack_cost-{dev.type}.json", payload)
    table = benchlib.markdown_table(
        ["backend", "PGD s/image", "AutoAttack s/image", "AutoAttack / PGD (paired)", "PGD acc (%)", "AutoAttack acc (%)",
         "broken by (AutoAttack's parts)"],
        [[b, benchlib.median_quartiles(per_image[f"pgd/{b}"], 4), benchlib.median_quartiles(per_image[f"autoattack/{b}"], 2),
          benchlib.median_quartiles(ratios[b], 0),
          f"{accuracy[f'pgd/{b}'] * 100:.2f}", f"{accuracy[f'autoattack/{b}'] * 100:.2f}",
          ", ".join(f"{part} {count}" for part, count in breaks[b].items())] for b in BACKENDS])
    run_id = benchlib.log_run(tracking_uri, f"autoattack-cost-{dev.type}", payload["config"],
                              {f"time_ratio.{b}": r["median"] for b, r in ratios.items()}, payload, "autoattack_cost.json",
                              {"autoattack_cost.md": table})
    click.echo(f"{model_label}, {n_images} images at {size} px, ε = {eps}, clean accuracy {clean * 100:.2f} % "
               f"({benchlib.machine_label(env)}); median [quartiles] over {repeats} paired rounds:\n{table}")
    click.echo(f"wrote {path}; MLflow run {run_id}")


if __name__ == "__main__":
    main()
