"""``medart harden``."""

from __future__ import annotations

import click

from medart.catalog import ROBUST_MONITORS, TRAINERS
from medart.cli import main, options, run_line


@main.command()
@options.model_uri()
@options.model_options
@options.data_options
@click.option("--trainer", type=click.Choice(TRAINERS), default="pgd-at", show_default=True,
              help="ART's trainer: pgd-at (Madry et al.'s PGD adversarial training), trades (TRADES), fbf "
                   "(fast is better than free: one FGSM step from a random start) or awp (PGD training with "
                   "adversarial weight perturbation).")
@options.eps(default="2/255", help="L∞ budget trained against (and of the validation PGD), in [0,1] pixels: a number or k/255.")
@click.option("--steps", type=click.IntRange(min=1), default=None,
              help="Steps of the training PGD (pgd-at, trades, awp). Default: 7.")
@click.option("--step-size", type=options.Eps(), default=None,
              help="Step of the training PGD (pgd-at, trades, awp). Default: ε/4.")
@click.option("--beta", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Weight of TRADES' KL term (trades only). Default: 6.")
@click.option("--gamma", type=click.FloatRange(min=0, min_open=True), default=None,
              help="AWP's weight perturbation, relative to each layer's weight norm (awp only). Default: 0.005.")
@click.option("--epochs", type=click.IntRange(min=1), default=5, show_default=True, help="Epochs of robust fine-tuning.")
@click.option("--batch-size", type=click.IntRange(min=2), default=64, show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=0.01, show_default=True,
              help="SGD learning rate (fbf: unused, ART's FBF runs its own cyclic schedule peaking at 0.21).")
@click.option("--momentum", type=click.FloatRange(0, 1, max_open=True), default=0.9, show_default=True)
@click.option("--weight-decay", type=click.FloatRange(min=0), default=0.0, show_default=True)
@click.option("--augment/--no-augment", default=True, show_default=True,
              help="Random rotation, width/height shift and horizontal flip, as in training.")
@click.option("--monitor", type=click.Choice(list(ROBUST_MONITORS)), default="val_pgd_balanced_acc", show_default=True,
              help="Validation metric that picks the epoch kept; val_pgd_*: under PGD at --eps.")
@options.balance
@click.option("--patience", type=click.IntRange(min=1), default=None, help="Stop after this many epochs without improvement.")
@options.max_train
@options.max_eval
@options.device
@click.option("--alias", default="challenger", show_default=True, help="Registry alias moved to the hardened version.")
@click.option("--register/--no-register", default=True, show_default=True,
              help="Register the copy as a new version of the parent's registered model (medart-<dataset> for a model "
                   "outside the registry).")
@options.download
@options.tracking_uri
@options.progress
def harden(**opts) -> None:
    """Fine-tune a copy of a model against attacks with one of ART's robust trainers, and register it
    as the challenger.

    The copy is logged like `medart train` logs a model (curves; clean and PGD accuracy on the
    validation split per epoch; seconds per epoch against one standard epoch), with its parent
    model and the trainer's settings, and registered in the parent's format: medart's own, or a
    model card's state_dict (other formats are refused). Decide whether it replaces the champion
    with `medart evaluate --compare-with challenger --gate …`.

    Example: medart harden --model-uri models:/medart-pneumonia@champion --trainer pgd-at --eps 2/255 --epochs 5
    """
    from medart import tracking
    from medart.defences.training import HardenConfig
    from medart.stages.harden import HardenRequest, harden as run_harden
    from medart.models.loading import ModelSource
    from medart.stages.target import DataSpec, RunOptions, Target, from_options

    tracking.configure(opts["tracking_uri"])
    config = from_options(HardenConfig, opts)  # bad settings are refused before the model loads
    target = Target.load(from_options(ModelSource, opts), from_options(DataSpec, opts))
    out = run_harden(target, config, from_options(HardenRequest, opts), from_options(RunOptions, opts))
    best, result = out.result.best, out.result
    parent = f" (version {out.parent_version})" if out.parent_version else ""
    click.echo(run_line("harden", out.run_id,
                        f"{config.trainer} at ε {config.eps * 255:.3g}/255 from {target.model_uri}{parent}"))
    before = result.before
    click.echo(f"kept epoch {result.best_epoch} of {len(result.history)}, on {result.n_val} validation images: accuracy "
               f"{best['val_acc'] * 100:.2f} % (parent {before['val_acc'] * 100:.2f} %), under PGD "
               f"{best['val_pgd_acc'] * 100:.2f} % (parent {before['val_pgd_acc'] * 100:.2f} %); test accuracy "
               f"{out.test['acc'] * 100:.2f} %, balanced {out.test['balanced_acc'] * 100:.2f} % on {int(out.test['n'])} images")
    click.echo(f"{result.seconds_per_epoch:.2f} s per robust epoch, {result.standard_seconds_per_epoch:.2f} s per standard "
               f"epoch (x{result.seconds_per_epoch / result.standard_seconds_per_epoch:.1f})")
    if out.check.degenerate:
        click.echo(f"DEGENERATE MODEL: {out.check.reason}")
    if out.version is None:
        click.echo(f"model at {out.model_uri}")
    elif out.aliased:
        click.echo(f"registered {out.model_uri}@{opts['alias']}")
    else:
        click.echo(f"registered {out.model_uri} (alias '{opts['alias']}' not moved: the model is degenerate)")
