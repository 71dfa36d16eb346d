"""Ablations that test the paper's explanations with numbers: input resolution, initialisation and
model capacity, one trained and attacked model per cell of the grid.

Ma et al. explain why medical models are so easy to attack by the textures of medical images and,
above all, by over-parameterised ImageNet networks with a sharp loss landscape. A cell is one
(resolution, initialisation, architecture) on one dataset; :func:`run_ablation` trains each
cell's model, attacks it and measures

- clean accuracy / AUC on the test split,
- accuracy under every attack at a fixed ε list,
- the least ε at which one attack (PGD by default) leaves accuracy below 1 %, by bisection, as a
  bracket (:mod:`medart.attacks.difficulty`) — the paper's "attack difficulty",
- the loss sharpness around the inputs (:func:`medart.analysis.landscape.sharpness`),
- the share of inputs whose input gradient vanishes (max |∂ℓ/∂x| below a floor): a model that
  looks robust only because its gradients are zero is masking them, not robust,
- the detection AUCs of KD and DFeat at one ε,

as a parent MLflow run with one child run per cell. A cell that fails ends as a FAILED child run
with its reason in the table; the others go on. ImageNet cells whose weights cannot be had are
skipped with the reason. The parent gets the side-by-side table, a figure and a generated text that
states each factor's measured effect.
"""

from __future__ import annotations

import os
import time
import traceback
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import mlflow  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from medart import tracking  # noqa: E402
from medart.analysis.landscape import sharpness  # noqa: E402
from medart.analysis.saliency import input_gradient  # noqa: E402
from medart.attacks import ATTACKS, BACKENDS, make_spec, parse_eps, parse_names  # noqa: E402
from medart.attacks.difficulty import EpsBracket, least_successful_eps  # noqa: E402
from medart.detection import detect_model  # noqa: E402
from medart.detectors import DETECTORS  # noqa: E402
from medart.errors import ConfigError, DataError  # noqa: E402
from medart.experiment import attack_model, load_attack_inputs, train_model  # noqa: E402
from medart.models.resnet import ARCHS, imagenet_unavailable, parameter_count  # noqa: E402
from medart.models.training import TrainConfig  # noqa: E402

INITS = ("none", "imagenet")  # from scratch; torchvision's ImageNet weights
INIT_NAMES = {"none": "from scratch", "imagenet": "ImageNet"}
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
        raise ConfigError("the resolution list is empty; give e.g. 28,64,128")
    out = []
    for item in items:
        try:
            number = int(item)
        except (TypeError, ValueError):
            raise ConfigError(f"resolution {item!r} is not a whole number of pixels; give e.g. 28,64,128") from None
        if not low <= number <= high:
            raise ConfigError(f"resolution {number} px is outside {low}…{high} px")
        out.append(number)
    return list(dict.fromkeys(out))


def make_grid(resolutions: str | Sequence[int], inits: str | Sequence[str], archs: str | Sequence[str]) -> list[Cell]:
    """Every (resolution, init, arch), ordered by architecture, then initialisation, then resolution.
    Strings are comma-separated lists; each value is checked (one-line :class:`ConfigError`)."""
    sides = parse_resolutions(resolutions)
    as_text = (lambda v: v if isinstance(v, str) else ",".join(v))
    init_names = list(dict.fromkeys(parse_names(as_text(inits), INITS, "initialisation")))
    arch_names = list(dict.fromkeys(parse_names(as_text(archs), ARCHS, "architecture")))
    return [Cell(side, init, arch) for arch in arch_names for init in init_names for side in sides]


