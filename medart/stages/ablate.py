"""The ablation stage: input resolution × initialisation × capacity, one trained and attacked model
per cell of the grid, to test the paper's explanations with numbers.

Ma et al. explain why medical models are so easy to attack by the textures of medical images and,
above all, by over-parameterised ImageNet networks with a sharp loss landscape. :func:`ablate`
trains each cell's model on one dataset, attacks it and measures clean accuracy / AUC; accuracy
under every attack at a fixed ε list; the least ε at which one attack leaves accuracy below 1 %, by
bisection, as a bracket (:mod:`medart.attacks.difficulty`: the paper's "attack difficulty"); the
loss sharpness around the inputs (:func:`medart.analysis.landscape.sharpness`); the share of inputs
whose input gradient vanishes (a model that looks robust only because its gradients are zero is
masking them, not robust); and the KD and DFeat detection AUCs at one ε.

One parent MLflow run, one child run per cell. A cell that fails ends as a FAILED child run with
its reason in the table; the others go on. ImageNet cells whose weights cannot be had are skipped
with the reason. The parent gets the side-by-side table, a figure and a generated text
(:mod:`medart.render.ablation`) that states each factor's measured effect.
"""

from __future__ import annotations

import dataclasses
import time
import traceback
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import mlflow
import numpy as np
import torch
from tqdm.auto import tqdm

from medart import tracking
from medart.analysis.landscape import sharpness
from medart.analysis.saliency import input_gradient
from medart.attacks import make_spec, parse_eps, parse_names
from medart.attacks.difficulty import EpsBracket, least_successful_eps
from medart.catalog import ARCHS, ATTACKS, BACKENDS, DETECTORS, INITS, PAPER_ATTACKS
from medart.errors import ConfigError, DataError
from medart.models.resnet import imagenet_unavailable, parameter_count
from medart.models.training import TrainConfig
from medart.render.ablation import ablation_columns, ablation_figure, ablation_table, cell_summary, findings
from medart.render.numbers import eps_label
from medart.stages.attack import attack
from medart.stages.detect import DetectRequest, detect
from medart.stages.target import DataSpec, RunOptions, Target
from medart.stages.train import ModelRequest, train

RESOLUTIONS = (8, 1024)  # allowed input sides; a model may refuse some (smallcnn: < 16 px) and fail its cell


@dataclass(frozen=True)
class Cell:
    """One point of the grid: the model's input side (px), its initialisation and its architecture."""

    resolution: int
    init: str
    arch: str

    def label(self) -> str:
        """Run name, e.g. ``resnet50-128px-none``."""
        return f"{self.arch}-{self.resolution}px-{self.init}"


