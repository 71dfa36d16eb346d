"""The degenerate-model guard in a stage's run: every stage that attacks or detects calls
:func:`guard` inside its MLflow run, before its numbers are logged."""

from __future__ import annotations

import mlflow

from medart.models.sanity import ModelCheck
from medart.stages.target import RunOptions, Target


def guard(target: Target, run: RunOptions = RunOptions()) -> ModelCheck:
    """Check ``target``'s model on its clean images (once per target; the warning is printed the
    first time) and record the check on the active run: tag ``medart.degenerate`` (``true`` or
    ``false``, with ``medart.degenerate_reason``) and metrics ``guard.clean_acc``,
    ``guard.clean_balanced_acc``, ``guard.top_share``."""
    check = target.model_check(run)
    mlflow.set_tags(check.tags())
    mlflow.log_metrics(check.metrics())
    return check