@dataclass(frozen=True)
class AblationSettings:
    """What every cell trains and measures (the cells themselves are the grid).

    Args:
        train: training settings of every cell's model (the seed also seeds splits and attacks).
        max_train: train on a stratified subset of this many Train images (``None``: all).
        max_eval: validate and test on stratified subsets of this size (``None``: all).
        attacks: attacks run at every ε of ``eps`` (paper settings).
        eps: the fixed ε list, [0, 1] pixel units.
        bisect_attack: the attack whose least successful ε is bisected.
        eps_max: upper end of the bisection; beyond it the result is reported as "> eps_max".
        eps_tolerance: the bisection stops when its bracket is at most this wide.
        threshold: "successful" means accuracy below this (0.01: the paper's 1 %).
        detect_attack, detect_eps: the examples the detectors are fitted and scored on.
        detectors: detector names (KD and DFeat by default).
        radius: L∞ radius of the sharpness number (``None``: ``detect_eps``).
        vanishing: an input gradient whose largest entry is below this counts as vanished.
        max_examples: test images attacked and measured (AdvTrain + AdvTest, stratified).
        reference_size: clean Train images KD measures against.
        backend: ``art`` or ``torchattacks``.
    """

    train: TrainConfig = field(default_factory=TrainConfig)
    max_train: int | None = None
    max_eval: int | None = None
    attacks: tuple[str, ...] = ATTACKS
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
    backend: str = "art"
    batch_size: int = 128

    def __post_init__(self) -> None:
        object.__setattr__(self, "attacks", tuple(dict.fromkeys(parse_names(",".join(self.attacks), ATTACKS, "attack"))))
        object.__setattr__(self, "detectors", tuple(dict.fromkeys(
            parse_names(",".join(self.detectors), tuple(DETECTORS), "detector"))))
        object.__setattr__(self, "eps", tuple(sorted({parse_eps(e) for e in self.eps})))
        if not self.eps:
            raise ConfigError("the ε list is empty; give e.g. 1/255,4/255")
        for name in (self.bisect_attack, self.detect_attack):
            parse_names(name, ATTACKS, "attack")
        parse_eps(self.detect_eps)
        if not 0 < self.eps_max <= 1:
            raise ConfigError(f"ε_max must be in (0, 1] pixel units, got {self.eps_max}")
        if not 0 < self.eps_tolerance < self.eps_max:
            raise ConfigError(f"the bisection tolerance must be in (0, ε_max), got {self.eps_tolerance}")
        if not 0 < self.threshold <= 1:
            raise ConfigError(f"the accuracy threshold must be in (0, 1], got {self.threshold}")
        if self.radius is not None and not 0 < self.radius <= 1:
            raise ConfigError(f"the sharpness radius must be in (0, 1] pixel units, got {self.radius}")
        if not self.vanishing > 0:
            raise ConfigError(f"the vanishing-gradient floor must be > 0, got {self.vanishing}")
        if self.max_examples is not None and self.max_examples < 10:
            raise ConfigError(f"max_examples must be >= 10 (a fifth of them score the detectors), got {self.max_examples}")
        for name, value in (("max_train", self.max_train), ("max_eval", self.max_eval)):
            if value is not None and value < 2:
                raise ConfigError(f"{name} must be >= 2 images, got {value}")
        if self.reference_size < 1:
            raise ConfigError(f"reference_size must be >= 1 clean Train image, got {self.reference_size}")
        if self.backend not in BACKENDS:
            raise ConfigError(f"unknown backend '{self.backend}'; choose from: {', '.join(BACKENDS)}")

    @property
    def sharpness_radius(self) -> float:
        return self.radius or self.detect_eps

    def as_params(self) -> dict[str, Any]:
        params = {k: v for k, v in asdict(self).items() if k != "train"}
        params |= {f"train.{k}": v for k, v in asdict(self.train).items()}
        return {k: ",".join(f"{x:.6g}" if isinstance(x, float) else str(x) for x in v) if isinstance(v, tuple) else v
                for k, v in params.items()}


