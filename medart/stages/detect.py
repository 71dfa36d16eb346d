"""The paper's detection stage (Tables 4 and 5): detectors fitted on AdvTrain, scored on AdvTest,
and scored again on every other attack's examples (transfer), each step an MLflow run.

Only test images the model classifies correctly are attacked and used; a clean image is a
negative (0), its adversarial version a positive (1), and the two always fall on the same side of
a split. The adversarial examples come from the attack stage, so a cached attack run is reused.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import mlflow
import numpy as np
import torch
from sklearn.metrics import roc_curve
from sklearn.model_selection import train_test_split
from torch.utils.data import TensorDataset
from tqdm.auto import tqdm

from medart import tracking
from medart.attacks import AttackSpec, make_spec, parse_names
from medart.attacks.adaptive import LOGITS
from medart.attacks.specs import ATTACKS, PAPER_ATTACKS, attacks_where, check_backend
from medart.budget import Eps, eps_params
from medart.detectors import DETECTORS, NEEDS_REFERENCES, fit_check, make_detector
from medart.detectors.activations import resolve_layers
from medart.detectors.pairs import Pairs
from medart.errors import ConfigError, DataError
from medart.intervals import Estimate, interval_metrics
from medart.models.adapter import PENULTIMATE
from medart.models.evaluation import predict
from medart.models.sanity import ModelCheck
from medart.numbers import few_pairs
from medart.render.detection import (adaptive_table, auc_figure, auc_table, roc_figure, roc_panels, transfer_figure,
                                     transfer_table)
from medart.render.notes import note
from medart.stages.adaptive import AdaptiveBudget, adaptive_rows, log_adaptive
from medart.stages.attack import attack
from medart.stages.guard import guard
from medart.stages.target import RunOptions, Target

PARTS = ("adv_train", "adv_test")  # fitted on, scored on
logger = logging.getLogger("medart")
ROC_ALL = "figures/roc_all.png"  # the parent's: every detector's ROC curve, a panel per attack


@dataclass(frozen=True)
class DetectRequest:
    """What the detection stage measures: the ``attacks`` (paper settings at L∞ budget ``eps`` in
    [0, 1] pixels, unless ``steps`` / ``step_size`` are given; both held as
    :class:`~medart.budget.Eps`, from an Eps or a float), the ``detectors`` with their
    ``params`` (detector → {setting: value}), ``repeats`` splits (1: AdvTrain / AdvTest only),
    whether only adversarial examples that fool the model count (Ma et al. 2018), and whether each
    detector is also scored on every other attack's examples (``transfer``, Table 5)."""

    attacks: tuple[str, ...] = PAPER_ATTACKS
    eps: Eps = Eps(1 / 255)
    detectors: tuple[str, ...] = ("kd", "lid", "dfeat", "qfeat", "bu", "mahalanobis")
    params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    repeats: int = 1
    only_successful: bool = False
    transfer: bool = True
    steps: int | None = None  # attack steps; None: the paper's
    step_size: Eps | None = None  # pixels; None: the paper's
    adaptive: bool = False  # also attack each differentiable detector on AdvTest (medart.stages.adaptive)
    budget: AdaptiveBudget = AdaptiveBudget()  # the adaptive attacks' λ weights, steps and restarts

    def __post_init__(self) -> None:
        object.__setattr__(self, "eps", Eps(self.eps))
        if self.step_size is not None:
            object.__setattr__(self, "step_size", Eps(self.step_size, "step_size"))


@dataclass
class DetectionOutcome:
    run_id: str
    auc: dict[str, dict[str, float]]  # attack → detector → ROC-AUC on AdvTest (mean over repeats)
    auc_std: dict[str, dict[str, float]]
    transfer: dict[str, dict[str, dict[str, Estimate]]]  # detector → fitted on attack → scored on attack → AUC
    counts: dict[str, dict[str, int]]  # attack → {"fit": pairs, "test": pairs}
    attack_runs: dict[str, str] = field(default_factory=dict)
    child_runs: dict[str, str] = field(default_factory=dict)
    check: ModelCheck | None = None  # the degenerate-model guard on the target
    adaptive: list = field(default_factory=list)  # AdaptiveRow per (detector, attack), with `adaptive`
    # attack → detector → ROC-AUC on AdvTest (split 0) with its 95 % DeLong interval, n = AdvTest pairs
    intervals: dict[str, dict[str, Estimate]] = field(default_factory=dict)


