"""The degenerate-model guard in a stage's run: the training stage checks its test predictions, and
every stage that attacks or detects calls :func:`guard` inside its MLflow run, before its numbers
are logged."""

from __future__ import annotations

import logging

import mlflow

from medart.models.sanity import ModelCheck
from medart.stages.target import RunOptions, Target

logger = logging.getLogger("medart")


def guard(target: Target, run: RunOptions = RunOptions()) -> ModelCheck:
    """Check ``target``'s model on its clean images (predicted once per target) and :func:`record`
    the check on the active run; for a model behind a preprocessing defence, whose clean
    predictions these are, also the tag ``medart.defence`` (the canonical stack)."""
    check = target.model_check(run)
    record(check)
    if defence := getattr(target.model, "config", {}).get("defence"):
        mlflow.set_tag("medart.defence", defence)
    return check


def record(check: ModelCheck) -> None:
    """``check`` on the active run: tag ``medart.degenerate`` (``true`` or ``false``, with
    ``medart.degenerate_reason``) and metrics ``guard.clean_acc``, ``guard.clean_balanced_acc``,
    ``guard.top_share``. A degenerate model's one-line warning goes to the ``medart`` logger
    (stderr) for every top-level run, so each run a user starts says so, its examples cached or
    not; a child run is covered by its parent's warning."""
    mlflow.set_tags(check.tags())
    mlflow.log_metrics(check.metrics())
    if check.degenerate and "mlflow.parentRunId" not in mlflow.active_run().data.tags:
        logger.warning(check.warning())
