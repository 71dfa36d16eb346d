"""``medart`` command line: thin click faces on :mod:`medart.experiment`."""

from __future__ import annotations

import sys
import warnings

import click

from medart.errors import MedartError
from medart.models.training import MONITORS, TrainConfig


class MedartGroup(click.Group):
    """Reports :class:`MedartError` as one line (``Error: …``, exit 2), without a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except MedartError as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(2)


@click.group(cls=MedartGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="medart")
def main() -> None:
    """Attack medical image classifiers and detect the attacks (Ma et al., Pattern Recognition 2021).

    Every command logs an MLflow run. Runs go to --tracking-uri, else $MLFLOW_TRACKING_URI, else
    sqlite:///mlflow.db in the current folder; view them with
    `mlflow ui --backend-store-uri sqlite:///mlflow.db`.
    """
    # User-facing warnings (e.g. a local file that fails the official checksum) as one line each.
    warnings.showwarning = lambda message, category, *args, **kwargs: click.echo(f"Warning: {message}", err=True)


def _datasets() -> list[str]:
    from medart.data.tasks import TASKS

    return list(TASKS)


@main.command()
@click.option("--dataset", required=True, type=click.Choice(_datasets()), help="Task to learn (see `medart datasets`).")
@click.option("--data-dir", type=click.Path(file_okay=False), envvar="MEDART_DATA_DIR", show_envvar=True,
              help="Folder of MedMNIST .npz files (or the original dataset's root with --source original). "
                   "Default: ~/.medart/data.")
@click.option("--source", type=click.Choice(["medmnist", "original"]), default="medmnist", show_default=True,
              help="MedMNIST .npz files, or the original public layout (NIH CSV, Kaggle DR, ISIC, class folders).")
@click.option("--size", type=click.Choice(["28", "64", "128", "224"]), default="28", show_default=True,
              help="Which MedMNIST file variant to read (pixels per side).")
@click.option("--image-size", type=click.IntRange(16, 1024), default=None,
              help="Side of the model's input; images are resized to it. Default: the file's size (224 for original).")
@click.option("--arch", type=click.Choice(["resnet50", "resnet18", "resnet34"]), default="resnet50", show_default=True)
@click.option("--pretrained", default="imagenet", show_default=True,
              help="'imagenet' (torchvision weights, cached or downloaded), 'none' (from scratch), or a state_dict path.")
@click.option("--epochs", type=click.IntRange(min=1), default=30, show_default=True, help="The paper trained 300.")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=1e-4, show_default=True, help="SGD learning rate.")
@click.option("--momentum", type=click.FloatRange(0, 1, max_open=True), default=0.9, show_default=True)
@click.option("--weight-decay", type=click.FloatRange(min=0), default=0.0, show_default=True)
@click.option("--augment/--no-augment", default=True, show_default=True,
              help="Random rotation, width/height shift and horizontal flip, as in the paper.")
@click.option("--monitor", type=click.Choice(list(MONITORS)), default="val_acc", show_default=True,
              help="Validation metric that picks the best epoch and the registry alias.")
@click.option("--patience", type=click.IntRange(min=1), default=None, help="Stop after this many epochs without improvement.")
@click.option("--max-train", type=click.IntRange(min=1), default=None, help="Train on a stratified subset of this many images.")
@click.option("--max-eval", type=click.IntRange(min=1), default=None, help="Validate/test on stratified subsets of this size.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seeds the splits, initialisation and batches.")
@click.option("--device", default="auto", show_default=True, help="'auto' (CUDA when present), 'cpu' or 'cuda[:N]'.")
@click.option("--alias", default="champion", show_default=True, help="Registry alias moved to this version when it is the best.")
@click.option("--register/--no-register", default=True, show_default=True, help="Register the model as medart-<dataset>.")
@click.option("--download/--no-download", default=True, show_default=True, help="Fetch missing MedMNIST files.")
@click.option("--tracking-uri", default=None, envvar="MLFLOW_TRACKING_URI", help="MLflow tracking store.")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Progress bars.")
def train(dataset, data_dir, source, size, image_size, arch, pretrained, epochs, batch_size, lr, momentum, weight_decay,
          augment, monitor, patience, max_train, max_eval, seed, device, alias, register, download, tracking_uri, progress):
    """Train the paper's ResNet classifier and register it in the MLflow model registry.

    Example (the real chest X-ray file, CPU-sized):

        MEDART_DATA_DIR=../shared/data medart train --dataset pneumonia --pretrained none --epochs 10
    """
    from medart import tracking
    from medart.experiment import train_model

    uri = tracking.configure(tracking_uri)
    config = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, momentum=momentum, weight_decay=weight_decay,
                         augment=augment, monitor=monitor, patience=patience, seed=seed, device=device)
    out = train_model(dataset, data_dir, source=source, size=int(size), image_size=image_size, arch=arch,
                      pretrained=pretrained, train_config=config, max_train=max_train, max_eval=max_eval,
                      register=register, alias=alias, download=download, progress=progress)
    click.echo(f"run {out.run_id} in {uri}: best epoch {out.best_epoch}, "
               f"test acc {out.test['acc']:.4f}, test AUC {out.test['auc']:.4f}, {out.seconds_per_epoch:.1f} s/epoch")
    if out.version is not None:
        where = f"@{alias}" if out.promoted else f" (alias '{alias}' kept on a better version)"
        click.echo(f"registered {out.model_uri}{where}")
    else:
        click.echo(f"model at {out.model_uri}")


@main.command()
@click.option("--model-uri", required=True, help="models:/<name>@<alias>, models:/<name>/<version>, runs:/<id>/model or a folder.")
@click.option("--dataset", required=True, type=click.Choice(_datasets()))
@click.option("--data-dir", type=click.Path(file_okay=False), envvar="MEDART_DATA_DIR", show_envvar=True)
@click.option("--source", type=click.Choice(["medmnist", "original"]), default="medmnist", show_default=True)
@click.option("--size", type=click.Choice(["28", "64", "128", "224"]), default="28", show_default=True)
@click.option("--max-eval", type=click.IntRange(min=1), default=None)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--tracking-uri", default=None, envvar="MLFLOW_TRACKING_URI")
def evaluate(model_uri, dataset, data_dir, source, size, max_eval, seed, tracking_uri):
    """Clean accuracy and AUC of a registered model on the dataset's test split (AdvTrain + AdvTest)."""
    from medart import tracking
    from medart.experiment import evaluate_model

    tracking.configure(tracking_uri)
    metrics = evaluate_model(model_uri, dataset, data_dir, source=source, size=int(size), max_eval=max_eval, seed=seed)
    click.echo(" ".join(f"{k}={v:.4f}" for k, v in metrics.items()))


@main.command()
def datasets() -> None:
    """List the named datasets and where each comes from."""
    from medart.data.tasks import TASKS

    for task in TASKS.values():
        origin = f"MedMNIST {task.flag}" + (", original layout" if task.original else "")
        click.echo(f"{task.name:12s} {len(task.classes)} classes ({', '.join(task.classes)}) — {task.description} [{origin}]")