def _eps_label(eps: float) -> str:
    return f"{eps * 255:.3g}/255"


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def run_cell(cell: Cell, dataset: str, data_dir: str | os.PathLike | None, settings: AblationSettings, *,
             source: str = "medmnist", size: int = 28, progress: bool = False) -> dict[str, Any]:
    """Train, attack and measure one cell under the active MLflow run; returns its table row.

    Its stages are child runs: the training run (not registered: an ablation must not move the
    dataset's champion alias), one attack run per attack and ε, the detection run.
    """
    seed, seconds = settings.train.seed, {}
    start = time.perf_counter()
    trained = train_model(dataset, data_dir, source=source, size=size, image_size=cell.resolution, arch=cell.arch,
                          pretrained=cell.init, train_config=settings.train, max_train=settings.max_train,
                          max_eval=settings.max_eval, register=False, progress=progress)
    seconds["train"] = time.perf_counter() - start

    start = time.perf_counter()
    inputs = load_attack_inputs(trained.model_uri, dataset, data_dir, source, size, settings.max_examples, seed)
    model = inputs.model
    common = dict(source=source, size=size, max_examples=settings.max_examples, batch_size=settings.batch_size,
                  seed=seed, device=settings.train.device, progress=progress)
    adv_acc: dict[str, dict[str, float]] = {}
    known: dict[float, float] = {}
    clean_acc = float("nan")
    for attack in settings.attacks:
        for eps in settings.eps:
            out = attack_model(trained.model_uri, dataset, make_spec(attack, eps), settings.backend, data_dir,
                               inputs=inputs, **common)
            adv_acc.setdefault(attack, {})[_eps_label(eps)] = out.metrics["adv_acc"]
            clean_acc = out.metrics["clean_acc"]
            if attack == settings.bisect_attack:
                known[eps] = out.metrics["adv_acc"]
    seconds["attacks"] = time.perf_counter() - start

    start = time.perf_counter()
    x = torch.cat([inputs.clean[part][0] for part in inputs.clean])
    y = torch.cat([inputs.clean[part][1] for part in inputs.clean])
    bracket = least_successful_eps(model, x, y, settings.bisect_attack, settings.eps_max, settings.eps_tolerance,
                                   settings.threshold, known, settings.backend, settings.batch_size, seed,
                                   settings.train.device, progress)
    seconds["bisection"] = time.perf_counter() - start

    start = time.perf_counter()
    sharp = sharpness(model, x, y, settings.sharpness_radius, settings.batch_size, settings.train.device)
    peak = input_gradient(model, x, y, "loss", settings.batch_size, settings.train.device).flatten(1).abs().amax(dim=1)
    vanished = float((peak < settings.vanishing).float().mean())
    seconds["landscape"] = time.perf_counter() - start

    start = time.perf_counter()
    detection = detect_model(trained.model_uri, dataset, [settings.detect_attack], settings.detect_eps,
                             settings.detectors, settings.backend, data_dir, reference_size=settings.reference_size,
                             transfer=False, **common)
    seconds["detection"] = time.perf_counter() - start

    row = {
        "train_run_id": trained.run_id, "model_uri": trained.model_uri, "n_parameters": parameter_count(model),
        "test_acc": trained.test["acc"], "test_auc": trained.test["auc"], "best_epoch": trained.best_epoch,
        "n_attacked": len(y), "clean_acc": clean_acc, "adv_acc": adv_acc,
        "least_eps": {"attack": bracket.attack, "lo": bracket.lo, "hi": bracket.hi, "eps_max": bracket.eps_max,
                      "threshold": bracket.threshold, "evaluations": bracket.evaluations},
        "sharpness": float(np.mean(sharp)), "sharpness_median": float(np.median(sharp)),
        "vanishing_fraction": vanished, "grad_peak_median": float(peak.median()),
        "detection_auc": detection.auc[settings.detect_attack], "detect_run_id": detection.run_id,
        "seconds_by_stage": seconds,
    }
    metrics = {"test_acc": row["test_acc"], "test_auc": row["test_auc"], "clean_acc": clean_acc,
               "n_parameters": row["n_parameters"], "sharpness": row["sharpness"],
               "sharpness_median": row["sharpness_median"], "vanishing_fraction": vanished,
               "least_eps_lo": bracket.lo, "least_eps_reached": float(bracket.reached),
               **({"least_eps_hi": bracket.hi} if bracket.reached else {}),
               **{f"adv_acc.{a}.eps{e.split('/')[0]}": v for a, by_eps in adv_acc.items() for e, v in by_eps.items()},
               **{f"auc_{d}": v for d, v in row["detection_auc"].items()},
               **{f"seconds_{stage}": v for stage, v in seconds.items()}}
    mlflow.log_metrics(metrics)
    mlflow.log_dict(row, "cell.json")
    return row


