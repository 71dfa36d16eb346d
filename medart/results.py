"""Typed results that a stage fills and :mod:`medart.render` writes for people, on the bottom floor
so that render imports them from below and nothing from the stages or the attacks.

The ablation's (:mod:`medart.stages.ablate`): each :class:`Cell` of its grid, what a finished cell
measured (:class:`CellMetrics`) and how each cell ended (:class:`CellResult`); the least
successful ε as a bracket (:class:`EpsBracket`, bisected by :mod:`medart.attacks.difficulty`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from medart.intervals import Estimate, interval_metrics
from medart.numbers import eps_label

GIVEN = "given"  # the init of a cell whose model is given (loaded from its URI), not trained


@dataclass
class EpsBracket:
    """Where the least successful ε lies, in [0, 1] pixel units.

    ``lo``: the largest ε tried whose accuracy stayed ≥ ``threshold`` (0 when none below ``hi``);
    ``hi``: the smallest ε tried whose accuracy fell below it, or ``None`` when even ``eps_max``
    did not (then ε* > ``eps_max`` = ``lo``). ``evaluations``: every ``(ε, accuracy)`` used, in
    ascending ε, including ``known`` points passed in.
    """

    attack: str
    threshold: float
    eps_max: float
    lo: float
    hi: float | None
    evaluations: list[tuple[float, float]] = field(default_factory=list)

    @property
    def reached(self) -> bool:
        return self.hi is not None

    @property
    def midpoint(self) -> float | None:
        return None if self.hi is None else (self.lo + self.hi) / 2

    def text(self, scale: float = 255.0) -> str:
        """``"[lo, hi]"`` or ``"> eps_max"`` in units of 1/``scale`` (grey levels by default)."""
        if self.hi is None:
            return f"> {self.eps_max * scale:.3g}"
        return f"[{self.lo * scale:.3g}, {self.hi * scale:.3g}]"


@dataclass(frozen=True)
class Cell:
    """One point of the grid: the model's input side (px), its initialisation and its architecture.
    A model given, not trained, is a cell of its own: its input side, init ``"given"`` and its URI
    as ``arch`` (:meth:`~medart.stages.ablation_grid.AblationSettings.sources`)."""

    resolution: int
    init: str
    arch: str

    @property
    def given(self) -> bool:
        return self.init == GIVEN

    def label(self) -> str:
        """Run name, e.g. ``resnet50-128px-none``, ``models:/my-cxr@prod-64px-given``."""
        return f"{self.arch}-{self.resolution}px-{self.init}"


@dataclass
class CellMetrics:
    """What one finished cell measured: fractions in [0, 1], ε in [0, 1] pixel units."""

    train_run_id: str | None  # None: a given model, not trained
    model_uri: str  # a trained model's runs:/… (an ablation registers no model); a given model's URI
    n_parameters: int
    test_acc: float
    test_auc: float
    best_epoch: int | None  # None: a given model
    n_attacked: int  # AdvTrain + AdvTest images attacked, bisected and measured
    clean_acc: float
    adv_acc: dict[str, dict[float, float]]  # attack → ε → accuracy under attack
    least_eps: EpsBracket
    sharpness: float  # nats, mean over the attacked images
    sharpness_median: float
    vanishing_fraction: float
    grad_peak_median: float
    detection_auc: dict[str, float]  # detector → ROC-AUC on AdvTest
    detect_run_id: str
    seconds_by_stage: dict[str, float]
    # metric name (as_metrics) → its 95 % interval and n: test_acc/test_auc (test images), clean_acc,
    # adv_acc.<attack>.eps<k>, vanishing_fraction (attacked images), auc_<detector> (AdvTest pairs)
    intervals: dict[str, Estimate] = field(default_factory=dict)

    def estimate(self, name: str, value: float) -> Estimate:
        """The metric ``name`` (of :meth:`as_metrics`) with its interval; ``value`` alone where none was measured."""
        return self.intervals.get(name) or Estimate(value, float("nan"), float("nan"), 0)

    def as_json(self) -> dict[str, Any]:
        """The ``cell.json`` record (ε keys written as ``k/255``)."""
        out = asdict(self)
        b = self.least_eps
        out["least_eps"] = {"attack": b.attack, "lo": b.lo, "hi": b.hi, "eps_max": b.eps_max, "threshold": b.threshold,
                            "evaluations": b.evaluations}
        out["adv_acc"] = {a: {eps_label(e): v for e, v in by_eps.items()} for a, by_eps in self.adv_acc.items()}
        out["intervals"] = interval_metrics(self.intervals)
        return out

    def as_metrics(self) -> dict[str, float]:
        """The cell run's MLflow metrics, each fraction's interval beside it (``_ci_low``, ``_ci_high``, ``_n``)."""
        b = self.least_eps
        return {"test_acc": self.test_acc, "test_auc": self.test_auc, "clean_acc": self.clean_acc,
                "n_parameters": self.n_parameters, "sharpness": self.sharpness, "sharpness_median": self.sharpness_median,
                "vanishing_fraction": self.vanishing_fraction, "least_eps_lo": b.lo, "least_eps_reached": float(b.reached),
                **({"least_eps_hi": b.hi} if b.reached else {}),
                **{f"adv_acc.{a}.eps{e * 255:.3g}": v for a, by_eps in self.adv_acc.items() for e, v in by_eps.items()},
                **{f"auc_{d}": v for d, v in self.detection_auc.items()},
                **{f"seconds_{stage}": v for stage, v in self.seconds_by_stage.items()}, **interval_metrics(self.intervals)}


@dataclass
class CellResult:
    """One row of the ablation: a cell, how it ended and, when finished, what it measured."""

    cell: Cell
    status: str  # finished, failed or skipped
    reason: str = ""  # why it failed or was skipped, one line
    seconds: float = 0.0  # wall time of the cell's run
    run_id: str | None = None  # the cell's MLflow run (None: skipped)
    metrics: CellMetrics | None = None  # None unless finished

    def as_json(self) -> dict[str, Any]:
        """A row of ``ablation.json``."""
        base = {"arch": self.cell.arch, "resolution": self.cell.resolution, "init": self.cell.init, "run_id": self.run_id}
        measured = self.metrics.as_json() if self.metrics is not None else {}
        return base | measured | {"status": self.status, "reason": self.reason, "seconds": self.seconds}


__all__ = ["GIVEN", "Cell", "CellMetrics", "CellResult", "EpsBracket"]
