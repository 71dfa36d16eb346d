"""``medart ablate``."""

from __future__ import annotations

import click

from medart.attacks.specs import ATTACKS
from medart.catalog import ARCHS
from medart.cli import main, options, run_line


@main.command()
@options.data_options
@click.option("--resolutions", default="28,64", show_default=True,
              help="Input sides (px) of the grid; images are resized to each (the file's own side = native). The "
                   "defaults are sized for a CPU; the paper's grid is 28,64,128,224 with resnet50 (a GPU's work).")
@click.option("--inits", default="none,imagenet", show_default=True,
              help="Initialisations: none (from scratch), imagenet (skipped, with the reason, where weights are unavailable).")
@click.option("--archs", default="smallcnn,resnet18", show_default=True,
              help=f"Architectures (capacity), from {', '.join(ARCHS)}; resnet50 carries the paper's head. 'none': "
                   "train no model, ablate only the --models (--resolutions and --inits are then not used).")
@click.option("--models", default=None, metavar="URI[,URI...]",
              help="Your own classifiers, evaluated as they are beside the grid: one cell each, loaded once, not "
                   "trained, at its own input side. " + options.MODEL_URIS + " The model options below apply to "
                   "every one of them (docs/byom.md).")
@options.model_options
@click.option("--epochs", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=0.01, show_default=True, help="SGD learning rate.")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True, help="Training batch size.")
@click.option("--max-train", type=click.IntRange(min=2), default=None, help="Train on a stratified subset of this many images.")
@click.option("--max-eval", type=click.IntRange(min=2), default=None, help="Validate/test on stratified subsets of this size.")
@click.option("--max-examples", type=click.IntRange(min=10), default=100, show_default=True,
              help="Test images (AdvTrain + AdvTest) attacked, bisected and measured per cell.")
@options.attacks()
@click.option("--eps", type=options.EpsList(), default="1/255,4/255", show_default=True,
              help="The fixed ε list every attack runs at, comma-separated.")
@click.option("--bisect-attack", type=click.Choice(ATTACKS), default="pgd", show_default=True,
              help="The attack whose least successful ε is bisected (one of --attacks).")
@click.option("--eps-max", type=options.Eps(), default="32/255", show_default=True, help="Upper end of the bisection.")
@click.option("--eps-tolerance", "--eps-tol", type=options.Eps(), default="0.25/255", show_default=True,
              help="Bisect until the bracket is at most this wide.")
@click.option("--threshold", type=click.FloatRange(0, 1, min_open=True), default=0.01, show_default=True,
              help="An attack succeeds when accuracy falls below this (the paper: 1 %).")
@click.option("--detect-attack", type=click.Choice(ATTACKS), default="pgd", show_default=True)
@click.option("--detect-eps", type=options.Eps(), default="1/255", show_default=True, help="ε of the examples the detectors see.")
@click.option("--detectors", default="kd,dfeat", show_default=True)
@click.option("--reference-size", type=click.IntRange(min=1), default=200, show_default=True,
              help="Clean Train images KD measures against.")
@click.option("--radius", type=options.Eps(), default=None, help="L∞ radius of the sharpness number. Default: --detect-eps.")
@click.option("--vanishing", type=click.FloatRange(min=0, min_open=True), default=1e-8, show_default=True,
              help="An input gradient whose largest entry is below this counts as vanished (gradient masking).")
@options.backend
@options.device
@options.tracking_uri
@options.progress
def ablate(**opts) -> None:
    """Test the paper's explanations: a grid over input resolution × initialisation × capacity.

    Each cell trains a model, attacks it at a fixed ε list, bisects the least ε that leaves
    accuracy below --threshold, measures loss sharpness, vanishing gradients and KD/DFeat detection
    AUC; one parent MLflow run (medart/<dataset>/ablation) with a child run per cell, the
    side-by-side table, a figure and a generated text of each factor's effect. --seed seeds the
    splits, the training and the attacks of every cell. Each of --models adds a cell measured the
    same way without training (with --archs none, the only cells).

    Example (a quick look): medart ablate --dataset pneumonia --epochs 3 --max-train 500 --max-examples 60

    The paper's grid (a GPU's work): medart ablate --resolutions 28,64,128,224 --archs smallcnn,resnet18,resnet50

    Your model beside a trained ResNet-18: medart ablate --resolutions 64 --inits none --archs resnet18 --models models:/my-cxr@prod
    """
    from medart import tracking
    from medart.models.loading import ModelSource
    from medart.models.training import TrainConfig
    from medart.stages.ablate import AblationSettings, Bisection, DetectionProbe, LandscapeProbe, make_grid
    from medart.stages.ablate import ablate as run_ablate
    from medart.stages.target import DataSpec, RunOptions, from_options

    cells = make_grid(opts["resolutions"], opts["inits"], opts["archs"])
    settings = from_options(AblationSettings, opts, train=from_options(TrainConfig, opts),
                            bisection=from_options(Bisection, opts), detection=from_options(DetectionProbe, opts),
                            landscape=from_options(LandscapeProbe, opts), model_options=from_options(ModelSource, opts))
    # --batch-size is the training batch; the attacks, bisection and detectors run 128 images at a time, as always
    run = from_options(RunOptions, opts, batch_size=128)
    tracking.configure(opts["tracking_uri"])
    out = run_ablate(from_options(DataSpec, opts), cells, settings, run)
    counts = out.counts
    click.echo(run_line("ablation", out.run_id, f"{counts['finished']} cells finished, {counts['failed']} failed, "
               f"{counts['skipped']} skipped; ablation.md, findings.md, figures/ablation.png"))
    click.echo(out.table)
    click.echo(out.findings, nl=False)
