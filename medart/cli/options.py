"""The options several commands share, each named as the field of the request it fills
(:class:`~medart.stages.target.DataSpec`, :class:`~medart.stages.target.RunOptions`), with the
choices of :mod:`medart.catalog` — one definition per option, torch-free."""

from __future__ import annotations

from typing import Callable

import click

from medart.catalog import ARCHS, ATTACKS, BACKENDS, DATASETS, EXECUTORS, SIZES, SOURCES

MODEL_URIS = "models:/<name>@<alias>, models:/<name>/<version>, runs:/<id>/model or a folder."


def _stack(*options: Callable) -> Callable:
    def apply(func):
        for option in reversed(options):
            func = option(func)
        return func

    return apply


def _int(ctx, param, value):
    return None if value is None else int(value)


def model_uri(required: bool = True) -> Callable:
    return click.option("--model-uri", required=required, default=None, help=MODEL_URIS)


dataset = click.option("--dataset", required=True, type=click.Choice(DATASETS), help="Task (see `medart datasets`).")
data_dir = click.option("--data-dir", type=click.Path(file_okay=False), envvar="MEDART_DATA_DIR", show_envvar=True,
                        help="Folder of MedMNIST .npz files (or the original dataset's root with --source original). "
                             "Default: ~/.medart/data.")
source = click.option("--source", type=click.Choice(SOURCES), default="medmnist", show_default=True,
                      help="MedMNIST .npz files, or the original public layout (NIH CSV, Kaggle DR, ISIC, class folders).")
size = click.option("--size", type=click.Choice([str(s) for s in SIZES]), default="28", show_default=True, callback=_int,
                    help="Which MedMNIST file variant to read (pixels per side).")
seed = click.option("--seed", type=int, default=0, show_default=True, help="Seeds the splits, training and random starts.")
download = click.option("--download/--no-download", default=True, show_default=True, help="Fetch missing MedMNIST files.")

#: ``DataSpec``: which images
data_options = _stack(dataset, data_dir, source, size, seed)

backend = click.option("--backend", type=click.Choice(BACKENDS), default="art", show_default=True,
                       help="Library that runs the attacks; both give the same threat model.")
batch_size = click.option("--batch-size", type=click.IntRange(min=1), default=128, show_default=True)
device = click.option("--device", default="auto", show_default=True, help="'auto' (CUDA when present), 'cpu' or 'cuda[:N]'.")
cache = click.option("--cache/--no-cache", default=True, show_default=True,
                     help="Reuse examples a finished run made with the same model, data, attack, backend and seed.")
progress = click.option("--progress/--no-progress", default=True, show_default=True, help="Progress bars.")
tracking_uri = click.option("--tracking-uri", default=None, envvar="MLFLOW_TRACKING_URI", help="MLflow tracking store.")

#: ``RunOptions``: how the attacks run
run_options = _stack(backend, batch_size, device, cache, progress, tracking_uri)

max_examples = click.option("--max-examples", type=click.IntRange(min=2), default=None,
                            help="Attack a stratified subset of AdvTrain + AdvTest of this size.")


def attacks(default: str = ",".join(ATTACKS)) -> Callable:
    return click.option("--attacks", default=default, show_default=True,
                        help=f"Comma-separated attacks: {', '.join(ATTACKS)} (paper settings).")


executor_options = _stack(
    click.option("--executor", type=click.Choice(EXECUTORS), default="in-process", show_default=True,
                 help="Where the work runs: here, or on Ray (a local instance, or a cluster with --address); "
                      "Ray is an extra: pip install 'medart[ray]'."),
    click.option("--address", default=None,
                 help="Ray cluster: 'auto' (the one `ray start` runs on this machine) or ray://HOST:10001. "
                      "Default: a local Ray instance, stopped afterwards."),
    click.option("--workers", type=click.IntRange(min=1), default=None, help="CPUs of the local Ray instance. Default: all."),
    click.option("--cpus-per-task", type=click.FloatRange(min=0, min_open=True), default=None,
                 help="CPUs (torch threads) each Ray task or actor reserves. Default: 1."),
    click.option("--gpus-per-task", type=click.FloatRange(min=0), default=None,
                 help="GPUs each Ray task or actor reserves; a fraction shares one. Default: 1 if the cluster has GPUs, else 0."),
)

arch = click.option("--arch", type=click.Choice(ARCHS), default="resnet50", show_default=True,
                    help="Backbone under the paper's head; smallcnn is a ~0.3 M-parameter CNN (from scratch only).")
