"""``medart ablate``."""

from __future__ import annotations

import click

from medart.catalog import ARCHS, DATASETS
from medart.cli import main, options


@main.command()
@click.option("--dataset", required=True, type=click.Choice(DATASETS), help="The one dataset every cell learns.")
@click.option("--data-dir", type=click.Path(file_okay=False), envvar="MEDART_DATA_DIR", show_envvar=True)
@click.option("--source", type=click.Choice(["medmnist", "original"]), default="medmnist", show_default=True)
@click.option("--size", type=click.Choice(["28", "64", "128", "224"]), default="28", show_default=True,
              help="Which MedMNIST file variant to read (its native side).")
@click.option("--resolutions", default="28,64,128,224", show_default=True,
              help="Input sides (px) of the grid; images are resized to each (the file's own side = native).")
@click.option("--inits", default="none,imagenet", show_default=True,
              help="Initialisations: none (from scratch), imagenet (skipped, with the reason, where weights are unavailable).")
@click.option("--archs", default="smallcnn,resnet18,resnet50", show_default=True,
              help=f"Architectures (capacity), from {', '.join(ARCHS)}; resnet50 carries the paper's head.")
@click.option("--epochs", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=0.01, show_default=True, help="SGD learning rate.")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True, help="Training batch size.")
@click.option("--max-train", type=click.IntRange(min=2), default=None, help="Train on a stratified subset of this many images.")
@click.option("--max-eval", type=click.IntRange(min=2), default=None, help="Validate/test on stratified subsets of this size.")
@click.option("--max-examples", type=click.IntRange(min=10), default=100, show_default=True,
              help="Test images (AdvTrain + AdvTest) attacked, bisected and measured per cell.")
@click.option("--attacks", default="fgsm,bim,pgd,cw", show_default=True, help="Attacks run at every --eps.")
@click.option("--eps", "eps_list", default="1/255,4/255", show_default=True, help="The fixed ε list.")
@click.option("--bisect-attack", type=click.Choice(["fgsm", "bim", "pgd", "cw"]), default="pgd", show_default=True,
              help="The attack whose least successful ε is bisected.")
@click.option("--eps-max", default="32/255", show_default=True, help="Upper end of the bisection.")
@click.option("--eps-tol", default="0.25/255", show_default=True, help="Bisect until the bracket is at most this wide.")
@click.option("--threshold", type=click.FloatRange(0, 1, min_open=True), default=0.01, show_default=True,
              help="An attack succeeds when accuracy falls below this (the paper: 1 %).")
@click.option("--detect-attack", type=click.Choice(["fgsm", "bim", "pgd", "cw"]), default="pgd", show_default=True)
@click.option("--detect-eps", default="1/255", show_default=True, help="ε of the examples the detectors see.")
@click.option("--detectors", default="kd,dfeat", show_default=True)
@click.option("--reference-size", type=click.IntRange(min=1), default=200, show_default=True,
              help="Clean Train images KD measures against.")
@click.option("--radius", default=None, help="L∞ radius of the sharpness number. Default: --detect-eps.")
@click.option("--vanishing", type=click.FloatRange(min=0, min_open=True), default=1e-8, show_default=True,
              help="An input gradient whose largest entry is below this counts as vanished (gradient masking).")
@click.option("--backend", type=click.Choice(["art", "torchattacks"]), default="art", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="Seeds splits, training and attacks of every cell.")
@click.option("--device", default="auto", show_default=True)
@click.option("--tracking-uri", default=None, envvar="MLFLOW_TRACKING_URI")
@click.option("--progress/--no-progress", default=True, show_default=True)
def ablate(dataset, data_dir, source, size, resolutions, inits, archs, epochs, lr, batch_size, max_train, max_eval,
           max_examples, attacks, eps_list, bisect_attack, eps_max, eps_tol, threshold, detect_attack, detect_eps,
           detectors, reference_size, radius, vanishing, backend, seed, device, tracking_uri, progress):
    """Test the paper's explanations: a grid over input resolution × initialisation × capacity.

    Each cell trains a model, attacks it at a fixed ε list, bisects the least ε that leaves
    accuracy below --threshold, measures loss sharpness, vanishing gradients and KD/DFeat detection
    AUC; one parent MLflow run (medart/<dataset>/ablation) with a child run per cell, the
    side-by-side table, a figure and a generated text of each factor's effect.

    Example (CPU-sized): medart ablate --dataset pneumonia --resolutions 28,64 --archs smallcnn,resnet18 --epochs 3 --max-train 500 --max-examples 60
    """
    from medart import tracking
    from medart.ablation import AblationSettings, make_grid, run_ablation
    from medart.attacks import parse_eps, parse_eps_list, parse_names

    cells = make_grid(resolutions, inits, archs)
    settings = AblationSettings(
        train=TrainConfig(epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, device=device),
        max_train=max_train, max_eval=max_eval, attacks=tuple(parse_names(attacks)), eps=tuple(parse_eps_list(eps_list)),
        bisect_attack=bisect_attack, eps_max=parse_eps(eps_max), eps_tolerance=parse_eps(eps_tol), threshold=threshold,
        detect_attack=detect_attack, detect_eps=parse_eps(detect_eps), detectors=tuple(detectors.split(",")),
        radius=None if radius is None else parse_eps(radius), vanishing=vanishing, max_examples=max_examples,
        reference_size=reference_size, backend=backend)
    tracking.configure(tracking_uri)
    out = run_ablation(dataset, cells, settings, data_dir, source=source, size=int(size), progress=progress)
    counts = {s: sum(r["status"] == s for r in out.rows) for s in ("finished", "failed", "skipped")}
    click.echo(f"ablation run {out.run_id}: {counts['finished']} cells finished, {counts['failed']} failed, "
               f"{counts['skipped']} skipped; ablation.md, findings.md, figures/ablation.png")
    click.echo(out.table)
    click.echo(out.findings, nl=False)
