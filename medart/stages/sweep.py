"""The sweep stage: every attack at every ε as child runs of one parent run."""

from __future__ import annotations

import dataclasses
import functools
import os
from dataclasses import dataclass
from typing import Sequence

import mlflow

from medart import tracking
from medart.attacks import make_spec
from medart.attacks.specs import check_backend
from medart.budget import Eps, eps_params
from medart.errors import MedartError
from medart.executors import InProcessExecutor
from medart.models.loading import ModelSource
from medart.models.sanity import ModelCheck
from medart.render.notes import note
from medart.render.sweep import sweep_figure, sweep_table
from medart.stages.attack import attack
from medart.stages.guard import guard
from medart.stages.target import DataSpec, RunOptions, Target


@dataclass(frozen=True)
class SweepRow:
    """One finished (attack, ε) cell: its child run and the attack metrics (fractions; pixels for L∞/L2)."""

    attack: str
    eps: Eps
    run_id: str
    cached: bool
    n: int
    clean_acc: float
    clean_auc: float
    adv_acc: float
    adv_auc: float
    success_rate: float
    linf_max: float
    metrics: dict  # every metric of the attack run, timings included
    clean_balanced_acc: float = float("nan")
    cached_from: str | None = None  # the run that made a cached cell's examples

    @classmethod
    def from_metrics(cls, attack: str, eps: Eps, run_id: str, cached: bool, metrics: dict,
                     cached_from: str | None = None) -> "SweepRow":
        return cls(attack, eps, run_id, cached, int(metrics["n"]), metrics["clean_acc"], metrics["clean_auc"],
                   metrics["adv_acc"], metrics["adv_auc"], metrics["success_rate"], metrics["linf_max"], dict(metrics),
                   metrics["clean_balanced_acc"], cached_from)


@dataclass(frozen=True)
class FailedCell:
    attack: str
    eps: Eps
    error: str  # one line
    detail: str  # the traceback, or the worker's report


@dataclass
class SweepOutcome:
    run_id: str  # the parent run
    rows: list[SweepRow]
    failed: list[FailedCell]
    check: ModelCheck | None = None  # the degenerate-model guard on the target


@dataclass(frozen=True)
class SweepJob:
    """What a worker process needs to rebuild the target and run cells; it pickles."""

    model: ModelSource  # the model as the driver loaded it
    data: DataSpec
    max_examples: int | None
    tracking_uri: str
    parent_run_id: str
    run: RunOptions  # without an executor


@functools.lru_cache(maxsize=1)
def _worker_target(job: SweepJob) -> Target:
    # a worker process loads model and data once for all the cells it runs
    tracking.configure(job.tracking_uri)
    return Target.load(job.model, job.data, job.max_examples)


def _remote_cell(job: SweepJob, cell: tuple[str, Eps]) -> SweepRow:
    tracking.configure(job.tracking_uri)
    return run_cell(_worker_target(job), cell, dataclasses.replace(job.run, parent_run_id=job.parent_run_id))


def run_cell(target: Target, cell: tuple[str, Eps], run: RunOptions) -> SweepRow:
    """One (attack, ε) cell, paper settings otherwise, as a child run of ``run.parent_run_id``."""
    name, eps = cell
    out = attack(target, make_spec(name, eps), run)
    return SweepRow.from_metrics(name, eps, out.run_id, out.cached, out.metrics, out.cached_from)


def sweep(target: Target, attacks: Sequence[str], eps_values: Sequence[Eps | float], run: RunOptions = RunOptions()) -> SweepOutcome:
    """Every attack at every ε of ``eps_values`` ([0, 1] pixels; paper settings otherwise) as child
    runs of one parent run, which gets the accuracy-vs-ε figure (``figures/accuracy_vs_eps.png``),
    the table (``sweep.md``, also its description; ``sweep.json``, clean and balanced accuracy
    beside each attack), ``failed_cells`` and the degenerate-model guard's tag and metrics.

    ``run.executor`` runs the cells: in this process by default, where the first failure ends the
    sweep; on Ray (:class:`medart.executors.RayExecutor`) as tasks logging to the same tracking
    store, each worker loading the target once, where a cell that still fails after its retries is
    reported in the table and the rest complete. Every cell failing fails the sweep.
    """
    executor = run.executor or InProcessExecutor()
    eps_values = Eps.many(eps_values)
    specs = [make_spec(name, eps) for name in attacks for eps in eps_values]  # bad values fail before any run
    for name in dict.fromkeys(attacks):
        check_backend(name, run.backend)
    cells = [(spec.name, spec.eps) for spec in specs]
    with tracking.start_run(tracking.experiment_name(target.dataset, "attack"),
                            f"sweep-{'+'.join(attacks)}-{run.backend}", run.parent_run_id) as parent:
        mlflow.set_tags(target.tags)  # the version an alias named, for later comparisons
        params = {"attacks": ",".join(attacks)} | eps_params("eps", eps_values) | {
            "backend": run.backend, "model_uri": target.model_uri, "dataset": target.dataset} | executor.params()
        logged = parent.data.params  # `mlflow run -e sweep` has logged its -P values already (eps as written)
        mlflow.log_params({k: v for k, v in params.items() if k not in logged})
        check = guard(target, run)
        child = dataclasses.replace(run, parent_run_id=parent.info.run_id, executor=None)
        if executor.remote:  # other processes, maybe other machines: they rebuild the target; the executor shows progress
            data = target.data
            data = dataclasses.replace(data, data_dir=os.path.abspath(data.data_dir)) if data.data_dir else data
            source = target.source or ModelSource(target.model_uri)
            job = SweepJob(source, data, target.max_examples, tracking.absolute_uri(mlflow.get_tracking_uri()),
                           parent.info.run_id, dataclasses.replace(child, progress=False))
            outcomes = executor.map(functools.partial(_remote_cell, job), cells, progress=run.progress)
        else:
            outcomes = executor.map(functools.partial(run_cell, target, run=child), cells, progress=run.progress)
        rows = [o.value for o in outcomes if o.ok]
        failed = [FailedCell(a, e, o.error, o.detail) for (a, e), o in zip(cells, outcomes) if not o.ok]
        mlflow.log_metric("failed_cells", len(failed))
        if rows:
            tracking.log_figure(sweep_figure(rows, target.dataset, run.backend), "figures/accuracy_vs_eps.png")
        table = sweep_table(rows, failed, check)
        mlflow.log_text(table, "sweep.md")
        n = f"{rows[0].n} images (AdvTrain + AdvTest)" if rows else "no cell finished"
        tracking.describe(note(f"Accuracy / AUC (%) under attack, per attack and ε, {run.backend}: {n}", table))
        mlflow.log_dict({"rows": [_row_dict(r) for r in rows], "failed": [dataclasses.asdict(f) for f in failed]},
                        "sweep.json")
        if not rows:
            first = failed[0]
            raise MedartError(f"all {len(cells)} cells of the sweep failed, e.g. {first.attack} ε={first.eps}: "
                              f"{first.error}; see sweep.md in run {parent.info.run_id}")
    return SweepOutcome(parent.info.run_id, rows, failed, check)


def _row_dict(row: SweepRow) -> dict:
    # sweep.json keeps its earlier flat layout: attack, eps, run_id, cached, cached_from and the attack metrics
    return {"attack": row.attack, "eps": row.eps, "run_id": row.run_id, "cached": row.cached, "cached_from": row.cached_from,
            **row.metrics}
