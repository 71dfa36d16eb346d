"""The training stage: the paper's classifier on one dataset, logged and registered in MLflow."""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import mlflow
from mlflow.data.dataset_source_registry import resolve_dataset_source
from mlflow.data.meta_dataset import MetaDataset
from torch.utils.data import ConcatDataset

from medart import tracking
from medart.catalog import MONITORS
from medart.data import ProtocolSplits, subsample
from medart.models import registry
from medart.intervals import interval_metrics
from medart.models.evaluation import classification_intervals, classification_metrics, predict
from medart.models.resnet import MedResNet, build_model, parameter_count
from medart.models.sanity import ModelCheck, check_predictions
from medart.models.training import TrainConfig, fit, seed_everything
from medart.render.notes import note
from medart.render.tables import metric_columns
from medart.render.training import training_figure
from medart.stages.guard import record
from medart.stages.target import DataSpec, RunOptions


@dataclass(frozen=True)
class ModelRequest:
    """What is trained: the architecture and its start, the input side, the subsets, the registry entry.

    ``pretrained`` is ``imagenet``, ``none`` (from scratch) or a tensor-only state_dict file;
    ``trusted_pickle`` unpickles such a file in full (it runs code the file carries). ``image_size``
    (px) defaults to the file's side. ``max_train``/``max_eval`` take stratified subsets (quick runs).
    """

    arch: str = "resnet50"
    pretrained: str = "imagenet"
    image_size: int | None = None
    trusted_pickle: bool = False
    max_train: int | None = None
    max_eval: int | None = None
    register: bool = True
    alias: str = "champion"


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
    model: MedResNet  # the best checkpoint, in memory
    check: ModelCheck  # the degenerate-model guard on the test predictions


def log_splits(splits: ProtocolSplits) -> None:
    """The dataset's parts as MLflow inputs, its ``data.*`` params and ``splits.json``, on the active run."""
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
    mlflow.log_dict(splits.record(), "splits.json")  # names the grouping that kept patients on one side


def train(data: DataSpec, request: ModelRequest = ModelRequest(), config: TrainConfig | None = None,
          run: RunOptions = RunOptions()) -> TrainOutcome:
    """Train the paper's classifier on ``data`` and log it to MLflow (tracking URI as configured).

    Logs params (with the model's ``n_parameters``), the dataset inputs and split, per-epoch
    metrics, a training-curve figure, the test-split metrics of the best checkpoint (``test_acc``,
    ``test_auc``, ``test_balanced_acc``, ``test_recall_<class>``, each with its 95 % interval and n as
    ``_ci_low``, ``_ci_high``, ``_n``), the degenerate-model guard on
    its test predictions (:func:`medart.stages.guard.record`: tag ``medart.degenerate``, a warning)
    and the model; registers it as ``medart-<dataset>`` (the version tagged ``medart.degenerate``
    too) and points ``request.alias`` at it when it is the best version so far on the monitored
    validation metric, never when it is degenerate (then tag ``medart.alias_withheld``).
    The run's description is the table of the test metrics, with the n and where the model went.
    The outcome carries the trained model, so a caller attacks it without reading it back.
    """
    config = config or TrainConfig()
    dataset, arch, side = data.dataset, request.arch, data.side(request.image_size)
    splits = data.load(request.image_size)
    train_set = subsample(splits.train, request.max_train, data.seed)
    val = subsample(splits.val, request.max_eval, data.seed)
    test = ConcatDataset([subsample(part, request.max_eval, data.seed) for part in splits.test])

    run_name = f"train-{arch}-{side}px-seed{config.seed}"
    with tracking.start_run(tracking.experiment_name(dataset, "train"), run_name) as mlflow_run:
        mlflow.log_params({f"train.{k}": v for k, v in asdict(config).items()})
        mlflow.log_params(
            {"dataset": dataset, "source": data.source, "image_size": side, "arch": arch, "pretrained": request.pretrained,
             "max_train": request.max_train, "max_eval": request.max_eval, "n_train": len(train_set), "n_val": len(val),
             "n_test": len(test)}
        )
        log_splits(splits)
        seed_everything(config.seed)  # the initial weights too, whatever drew from the global RNG before
        model = build_model(len(splits.classes), arch, request.pretrained, splits.classes, side,
                            trusted_pickle=request.trusted_pickle)
        mlflow.log_param("n_parameters", parameter_count(model))
        result = fit(model, train_set, val, config, on_epoch=lambda e, m: mlflow.log_metrics(m, step=e), progress=run.progress)

        probs, labels = predict(model, test, progress=run.progress, desc="test")
        test_metrics = classification_metrics(probs, labels, splits.classes)
        test_metrics |= interval_metrics(classification_intervals(probs, labels, splits.classes))
        mlflow.log_metrics({f"test_{k}": v for k, v in test_metrics.items()})
        check = check_predictions(probs.argmax(1), labels, splits.classes)
        record(check)
        mlflow.log_metrics({f"best_{k}": v for k, v in result.best.items()} | {"best_epoch": result.best_epoch,
                            "seconds_per_epoch": result.seconds_per_epoch})
        tracking.log_figure(training_figure(result.history, result.best_epoch), "figures/training.png")
        mlflow.log_text(json.dumps(result.history, indent=1), "history.json")

        name = registry.registered_name(dataset) if request.register else None
        info = registry.log_model(model, registered_model_name=name, image_size=side)
        version, promoted = None, False
        if name is not None:
            version = str(info.registered_model_version)
            registry.tag_version(name, version, check.tags())  # promote_if_best never aliases a degenerate version
            promoted = registry.promote_if_best(
                name, version, request.alias, config.monitor, result.best[config.monitor], MONITORS[config.monitor] > 0
            )
            mlflow.set_tags({"registered_model": name, "registered_version": version, "alias_promoted": str(promoted)})
            if check.degenerate:
                mlflow.set_tag("medart.alias_withheld", f"'{request.alias}' not moved to a degenerate model")
        model_uri = f"models:/{name}/{version}" if name else f"runs:/{mlflow_run.info.run_id}/{registry.ARTIFACT_NAME}"
        where = f"{model_uri}{f' (alias {request.alias})' if promoted else ''}"
        tracking.describe(note(f"{arch} at {side} px, best epoch {result.best_epoch} of {len(result.history)} on "
                               f"{config.monitor}: {where}; test split, n = {len(test)} images",
                               metric_columns({"test": {f"test_{k}": v for k, v in test_metrics.items()}}),
                               check.note() if check.degenerate else ""))
    return TrainOutcome(mlflow_run.info.run_id, model_uri, name, version, promoted, test_metrics,
                        result.seconds_per_epoch, result.best_epoch, model, check)


