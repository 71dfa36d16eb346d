"""What an attack did: accuracy and AUC before and after, success rate, perturbation sizes."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from medart.intervals import interval_metrics, proportion
from medart.models.evaluation import classification_intervals, classification_metrics


def perturbation_norms(x: torch.Tensor, x_adv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-example L∞ and L2 norms ``(N,)`` of ``x_adv − x`` in [0, 1] pixel units."""
    delta = (x_adv - x).flatten(1)
    return delta.abs().amax(dim=1), delta.norm(dim=1)


def attack_metrics(
    probs_clean: np.ndarray, probs_adv: np.ndarray, labels: np.ndarray, x: torch.Tensor, x_adv: torch.Tensor, eps: float,
    classes: Sequence[str] | None = None,
) -> dict[str, float]:
    """Clean and adversarial ``acc``/``auc``, ``success_rate`` (share of correctly classified inputs
    whose prediction the attack changed) and mean/max L∞ and L2 perturbation; then clean and
    adversarial ``balanced_acc`` and ``recall_<class>`` (named after ``classes``, see
    :func:`~medart.models.evaluation.classification_metrics`). Each of these fractions also has its
    95 % interval and n as ``<name>_ci_low``, ``<name>_ci_high``, ``<name>_n``
    (:func:`~medart.models.evaluation.classification_intervals`; the success rate's n is the images
    classified correctly, its denominator).

    Raises ``AssertionError`` if any perturbation leaves the ε-ball by more than float32 rounding:
    that would be a backend bug, and the numbers would not mean what they say.
    """
    linf, l2 = perturbation_norms(x, x_adv)
    tolerance = 4 * float(np.finfo(np.float32).eps)
    assert float(linf.max()) <= eps + tolerance, f"perturbation L∞ {float(linf.max()):.8f} exceeds ε {eps:.8f}"
    clean = classification_metrics(probs_clean, labels, classes)
    adv = classification_metrics(probs_adv, labels, classes)
    correct = probs_clean.argmax(1) == labels
    flipped = probs_adv.argmax(1) != labels
    intervals = {f"{side}_{k}": e for side, probs in (("clean", probs_clean), ("adv", probs_adv))
                 for k, e in classification_intervals(probs, labels, classes).items()}
    intervals["success_rate"] = proportion(flipped[correct])
    return {
        "clean_acc": clean["acc"],
        "clean_auc": clean["auc"],
        "adv_acc": adv["acc"],
        "adv_auc": adv["auc"],
        "success_rate": float(flipped[correct].mean()) if correct.any() else float("nan"),
        "linf_mean": float(linf.mean()),
        "linf_max": float(linf.max()),
        "l2_mean": float(l2.mean()),
        "l2_max": float(l2.max()),
        "n": float(len(labels)),
    } | {f"{side}_{k}": v for side, m in (("clean", clean), ("adv", adv)) for k, v in m.items()
         if k == "balanced_acc" or k.startswith("recall_")} | interval_metrics(intervals)