def _run_isolated(cell: Cell, dataset: str, data_dir, settings: AblationSettings, experiment: str, **kwargs) -> dict:
    """One cell as a child run; any error ends that run FAILED and comes back as the row's reason."""
    base = {"arch": cell.arch, "resolution": cell.resolution, "init": cell.init, "run_id": None}
    start = time.perf_counter()
    try:
        with tracking.start_run(experiment, cell.label()) as run:
            base["run_id"] = run.info.run_id
            mlflow.log_params({"arch": cell.arch, "resolution": cell.resolution, "init": cell.init})
            try:
                row = run_cell(cell, dataset, data_dir, settings, **kwargs)
            except Exception as exc:
                mlflow.set_tag("medart.error", _one_line(exc)[:5000])
                mlflow.log_text(traceback.format_exc(), "error.txt")
                raise
            seconds = time.perf_counter() - start
            mlflow.log_metric("seconds", seconds)
    except Exception as exc:  # noqa: BLE001 - a cell's failure, whatever it is, must not lose the other cells
        return base | {"status": "failed", "reason": _one_line(exc), "seconds": time.perf_counter() - start}
    return base | row | {"status": "finished", "reason": "", "seconds": seconds}


@dataclass
class AblationOutcome:
    run_id: str
    rows: list[dict[str, Any]]  # one per cell, in grid order
    table: str  # markdown
    findings: str  # markdown, generated from the rows


def run_ablation(
    dataset: str,
    cells: Sequence[Cell],
    settings: AblationSettings | None = None,
    data_dir: str | os.PathLike | None = None,
    *,
    source: str = "medmnist",
    size: int = 28,
    progress: bool = True,
) -> AblationOutcome:
    """Every cell of the grid as a child run of one parent run in ``medart/<dataset>/ablation``.

    The parent logs the settings, ``ablation.md`` (the table), ``findings.md`` (the generated
    text), ``ablation.json`` (every row), ``ablation_table.json`` (an MLflow table) and
    ``figures/ablation.png``, and ``cells_finished`` / ``cells_failed`` / ``cells_skipped``.
    Raises :class:`DataError` (after logging all that) when no cell finished.
    """
    settings = settings or AblationSettings()
    cells = list(dict.fromkeys(cells))
    if not cells:
        raise ConfigError("the ablation grid is empty; give at least one resolution, initialisation and architecture")
    skips = {arch: imagenet_unavailable(arch) for arch in dict.fromkeys(c.arch for c in cells if c.init == "imagenet")}
    experiment = tracking.experiment_name(dataset, "ablation")
    rows: list[dict[str, Any]] = []
    start = time.perf_counter()
    with tracking.start_run(experiment, f"ablate-{dataset}") as parent:
        mlflow.log_params({"dataset": dataset, "source": source, "size": size,
                           "resolutions": ",".join(map(str, dict.fromkeys(c.resolution for c in cells))),
                           "inits": ",".join(dict.fromkeys(c.init for c in cells)),
                           "archs": ",".join(dict.fromkeys(c.arch for c in cells)), "cells": len(cells)}
                          | settings.as_params())
        bar = tqdm(cells, desc="ablation cells", disable=not progress)
        for cell in bar:
            bar.set_postfix_str(cell.label())
            base = {"arch": cell.arch, "resolution": cell.resolution, "init": cell.init, "run_id": None}
            if cell.init == "imagenet" and skips[cell.arch]:
                row = base | {"status": "skipped", "reason": skips[cell.arch], "seconds": 0.0}
            else:
                row = _run_isolated(cell, dataset, data_dir, settings, experiment, source=source, size=size,
                                    progress=progress)
            rows.append(row)
            if progress:
                tqdm.write(f"{cell.label()}: {_cell_summary(row, settings)}")
        table, text = ablation_table(rows, settings), findings(rows, settings)
        mlflow.log_text(table, "ablation.md")
        mlflow.log_text(text, "findings.md")
        mlflow.log_dict({"settings": settings.as_params(), "rows": rows}, "ablation.json")
        mlflow.log_table(_flat_table(rows, settings), "ablation_table.json")
        tracking.log_figure(ablation_figure(rows, settings, dataset), "figures/ablation.png")
        counts = {status: sum(r["status"] == status for r in rows) for status in ("finished", "failed", "skipped")}
        mlflow.log_metrics({f"cells_{k}": v for k, v in counts.items()} | {"seconds": time.perf_counter() - start})
        if not counts["finished"]:
            raise DataError(f"no ablation cell finished ({counts['failed']} failed, {counts['skipped']} skipped); "
                            "see the reasons in the parent run's ablation.md")
    return AblationOutcome(parent.info.run_id, rows, table, text)


