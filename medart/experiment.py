"""The paper's pipeline, stage by stage, with every stage tracked as an MLflow run."""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import mlflow  # noqa: E402
import numpy as np  # noqa: E402
from mlflow.data.dataset_source_registry import resolve_dataset_source  # noqa: E402
from mlflow.data.meta_dataset import MetaDataset  # noqa: E402
from torch.utils.data import ConcatDataset  # noqa: E402

from medart import tracking  # noqa: E402
from medart.data import ProtocolSplits, load_dataset, subsample  # noqa: E402
from medart.models import registry  # noqa: E402
from medart.models.evaluation import classification_metrics, predict  # noqa: E402
from medart.models.resnet import build_model  # noqa: E402
from medart.models.training import MONITORS, TrainConfig, fit  # noqa: E402


@dataclass
class TrainOutcome:
    run_id: str
    model_uri: str  # models:/<name>/<version>, or runs:/… when not registered
    registered_name: str | None
    version: str | None
    promoted: bool
    test: dict[str, float]
    seconds_per_epoch: float
    best_epoch: int


def _log_splits(splits: ProtocolSplits) -> None:
    info = splits.info
    # The local file source is registered twice by MLflow (file:// and plain paths); any is right.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        source = resolve_dataset_source(str(Path(info.get("file") or info["root"]).resolve()))
    digest = (info.get("file_md5") or info["split_digest"])[:16]
    for part in ("train", "val", "adv_train", "adv_test"):
        ds = MetaDataset(source, name=f"{splits.name}-{part}", digest=digest)
        mlflow.log_input(ds, context=part)
    mlflow.log_params({f"data.{k}": v for k, v in info.items()})
    mlflow.log_dict(
        {
            "counts": splits.counts(),
            "adv_train_indices": splits.adv_train.indices.tolist(),
            "adv_test_indices": splits.adv_test.indices.tolist(),
            **info,
        },
        "splits.json",
    )


def _training_figure(history: list[dict[str, float]], best_epoch: int):
    epochs = np.arange(1, len(history) + 1)
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.8))
    for key, style in (("train_loss", "-"), ("val_loss", "--")):
        ax_loss.plot(epochs, [h[key] for h in history], style, label=key)
    for key, style in (("train_acc", "-"), ("val_acc", "--"), ("val_auc", ":")):
        ax_acc.plot(epochs, [h[key] for h in history], style, label=key)
    for ax, title in ((ax_loss, "loss"), (ax_acc, "accuracy / AUC")):
        ax.axvline(best_epoch, color="grey", lw=0.8)
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.legend()
    fig.tight_layout()
    return fig


def train_model(
    dataset: str,
    data_dir: str | os.PathLike | None = None,
    *,
    source: str = "medmnist",
    size: int = 28,
    image_size: int | None = None,
    arch: str = "resnet50",
    pretrained: str = "imagenet",
    train_config: TrainConfig | None = None,
    max_train: int | None = None,
    max_eval: int | None = None,
    register: bool = True,
    alias: str = "champion",
    download: bool = True,
    progress: bool = True,
) -> TrainOutcome:
    """Train the paper's classifier on ``dataset`` and log it to MLflow (tracking URI as configured).

    Logs params, the dataset inputs and split, per-epoch metrics, a training-curve figure, the
    test-split metrics of the best checkpoint (``test_acc``, ``test_auc``) and the model; registers
    it as ``medart-<dataset>`` and points ``alias`` at it when it is the best version so far on the
    monitored validation metric. ``max_train`` / ``max_eval`` take stratified subsets (quick runs).
    """
    config = train_config or TrainConfig()
    splits = load_dataset(dataset, data_dir, source=source, size=size, image_size=image_size, seed=config.seed, download=download)
    train = subsample(splits.train, max_train, config.seed)
    val = subsample(splits.val, max_eval, config.seed)
    test = ConcatDataset([subsample(part, max_eval, config.seed) for part in splits.test])
    side = image_size or (size if source == "medmnist" else 224)

    run_name = f"train-{arch}-{side}px-seed{config.seed}"
    with tracking.start_run(tracking.experiment_name(dataset, "train"), run_name) as run:
        mlflow.log_params({f"train.{k}": v for k, v in asdict(config).items()})
        mlflow.log_params(
            {"dataset": dataset, "source": source, "image_size": side, "arch": arch, "pretrained": pretrained,
             "max_train": max_train, "max_eval": max_eval, "n_train": len(train), "n_val": len(val), "n_test": len(test)}
        )
        _log_splits(splits)
        model = build_model(len(splits.classes), arch, pretrained, splits.classes, side)
        result = fit(model, train, val, config, on_epoch=lambda e, m: mlflow.log_metrics(m, step=e), progress=progress)

        probs, labels = predict(model, test, progress=progress, desc="test")
        test_metrics = classification_metrics(probs, labels)
        mlflow.log_metrics({f"test_{k}": v for k, v in test_metrics.items()})
        mlflow.log_metrics({f"best_{k}": v for k, v in result.best.items()} | {"best_epoch": result.best_epoch,
                            "seconds_per_epoch": result.seconds_per_epoch})
        tracking.log_figure(_training_figure(result.history, result.best_epoch), "figures/training.png")
        mlflow.log_text(json.dumps(result.history, indent=1), "history.json")

        name = registry.registered_name(dataset) if register else None
        info = registry.log_model(model, registered_model_name=name, image_size=side)
        version, promoted = None, False
        if name is not None:
            version = str(info.registered_model_version)
            promoted = registry.promote_if_best(
                name, version, alias, config.monitor, result.best[config.monitor], MONITORS[config.monitor] > 0
            )
            mlflow.set_tags({"registered_model": name, "registered_version": version, "alias_promoted": str(promoted)})
        model_uri = f"models:/{name}/{version}" if name else f"runs:/{run.info.run_id}/{registry.ARTIFACT_NAME}"
    return TrainOutcome(run.info.run_id, model_uri, name, version, promoted, test_metrics,
                        result.seconds_per_epoch, result.best_epoch)


def evaluate_model(
    model_uri: str,
    dataset: str,
    data_dir: str | os.PathLike | None = None,
    *,
    source: str = "medmnist",
    size: int = 28,
    max_eval: int | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """Test-split metrics (``acc``, ``auc``, ``loss``, ``n``) of a registered model, logged as a run."""
    model = registry.load_model(model_uri)
    side = model.config.get("image_size") or size
    splits = load_dataset(dataset, data_dir, source=source, size=size, image_size=side, seed=seed)
    if splits.classes != model.classes:
        from medart.errors import ModelError

        raise ModelError(f"{model_uri} predicts {model.classes}, but {dataset} has classes {splits.classes}")
    test = ConcatDataset([subsample(part, max_eval, seed) for part in splits.test])
    with tracking.start_run(tracking.experiment_name(dataset, "evaluate"), f"evaluate-{side}px"):
        mlflow.log_params({"model_uri": model_uri, "dataset": dataset, "max_eval": max_eval, "seed": seed, "n_test": len(test)})
        probs, labels = predict(model, test)
        metrics = classification_metrics(probs, labels) | {"n": float(len(labels))}
        mlflow.log_metrics({f"test_{k}": v for k, v in metrics.items()})
    return metrics
