"""The degenerate-model guard: has the model learnt anything on the images it is attacked on?

A model that answers one class for nearly every image still "falls to 0 % under attack" and its
attacks are still "detected" at high AUC, numbers that say nothing about robustness. After
training (on the test predictions), and before a stage attacks or detects (on the clean images it
attacks), :func:`check_predictions` looks at the model's answers; the stages
(:mod:`medart.stages.guard`) warn, tag the run and print clean and balanced accuracy beside every
number when it fires, and training never moves the registry alias to such a model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from medart.intervals import Estimate, interval_metrics, mean_of, proportion
from medart.models.evaluation import class_recalls
from medart.numbers import ci

#: Balanced accuracy at most this far above chance (1/K) is "near chance". 0.1: on the ~60 images of
#: a small run a guessing model's balanced accuracy has a binomial s.d. of ~0.065 about chance, so a
#: tighter margin misses it, while the main job's model scores ~0.85–0.9 (docs/models-and-attacks.md).
CHANCE_MARGIN = 0.10
#: One answer given to at least this share of the images is "almost everything", unless the labels
#: themselves are that lopsided (then the balanced-accuracy test still catches a constant model).
CONSTANT_SHARE = 0.95
#: The tag a guarded run (and a registered model version) carries: ``true`` or ``false``.
DEGENERATE_TAG = "medart.degenerate"


@dataclass(frozen=True)
class ModelCheck:
    """What the model does on ``n`` clean images: accuracy and balanced accuracy in [0, 1], its most
    common answer ``top_class`` and the share of images given it (``top_share``) against that
    class's share among the labels (``label_share``), and whether it is ``degenerate`` (``reason``
    says why, in words; empty when it is not); ``intervals``: ``acc`` and ``balanced_acc`` as
    :class:`~medart.intervals.Estimate` (95 % interval, n images)."""

    n: int
    acc: float
    balanced_acc: float
    top_class: str
    top_share: float
    label_share: float
    reason: str
    intervals: dict[str, Estimate] = field(default_factory=dict, compare=False)

    @property
    def degenerate(self) -> bool:
        return bool(self.reason)

    def warning(self) -> str:
        """The one-line warning a stage prints when the model is degenerate."""
        return (f"warning: degenerate model ({self.reason}); its attack and detection numbers say little about "
                f"robustness: train it longer or check its data")

    def tags(self) -> dict[str, str]:
        return {DEGENERATE_TAG: str(self.degenerate).lower()} | ({f"{DEGENERATE_TAG}_reason": self.reason}
                                                                 if self.degenerate else {})

    def metrics(self) -> dict[str, float]:
        """The check's numbers as logged (fractions): ``guard.clean_acc``, ``guard.clean_balanced_acc``
        (each with ``_ci_low``, ``_ci_high``, ``_n``), ``guard.top_share``."""
        return ({"guard.clean_acc": self.acc, "guard.clean_balanced_acc": self.balanced_acc, "guard.top_share": self.top_share}
                | interval_metrics({f"guard.clean_{k}": e for k, e in self.intervals.items()}))

    def estimate(self, name: str) -> Estimate:
        """``acc`` or ``balanced_acc`` with its interval (the value alone where none was computed)."""
        return self.intervals.get(name) or Estimate(getattr(self, name), float("nan"), float("nan"), self.n)

    def note(self) -> str:
        """One line for under a table: the clean numbers with their 95 % intervals and, if degenerate, why."""
        line = (f"Clean images ({self.n}): accuracy {ci(self.estimate('acc'))} %, "
                f"balanced accuracy {ci(self.estimate('balanced_acc'))} % (95 % intervals).")
        return line + (f" DEGENERATE MODEL: {self.reason}." if self.degenerate else "")


def check_predictions(predictions: np.ndarray, labels: np.ndarray, classes: Sequence[str]) -> ModelCheck:
    """Check a model's answers ``predictions`` ``(N,)`` against ``labels`` ``(N,)`` (class indices
    into ``classes``): degenerate when its balanced accuracy is within :data:`CHANCE_MARGIN` of
    chance (1/K), or when it gives one answer to at least :data:`CONSTANT_SHARE` of the images
    while fewer of the labels are that class."""
    k = len(classes)
    recalls = class_recalls(labels, predictions, k)
    balanced = float(np.nanmean(recalls))
    answers = np.bincount(predictions, minlength=k) / len(predictions)
    top = int(answers.argmax())
    label_share = float(np.mean(labels == top))
    reasons = []
    if balanced <= 1 / k + CHANCE_MARGIN:
        reasons.append(f"balanced accuracy {balanced * 100:.1f} % is within {CHANCE_MARGIN * 100:.0f} points of "
                       f"chance ({100 / k:.1f} %)")
    if answers[top] >= CONSTANT_SHARE and label_share < CONSTANT_SHARE:
        reasons.append(f"it answers '{classes[top]}' for {answers[top] * 100:.1f} % of {len(labels)} clean images, "
                       f"{label_share * 100:.1f} % of which are")
    recall_intervals = [proportion(predictions[labels == c] == c) for c in range(k)]
    intervals = {"acc": proportion(predictions == labels), "balanced_acc": mean_of(recall_intervals)}
    return ModelCheck(len(labels), float(np.mean(predictions == labels)), balanced, str(classes[top]),
                      float(answers[top]), label_share, "; ".join(reasons), intervals)
