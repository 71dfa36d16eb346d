"""The hardening stage: a copy of a loaded model fine-tuned by one of ART's robust trainers, logged
like a trained model and registered as the challenger, with its parent and trainer recorded."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass

import mlflow
from torch import nn

from medart import tracking
from medart.budget import eps_params
from medart.data import subsample
from medart.defences.copies import check_fine_tunable, log_copy
from medart.defences.training import HardenConfig, HardenResult, robust_fit
from medart.models import registry
from medart.models.registry import EPS_TAG, PARENT_URI_TAG, PARENT_VERSION_TAG, TRAINER_TAG
from medart.intervals import interval_metrics
from medart.models.evaluation import classification_intervals, classification_metrics, predict
from medart.models.resnet import parameter_count
from medart.models.sanity import ModelCheck, check_predictions
from medart.render.hardening import hardening_figure
from medart.render.notes import note
from medart.render.tables import metric_columns
from medart.stages.guard import record
from medart.stages.target import RunOptions, Target
from medart.stages.train import log_splits

EPS_SETTINGS = ("eps", "step_size", "fbf_step")


@dataclass(frozen=True)
class HardenRequest:
    """Which images train and measure the copy, and where it goes.

    ``max_train``/``max_eval`` take stratified subsets of Train and of Val and each test part.
    With ``register`` the copy is a new version of the parent's registered model (of
    ``medart-<dataset>`` for a parent outside the registry) and ``alias`` is moved to it, unless
    it is degenerate."""

    max_train: int | None = None
    max_eval: int | None = None
    register: bool = True
    alias: str = "challenger"


@dataclass
class HardenOutcome:
    run_id: str
    model_uri: str  # models:/<name>/<version>, or runs:/… when not registered
    registered_name: str | None
    version: str | None
    aliased: bool  # the alias was moved to the new version
    parent_version: str  # the parent's registered version ("" outside the registry)
    test: dict[str, float]  # the kept epoch's clean test metrics (fractions, each with <m>_ci_low/_ci_high/_n), n included
    result: HardenResult
    model: nn.Module  # the hardened copy, in memory
    check: ModelCheck  # the degenerate-model guard on its test predictions


def harden(target: Target, config: HardenConfig = HardenConfig(), request: HardenRequest = HardenRequest(),
           run: RunOptions = RunOptions()) -> HardenOutcome:
    """Fine-tune a copy of ``target.model`` with the trainer ``config.trainer`` (:func:`robust_fit`)
    on the Train split, keep its best epoch on Val, and log it in ``medart/<dataset>/harden``.

    The run holds params ``harden.parent_model_uri``, ``harden.parent_version``,
    ``harden.<setting>`` (:meth:`HardenConfig.settings`: the trainer, ε, ART's class and its
    settings), the data's; per-epoch metrics ``val_acc``, ``val_balanced_acc``, ``val_pgd_acc``,
    ``val_pgd_balanced_acc``, ``epoch_seconds`` … (step 0: the parent's, on the same images);
    then ``best_<metric>``, ``best_epoch``, ``seconds_per_epoch`` (the mean robust epoch), ``standard_seconds_per_epoch`` (one standard
    epoch on the same batches) and their ratio ``time_ratio``, the kept epoch's ``test_<metric>``,
    the degenerate-model guard on its test predictions, the figure ``figures/hardening.png``,
    ``history.json``, and the copy (:func:`~medart.defences.copies.log_copy`). A registered copy's
    version is tagged with its parent, trainer and ε and gets ``request.alias`` unless degenerate.
    ``target.model`` itself is not changed. A model medart cannot fine-tune is refused in one line
    before the run starts.
    """
    check_fine_tunable(target.model, target.model_uri)
    splits, seed = target.splits, target.seed
    train_set, val = subsample(splits.train, request.max_train, seed), subsample(splits.val, request.max_eval, seed)
    test = target.test_set(request.max_eval)
    parent = registry.version_of(target.model_uri)
    parent_version = parent[1] if parent else ""
    name = (parent[0] if parent else registry.registered_name(target.dataset)) if request.register else None
    model = copy.deepcopy(target.model)
    arch, side, eps_label = model.config["arch"], target.side, str(config.eps)

    run_name = f"harden-{config.trainer}-eps{eps_label}-{arch}-seed{config.seed}"
    with tracking.start_run(tracking.experiment_name(target.dataset, "harden"), run_name) as mlflow_run:
        settings = {}
        for key, value in config.settings().items():  # budgets as k/255, their floats under <key>_value
            settings |= eps_params(f"harden.{key}", value) if key in EPS_SETTINGS else {f"harden.{key}": value}
        mlflow.log_params(settings)
        mlflow.log_params({"harden.parent_model_uri": target.model_uri, "harden.parent_version": parent_version,
                           "dataset": target.dataset, "image_size": side, "arch": arch, "max_train": request.max_train,
                           "max_eval": request.max_eval, "n_train": len(train_set), "n_val": len(val), "n_test": len(test),
                           "n_parameters": parameter_count(model)})
        log_splits(splits)
        result = robust_fit(model, train_set, val, config, on_epoch=lambda e, m: mlflow.log_metrics(m, step=e))

        probs, labels = predict(model, test, run.batch_size, config.device, progress=run.progress, desc="test")
        test_metrics = classification_metrics(probs, labels, splits.classes) | {"n": float(len(labels))}
        test_metrics |= interval_metrics(classification_intervals(probs, labels, splits.classes))
        mlflow.log_metrics({f"test_{k}": v for k, v in test_metrics.items()})
        check = check_predictions(probs.argmax(1), labels, splits.classes)
        record(check)
        mlflow.log_metrics({f"best_{k}": v for k, v in result.best.items()} | {
            "best_epoch": result.best_epoch, "seconds_per_epoch": result.seconds_per_epoch,
            "standard_seconds_per_epoch": result.standard_seconds_per_epoch,
            "time_ratio": result.seconds_per_epoch / result.standard_seconds_per_epoch})
        figure = hardening_figure(result.before, result.history, result.best_epoch, result.standard_seconds_per_epoch,
                                  eps_label)
        tracking.log_figure(figure, "figures/hardening.png")
        mlflow.log_text(json.dumps(result.history, indent=1), "history.json")

        info = log_copy(model, name, side)
        version, aliased = None, False
        if name is not None:
            version = str(info.registered_model_version)
            registry.tag_version(name, version, check.tags() | {
                PARENT_URI_TAG: target.model_uri, PARENT_VERSION_TAG: parent_version, TRAINER_TAG: config.trainer,
                EPS_TAG: f"{config.eps:.6g}", "medart.harden_run_id": mlflow_run.info.run_id})
            if not check.degenerate:
                mlflow.MlflowClient().set_registered_model_alias(name, request.alias, version)
                aliased = True
            else:
                mlflow.set_tag("medart.alias_withheld", f"'{request.alias}' not moved to a degenerate model")
            mlflow.set_tags({"registered_model": name, "registered_version": version, "alias_moved": str(aliased)})
        model_uri = f"models:/{name}/{version}" if name else f"runs:/{mlflow_run.info.run_id}/{registry.ARTIFACT_NAME}"
        where = f"{model_uri}{f' (alias {request.alias})' if aliased else ''}"
        tracking.describe(note(
            f"{target.model_uri} hardened by {config.trainer} at ε = {eps_label}: {where}; best epoch {result.best_epoch} "
            f"of {len(result.history)} on {config.monitor}; test split, n = {len(test)} images",
            metric_columns({"test": {f"test_{k}": v for k, v in test_metrics.items()}}),
            f"One robust epoch took {result.seconds_per_epoch:.1f} s, one standard epoch on the same batches "
            f"{result.standard_seconds_per_epoch:.1f} s (×{result.seconds_per_epoch / result.standard_seconds_per_epoch:.1f}).",
            check.note() if check.degenerate else ""))
    return HardenOutcome(mlflow_run.info.run_id, model_uri, name, version, aliased, parent_version, test_metrics, result,
                         model, check)
