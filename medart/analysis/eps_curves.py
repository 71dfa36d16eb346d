"""Accuracy-vs-ε curves of several models or datasets in one figure (the paper's Fig. 4 and 5).

The numbers come from ``medart sweep`` runs (their ``sweep.json``), so a curve is never drawn
without the attack runs behind it.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Mapping, Sequence

import mlflow
from mlflow.exceptions import MlflowException

from medart import tracking
from medart.errors import ConfigError


def sweep_rows(run_id: str) -> list[dict]:
    """The rows a ``medart sweep`` run logged in ``sweep.json``: one dict per (attack, ε) with
    ``attack``, ``eps`` (in [0, 1] pixels), ``clean_acc``, ``adv_acc``, ``adv_auc`` … (in [0, 1])."""
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="sweep.json", dst_path=tmp)
            return json.loads(Path(path).read_text())["rows"]
    except (MlflowException, OSError, KeyError) as exc:
        raise ConfigError(f"run {run_id} has no readable sweep.json ({type(exc).__name__}); "
                          "pass the id of a `medart sweep` run (the parent run, not a child)") from None


def sweep_label(run_id: str) -> str:
    """A short legend label for a sweep run: its dataset and model, e.g. ``pneumonia · medart-pneumonia@champion``."""
    params = mlflow.MlflowClient().get_run(run_id).data.params
    model = params.get("model_uri", "?").removeprefix("models:/")
    return f"{params.get('dataset', '?')} · {model}"


def eps_curves_figure(curves: Mapping[str, Sequence[dict]], title: str = "accuracy under attack"):
    """One panel per attack, one line per curve (a model or dataset): accuracy (%) against ε in
    grey levels (ε × 255), starting at the clean accuracy at ε = 0. ``curves``: label → sweep rows."""
    from medart.analysis.figures import plt, suptitle

    attacks = list(dict.fromkeys(r["attack"] for rows in curves.values() for r in rows))
    fig, axes = plt.subplots(1, len(attacks), figsize=(4.2 * len(attacks), 3.8), squeeze=False, sharey=True)
    for ax, attack in zip(axes[0], attacks):
        for label, rows in curves.items():
            mine = sorted((r["eps"] * 255, r["adv_acc"] * 100) for r in rows if r["attack"] == attack)
            if mine:
                ax.plot(*zip(*([(0.0, rows[0]["clean_acc"] * 100)] + mine)), marker="o", label=label)
        ax.set_title(attack.upper())
        ax.set_xlabel("ε (×1/255)")
        ax.set_ylim(-2, 102)
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("accuracy (%)")
    axes[0, -1].legend(fontsize=7)
    suptitle(fig, title)
    fig.tight_layout()
    return fig


def compare_sweeps(run_ids: Sequence[str], labels: Sequence[str] | None = None) -> str:
    """Draw the sweeps ``run_ids`` in one figure, logged as ``figures/eps_curves.png`` (with
    ``eps_curves.json``, the rows by label) in a new run of ``medart/<dataset>/analysis`` (or
    ``medart/analysis`` when the datasets differ). Returns that run's id."""
    if not run_ids:
        raise ConfigError("no sweep runs given; pass --run-id of one or more `medart sweep` runs")
    if labels and len(labels) != len(run_ids):
        raise ConfigError(f"{len(labels)} labels for {len(run_ids)} runs; give one --label per --run-id or none")
    rows = [sweep_rows(run_id) for run_id in run_ids]  # checks every id before anything is logged
    client = mlflow.MlflowClient()
    datasets = {client.get_run(r).data.params.get("dataset", "?") for r in run_ids}
    curves = {}
    for k, run_id in enumerate(run_ids):
        label = labels[k] if labels else sweep_label(run_id)
        curves[label if label not in curves else f"{label} ({run_id[:8]})"] = rows[k]
    experiment = tracking.experiment_name(datasets.pop(), "analysis") if len(datasets) == 1 else "medart/analysis"
    with tracking.start_run(experiment, "eps-curves") as run:
        mlflow.log_params({"sweep_runs": ",".join(run_ids)})
        mlflow.log_dict(curves, "eps_curves.json")
        tracking.log_figure(eps_curves_figure(curves), "figures/eps_curves.png")
    return run.info.run_id