# ---- table, figure and text: every number from the rows ----

def _bracket(row: dict[str, Any]) -> EpsBracket:
    b = row["least_eps"]
    return EpsBracket(b["attack"], b["threshold"], b["eps_max"], b["lo"], b["hi"], [tuple(e) for e in b["evaluations"]])


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    if seconds >= 60:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds} s"


def _pct(value: float) -> str:
    return "—" if value is None or not np.isfinite(value) else f"{value * 100:.1f}"


def _millions(n: int) -> str:
    return f"{n / 1e6:.2f} M"


def _cell_summary(row: dict[str, Any], settings: AblationSettings) -> str:
    if row["status"] != "finished":
        return f"{row['status']} ({row['reason']})"
    return (f"finished in {_duration(row['seconds'])}: test acc {_pct(row['test_acc'])} %, least {settings.bisect_attack} "
            f"ε {_bracket(row).text()}/255, sharpness {row['sharpness']:.3g} nats")


def ablation_table(rows: Sequence[dict[str, Any]], settings: AblationSettings) -> str:
    """Markdown: one row per cell, side by side (percentages; ε in grey levels, ×1/255)."""
    attacks = "/".join(a.upper() for a in settings.attacks)
    head = (["model (parameters)", "input", "init", "test acc / AUC"]
            + [f"acc @ {_eps_label(e)}: {attacks}" for e in settings.eps]
            + [f"least ε, {settings.bisect_attack.upper()} acc < {settings.threshold * 100:g} % (×1/255)",
               f"sharpness @ {_eps_label(settings.sharpness_radius)} mean / median (nats)",
               f"∇ < {settings.vanishing:g}"]
            + [f"{d.upper()} AUC ({settings.detect_attack.upper()} {_eps_label(settings.detect_eps)})"
               for d in settings.detectors]
            + ["wall time", "status"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        model = row["arch"] + (f" ({_millions(row['n_parameters'])})" if "n_parameters" in row else "")
        cells = [model, f"{row['resolution']} px", INIT_NAMES[row["init"]]]
        if row["status"] == "finished":
            cells.append(f"{_pct(row['test_acc'])} / {_pct(row['test_auc'])}")
            cells += [" / ".join(_pct(row["adv_acc"][a][_eps_label(e)]) for a in settings.attacks) for e in settings.eps]
            cells += [_bracket(row).text(), f"{row['sharpness']:.3g} / {row['sharpness_median']:.3g}",
                      f"{_pct(row['vanishing_fraction'])} %"]
            cells += [_pct(row["detection_auc"][d]) for d in settings.detectors]
            cells += [_duration(row["seconds"]), "finished"]
        else:
            cells += ["—"] * (len(head) - 5)
            cells += [_duration(row["seconds"]) if row["seconds"] else "—",
                      f"{row['status'].upper() if row['status'] == 'failed' else row['status']}: {row['reason']}"]
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    n = next((r["n_attacked"] for r in rows if r["status"] == "finished"), None)
    note = (f"\nAccuracies in %, AUCs in %; attacks, bisection, sharpness and detection on {n} test images "
            f"(AdvTrain + AdvTest); bisection over ε in (0, {_eps_label(settings.eps_max)}] to a bracket of at most "
            f"{_eps_label(settings.eps_tolerance)}; ∇ < floor: share of those images whose input gradient vanishes.\n")
    return "\n".join(lines) + "\n" + (note if n else "")


def _flat_table(rows: Sequence[dict[str, Any]], settings: AblationSettings) -> dict[str, list]:
    columns: dict[str, list] = {k: [] for k in ("arch", "resolution", "init", "status", "reason", "seconds", "n_parameters",
                                                "test_acc", "test_auc", "least_eps_lo", "least_eps_hi", "sharpness",
                                                "vanishing_fraction")}
    extra = [f"adv_acc.{a}.{_eps_label(e)}" for a in settings.attacks for e in settings.eps]
    extra += [f"auc_{d}" for d in settings.detectors]
    columns |= {k: [] for k in extra}
    for row in rows:
        done = row["status"] == "finished"
        for key in ("arch", "resolution", "init", "status", "reason", "seconds"):
            columns[key].append(row[key])
        for key in ("n_parameters", "test_acc", "test_auc", "sharpness", "vanishing_fraction"):
            columns[key].append(row[key] if done else None)
        columns["least_eps_lo"].append(row["least_eps"]["lo"] if done else None)
        columns["least_eps_hi"].append(row["least_eps"]["hi"] if done else None)
        for a in settings.attacks:
            for e in settings.eps:
                columns[f"adv_acc.{a}.{_eps_label(e)}"].append(row["adv_acc"][a][_eps_label(e)] if done else None)
        for d in settings.detectors:
            columns[f"auc_{d}"].append(row["detection_auc"][d] if done else None)
    return columns


def ablation_figure(rows: Sequence[dict[str, Any]], settings: AblationSettings, dataset: str):
    """Each measured quantity against the input side, one line per (architecture, initialisation)."""
    done = [r for r in rows if r["status"] == "finished"]
    attack = settings.bisect_attack.upper()
    # (title, value of a row; None: the ε bracket)
    panels: list[tuple[str, Any]] = [("test accuracy (%)", lambda r: r["test_acc"] * 100)]
    panels += [(f"{attack} accuracy at ε = {_eps_label(e)} (%)",
                (lambda e: lambda r: r["adv_acc"][settings.bisect_attack][_eps_label(e)] * 100)(e))
               for e in settings.eps]
    panels += [(f"least ε with {attack} acc < {settings.threshold * 100:g} % (×1/255)", None),
               (f"sharpness at {_eps_label(settings.sharpness_radius)} (nats, mean)", lambda r: r["sharpness"]),
               (f"inputs with vanishing ∇ (%)", lambda r: r["vanishing_fraction"] * 100)]
    panels += [(f"{d.upper()} detection AUC (%), {settings.detect_attack.upper()} {_eps_label(settings.detect_eps)}",
                (lambda d: lambda r: r["detection_auc"][d] * 100)(d)) for d in settings.detectors]
    ncols = 4
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.4 * nrows), squeeze=False)
    groups = list(dict.fromkeys((r["arch"], r["init"]) for r in done))
    colours = {arch: f"C{i}" for i, arch in enumerate(dict.fromkeys(r["arch"] for r in rows))}
    sides = sorted({r["resolution"] for r in rows})
    for ax, (title, value) in zip(axes.flat, panels):
        for k, (arch, init) in enumerate(groups):
            group = sorted((r for r in done if r["arch"] == arch and r["init"] == init), key=lambda r: r["resolution"])
            shift = 2 ** (0.04 * (k - (len(groups) - 1) / 2))  # side by side, so equal values stay visible
            xs = [r["resolution"] * shift for r in group]
            style = dict(color=colours[arch], ls="-" if init == "none" else "--", marker="o",
                         label=f"{arch}, {INIT_NAMES[init]}")
            if value is not None:
                ax.plot(xs, [value(r) for r in group], **style)
                continue
            brackets = [_bracket(r) for r in group]
            mids = [(b.midpoint if b.reached else b.eps_max) * 255 for b in brackets]
            low = [m - b.lo * 255 if b.reached else 0 for m, b in zip(mids, brackets)]
            high = [b.hi * 255 - m if b.reached else 0 for m, b in zip(mids, brackets)]
            ax.errorbar(xs, mids, yerr=[low, high], capsize=3, **style)
            over = [(x, m) for x, m, b in zip(xs, mids, brackets) if not b.reached]
            if over:
                ax.scatter(*zip(*over), marker="^", s=70, color=colours[arch], zorder=3)
            ax.axhline(settings.eps_max * 255, color="grey", lw=0.8, ls=":")
            ax.set_yscale("log", base=2)
            ax.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        if "(%)" in title:
            ax.set_ylim(-4, 104)
        ax.set_title(title, fontsize=9)
        ax.set_xscale("log", base=2)
        ax.set_xticks(sides, [str(s) for s in sides])
        ax.minorticks_off()
        ax.set_xlabel("input side (px)", fontsize=8)
        ax.tick_params(labelsize=8)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower right", fontsize=8, title="▲: above ε_max (not reached)", title_fontsize=8)
    n = next((r["n_attacked"] for r in done), 0)
    fig.suptitle(f"{dataset}: ablation of input side, initialisation and capacity ({n} attacked test images each)",
                 fontsize=10)
    fig.tight_layout()
    return fig