def parse_resolutions(value: str | Sequence[int]) -> list[int]:
    """Input sides from ``"28,64,128"`` (or a sequence), each a whole number in 8 … 1024 px."""
    low, high = RESOLUTIONS
    items = [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else list(value)
    if not items:
        raise ConfigError("the resolution list `resolutions` is empty; give e.g. 28,64,128")
    out = []
    for item in items:
        try:
            number = int(item)
        except (TypeError, ValueError):
            raise ConfigError(f"resolution {item!r} is not a whole number of pixels; give `resolutions` as e.g. "
                              "28,64,128") from None
        if not low <= number <= high:
            raise ConfigError(f"resolution {number} px is outside {low}…{high} px; change `resolutions`")
        out.append(number)
    return list(dict.fromkeys(out))


def _names(value: str | Sequence[str], choices: tuple[str, ...], what: str) -> tuple[str, ...]:
    """Checked names, once each, from a comma-separated string or a sequence."""
    text = value if isinstance(value, str) else ",".join(value)
    return tuple(dict.fromkeys(parse_names(text, choices, what)))


def make_grid(resolutions: str | Sequence[int], inits: str | Sequence[str], archs: str | Sequence[str]) -> list[Cell]:
    """Every (resolution, init, arch), ordered by architecture, then initialisation, then resolution.
    Strings are comma-separated lists; each value is checked (one-line :class:`ConfigError`)."""
    sides = parse_resolutions(resolutions)
    init_names, arch_names = _names(inits, INITS, "initialisation"), _names(archs, ARCHS, "architecture")
    return [Cell(side, init, arch) for arch in arch_names for init in init_names for side in sides]


def _eps(value: str | float | None) -> float | None:
    """ε from ``"1/255"`` or a number; numbers are range-checked by the caller's own message."""
    return parse_eps(value) if isinstance(value, str) else None if value is None else float(value)


@dataclass(frozen=True)
class AblationSettings:
    """What every cell trains and measures (the cells are the grid). ε values may be numbers or text
    (``"1/255"``; ``eps`` also ``"1/255,4/255"``), names comma-separated text; they are stored parsed.

    Args:
        train: training settings of every cell's model.
        max_train: train on a stratified subset of this many Train images (``None``: all).
        max_eval: validate and test on stratified subsets of this size (``None``: all).
        attacks: attacks run at every ε of ``eps`` (paper settings).
        eps: the fixed ε list, [0, 1] pixel units.
        bisect_attack: the attack whose least successful ε is bisected.
        eps_max: upper end of the bisection; beyond it the result is reported as "> eps_max".
        eps_tolerance: the bisection stops when its bracket is at most this wide.
        threshold: "successful" means accuracy below this (0.01: the paper's 1 %).
        detect_attack, detect_eps, detectors: the detectors (KD and DFeat by default) and the
            examples they are fitted and scored on.
        radius: L∞ radius of the sharpness number (``None``: ``detect_eps``).
        vanishing: an input gradient whose largest entry is below this counts as vanished.
        max_examples: test images attacked and measured (AdvTrain + AdvTest, stratified).
        reference_size: clean Train images KD measures against.
    """

    train: TrainConfig = field(default_factory=TrainConfig)
    max_train: int | None = None
    max_eval: int | None = None
    attacks: tuple[str, ...] = PAPER_ATTACKS
    eps: tuple[float, ...] = (1 / 255, 4 / 255)
    bisect_attack: str = "pgd"
    eps_max: float = 32 / 255
    eps_tolerance: float = 0.25 / 255
    threshold: float = 0.01
    detect_attack: str = "pgd"
    detect_eps: float = 1 / 255
    detectors: tuple[str, ...] = ("kd", "dfeat")
    radius: float | None = None
    vanishing: float = 1e-8
    max_examples: int | None = 100
    reference_size: int = 200

    def __post_init__(self) -> None:
        eps = [e for e in self.eps.split(",") if e.strip()] if isinstance(self.eps, str) else self.eps
        parsed = {"attacks": _names(self.attacks, ATTACKS, "attack"), "eps": tuple(sorted({parse_eps(e) for e in eps})),
                  "detectors": _names(self.detectors, DETECTORS, "detector"), "eps_max": _eps(self.eps_max),
                  "eps_tolerance": _eps(self.eps_tolerance), "detect_eps": parse_eps(self.detect_eps),
                  "radius": _eps(self.radius)}
        for name, value in parsed.items():
            object.__setattr__(self, name, value)
        if not self.eps:
            raise ConfigError("the ε list `eps` is empty; give e.g. 1/255,4/255")
        parse_names(f"{self.bisect_attack},{self.detect_attack}", ATTACKS, "attack")
        if self.bisect_attack not in self.attacks:  # its accuracies at `eps` seed the bisection and are plotted
            raise ConfigError(f"`bisect_attack` '{self.bisect_attack}' is not among `attacks` ({','.join(self.attacks)}); "
                              "add it there")
        if not 0 < self.eps_max <= 1:
            raise ConfigError(f"`eps_max` must be in (0, 1] pixel units, got {self.eps_max}")
        if not 0 < self.eps_tolerance < self.eps_max:
            raise ConfigError(f"the bisection tolerance `eps_tolerance` must be in (0, `eps_max`), got {self.eps_tolerance}")
        if not 0 < self.threshold <= 1:
            raise ConfigError(f"the accuracy `threshold` must be in (0, 1], got {self.threshold}")
        if self.radius is not None and not 0 < self.radius <= 1:
            raise ConfigError(f"the sharpness `radius` must be in (0, 1] pixel units, got {self.radius}")
        if not self.vanishing > 0:
            raise ConfigError(f"the vanishing-gradient floor `vanishing` must be > 0, got {self.vanishing}")
        if self.max_examples is not None and self.max_examples < 10:
            raise ConfigError(f"`max_examples` must be >= 10 (a fifth of them score the detectors), got {self.max_examples}")
        for name, value in (("max_train", self.max_train), ("max_eval", self.max_eval)):
            if value is not None and value < 2:
                raise ConfigError(f"`{name}` must be >= 2 images, got {value}")
        if self.reference_size < 1:
            raise ConfigError(f"`reference_size` must be >= 1 clean Train image, got {self.reference_size}")

    @property
    def sharpness_radius(self) -> float:
        return self.radius or self.detect_eps

    def as_params(self, run: RunOptions) -> dict[str, Any]:
        """MLflow params: every field, the ``backend`` and ``batch_size`` the attacks ran with,
        ``train.*`` for the training settings; tuples comma-joined."""
        params = {k: v for k, v in asdict(self).items() if k != "train"}
        params |= {"backend": run.backend, "batch_size": run.batch_size}
        params |= {f"train.{k}": v for k, v in asdict(self.train).items()}
        return {k: ",".join(f"{x:.6g}" if isinstance(x, float) else str(x) for x in v) if isinstance(v, tuple) else v
                for k, v in params.items()}


@dataclass
class CellMetrics:
    """What one finished cell measured: fractions in [0, 1], ε in [0, 1] pixel units."""

    train_run_id: str
    model_uri: str  # runs:/…: an ablation registers no model
    n_parameters: int
    test_acc: float
    test_auc: float
    best_epoch: int
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

    def as_json(self) -> dict[str, Any]:
        """The ``cell.json`` record (ε keys written as ``k/255``)."""
        out = asdict(self)
        b = self.least_eps
        out["least_eps"] = {"attack": b.attack, "lo": b.lo, "hi": b.hi, "eps_max": b.eps_max, "threshold": b.threshold,
                            "evaluations": b.evaluations}
        out["adv_acc"] = {a: {eps_label(e): v for e, v in by_eps.items()} for a, by_eps in self.adv_acc.items()}
        return out

    def as_metrics(self) -> dict[str, float]:
        """The cell run's MLflow metrics."""
        b = self.least_eps
        return {"test_acc": self.test_acc, "test_auc": self.test_auc, "clean_acc": self.clean_acc,
                "n_parameters": self.n_parameters, "sharpness": self.sharpness, "sharpness_median": self.sharpness_median,
                "vanishing_fraction": self.vanishing_fraction, "least_eps_lo": b.lo, "least_eps_reached": float(b.reached),
                **({"least_eps_hi": b.hi} if b.reached else {}),
                **{f"adv_acc.{a}.eps{e * 255:.3g}": v for a, by_eps in self.adv_acc.items() for e, v in by_eps.items()},
                **{f"auc_{d}": v for d, v in self.detection_auc.items()},
                **{f"seconds_{stage}": v for stage, v in self.seconds_by_stage.items()}}


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


@dataclass
class AblationOutcome:
    run_id: str
    rows: list[CellResult]  # one per cell, in grid order
    table: str  # markdown
    findings: str  # markdown, generated from the rows

    @property
    def counts(self) -> dict[str, int]:
        """finished / failed / skipped → number of cells."""
        return {status: sum(r.status == status for r in self.rows) for status in ("finished", "failed", "skipped")}


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _attack_grid(target: Target, settings: AblationSettings, run: RunOptions) -> tuple[dict[str, dict[float, float]], float]:
    """Every attack at every ε of ``settings.eps``, one attack run each: (attack → ε → accuracy, clean accuracy)."""
    adv_acc: dict[str, dict[float, float]] = {}
    clean_acc = float("nan")
    for name in settings.attacks:
        for eps in settings.eps:
            out = attack(target, make_spec(name, eps), run)
            adv_acc.setdefault(name, {})[eps] = out.metrics["adv_acc"]
            clean_acc = out.metrics["clean_acc"]
    return adv_acc, clean_acc


def run_cell(cell: Cell, data: DataSpec, settings: AblationSettings, run: RunOptions = RunOptions()) -> CellMetrics:
    """Train, attack and measure one cell under the active MLflow run; logs and returns its metrics.

    Its stages are child runs: the training run (not registered: an ablation must not move the
    dataset's champion alias), one attack run per attack and ε, the detection run. The trained
    model is attacked as it is in memory: nothing is read back from the store.
    """
    run = dataclasses.replace(run, parent_run_id=None)  # the stages nest under the active cell run
    seconds = {}
    start = time.perf_counter()
    request = ModelRequest(cell.arch, cell.init, cell.resolution, max_train=settings.max_train,
                           max_eval=settings.max_eval, register=False)
    trained = train(data, request, settings.train, run)
    seconds["train"] = time.perf_counter() - start

    start = time.perf_counter()
    # on the CPU, as a model read from the store would be; the images at the model's side
    target = Target(trained.model_uri, trained.model.cpu(), data, data.load(cell.resolution), settings.max_examples,
                    settings.reference_size)
    adv_acc, clean_acc = _attack_grid(target, settings, run)
    seconds["attacks"] = time.perf_counter() - start

    start = time.perf_counter()
    x = torch.cat([x for x, _ in target.clean.values()])
    y = torch.cat([y for _, y in target.clean.values()])
    bracket = least_successful_eps(target.model, x, y, settings.bisect_attack, settings.eps_max, settings.eps_tolerance,
                                   settings.threshold, adv_acc.get(settings.bisect_attack, {}), run.backend,
                                   run.batch_size, target.seed, run.device, run.progress)
    seconds["bisection"] = time.perf_counter() - start

    start = time.perf_counter()
    sharp = sharpness(target.model, x, y, settings.sharpness_radius, run.batch_size, run.device)
    peak = input_gradient(target.model, x, y, "loss", run.batch_size, run.device).flatten(1).abs().amax(dim=1)
    seconds["landscape"] = time.perf_counter() - start

    start = time.perf_counter()
    request = DetectRequest(attacks=(settings.detect_attack,), eps=settings.detect_eps, detectors=settings.detectors,
                            transfer=False)
    detection = detect(target, request, run)
    seconds["detection"] = time.perf_counter() - start

    metrics = CellMetrics(
        trained.run_id, trained.model_uri, parameter_count(target.model), trained.test["acc"], trained.test["auc"],
        trained.best_epoch, len(y), clean_acc, adv_acc, bracket, float(np.mean(sharp)), float(np.median(sharp)),
        float((peak < settings.vanishing).float().mean()), float(peak.median()),
        detection.auc[settings.detect_attack], detection.run_id, seconds)
    mlflow.log_metrics(metrics.as_metrics())
    mlflow.log_dict(metrics.as_json(), "cell.json")
    return metrics


def _run_isolated(cell: Cell, data: DataSpec, settings: AblationSettings, run: RunOptions, experiment: str) -> CellResult:
    """One cell as a child run; any error ends that run FAILED and comes back as the row's reason."""
    result = CellResult(cell, "failed")
    start = time.perf_counter()
    try:
        with tracking.start_run(experiment, cell.label()) as cell_run:
            result.run_id = cell_run.info.run_id
            mlflow.log_params({"arch": cell.arch, "resolution": cell.resolution, "init": cell.init})
            try:
                result.metrics = run_cell(cell, data, settings, run)
            except Exception as exc:
                mlflow.set_tag("medart.error", _one_line(exc)[:5000])
                mlflow.log_text(traceback.format_exc(), "error.txt")
                raise
            result.seconds = time.perf_counter() - start
            mlflow.log_metric("seconds", result.seconds)
    except Exception as exc:  # noqa: BLE001 - a cell's failure, whatever it is, must not lose the other cells
        return dataclasses.replace(result, reason=_one_line(exc), seconds=time.perf_counter() - start, metrics=None)
    return dataclasses.replace(result, status="finished")


def ablate(data: DataSpec, cells: Sequence[Cell], settings: AblationSettings | None = None,
           run: RunOptions = RunOptions()) -> AblationOutcome:
    """Every cell of the grid as a child run of one parent run in ``medart/<dataset>/ablation``.

    ``data.seed`` seeds the splits, the attacks and the bisection, ``settings.train.seed`` the
    training (the command line sets both from ``seed``). The parent logs the settings,
    ``ablation.md`` (the table), ``findings.md`` (the generated text), ``ablation.json`` (every
    row), ``ablation_table.json`` (an MLflow table) and ``figures/ablation.png``, and
    ``cells_finished`` / ``cells_failed`` / ``cells_skipped``. Raises :class:`DataError` (after
    logging all that) when no cell finished.
    """
    settings = settings or AblationSettings()
    cells = list(dict.fromkeys(cells))
    if not cells:
        raise ConfigError("the ablation grid is empty; give at least one of each of `resolutions`, `inits` and `archs`")
    if run.backend not in BACKENDS:
        raise ConfigError(f"unknown `backend` '{run.backend}'; choose from: {', '.join(BACKENDS)}")
    skips = {arch: imagenet_unavailable(arch) for arch in dict.fromkeys(c.arch for c in cells if c.init == "imagenet")}
    experiment = tracking.experiment_name(data.dataset, "ablation")
    params = settings.as_params(run)
    rows: list[CellResult] = []
    start = time.perf_counter()
    with tracking.start_run(experiment, f"ablate-{data.dataset}", run.parent_run_id) as parent:
        mlflow.log_params({"dataset": data.dataset, "source": data.source, "size": data.size,
                           "resolutions": ",".join(map(str, dict.fromkeys(c.resolution for c in cells))),
                           "inits": ",".join(dict.fromkeys(c.init for c in cells)),
                           "archs": ",".join(dict.fromkeys(c.arch for c in cells)), "cells": len(cells)} | params)
        bar = tqdm(cells, desc="ablation cells", disable=not run.progress)
        for cell in bar:
            bar.set_postfix_str(cell.label())
            if cell.init == "imagenet" and skips[cell.arch]:
                rows.append(CellResult(cell, "skipped", skips[cell.arch]))
            else:
                rows.append(_run_isolated(cell, data, settings, run, experiment))
            if run.progress:
                tqdm.write(f"{cell.label()}: {cell_summary(rows[-1], settings)}")
        outcome = AblationOutcome(parent.info.run_id, rows, ablation_table(rows, settings), findings(rows, settings))
        mlflow.log_text(outcome.table, "ablation.md")
        mlflow.log_text(outcome.findings, "findings.md")
        mlflow.log_dict({"settings": params, "rows": [r.as_json() for r in rows]}, "ablation.json")
        mlflow.log_table(ablation_columns(rows, settings), "ablation_table.json")
        tracking.log_figure(ablation_figure(rows, settings, data.dataset), "figures/ablation.png")
        counts = outcome.counts
        mlflow.log_metrics({f"cells_{k}": v for k, v in counts.items()} | {"seconds": time.perf_counter() - start})
        if not counts["finished"]:
            raise DataError(f"no ablation cell finished ({counts['failed']} failed, {counts['skipped']} skipped); "
                            "see the reasons in the parent run's ablation.md")
    return outcome

