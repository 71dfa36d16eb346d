"""95 % intervals for the numbers medart reports, and their sample sizes.

- A proportion (accuracy, success rate, undetected success) of ``k`` in ``n`` images gets the
  **Wilson** score interval (:func:`wilson`), which stays inside [0, 1] and does not collapse to a
  point at 0 % or 100 %, unlike the normal approximation.
- A ROC-AUC of detection scores gets **DeLong**'s nonparametric interval (DeLong et al., Biometrics
  1988; the fast algorithm of Sun & Xu, IEEE SPL 2014), the one pROC and most papers report
  (:func:`auc_interval`). Where every clean–adversarial pair is ranked the same way (AUC 0 % or
  100 %) DeLong's variance is 0 and its interval a point — the certainty of "100 % from 4 pairs"
  that a small sample does not give — so there the interval is Newcombe's score interval (Stat.
  Med. 2006, method 5), the AUC's analogue of Wilson's: it agrees with DeLong's in the middle of
  the range and keeps a width at the edges.
- A classifier's one-vs-rest macro AUC over K > 2 classes (:func:`macro_auc_interval`) gets
  DeLong's variance of the mean: each image's structural components, one per class's AUC, summed
  before their variance is taken within each true class, so the K AUCs' covariance (they share
  every image) is counted; for K = 2 it is DeLong's interval of the one AUC.
- A mean of estimates from disjoint images, such as balanced accuracy, the mean of the per-class
  recalls (:func:`mean_of`), gets the MOVER interval (Zou & Donner, Stat. Med. 2008): each part's
  own (Wilson) limits recovered as variances and added, so it too keeps a width at 0 % and 100 %.

Intervals are fractions, like the numbers they bound. Torch-free (NumPy and SciPy only).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
from scipy.optimize import brentq
from scipy.stats import binomtest, norm

LEVEL = 0.95
Z = float(norm.ppf(0.5 + LEVEL / 2))  # 1.96
MIN_PAIRS = 30  # fewer clean/adversarial pairs than this: the AUC's interval is wide, and said to be


@dataclass(frozen=True)
class Estimate:
    """A fraction ``value`` with its 95 % interval ``[low, high]`` and the ``n`` it came from
    (images for a proportion, clean/adversarial pairs for an AUC, the smaller side when they
    differ). ``value`` is NaN, and the interval with it, when nothing was measured."""

    value: float
    low: float
    high: float
    n: int

    @property
    def contains_chance(self) -> bool:
        """The interval holds 0.5: for an AUC, the detector may not separate at all."""
        return self.low <= 0.5 <= self.high

    def metrics(self, name: str) -> dict[str, float]:
        """``name``, ``name_ci_low``, ``name_ci_high``, ``name_n``: how every interval is logged."""
        low, high, n = interval_names(name)
        return {name: self.value, low: self.low, high: self.high, n: float(self.n)}

    @classmethod
    def read(cls, metrics: Mapping[str, float], name: str) -> "Estimate":
        """The estimate logged under ``name`` by :meth:`metrics`; a metric logged before intervals
        were (no ``name_ci_low``) reads back with a NaN interval and ``n`` 0."""
        low, high, n = interval_names(name)
        return cls(float(metrics[name]), float(metrics.get(low, math.nan)), float(metrics.get(high, math.nan)),
                   int(metrics.get(n, 0)))

    def percent(self, digits: int = 1) -> str:
        """``"87.6 [84.3, 90.3] %"``; ``"–"`` for NaN."""
        if math.isnan(self.value):
            return "–"
        return f"{self.value * 100:.{digits}f} [{self.low * 100:.{digits}f}, {self.high * 100:.{digits}f}] %"


def wilson(successes: int, n: int) -> Estimate:
    """The share ``successes / n`` with its Wilson score interval (SciPy's)."""
    successes, n = int(successes), int(n)
    if n == 0:
        return Estimate(math.nan, math.nan, math.nan, 0)
    ci = binomtest(successes, n).proportion_ci(confidence_level=LEVEL, method="wilson")
    return Estimate(successes / n, float(ci.low), float(ci.high), n)


def proportion(hits: np.ndarray) -> Estimate:
    """The share of true entries of the boolean array ``hits`` ``(N,)``, with its Wilson interval."""
    hits = np.asarray(hits, dtype=bool).reshape(-1)
    return wilson(int(hits.sum()), len(hits))


def _placements(positive: np.ndarray, negative: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """The AUC and DeLong's structural components: for each positive, the share of negatives it
    outranks (ties count half), and for each negative, the share of positives that outrank it."""
    from scipy.stats import rankdata

    m, n = len(positive), len(negative)
    ranks_all = rankdata(np.concatenate([positive, negative]))
    ranks_pos, ranks_neg = rankdata(positive), rankdata(negative)
    v10 = (ranks_all[:m] - ranks_pos) / n  # negatives below each positive
    v01 = 1.0 - (ranks_all[m:] - ranks_neg) / m  # positives above each negative
    return float(v10.mean()), v10, v01


def _newcombe(auc: float, m: int, n: int) -> tuple[float, float]:
    """Newcombe's (2006) method-5 score interval: the θ with (AUC − θ)² ≤ z² var(θ), var(θ) the
    Hanley–McNeil form with N* = (m + n)/2; like Wilson's, it keeps a width at AUC 0 and 1."""
    half = (m + n) / 2

    def gap(theta: float) -> float:
        var = theta * (1 - theta) / (m * n) * (1 + (half - 1) * ((1 - theta) / (2 - theta) + theta / (1 + theta)))
        return (auc - theta) ** 2 - Z**2 * var

    # gap(auc) ≤ 0, and 0 exactly at AUC 0 or 1, where the root wanted is the other one: bracket past it
    inside = min(max(auc, 1e-9), 1 - 1e-9)
    low = brentq(gap, 0.0, inside) if gap(0.0) > 0 else 0.0
    high = brentq(gap, inside, 1.0) if gap(1.0) > 0 else 1.0
    return float(low), float(high)


def auc_interval(scores: np.ndarray, is_adversarial: np.ndarray) -> Estimate:
    """ROC-AUC of ``scores`` ``(N,)`` (higher = more likely adversarial) against the 0/1 labels
    ``is_adversarial`` ``(N,)``, with DeLong's 95 % interval (Newcombe's where the AUC is 0 or 1;
    see the module). ``n`` is the smaller of the two groups (the pairs, when they are paired). NaN
    when a group is empty."""
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    labels = np.asarray(is_adversarial).reshape(-1).astype(bool)
    positive, negative = scores[labels], scores[~labels]
    m, n = len(positive), len(negative)
    if m == 0 or n == 0:
        return Estimate(math.nan, math.nan, math.nan, min(m, n))
    auc, v10, v01 = _placements(positive, negative)
    variance = (np.var(v10, ddof=1) / m if m > 1 else 0.0) + (np.var(v01, ddof=1) / n if n > 1 else 0.0)
    if auc in (0.0, 1.0) or variance <= 0:
        low, high = _newcombe(auc, m, n)
    else:
        half = Z * math.sqrt(variance)
        low, high = max(0.0, auc - half), min(1.0, auc + half)
    return Estimate(auc, low, high, min(m, n))


def interval_metrics(estimates: Mapping[str, Estimate]) -> dict[str, float]:
    """``name_ci_low``, ``name_ci_high`` and ``name_n`` of each named estimate, without ``name``
    itself: the value is logged as it always was, the interval beside it."""
    return {k: v for name, e in estimates.items() for k, v in e.metrics(name).items() if k != name}


def estimates(metrics: Mapping[str, float]) -> dict[str, Estimate]:
    """Every estimate in a flat dict of metrics as :func:`interval_metrics` logs them (a name whose
    ``_ci_low`` is there), by name, in the order of ``metrics``."""
    return {name: Estimate.read(metrics, name) for name in metrics if f"{name}_ci_low" in metrics}


def interval_names(name: str) -> tuple[str, str, str]:
    """The names logged beside ``name``: ``name_ci_low``, ``name_ci_high``, ``name_n``."""
    return f"{name}_ci_low", f"{name}_ci_high", f"{name}_n"


def mean_of(estimates: Sequence[Estimate]) -> Estimate:
    """The mean of estimates measured on disjoint images (NaN ones left out, as ``np.nanmean``
    does), with the MOVER interval of Zou & Donner (2008); ``n`` is their images together."""
    parts = [e for e in estimates if not math.isnan(e.value)]
    n = sum(e.n for e in estimates)
    if not parts:
        return Estimate(math.nan, math.nan, math.nan, n)
    k = len(parts)
    value = float(np.mean([e.value for e in parts]))
    below = math.sqrt(sum((e.value - e.low) ** 2 for e in parts)) / k
    above = math.sqrt(sum((e.high - e.value) ** 2 for e in parts)) / k
    return Estimate(value, max(0.0, value - below), min(1.0, value + above), n)


def macro_auc_interval(probs: np.ndarray, labels: np.ndarray) -> Estimate:
    """The one-vs-rest macro ROC-AUC of ``probs`` ``(N, K)`` against the class indices ``labels``
    ``(N,)`` (scikit-learn's ``roc_auc_score(..., multi_class="ovr", average="macro")``), with
    DeLong's 95 % interval of the mean (see the module); ``n`` is the smallest class. NaN when a
    class has no image. Where every AUC is 0 or 1 (variance 0), Newcombe's interval of the smallest
    class against the others."""
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels).reshape(-1)
    k, total = probs.shape[1], len(labels)
    counts = np.bincount(labels, minlength=k)
    if counts.min() == 0:
        return Estimate(math.nan, math.nan, math.nan, int(counts.min()))
    aucs, components = [], np.zeros(total)
    for c in range(k):
        positive = labels == c
        auc, v10, v01 = _placements(probs[positive, c], probs[~positive, c])
        aucs.append(auc)
        components[positive] += (v10 - auc) / counts[c]
        components[~positive] += (v01 - auc) / (total - counts[c])
    components /= k
    # images of one true class are one sample: the variance of the sum of their components
    variance = sum(counts[c] * np.var(components[labels == c], ddof=1) for c in range(k) if counts[c] > 1)
    value, smallest = float(np.mean(aucs)), int(counts.min())
    if variance <= 0:
        low, high = _newcombe(value, smallest, total - smallest)
    else:
        half = Z * math.sqrt(variance)
        low, high = max(0.0, value - half), min(1.0, value + half)
    return Estimate(value, low, high, smallest)
