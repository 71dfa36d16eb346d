"""``medart train``."""

from __future__ import annotations

import click

from medart.catalog import MONITORS
from medart.cli import main, options, run_line


@main.command()
@options.data_options
@options.image_size
@options.arch
@options.pretrained
@click.option("--trusted-pickle", is_flag=True,
              help="Unpickle a --pretrained file in full (checkpoints with extra objects). This runs code the file "
                   "carries: only for files you trust. Default: tensor-only, refusing anything else.")
@options.epochs
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@options.lr
@click.option("--momentum", type=click.FloatRange(0, 1, max_open=True), default=0.9, show_default=True)
@click.option("--weight-decay", type=click.FloatRange(min=0), default=0.0, show_default=True)
@click.option("--augment/--no-augment", default=True, show_default=True,
              help="Random rotation, width/height shift and horizontal flip, as in the paper.")
@click.option("--monitor", type=click.Choice(list(MONITORS)), default="val_acc", show_default=True,
              help="Validation metric that picks the best epoch and the registry alias.")
@options.balance
@click.option("--patience", type=click.IntRange(min=1), default=None, help="Stop after this many epochs without improvement.")
@options.max_train
@options.max_eval
@options.device
@click.option("--alias", default="champion", show_default=True, help="Registry alias moved to this version when it is the best.")
@click.option("--register/--no-register", default=True, show_default=True, help="Register the model as medart-<dataset>.")
@options.download
@options.tracking_uri
@options.progress
def train(**opts) -> None:
    """Train the paper's ResNet classifier and register it in the MLflow model registry.

    The defaults (10 epochs, SGD at lr 0.01) are the main job's: a ResNet-50 from scratch learns the
    28-px chest X-rays in them on two CPU cores.

    Example (the real chest X-ray file, CPU-sized):

        MEDART_DATA_DIR=../shared/data medart train --dataset pneumonia --pretrained none --epochs 10
    """
    from medart import tracking
    from medart.intervals import estimates
    from medart.models.training import TrainConfig
    from medart.numbers import ci, ci_n
    from medart.stages.target import DataSpec, RunOptions, from_options
    from medart.stages.train import ModelRequest, train as run_train

    tracking.configure(opts["tracking_uri"])
    out = run_train(from_options(DataSpec, opts), from_options(ModelRequest, opts), from_options(TrainConfig, opts),
                    from_options(RunOptions, opts))
    test = estimates(out.test)
    recalls = ", ".join(f"{k.removeprefix('recall_')} {ci_n(e)}" for k, e in test.items() if k.startswith("recall_"))
    click.echo(run_line("train", out.run_id, f"best epoch {out.best_epoch}, test acc {ci(test['acc'])} %, "
               f"balanced acc {ci(test['balanced_acc'])} % (recall %: {recalls}), "
               f"test AUC {ci(test['auc'])} % on {out.check.n} test images (95 % intervals), {out.seconds_per_epoch:.1f} s/epoch"))
    if out.check.degenerate:
        click.echo(f"DEGENERATE MODEL: {out.check.reason}")
    if out.version is not None:
        alias = opts["alias"]
        if out.promoted:
            where = f"@{alias}"
        elif out.check.degenerate:
            where = f" (alias '{alias}' not moved: the model is degenerate)"
        else:
            where = f" (alias '{alias}' kept on a better version)"
        click.echo(f"registered {out.model_uri}{where}")
    else:
        click.echo(f"model at {out.model_uri}")
