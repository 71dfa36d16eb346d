"""``medart pipeline``: the MLproject's ``main`` entry point."""

from __future__ import annotations

import click

from medart.attacks.specs import ATTACKS
from medart.cli import attach_report, main, options, run_line


@main.command()
@options.data_options
@options.model_uri(required=False)
@options.model_options
@options.attacks(default="bim", what="The attack, or several comma-separated (then also the transfer table)")
@click.option("--attack", type=options.Names(ATTACKS, "attack"), default=None, hidden=True,
              help="Deprecated: the old name of --attacks.")
@options.eps()
@options.steps
@options.step_size
@options.detectors("kd,lid,dfeat,qfeat")
@options.max_examples
@options.reference_size
@options.image_size
@options.arch
@options.pretrained
@options.epochs
@options.lr
@options.balance
@options.max_train
@options.max_eval
@options.run_options
@options.report
def pipeline(**opts) -> None:
    """The paper's pipeline: train (or reuse --model-uri, else the dataset's registered champion),
    attack, detect — one parent run with a child run per stage (`mlflow run . -e main` runs this).

    Example: MEDART_DATA_DIR=../shared/data medart pipeline --dataset pneumonia --attacks bim --pretrained none
    """
    from medart import tracking
    from medart.models.loading import ModelSource
    from medart.models.training import TrainConfig
    from medart.stages.detect import DetectRequest
    from medart.stages.pipeline import pipeline as run_pipeline
    from medart.stages.target import DataSpec, RunOptions, from_options
    from medart.stages.train import ModelRequest

    tracking.configure(opts["tracking_uri"])
    if opts["attack"] is not None:  # `-P attack=` of older MLproject calls, and --attack, still run
        click.echo("Warning: --attack (-P attack) is deprecated; use --attacks (-P attacks)", err=True)
        opts["attacks"] = opts["attack"]
    detection = from_options(DetectRequest, opts)
    # --batch-size is the attacks' and detectors'; training keeps its own default
    config = from_options(TrainConfig, {k: v for k, v in opts.items() if k != "batch_size"})
    out = run_pipeline(from_options(DataSpec, opts), detection, from_options(ModelSource, opts), from_options(ModelRequest, opts), config,
                       opts["max_examples"], opts["reference_size"], from_options(RunOptions, opts))
    click.echo(run_line("main", out.run_id, f"model {out.model_uri}{' (trained here)' if out.trained else ''}"))
    click.echo(out.summary, nl=False)
    if opts["report"]:
        click.echo(attach_report(out.run_id))