def compare_brackets(a: EpsBracket, b: EpsBracket) -> str:
    """How the least successful ε moved from ``a`` to ``b``: ``lowers``, ``raises``, ``unchanged``
    (the brackets overlap) or ``above`` (neither reached ε* below ε_max)."""
    if not a.reached and not b.reached:
        return "above"
    if not a.reached or (b.reached and b.hi <= a.lo):
        return "lowers"
    if not b.reached or b.lo >= a.hi:
        return "raises"
    return "unchanged"


def _chain(rows: Sequence[dict[str, Any]], settings: AblationSettings) -> str:
    """Other measured quantities along a sequence of cells, ``a → b → c``."""
    arrow = lambda values: " → ".join(values)  # noqa: E731
    eps = settings.eps[0]
    parts = [f"{settings.bisect_attack.upper()} accuracy at {_eps_label(eps)} "
             + arrow(f"{_pct(r['adv_acc'][settings.bisect_attack][_eps_label(eps)])} %" for r in rows),
             f"sharpness at {_eps_label(settings.sharpness_radius)} " + arrow(f"{r['sharpness']:.3g}" for r in rows) + " nats",
             "test accuracy " + arrow(f"{_pct(r['test_acc'])} %" for r in rows)]
    parts += [f"{d.upper()} AUC " + arrow(f"{_pct(r['detection_auc'][d])} %" for r in rows) for d in settings.detectors]
    parts.append("vanishing gradients " + arrow(f"{_pct(r['vanishing_fraction'])} %" for r in rows))
    return "; ".join(parts)