def detection_pairs(model, clean: tuple[torch.Tensor, torch.Tensor], x_adv: torch.Tensor, only_successful: bool = False,
                    run: RunOptions = RunOptions(), what: str = "", indices: np.ndarray | None = None) -> Pairs:
    """The pairs of the clean images ``(x, y)`` that ``model`` classifies correctly (and, with
    ``only_successful``, whose adversarial version in ``x_adv`` it misclassifies, as in Ma et al. 2018);
    ``indices``: the images' indices in their split part, kept with the pairs."""
    x, y = clean
    labels = y.numpy()
    keep = predict(model, TensorDataset(x, y), run.batch_size, run.device)[0].argmax(1) == labels
    if only_successful:
        keep &= predict(model, TensorDataset(x_adv, y), run.batch_size, run.device)[0].argmax(1) != labels
    if keep.sum() < 2:
        which = "classified correctly and attacked successfully" if only_successful else "classified correctly"
        raise DataError(f"only {int(keep.sum())} {what} images are {which}; detection needs at least 2: "
                        "attack more images (raise `max_examples`) or a stronger attack")
    return Pairs(x[torch.from_numpy(keep)], x_adv[torch.from_numpy(keep)], labels[keep],
                 None if indices is None else np.asarray(indices)[keep])


def resplit(fit: Pairs, test: Pairs, repeat: int, seed: int) -> tuple[Pairs, Pairs]:
    """Repeat 0: AdvTrain / AdvTest as given. Repeat r > 0: both pooled and split again at the same
    sizes, stratified by class, seeded by ``seed + r`` (pairs stay together; their indices, of two
    split parts, are dropped)."""
    if repeat == 0:
        return fit, test
    pooled = Pairs(torch.cat([fit.clean, test.clean]), torch.cat([fit.adversarial, test.adversarial]),
                   np.r_[fit.labels, test.labels])
    counts = np.bincount(pooled.labels)
    stratify = pooled.labels if counts[counts > 0].min() >= 2 else None
    a, b = train_test_split(np.arange(len(pooled)), test_size=len(test), random_state=seed + repeat, stratify=stratify)
    return pooled.take(np.sort(a)), pooled.take(np.sort(b))


