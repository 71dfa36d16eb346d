"""Degenerate detector fits: a fitted detector that gives every input one score measures nothing.

A logistic regression whose coefficients came out 0 scores every input with its intercept; the
ROC-AUC of such constant scores is exactly 0.5, which reads as "the detector sits at chance" when
the fit, not the feature, failed. :func:`detection_auc` returns NaN and the reason instead, and
the detection stage warns, tags the run and prints "degenerate" where the AUC would be.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
from sklearn.metrics import roc_auc_score

from medart.intervals import Estimate, auc_interval

#: Scores whose spread is at most this, relative to their size, are one score for every input: the
#: float64 rounding of a constant sum is ~1e-16 of it, a real feature's spread orders of magnitude more.
SCORE_TOLERANCE = 1e-9

#: The tag of a run where a detector's fit was degenerate: ``medart.degenerate_fit.<detector>`` = why.
TAG = "medart.degenerate_fit"

logger = logging.getLogger("medart")


def constant(scores: np.ndarray) -> bool:
    """Whether ``scores`` ``(N,)`` all lie within :data:`SCORE_TOLERANCE` × max(1, their largest magnitude)."""
    scores = np.asarray(scores, dtype=np.float64)
    return bool(np.ptp(scores) <= SCORE_TOLERANCE * max(1.0, float(np.abs(scores).max())))


def classifier_check(classifier, scores: np.ndarray) -> str:
    """Why a fitted scikit-learn ``classifier`` ignores its features ('' when it does not), given its
    decision ``scores`` ``(N,)`` on the inputs it was fitted on: its coefficients are all 0 (a linear
    model), or it gives all N of them one score."""
    coef = getattr(classifier, "coef_", None)  # on features scaled to [0, 1]: |w| ≤ 1e-9 moves no score
    if coef is not None and not np.any(np.abs(coef) > SCORE_TOLERANCE):
        return (f"its {type(classifier).__name__}'s coefficients are all 0 (w = {np.ravel(coef)[:4].tolist()}): "
                f"one score for every input")
    if constant(scores):
        return f"its {type(classifier).__name__} gives all {len(scores)} fit inputs one score ({float(scores[0]):.6g})"
    return ""


def detection_auc(y: np.ndarray, scores: np.ndarray, fit_reason: str = "") -> tuple[float, str]:
    """ROC-AUC of ``scores`` ``(N,)`` against the 0/1 labels ``y`` ``(N,)``, and '' — or NaN and why,
    when the fit was degenerate (``fit_reason``, e.g. a detector's ``degenerate_fit_``) or the
    scores are constant (a tie everywhere, whose AUC 0.5 is no measurement)."""
    if fit_reason:
        return float("nan"), fit_reason
    if constant(scores):
        return float("nan"), f"its scores on all {len(scores)} inputs are one value ({float(scores[0]):.6g})"
    return float(roc_auc_score(y, scores)), ""


def detection_interval(y: np.ndarray, scores: np.ndarray, fit_reason: str = "") -> tuple[Estimate, str]:
    """:func:`detection_auc` with its 95 % DeLong interval over the pairs (:func:`~medart.intervals.auc_interval`;
    n = pairs): the AUC as :func:`detection_auc` gives it, and a NaN interval where that is NaN."""
    auc, reason = detection_auc(y, scores, fit_reason)
    if reason:
        return Estimate(auc, float("nan"), float("nan"), len(y) // 2), reason
    return dataclasses.replace(auc_interval(scores, y), value=auc), reason


def warn(detector: str, where: str, reason: str) -> None:
    """The one-line warning of a degenerate fit of ``detector`` (scored on ``where``) on the ``medart`` logger."""
    logger.warning(f"warning: degenerate fit of {detector.upper()} on {where} ({reason}); its AUC is logged as NaN and "
                   "shown as 'degenerate', not as a measurement")
