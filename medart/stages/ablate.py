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

Models given as they are (``settings.models``: any classifier :meth:`Target.load` reads) join the
grid as cells of their own: loaded once, before any run, not trained, and measured as a trained
cell is (:func:`run_given`), so a user's model stands in the table beside the trained ones.
"""

from __future__ import annotations

import dataclasses
import time
import traceback
from dataclasses import dataclass
from typing import Any, Sequence

import mlflow
import numpy as np
import torch
from tqdm.auto import tqdm

from medart import tracking
from medart.analysis.landscape import sharpness
from medart.analysis.saliency import input_gradient
from medart.attacks import make_spec
from medart.attacks.difficulty import Bisection, least_successful_eps
from medart.attacks.specs import check_backend
from medart.detectors import make_detector
from medart.errors import ConfigError, DataError
from medart.intervals import Estimate, estimates, proportion
from medart.models.evaluation import classification_intervals, classification_metrics, predict
from medart.models.resnet import imagenet_unavailable, parameter_count
from medart.render.ablation import ablation_columns, ablation_figure, ablation_table, cell_summary, findings
from medart.results import GIVEN, Cell, CellMetrics, CellResult
from medart.stages.ablation_grid import AblationSettings, DetectionProbe, LandscapeProbe, make_grid, parse_resolutions
from medart.stages.attack import attack
from medart.stages.detect import DetectRequest, detect
from medart.stages.target import DataSpec, RunOptions, Target
from medart.stages.train import ModelRequest, train

__all__ = ["AblationOutcome", "AblationSettings", "Bisection", "DetectionProbe", "LandscapeProbe", "ablate", "make_grid",
           "load_given", "parse_resolutions", "run_cell", "run_given"]


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


def _attack_grid(target: Target, settings: AblationSettings,
                 run: RunOptions) -> tuple[dict[str, dict[float, float]], float, dict[str, Estimate]]:
    """Every attack at every ε of ``settings.eps``, one attack run each: (attack → ε → accuracy, clean
    accuracy, and each with its interval under its cell metric's name, :meth:`CellMetrics.as_metrics`)."""
    adv_acc: dict[str, dict[float, float]] = {}
    clean_acc, intervals = float("nan"), {}
    for name in settings.attacks:
        for eps in settings.eps:
            out = attack(target, make_spec(name, eps), run)
            adv_acc.setdefault(name, {})[eps] = out.metrics["adv_acc"]
            clean_acc = out.metrics["clean_acc"]
            intervals[f"adv_acc.{name}.eps{eps * 255:.3g}"] = Estimate.read(out.metrics, "adv_acc")
            intervals["clean_acc"] = Estimate.read(out.metrics, "clean_acc")
    return adv_acc, clean_acc, intervals


def _measure(target: Target, settings: AblationSettings, run: RunOptions, seconds: dict[str, float]) -> dict[str, Any]:
    """Every attack at every ε, the bisection, the loss landscape and detection of ``target``'s model,
    the stages as child runs of the active run: the :class:`CellMetrics` fields they fill. Adds the
    wall time of each to ``seconds``."""
    start = time.perf_counter()
    adv_acc, clean_acc, intervals = _attack_grid(target, settings, run)
    seconds["attacks"] = time.perf_counter() - start

    start = time.perf_counter()
    x = torch.cat([x for x, _ in target.clean.values()])
    y = torch.cat([y for _, y in target.clean.values()])
    bracket = least_successful_eps(target.model, x, y, settings.bisection, adv_acc.get(settings.bisection.bisect_attack, {}),
                                   run.backend, run.batch_size, target.seed, run.device, run.progress)
    seconds["bisection"] = time.perf_counter() - start

    start = time.perf_counter()
    sharp = sharpness(target.model, x, y, settings.sharpness_radius, run.batch_size, run.device)
    peak = input_gradient(target.model, x, y, "loss", run.batch_size, run.device).flatten(1).abs().amax(dim=1)
    seconds["landscape"] = time.perf_counter() - start

    start = time.perf_counter()
    probe = settings.detection
    request = DetectRequest(attacks=(probe.detect_attack,), eps=probe.detect_eps, detectors=probe.detectors, transfer=False)
    detection = detect(target, request, run)
    seconds["detection"] = time.perf_counter() - start
    vanishing = (peak < settings.landscape.vanishing).numpy()
    intervals |= {"vanishing_fraction": proportion(vanishing)}
    intervals |= {f"auc_{d}": e for d, e in detection.intervals[probe.detect_attack].items()}
    return dict(n_parameters=parameter_count(target.model), n_attacked=len(y), clean_acc=clean_acc, adv_acc=adv_acc,
                least_eps=bracket, sharpness=float(np.mean(sharp)), sharpness_median=float(np.median(sharp)),
                vanishing_fraction=float((peak < settings.landscape.vanishing).float().mean()),
                grad_peak_median=float(peak.median()), detection_auc=detection.auc[probe.detect_attack],
                detect_run_id=detection.run_id, intervals=intervals)


def _log(metrics: CellMetrics) -> CellMetrics:
    mlflow.log_metrics(metrics.as_metrics())
    mlflow.log_dict(metrics.as_json(), "cell.json")
    return metrics


def run_cell(cell: Cell, data: DataSpec, settings: AblationSettings, run: RunOptions = RunOptions()) -> CellMetrics:
    """Train, attack and measure one cell under the active MLflow run; logs and returns its metrics.

    Its stages are child runs: the training run (not registered: an ablation must not move the
    dataset's champion alias), one attack run per attack and ε, the detection run. The trained
    model is attacked as it is in memory: nothing is read back from the store.
    """
    run = dataclasses.replace(run, parent_run_id=None)  # the stages nest under the active cell run
    start = time.perf_counter()
    request = ModelRequest(cell.arch, cell.init, cell.resolution, max_train=settings.max_train,
                           max_eval=settings.max_eval, register=False)
    trained = train(data, request, settings.train, run)
    seconds = {"train": time.perf_counter() - start}
    # on the CPU, as a model read from the store would be; the images at the model's side
    target = Target(trained.model_uri, trained.model.cpu(), data, data.load(cell.resolution), settings.max_examples,
                    settings.reference_size)
    measured = _measure(target, settings, run, seconds)
    test = estimates(trained.test)
    measured["intervals"] |= {"test_acc": test["acc"], "test_auc": test["auc"]}
    return _log(CellMetrics(trained.run_id, trained.model_uri, test_acc=trained.test["acc"], test_auc=trained.test["auc"],
                            best_epoch=trained.best_epoch, seconds_by_stage=seconds, **measured))


def run_given(target: Target, settings: AblationSettings, run: RunOptions = RunOptions()) -> CellMetrics:
    """Measure a model given, not trained, under the active MLflow run as :func:`run_cell` measures a
    trained one: its test accuracy / AUC on the images a trained cell is tested on (the test split,
    at most ``max_eval`` per part, stratified), then the same stages; logs and returns its metrics."""
    run = dataclasses.replace(run, parent_run_id=None)
    start = time.perf_counter()
    probs, labels = predict(target.model, target.test_set(settings.max_eval), run.batch_size, run.device, run.progress,
                            "test")
    target.model.cpu()  # where the stages expect a loaded model, whichever device predicted
    test, test_intervals = classification_metrics(probs, labels), classification_intervals(probs, labels)
    seconds = {"test": time.perf_counter() - start}
    measured = _measure(target, settings, run, seconds)
    measured["intervals"] |= {"test_acc": test_intervals["acc"], "test_auc": test_intervals["auc"]}
    return _log(CellMetrics(None, target.model_uri, test_acc=test["acc"], test_auc=test["auc"], best_epoch=None,
                            seconds_by_stage=seconds, **measured))


def load_given(data: DataSpec, settings: AblationSettings) -> dict[Cell, Target]:
    """Each of ``settings.models``, loaded once with ``settings.model_options``, as its cell (its input
    side, init ``given``, its URI): a model that cannot be read, or whose layers the detectors cannot
    read (e.g. no penultimate features), is a one-line error before any run."""
    given = {}
    for source in settings.sources():
        target = Target.load(source, data, settings.max_examples, settings.reference_size)
        for name in settings.detection.detectors:
            make_detector(name, target.model).set_params()  # ART's hook: runs the detector's _check_params
        given[Cell(target.side, GIVEN, source.model_uri)] = target
    return given


def _run_isolated(cell: Cell, data: DataSpec, settings: AblationSettings, run: RunOptions, experiment: str,
                  given: Target | None = None) -> CellResult:
    """One cell as a child run (``given``: the loaded model of a given cell); any error ends that run
    FAILED and comes back as the row's reason."""
    result = CellResult(cell, "failed")
    start = time.perf_counter()
    try:
        with tracking.start_run(experiment, cell.label()) as cell_run:
            result.run_id = cell_run.info.run_id
            mlflow.log_params({"arch": cell.arch, "resolution": cell.resolution, "init": cell.init}
                              | ({"network": given.model.config["arch"]} if given is not None else {}))
            try:
                result.metrics = run_cell(cell, data, settings, run) if given is None else run_given(given, settings, run)
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
    logging all that) when no cell finished. The models of ``settings.models`` follow the grid's
    cells, one cell each (:func:`load_given`, :func:`run_given`).
    """
    settings = settings or AblationSettings()
    cells = list(dict.fromkeys(cells))
    if not cells and not settings.models:
        raise ConfigError("the ablation grid is empty; give at least one of each of `resolutions`, `inits` and `archs`, "
                          "or `models`")
    for name in dict.fromkeys((*settings.attacks, settings.bisection.bisect_attack, settings.detection.detect_attack)):
        check_backend(name, run.backend)  # an unknown backend, or one without the attack: one line now
    trained, given = cells, load_given(data, settings)
    cells = trained + list(given)
    skips = {arch: imagenet_unavailable(arch) for arch in dict.fromkeys(c.arch for c in cells if c.init == "imagenet")}
    experiment = tracking.experiment_name(data.dataset, "ablation")
    params = settings.as_params(run)
    rows: list[CellResult] = []
    start = time.perf_counter()
    with tracking.start_run(experiment, f"ablate-{data.dataset}", run.parent_run_id) as parent:
        mlflow.log_params({"dataset": data.dataset, "source": data.source, "size": data.size,
                           "resolutions": ",".join(map(str, dict.fromkeys(c.resolution for c in trained))),
                           "inits": ",".join(dict.fromkeys(c.init for c in trained)),
                           "archs": ",".join(dict.fromkeys(c.arch for c in trained)), "cells": len(cells)} | params)
        bar = tqdm(cells, desc="ablation cells", disable=not run.progress)
        for cell in bar:
            bar.set_postfix_str(cell.label())
            if cell.init == "imagenet" and skips[cell.arch]:
                rows.append(CellResult(cell, "skipped", skips[cell.arch]))
            else:
                rows.append(_run_isolated(cell, data, settings, run, experiment, given.get(cell)))
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