def parse_detector_params(items: Sequence[str], detectors: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``["lid.k=10", "lid.layers=input,layer4", "kd.bandwidth=auto"]`` → ``{"lid": {...}, "kd": {...}}``.

    Values become ``int``, ``float``, ``None`` (``none``), a list (comma-separated) or stay strings.
    """
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        name, dot, param = key.strip().partition(".")
        if not sep or not dot or not param:
            raise ConfigError(f"detector parameter '{item}' is not DETECTOR.NAME=VALUE, e.g. lid.k=10")
        if name not in detectors:
            raise ConfigError(f"parameter '{item}' is for detector '{name}', which is not among {', '.join(detectors)}")
        out.setdefault(name, {})[param] = _parse_value(value.strip(), list_ok=True)
    return out


def _parse_value(text: str, list_ok: bool = False) -> Any:
    if list_ok and "," in text:
        return [_parse_value(part.strip()) for part in text.split(",")]
    if text.lower() == "none":
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def detect(target: Target, request: DetectRequest, run: RunOptions = RunOptions()) -> DetectionOutcome:
    """Table 4 and Table 5 of the paper for ``target``'s model and data.

    Each attack runs as the attack stage does (its own MLflow run, reused from the cache when
    possible, never under ``run.parent_run_id``). Then, under one parent run in
    ``medart/<dataset>/detect``, one child run per attack fits every detector on the AdvTrain pairs
    and scores ROC-AUC on the AdvTest pairs (``repeats`` > 1 adds re-drawn stratified splits: mean
    ± std), with detector parameters as params, ``auc_<detector>`` metrics and ROC curves; each AUC
    has the 95 % DeLong interval of the AdvTest pairs (split 0) and their number as
    ``auc_<detector>_ci_low``, ``_ci_high``, ``_n`` (:mod:`medart.intervals`), and fewer than
    :data:`~medart.intervals.MIN_PAIRS` of them is warned about, once per attack. The
    parent gets the AUC table (``detection_auc.md``/``.json``, ``figures/detection_auc.png``, and
    as its description, with the pairs' n), every ROC curve in one figure (``figures/roc_all.png``,
    a panel per attack) and,
    with ``transfer`` and several attacks, each detector fitted on one attack and scored on every
    attack's AdvTest pairs (``transfer.md``/``.json``, ``figures/transfer.png``). The parent and
    the child runs carry the degenerate-model guard's tag and metrics, and the tables print the
    clean and balanced accuracy of the attacked images beside the AUCs. The target's
    ``reference`` clean Train images serve KD, LID and Mahalanobis as their clean reference set.
    With ``adaptive``, :func:`medart.stages.adaptive.adaptive_rows` adds the adaptive attacks'
    child runs and the parent's ``adaptive.md`` and ``figures/adaptive.png``. A degenerate fit
    (:mod:`medart.detectors.fit_check`) is warned about, tagged ``medart.degenerate_fit.<detector>``
    on the child run, and its AUC is NaN everywhere (shown as ``degenerate``).
    Every setting is checked before the first attack runs.
    """
    request, specs = _checked(target, request)
    for spec in specs.values():
        check_backend(spec.name, run.backend)
    attack_runs: dict[str, str] = {}
    pairs: dict[str, dict[str, Pairs]] = {}
    for name, spec in specs.items():
        out = attack(target, spec, dataclasses.replace(run, parent_run_id=None))
        attack_runs[name] = out.run_id
        pairs[name] = {part: detection_pairs(target.model, out.clean[part], out.adversarial[part], request.only_successful,
                                             run, f"{part} {name}", target.indices[part]) for part in PARTS}

    bar = tqdm(total=len(specs) * len(request.detectors) * request.repeats, desc="detectors", disable=not run.progress)
    label = f"detect-eps{request.eps}-{run.backend}"
    with tracking.start_run(tracking.experiment_name(target.dataset, "detect"), label, run.parent_run_id) as parent:
        mlflow.set_tags(target.tags)  # the version an alias named, for later comparisons
        mlflow.log_params({"model_uri": target.model_uri, "dataset": target.dataset, "attacks": ",".join(specs)}
                          | eps_params("eps", request.eps) | {"backend": run.backend, "detectors": ",".join(request.detectors),
                           "repeats": request.repeats, "only_successful": request.only_successful,
                           "reference_size": len(target.reference[0]), "max_examples": target.max_examples,
                           "seed": target.seed})
        mlflow.log_dict(target.splits.record(), "splits.json")  # AdvTrain / AdvTest and what kept patients apart
        mlflow.set_tags({f"medart.attack_run.{a}": r for a, r in attack_runs.items()})
        check = guard(target, run)
        studies = {name: _detect_attack(target, request, run, spec, pairs[name], attack_runs[name], bar)
                   for name, spec in specs.items()}
        bar.close()
        auc = {name: study.auc for name, study in studies.items()}
        auc_std = {name: study.auc_std for name, study in studies.items()}
        intervals = {name: study.intervals for name, study in studies.items()}
        _log_auc(target, request, run, auc, intervals, auc_std, check)
        _log_roc(target, request, run, {f"{specs[name].label()}: {len(pairs[name]['adv_test'])} pairs": study.curves
                                        for name, study in studies.items()})
        transfer: dict[str, dict[str, dict[str, Estimate]]] = {}
        if request.transfer and len(specs) > 1:
            transfer = _transfer(request.detectors, {name: study.fitted for name, study in studies.items()}, pairs)
            _log_transfer(target, request, transfer, check)
        adaptive = [row for name, spec in specs.items() if request.adaptive
                    for row in adaptive_rows(target, spec, studies[name].fitted, pairs[name], run, request.budget)]
        if adaptive:
            log_adaptive(adaptive, f"plain and adaptive attacks, {target.dataset}, ε = {request.eps}, {run.backend}")
        counts = {a: {"fit": len(p["adv_train"]), "test": len(p["adv_test"])} for a, p in pairs.items()}
        tracking.describe(note(f"Detection AUC (%) at ε = {request.eps}, {run.backend}: detectors fitted on "
                               f"AdvTrain pairs, scored on AdvTest pairs ({pair_counts(counts)})",
                               auc_table(intervals, auc if request.repeats > 1 else None,
                                         auc_std if request.repeats > 1 else None, check),
                               adaptive_table(adaptive) if adaptive else ""))
    return DetectionOutcome(parent.info.run_id, auc, auc_std, transfer, counts, attack_runs,
                            {name: study.run_id for name, study in studies.items()}, check, adaptive, intervals)


def _checked(target: Target, request: DetectRequest) -> tuple[DetectRequest, dict[str, AttackSpec]]:
    """``request`` with its detectors deduplicated, and a spec per attack; every setting error
    now, not after the attacks have run."""
    detectors = tuple(dict.fromkeys(parse_names(",".join(request.detectors), tuple(DETECTORS), "detector")))
    for name in request.params:
        if name not in detectors:
            raise ConfigError(f"parameters given for detector '{name}', which is not among {', '.join(detectors)}")
    if request.repeats < 1:
        raise ConfigError(f"`repeats` must be >= 1, got {request.repeats}")
    if request.adaptive and not set(detectors) & set(LOGITS):
        raise ConfigError(f"`adaptive` attacks the {', '.join(LOGITS)} detectors; add one of them to `detectors`")
    budget = request.budget
    if target.reference is None:
        raise ConfigError(f"`reference_size` must be >= 1 clean Train images, got {target.reference_size}")
    specs = {name: make_spec(name, request.eps, request.steps, request.step_size) for name in dict.fromkeys(request.attacks)}
    if not specs:
        raise ConfigError(f"`attacks` is empty; choose from {', '.join(ATTACKS)}")
    if request.adaptive:
        resolve_layers(target.model, [PENULTIMATE])  # feature matching pulls on the penultimate features
        for spec in specs.values():
            if spec.step_size is None:
                *some, last = attacks_where(lambda a: a.defaults.step is not None)
                takers = f"{', '.join(some)} or {last}" if some else last
                raise ConfigError(f"`adaptive` attacks take {spec.name}'s budget with a loss of their own, which only the "
                                  f"step-size attacks allow; use {takers} in `attacks`")
            budget.spec(spec, restart=1)  # e.g. fgsm at adaptive_steps > 1
    n_reference = len(target.reference[0])
    for name in detectors:
        detector = make_detector(name, target.model, **request.params.get(name, {}))
        detector.set_params()  # ART's hook: runs the detector's _check_params
        size = getattr(detector, "reference_size", None)  # LID's fixed batch (KD uses every reference image)
        if getattr(detector, "reference", None) == "train" and size is not None and size > n_reference:
            raise ConfigError(f"{name} reference_size {detector.reference_size} exceeds the {n_reference} clean "
                              f"reference images; raise `reference_size` or give {name} a smaller one in `params`")
    return dataclasses.replace(request, detectors=detectors, attacks=tuple(specs)), specs


def pair_counts(counts: Mapping[str, Mapping[str, int]]) -> str:
    """``bim 338/84, fgsm 338/84``: per attack, the AdvTrain / AdvTest pairs (:attr:`DetectionOutcome.counts`)."""
    return ", ".join(f"{a} {c['fit']}/{c['test']}" for a, c in counts.items())


@dataclass
class _AttackStudy:
    """One attack's child run: AUC (mean and std over repeats), split 0's AUC with its interval, the
    detectors fitted on split 0 and their ROC curves there."""

    run_id: str
    auc: dict[str, float]
    auc_std: dict[str, float]
    fitted: dict[str, Any]
    intervals: dict[str, Estimate] = field(default_factory=dict)
    curves: dict[str, tuple[np.ndarray, np.ndarray, float]] = field(default_factory=dict)


def _detect_attack(target: Target, request: DetectRequest, run: RunOptions, spec: AttackSpec, pairs: dict[str, Pairs],
                   attack_run: str, bar: tqdm) -> _AttackStudy:
    """Every detector fitted and scored on one attack's pairs, as a child run of the active run."""
    fit_pairs, test_pairs = pairs["adv_train"], pairs["adv_test"]
    repeats, backend = request.repeats, run.backend
    with tracking.start_run(tracking.experiment_name(target.dataset, "detect"), f"detect-{spec.label()}-{backend}") as child:
        mlflow.set_tag("medart.attack_run", attack_run)
        guard(target, run)  # the report reads clean and balanced accuracy beside each AUC from here
        mlflow.set_tags(target.tags)  # the version an alias named, for later comparisons
        mlflow.log_params(spec.as_params() | {"backend": backend, "model_uri": target.model_uri, "dataset": target.dataset,
                                              "detectors": ",".join(request.detectors), "repeats": repeats,
                                              "only_successful": request.only_successful, "n_fit_pairs": len(fit_pairs),
                                              "n_test_pairs": len(test_pairs), "seed": target.seed})
        study = _AttackStudy(child.info.run_id, {}, {}, {})
        curves = study.curves
        if warning := few_pairs({f"{spec.name.upper()} at ε = {spec.eps}": len(test_pairs)}):
            logger.warning(warning)
        for name in request.detectors:
            scored = _fit_and_score(name, target, request, run, pairs, bar)
            study.fitted[name] = scored.first
            study.intervals[name] = scored.interval
            curves[name] = (*scored.curve, scored.auc[0])
            # a degenerate repeat makes the mean NaN too: no number averages a fit that measured nothing
            study.auc[name], study.auc_std[name] = float(np.mean(scored.auc)), float(np.std(scored.auc))
            if reason := scored.degenerate():
                fit_check.warn(name, f"{spec.label()}, {len(test_pairs)} AdvTest pairs", reason)
                mlflow.set_tag(f"{fit_check.TAG}.{name}", reason)
            mlflow.log_metrics({f"detect_acc_{name}": scored.accuracy, f"seconds_{name}": scored.seconds})
            mlflow.log_params({f"{name}.{k}": _loggable(v) for k, v in scored.last.get_params().items()})
            mlflow.log_metrics({f"auc_{name}": study.auc[name]} | interval_metrics({f"auc_{name}": scored.interval})
                               | ({f"auc_{name}_std": study.auc_std[name]} if repeats > 1 else {}))
            if repeats > 1:
                mlflow.log_dict({"auc": scored.auc}, f"repeats/{name}.json")
        split = "AdvTest" if repeats == 1 else "AdvTest, split 0"
        tracking.log_figure(roc_figure(curves, f"{target.dataset}: {spec.label()} ({backend}, {split})"), "figures/roc.png")
        mlflow.log_table({"detector": list(study.auc), "auc": list(study.auc.values())} | _interval_columns(study.intervals.values()),
                         "detection_auc.json")
    return study


@dataclass
class _Scored:
    """One detector on one attack: ROC-AUC per repeat (NaN where the fit was degenerate, ``reasons``
    saying why, '' elsewhere); on split 0 its fitted detector, ROC curve (false and true positive
    rates), AUC with its interval, accuracy of its flags (NaN for a degenerate fit) and seconds to
    fit and score."""

    auc: list[float]
    first: Any  # the detector fitted on split 0: scored again on the other attacks (transfer)
    last: Any  # the last repeat's: its settings are the ones logged
    curve: tuple[np.ndarray, np.ndarray]
    interval: Estimate
    accuracy: float
    seconds: float
    reasons: list[str] = field(default_factory=list)

    def degenerate(self) -> str:
        """Why the fit was degenerate, with the repeats where it was when there are several ('' when never)."""
        found = [(r, why) for r, why in enumerate(self.reasons) if why]
        if len(self.reasons) == 1 or not found:
            return found[0][1] if found else ""
        return "; ".join(f"repeat {r}: {why}" for r, why in found)


def _fit_and_score(name: str, target: Target, request: DetectRequest, run: RunOptions, pairs: dict[str, Pairs],
                   bar: tqdm) -> _Scored:
    """Split 0 is AdvTrain / AdvTest; further repeats re-draw it (:func:`resplit`)."""
    values: list[float] = []
    reasons: list[str] = []
    for repeat in range(request.repeats):
        start = time.perf_counter()
        fit, test = resplit(pairs["adv_train"], pairs["adv_test"], repeat, target.seed)
        detector = _fit(name, target, request.params.get(name, {}), fit, run)
        y, scores, flagged = _scores(detector, test)
        auc, reason = _auc(detector, y, scores)
        values.append(auc.value)
        reasons.append(reason)
        if repeat == 0:
            accuracy = float("nan") if reason else float((flagged == y).mean())
            first = _Scored([], detector, detector, tuple(roc_curve(y, scores)[:2]), auc, accuracy,
                            time.perf_counter() - start)
        bar.update()
    return dataclasses.replace(first, auc=values, last=detector, reasons=reasons)


def _fit(name: str, target: Target, params: Mapping[str, Any], fit: Pairs, run: RunOptions):
    settings = {"batch_size": run.batch_size, "device": run.device, "random_state": target.seed} | dict(params)
    detector = make_detector(name, target.model, **settings)
    x, y = fit.xy()
    reference = target.reference
    extra = {"x_ref": reference[0], "y_ref": reference[1].numpy()} if name in NEEDS_REFERENCES else {}
    detector.fit(x, y, x_clean=fit.clean, **extra)  # x_clean: the mini-batch references of Ma et al.'s LID
    return detector


def _scores(detector, pairs: Pairs) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x, y = pairs.xy()
    report, flagged = detector.detect(x, x_clean=pairs.clean)
    return y, report["scores"], flagged


def _auc(detector, y: np.ndarray, scores: np.ndarray) -> tuple[Estimate, str]:
    """ROC-AUC of ``detector``'s ``scores`` with its 95 % DeLong interval over the pairs, or NaN and
    why when its fit is degenerate (:mod:`medart.detectors.fit_check`)."""
    return fit_check.detection_interval(y, scores, getattr(detector, "degenerate_fit_", ""))


def _interval_columns(estimates) -> dict[str, list]:
    """The ``ci_low``, ``ci_high`` and ``n`` columns of an MLflow table, one row per estimate."""
    estimates = list(estimates)
    return {"ci_low": [e.low for e in estimates], "ci_high": [e.high for e in estimates], "n": [e.n for e in estimates]}


def _loggable(value: Any) -> Any:
    return ",".join(map(str, value)) if isinstance(value, (list, tuple)) else value


def _log_auc(target: Target, request: DetectRequest, run: RunOptions, auc: dict[str, dict[str, float]],
             intervals: dict[str, dict[str, Estimate]], auc_std: dict[str, dict[str, float]], check: ModelCheck) -> None:
    """Table 4 on the active (parent) run: metrics ``<attack>.auc_<detector>`` with their intervals,
    Markdown (with the clean and balanced accuracy beside each row), a long MLflow table and a heatmap."""
    mlflow.log_metrics({f"{a}.auc_{d}": v for a, row in auc.items() for d, v in row.items()})
    mlflow.log_metrics(interval_metrics({f"{a}.auc_{d}": e for a, row in intervals.items() for d, e in row.items()}))
    mlflow.log_text(auc_table(intervals, auc if request.repeats > 1 else None, auc_std if request.repeats > 1 else None,
                              check), "detection_auc.md")
    rows = [(a, d, v, auc_std[a][d]) for a, row in auc.items() for d, v in row.items()]
    mlflow.log_table({"attack": [r[0] for r in rows], "detector": [r[1] for r in rows], "auc": [r[2] for r in rows],
                      "auc_std": [r[3] for r in rows]}
                     | _interval_columns(intervals[a][d] for a, d, *_ in rows), "detection_auc.json")
    title = f"detection AUC (%)\n{target.dataset}, ε = {request.eps}, {run.backend}"
    tracking.log_figure(auc_figure(auc, title), "figures/detection_auc.png")


def _log_roc(target: Target, request: DetectRequest, run: RunOptions,
             curves: Mapping[str, Mapping[str, tuple[np.ndarray, np.ndarray, float]]]) -> None:
    """Every detector's ROC curve on the active (parent) run, one figure, a panel per attack
    (``curves``: panel title → detector → curve and AUC)."""
    split = "AdvTest" if request.repeats == 1 else "AdvTest, split 0"
    title = f"{target.dataset}: every detector's ROC at ε = {request.eps} ({run.backend}, {split})"
    tracking.log_figure(roc_panels(curves, title), ROC_ALL)


def _transfer(detectors: Sequence[str], fitted: dict[str, dict[str, Any]],
              pairs: dict[str, dict[str, Pairs]]) -> dict[str, dict[str, dict[str, Estimate]]]:
    """Detector → fitted on attack (split 0) → scored on attack's AdvTest pairs → ROC-AUC with its interval."""
    return {name: {fit_attack: {test_attack: _auc(fitted[fit_attack][name],
                                                  *_scores(fitted[fit_attack][name], pairs[test_attack]["adv_test"])[:2])[0]
                                for test_attack in pairs}
                   for fit_attack in pairs}
            for name in detectors}


def _log_transfer(target: Target, request: DetectRequest, transfer: dict[str, dict[str, dict[str, Estimate]]],
                  check: ModelCheck) -> None:
    """Table 5 on the active (parent) run: Markdown (the clean numbers under it), JSON (each AUC as
    ``auc``, ``auc_ci_low``, ``auc_ci_high``, ``auc_n``) and a heatmap per detector."""
    mlflow.log_text(transfer_table(transfer, check), "transfer.md")
    mlflow.log_dict({d: {f: {t: e.metrics("auc") for t, e in row.items()} for f, row in m.items()} for d, m in transfer.items()},
                    "transfer.json")
    title = f"transfer AUC (%), {target.dataset}, ε = {request.eps}"
    values = {d: {f: {t: e.value for t, e in row.items()} for f, row in m.items()} for d, m in transfer.items()}
    tracking.log_figure(transfer_figure(values, title), "figures/transfer.png")


__all__ = ["DetectRequest", "DetectionOutcome", "detect", "detection_pairs", "pair_counts", "parse_detector_params", "resplit"]
