"""Adaptive detection (``medart detect --adaptive``, ``medart adaptive``): every fitted detector that
can be attacked through a differentiable path (:data:`medart.attacks.adaptive.LOGITS`) is attacked
on AdvTest by an attacker that knows it (:class:`~medart.attacks.losses.DetectorAwareLoss`, same ε,
step size and start as the plain attack, same backend), then scored on those examples by the real,
unchanged detector. The λ search and the restarts run the attack once per (weight λ, restart) and
keep, per image, the best example (:func:`best_of`), so adding a weight or a restart never makes
the attack weaker. The budget is separate from the plain attack's (:class:`AdaptiveBudget`), for
the literature's sanity checks: more steps and restarts should not lower the adaptive success.

A second adaptive attack needs no detector: feature matching (:mod:`medart.attacks.feature_matching`)
pulls each AdvTest image's penultimate features towards those of a clean AdvTrain image of the
class the model ranks second, and every fitted detector scores the result. It does not read the
classifier's decision, so its success rate is measured, not assumed.

One MLflow child run per (detector, attack at ε, adaptive attack), holding its examples as the
attack stage stores its own (``adversarial/adv_test.npz``: ``x_adv``, ``labels``, ``indices`` of
the AdvTest images, plus the detector's ``scores``; :mod:`medart.attacks.cache`), so every number
of the run can be rebuilt and scored again after it; the parent gets ``adaptive.md``, metrics and
``figures/adaptive.png`` (:func:`log_adaptive`).
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from dataclasses import dataclass

import mlflow
import numpy as np
import torch
from torch.utils.data import TensorDataset

from medart import tracking
from medart.attacks import AttackSpec, cache, make_attack
from medart.attacks.adaptive import LOGITS, DetectorHead, detector_head
from medart.attacks.feature_matching import FeatureMatching, choose_guides
from medart.attacks.losses import DetectorAwareLoss
from medart.detectors import fit_check
from medart.detectors.pairs import Pairs
from medart.errors import ConfigError
from medart.intervals import Estimate, proportion
from medart.models.evaluation import predict
from medart.render.detection import adaptive_figure, adaptive_table
from medart.stages.target import RunOptions, Target

FALSE_POSITIVES = 0.05  # the operating point: 5 % of clean AdvTest images flagged
# A logit margin of 3: the CW term keeps the example misclassified while the detector term pulls
# (tests/test_adaptive.py's setting: 92 % success at 32/255 against 80 % with a margin of 0).
KAPPA = 3.0
DETECTOR_AWARE, FEATURE_MATCH = "detector-aware", "feature-match"  # AdaptiveRow.adaptive
# λ search: the detectors' logits differ in scale by orders of magnitude, and one λ that is too
# large trades misclassification for a low score (DFeat's surrogate at 32/255 on the main job's
# ResNet-50: 84 % undetected success with λ ∈ {0.1, 1}, 100 % once 0.01 is added; docs/detection-protocol.md)
WEIGHTS = (0.01, 0.1, 1.0)
#: the numbers of an :class:`AdaptiveRow`, each an :class:`~medart.intervals.Estimate`, logged under these names
ESTIMATES = ("auc", "auc_adaptive", "success", "success_adaptive", "undetected", "undetected_adaptive")


@dataclass(frozen=True)
class AdaptiveBudget:
    """The adaptive attacks' budget: the λ ``weights`` of the detector-aware loss, ``steps``
    (``None``: the plain attack's) and ``restarts``: restart 0 starts as the plain attack does
    (from x for BIM), restart r ≥ 1 from a uniform random point of the ε-ball, seeded seed + r.
    The step size stays the plain attack's, so more steps reach further into the ball."""

    weights: tuple[float, ...] = WEIGHTS
    steps: int | None = None
    restarts: int = 1

    def __post_init__(self) -> None:
        if not self.weights or min(self.weights) <= 0:
            raise ConfigError(f"`adaptive_weights` must be numbers > 0 such as 0.01,0.1,1, got {self.weights}")
        if self.steps is not None and self.steps < 1:
            raise ConfigError(f"`adaptive_steps` must be >= 1 (or unset: the plain attack's steps), got {self.steps}")
        if self.restarts < 1:
            raise ConfigError(f"`adaptive_restarts` must be >= 1, got {self.restarts}")

    def spec(self, spec: AttackSpec, restart: int = 0) -> AttackSpec:
        """The plain ``spec`` at this budget's steps, with a random start from restart 1 on."""
        return dataclasses.replace(spec, steps=spec.steps if self.steps is None else self.steps,
                                   random_start=spec.random_start or restart > 0)

    def params(self) -> dict:
        return {"adaptive.weights": ",".join(map(str, self.weights)), "adaptive.steps": self.steps or "plain",
                "adaptive.restarts": self.restarts}


@dataclass(frozen=True)
class AdaptiveRow:
    """One detector against one attack at ε on AdvTest: AUC, success rate (the share of AdvTest
    images misclassified) and undetected success rate (misclassified and not flagged at the
    threshold flagging ``FALSE_POSITIVES`` of the clean images), for the plain examples of
    ``attack`` (the detector was fitted on its AdvTrain examples) and for those of the
    ``adaptive`` attack (``detector-aware`` or ``feature-match``); fractions in [0, 1], each with
    its 95 % interval and n, the AdvTest pairs (:class:`~medart.intervals.Estimate`: DeLong for the
    AUCs, Wilson for the rates, whose n are the images the model classified correctly, the pairs)."""

    detector: str
    attack: str
    eps: float
    auc: Estimate
    auc_adaptive: Estimate
    success: Estimate
    success_adaptive: Estimate
    undetected: Estimate
    undetected_adaptive: Estimate
    seconds: float
    run_id: str
    adaptive: str = DETECTOR_AWARE


def unflagged(scores: np.ndarray) -> np.ndarray:
    """Which of n adversarial examples ``(n,)`` the detector lets through, given its ``scores``
    ``(2n,)`` on their clean images then on them: a score at most the clean scores' ``1 −
    FALSE_POSITIVES`` quantile."""
    n = len(scores) // 2
    return scores[n:] <= np.quantile(scores[:n], 1.0 - FALSE_POSITIVES)


def undetected_success(fooled: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """``(success rate, undetected success rate)`` of n adversarial examples: ``fooled`` ``(n,)``
    bool, ``scores`` ``(2n,)`` the detector's on their clean images then on them (:func:`unflagged`)."""
    return float(fooled.mean()), float((fooled & unflagged(scores)).mean())


def best_of(fooled: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """Per image, the index ``(n,)`` of the best of W candidate examples, given ``fooled`` and the
    detector's ``scores`` ``(W, n)``: one that fools the model unflagged (score ≤ ``threshold``)
    first, then one that fools it, then the lowest score (ties: the lower index)."""
    return np.lexsort((scores, ~fooled, ~(fooled & (scores <= threshold))), axis=0)[0]


def _fooled(model, adversarial: torch.Tensor, labels: np.ndarray, run: RunOptions) -> np.ndarray:
    logits = predict(model, TensorDataset(adversarial, torch.from_numpy(labels)), run.batch_size, run.device)[0]
    return logits.argmax(1) != labels


def _scores(detector, clean: torch.Tensor, adversarial: torch.Tensor) -> np.ndarray:
    """The detector's scores ``(2n,)`` on the clean images then on ``adversarial``, scored together
    as the detection stage scores its pairs (LID's batch references are the clean images)."""
    return detector.detect(torch.cat([clean, adversarial]), x_clean=clean)[0]["scores"]


def adaptive_examples(target: Target, spec: AttackSpec, detector, head: DetectorHead, pairs, run: RunOptions,
                      budget: AdaptiveBudget, clean_scores: np.ndarray | None = None) -> tuple[torch.Tensor, np.ndarray]:
    """The adaptive examples of the clean AdvTest images of ``pairs`` against ``detector`` (attacked
    through ``head``, its :func:`~medart.attacks.adaptive.detector_head`), best of the λ weights ×
    restarts of ``budget`` per image, and the detector's scores ``(2n,)`` on the clean images then
    on them. ``clean_scores`` ``(n,)``: the detector's scores on the clean images, when the caller
    has them already (scored beside the plain examples, as :func:`_scores` does)."""
    k, labels, n = target.num_classes, torch.from_numpy(pairs.labels), len(pairs)
    if clean_scores is None:
        clean_scores = _scores(detector, pairs.clean, pairs.adversarial)[:n]
    candidates, scores, fooled = [], [], []
    for weight in budget.weights:
        for restart in range(budget.restarts):
            attacker = make_attack(head, budget.spec(spec, restart), 2 * k, run.backend, run.batch_size, run.device,
                                   loss=DetectorAwareLoss(KAPPA, weight))
            candidates.append(attacker.generate(pairs.clean, labels, seed=target.seed + restart, progress=run.progress))
            scores.append(_scores(detector, pairs.clean, candidates[-1])[n:])
            fooled.append(_fooled(target.model, candidates[-1], pairs.labels, run))
    pick = best_of(np.stack(fooled), np.stack(scores), np.quantile(clean_scores, 1.0 - FALSE_POSITIVES))
    rows = torch.arange(n)
    best = torch.stack(candidates)[torch.from_numpy(pick), rows]
    return best, np.r_[clean_scores, np.stack(scores)[pick, rows.numpy()]]


def feature_match_examples(target: Target, spec: AttackSpec, pairs: dict, run: RunOptions,
                           budget: AdaptiveBudget) -> torch.Tensor:
    """Feature-matching examples of the clean AdvTest images of ``pairs`` (``{"adv_train",
    "adv_test"}`` :class:`~medart.detectors.pairs.Pairs`) at ``budget``'s steps: each guided by a
    clean AdvTrain image (seeded choice) of the class the model ranks second on it (K = 2: the
    other class), or by a clean Train reference image of it where AdvTrain has none (only the
    images the model classifies correctly are pairs: a weak model may leave a class out)."""
    test, fit = pairs["adv_test"], pairs["adv_train"]
    probs = predict(target.model, TensorDataset(test.clean, torch.from_numpy(test.labels)), run.batch_size, run.device)[0]
    probs[np.arange(len(test)), test.labels] = -np.inf
    ref_x, ref_y = target.reference
    extra = ~np.isin(ref_y.numpy(), fit.labels)
    pool = torch.cat([fit.clean, ref_x[torch.from_numpy(extra)]])
    guides = choose_guides(probs.argmax(1), np.r_[fit.labels, ref_y.numpy()[extra]], target.seed)
    attack = FeatureMatching(target.model, budget.spec(spec), run.backend, "dfeat", run.batch_size, run.device)
    return attack.generate(test.clean, pool[torch.from_numpy(guides)], seed=target.seed)


def adaptive_rows(target: Target, spec: AttackSpec, fitted: dict, pairs: dict, run: RunOptions,
                  budget: AdaptiveBudget = AdaptiveBudget()) -> list[AdaptiveRow]:
    """For each attackable detector in ``fitted`` (name → detector fitted on split 0) its
    detector-aware row, then for every detector its feature-matching row, each as a child run of
    the active run; ``pairs`` are the attack's ``{"adv_train", "adv_test"}`` pairs."""
    test, fit = pairs["adv_test"], pairs["adv_train"]
    fit_images = torch.cat([fit.clean, fit.adversarial])
    plain_fooled = _fooled(target.model, test.adversarial, test.labels, run)
    plain = {name: (plain_fooled, _scores(detector, test.clean, test.adversarial))  # (fooled (n,), scores (2n,))
             for name, detector in fitted.items()}
    rows = []
    for name, detector in fitted.items():
        if name in LOGITS:
            start = time.perf_counter()
            try:  # the DFeat/QFeat surrogates are fitted here, on the detector's own AdvTrain inputs
                head = detector_head(target.model, detector, target.num_classes, fit_images=fit_images)
            except ConfigError as err:  # a setting without a fixed function to attack, e.g. LID reference=batch
                warnings.warn(f"adaptive: {name} is left out: {err}", stacklevel=2)
                mlflow.set_tag(f"medart.adaptive_skipped.{name}", str(err))
                continue
            adaptive, scores = adaptive_examples(target, spec, detector, head, test, run, budget, plain[name][1][:len(test)])
            fooled = _fooled(target.model, adaptive, test.labels, run)
            rows.append(_row(target, spec, run, budget, detector, plain[name], (fooled, scores),
                             dataclasses.replace(test, adversarial=adaptive), DETECTOR_AWARE, start))
    start = time.perf_counter()
    matched = feature_match_examples(target, spec, pairs, run, budget)
    fooled, seconds = _fooled(target.model, matched, test.labels, run), time.perf_counter() - start
    for name, detector in fitted.items():
        start = time.perf_counter() - seconds  # each row's time: making the examples, then its own scoring
        rows.append(_row(target, spec, run, budget, detector, plain[name], (fooled, _scores(detector, test.clean, matched)),
                         dataclasses.replace(test, adversarial=matched), FEATURE_MATCH, start))
    return rows


def _row(target: Target, spec: AttackSpec, run: RunOptions, budget: AdaptiveBudget, detector,
         plain: tuple[np.ndarray, np.ndarray], adaptive: tuple[np.ndarray, np.ndarray], examples: Pairs, kind: str,
         start: float) -> AdaptiveRow:
    """One row of the fitted ``detector`` from (fooled ``(n,)``, scores ``(2n,)``) of the plain and
    the adaptive examples, logged as a child run of the active run with the adaptive ``examples``
    (AdvTest pairs) and their scores; ``start`` the ``perf_counter`` its time counts from. A
    degenerate fit (:mod:`medart.detectors.fit_check`) leaves its AUCs and undetected success rates
    NaN and tags the run ``medart.degenerate_fit.<detector>``."""
    name, n = detector.name, len(plain[0])
    y = np.r_[np.zeros(n), np.ones(n)]
    success, success_a = proportion(plain[0]), proportion(adaptive[0])
    undetected, undetected_a = (proportion(fooled & unflagged(scores)) for fooled, scores in (plain, adaptive))
    fit_reason = getattr(detector, "degenerate_fit_", "")
    (auc, reason), (auc_a, reason_a) = (fit_check.detection_interval(y, scores, fit_reason) for scores in (plain[1], adaptive[1]))
    if fit_reason:  # a detector that measured nothing flags nothing: no undetected rate to speak of
        undetected = undetected_a = Estimate(float("nan"), float("nan"), float("nan"), n)
    label = f"{'adaptive' if kind == DETECTOR_AWARE else kind}-{name}-{spec.label()}-{run.backend}"
    with tracking.start_run(tracking.experiment_name(target.dataset, "detect"), label) as child:
        if reason or reason_a:
            mlflow.set_tag(f"{fit_check.TAG}.{name}", reason or f"on the {kind} examples: {reason_a}")
        row = AdaptiveRow(name, spec.name, spec.eps, auc, auc_a,
                          success, success_a, undetected, undetected_a, time.perf_counter() - start, child.info.run_id, kind)
        mlflow.log_params(spec.as_params() | budget.params() | {
            "detector": name, "backend": run.backend, "adaptive.attack": kind, "adaptive.kappa": KAPPA,
            "n_test_pairs": len(plain[0]), "model_uri": target.model_uri})
        mlflow.log_metrics({"seconds": row.seconds} | {k: v for m in ESTIMATES for k, v in getattr(row, m).metrics(m).items()})
        cache.save("adv_test", examples.adversarial, examples.labels, examples.indices, scores=adaptive[1])
    return row


def log_adaptive(rows: list[AdaptiveRow], title: str) -> None:
    """On the active (parent) run: ``adaptive.md``, metrics ``<attack>.<m>_<detector>`` (feature
    matching: ``<attack>.feature-match.<m>_<detector>``) with their intervals (``…_ci_low``,
    ``…_ci_high``, ``…_n``) and ``figures/adaptive.png``."""
    mlflow.log_text(adaptive_table(rows), "adaptive.md")
    prefix = lambda r: r.attack if r.adaptive == DETECTOR_AWARE else f"{r.attack}.{r.adaptive}"  # noqa: E731
    mlflow.log_metrics({k: v for r in rows for m in ("auc_adaptive", "success_adaptive", "undetected", "undetected_adaptive")
                        for k, v in getattr(r, m).metrics(f"{prefix(r)}.{m}_{r.detector}").items()})
    tracking.log_figure(adaptive_figure(rows, title), "figures/adaptive.png")


__all__ = ["AdaptiveBudget", "AdaptiveRow", "ESTIMATES", "FALSE_POSITIVES", "WEIGHTS", "adaptive_examples", "adaptive_rows",
           "best_of", "feature_match_examples", "log_adaptive", "undetected_success", "unflagged"]