def _sentence(rows: Sequence[dict[str, Any]], change: str, settings: AblationSettings) -> tuple[str, str]:
    """The verdict of ``change`` (e.g. "upsampling 28 → 128 px") on the least successful ε between
    the first and last of ``rows``, and a sentence with it and the other quantities."""
    first, last = _bracket(rows[0]), _bracket(rows[-1])
    verdict = compare_brackets(first, last)
    path = " → ".join(_bracket(r).text() for r in rows)
    what = f"the least ε at which {settings.bisect_attack.upper()} leaves accuracy below {settings.threshold * 100:g} %"
    if verdict in ("lowers", "raises"):
        text = f"{change} {verdict} {what} from {first.text()} to {last.text()} ×1/255"
        text += f" (every step: {path})" if len(rows) > 2 else ""
    elif verdict == "unchanged":
        text = f"{change} leaves {what} unchanged within the bisection brackets ({path} ×1/255)"
    else:
        text = f"{change} leaves {what} above ε_max = {_eps_label(settings.eps_max)} ({path})"
    return verdict, f"{text}; {_chain(rows, settings)}."


def _tally(verdicts: list[str], factor: str) -> str:
    if not verdicts:
        return ""
    count = {k: verdicts.count(k) for k in ("lowers", "raises", "unchanged", "above")}
    return (f"Over {len(verdicts)} comparison{'s' * (len(verdicts) > 1)}, {factor} lowered the least successful ε in "
            f"{count['lowers']}, raised it in {count['raises']}, left it unchanged within the brackets in "
            f"{count['unchanged']} and above ε_max in {count['above']}.")


