"""``medart pipeline``: the MLproject's ``main`` entry point."""

from __future__ import annotations

import click

from medart.catalog import ATTACKS
from medart.cli import main, options


@main.command()
@options.data_options
@options.model_uri(required=False)
@options.model_options
@click.option("--attack", type=options.Names(ATTACKS, "attack"), default="bim", show_default=True,
              help="The attack, or several comma-separated (fgsm, bim, pgd, cw): then also the transfer table.")
@options.eps()
@options.steps
@options.step_size
@options.detectors("kd,lid,dfeat,qfeat")
@options.max_examples
@options.reference_size
@click.option("--image-size", type=click.IntRange(16, 1024), default=None,
              help="Training: side of the model's input. Default: the file's size (224 for original).")
@options.arch
@click.option("--pretrained", default="imagenet", show_default=True,
              help="Training: 'imagenet', 'none' (from scratch), or a tensor-only state_dict path.")
@click.option("--epochs", type=click.IntRange(min=1), default=10, show_default=True, help="Training epochs.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=0.01, show_default=True, help="SGD learning rate.")
@click.option("--max-train", type=click.IntRange(min=1), default=None, help="Train on a stratified subset of this many images.")
@click.option("--max-eval", type=click.IntRange(min=1), default=None, help="Validate/test on stratified subsets of this size.")
@options.run_options
def pipeline(**opts) -> None:
    """The paper's pipeline: train (or reuse --model-uri, else the dataset's registered champion),
    attack, detect — one parent run with a child run per stage (`mlflow run . -e main` runs this).

    Example: MEDART_DATA_DIR=../shared/data medart pipeline --dataset pneumonia --attack bim --pretrained none
    """
    from medart import tracking
    from medart.models.training import TrainConfig
    from medart.stages.detect import DetectRequest
    from medart.stages.pipeline import pipeline as run_pipeline
    from medart.stages.target import DataSpec, ModelSource, RunOptions, from_options
    from medart.stages.train import ModelRequest

    tracking.configure(opts["tracking_uri"])
    detection = from_options(DetectRequest, opts, attacks=opts["attack"])
    # --batch-size is the attacks' and detectors'; training keeps its own default
    config = from_options(TrainConfig, {k: v for k, v in opts.items() if k != "batch_size"})
    out = run_pipeline(from_options(DataSpec, opts), detection, from_options(ModelSource, opts), from_options(ModelRequest, opts), config,
                       opts["max_examples"], opts["reference_size"], from_options(RunOptions, opts))
    click.echo(f"main run {out.run_id}, model {out.model_uri}{' (trained here)' if out.trained else ''}")
    click.echo(out.summary, nl=False)