def findings(rows: Sequence[dict[str, Any]], settings: AblationSettings) -> str:
    """Markdown: per factor, the measured change between cells that differ in that factor only."""
    done = [r for r in rows if r["status"] == "finished"]
    out = ["# What each factor changed (generated from the measured cells)", ""]

    out += ["## Input resolution", ""]
    verdicts = []
    for arch, init in dict.fromkeys((r["arch"], r["init"]) for r in done):
        group = sorted((r for r in done if r["arch"] == arch and r["init"] == init), key=lambda r: r["resolution"])
        if len(group) > 1:
            change = "upsampling " + " → ".join(str(r["resolution"]) for r in group) + " px"
            verdict, text = _sentence(group, change, settings)
            verdicts.append(verdict)
            out.append(f"- **{arch}, {INIT_NAMES[init]}**: {text}")
    out += [_tally(verdicts, "upsampling") or "- not measured: no architecture finished at two resolutions.", ""]

    out += ["## Initialisation", ""]
    verdicts = []
    for arch, side in dict.fromkeys((r["arch"], r["resolution"]) for r in done):
        pair = {r["init"]: r for r in done if r["arch"] == arch and r["resolution"] == side}
        if len(pair) == 2:
            verdict, text = _sentence([pair["none"], pair["imagenet"]], "ImageNet weights instead of training from scratch",
                                      settings)
            verdicts.append(verdict)
            out.append(f"- **{arch}, {side} px**: {text}")
    skipped = dict.fromkeys(f"{r['arch']}: {r['reason']}" for r in rows if r["status"] == "skipped")
    if skipped:
        out.append("- ImageNet cells skipped: " + "; ".join(skipped))
    out += [_tally(verdicts, "ImageNet initialisation") or "- not measured: no cell finished with both initialisations.", ""]

    out += ["## Capacity", ""]
    verdicts = []
    for side, init in dict.fromkeys((r["resolution"], r["init"]) for r in done):
        group = sorted((r for r in done if r["resolution"] == side and r["init"] == init), key=lambda r: r["n_parameters"])
        if len(group) > 1:
            change = "more parameters, " + " → ".join(f"{r['arch']} ({_millions(r['n_parameters'])})" for r in group)
            verdict, text = _sentence(group, change, settings)
            verdicts.append(verdict)
            out.append(f"- **{side} px, {INIT_NAMES[init]}**: {text}")
    out += [_tally(verdicts, "more parameters") or "- not measured: no resolution finished with two architectures.", ""]

    failed = [r for r in rows if r["status"] == "failed"]
    if failed:
        out += ["## Failed cells", ""] + [f"- {Cell(r['resolution'], r['init'], r['arch']).label()}: {r['reason']}"
                                         for r in failed] + [""]
    return "\n".join(out)


__all__ = ["AblationOutcome", "AblationSettings", "Cell", "INITS", "ablation_figure", "ablation_table", "compare_brackets", "findings",
           "make_grid", "parse_resolutions", "run_ablation", "run_cell"]
