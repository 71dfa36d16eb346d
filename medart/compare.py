"""Robustness results across runs: one table and figure over datasets, models, attacks, ε and
backends, read from the tracking store, and exchanged with RobustBench-style JSON files.

Every finished attack run (``medart attack``, ``sweep``, ``detect``, ``evaluate``, ``mlflow run``)
logs ``attack.name``, ``attack.eps``, ``backend``, ``dataset``, ``model_uri`` and the metrics
``clean_acc`` / ``adv_acc``; :func:`collect` finds them with ``mlflow.search_runs``. Runs that
repeat the same measurement (same ``medart.cache_key``: weights, data, spec, backend, seed) count
once, the latest.

RobustBench keeps one JSON per model (``model_info/<dataset>/<threat model>/<name>.json``) with
``clean_acc`` and ``autoattack_acc`` as percentage strings and ``eps`` as ``"8/255"``.
:func:`export_robustbench` writes medart's results in that shape — the robust accuracy being the
worst case over the attacks medart ran (``robust_acc``, also given as RobustBench's ``reported``;
no ``autoattack_acc``, since medart does not run AutoAttack); :func:`import_robustbench` reads
either kind back as rows of the same table.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections import defaultdict
from dataclasses import dataclass, fields
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import mlflow  # noqa: E402

from medart import tracking  # noqa: E402
from medart.attacks.cache import CACHE_TAG  # noqa: E402
from medart.errors import ConfigError, DataError  # noqa: E402

THREAT_MODEL = "Linf"


@dataclass
class Row:
    """One robustness measurement: accuracies in [0, 1], ε in [0, 1] pixel units."""

    dataset: str
    model: str
    attack: str
    eps: float
    backend: str
    clean_acc: float
    adv_acc: float
    n: int
    source: str  # "run:<run_id>" or the JSON file it came from
    threat_model: str = THREAT_MODEL


def eps_fraction(eps: float) -> str:
    """ε as RobustBench writes it, ``k/255`` (``0.3/255`` for fractions of a grey level)."""
    k = eps * 255
    return f"{round(k)}/255" if abs(k - round(k)) < 1e-6 else f"{k:.3g}/255"


def parse_fraction(text: str | float) -> float:
    """``"8/255"`` or ``0.0314`` → float; a malformed value is a :class:`DataError`."""
    try:
        return float(Fraction(str(text).strip())) if "/" in str(text) else float(text)
    except (ValueError, ZeroDivisionError):
        raise DataError(f"cannot read ε {text!r}; RobustBench files write it as e.g. \"8/255\"") from None


def collect(experiments: Sequence[str] | None = None, dataset: str | None = None, model: str | None = None,
            filter_string: str | None = None) -> list[Row]:
    """Rows of every FINISHED attack run in ``experiments`` (default: all), optionally of one
    ``dataset`` and ``model`` URI, plus an extra MLflow ``filter_string``."""
    clauses = ["attributes.status = 'FINISHED'", "params.`attack.name` LIKE '%'"]
    if dataset:
        clauses.append(f"params.dataset = '{dataset}'")
    if model:
        clauses.append(f"params.model_uri = '{model}'")
    if filter_string:
        clauses.append(filter_string)
    query = " and ".join(clauses)
    try:
        if experiments:
            runs = mlflow.search_runs(experiment_names=list(experiments), filter_string=query, output_format="list",
                                      order_by=["attributes.start_time DESC"])
        else:
            runs = mlflow.search_runs(search_all_experiments=True, filter_string=query, output_format="list",
                                      order_by=["attributes.start_time DESC"])
    except mlflow.exceptions.MlflowException as exc:
        raise ConfigError(f"cannot search runs with filter {query!r}: {str(exc).splitlines()[0]}") from None
    rows, seen = [], set()
    for run in runs:  # newest first: the first of each cache key wins
        params, metrics = run.data.params, run.data.metrics
        key = run.data.tags.get(CACHE_TAG) or run.info.run_id
        if key in seen or "adv_acc" not in metrics or "clean_acc" not in metrics:
            continue
        seen.add(key)
        rows.append(Row(params.get("dataset", "?"), params.get("model_uri", "?"), params["attack.name"],
                        float(params["attack.eps"]), params.get("backend", "?"), metrics["clean_acc"], metrics["adv_acc"],
                        int(metrics.get("n", 0)), f"run:{run.info.run_id}"))
    return sorted(rows, key=_order)


def _order(row: Row) -> tuple:
    return row.dataset, row.model, row.backend, row.attack, row.eps, row.source


def worst_case(rows: Iterable[Row]) -> list[dict]:
    """Per (dataset, model, ε): the clean accuracy and the lowest accuracy over every attack and
    backend measured — the robust accuracy a leaderboard reports."""
    groups: dict[tuple, list[Row]] = defaultdict(list)
    for row in rows:
        groups[(row.dataset, row.model, row.threat_model, round(row.eps, 10))].append(row)
    out = []
    for (dataset, model, threat, eps), members in sorted(groups.items()):
        worst = min(members, key=lambda r: r.adv_acc)
        out.append({"dataset": dataset, "model": model, "threat_model": threat, "eps": eps,
                    "clean_acc": max(r.clean_acc for r in members), "robust_acc": worst.adv_acc,
                    "attacks": {f"{r.attack}/{r.backend}": r.adv_acc for r in members}, "n": worst.n,
                    "sources": [r.source for r in members]})
    return out


def table(rows: Sequence[Row]) -> str:
    """Markdown, one row per measurement, accuracies in %."""
    lines = ["| dataset | model | attack | ε | backend | clean acc | adv acc | n | source |", "|---" * 9 + "|"]
    for r in rows:
        lines.append(f"| {r.dataset} | {r.model} | {r.attack.upper()} | {eps_fraction(r.eps)} | {r.backend} | "
                     f"{r.clean_acc * 100:.2f} | {r.adv_acc * 100:.2f} | {r.n or ''} | {r.source} |")
    return "\n".join(lines) + "\n"


def figure(rows: Sequence[Row]):
    """Accuracy vs ε, one panel per dataset, one line per (model, attack, backend); imported
    results (single points) as markers."""
    datasets = sorted({r.dataset for r in rows})
    fig, axes = plt.subplots(1, len(datasets), figsize=(6 * len(datasets), 4.2), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        lines: dict[tuple, list[Row]] = defaultdict(list)
        for r in rows:
            if r.dataset == dataset:
                lines[(r.model, r.attack, r.backend)].append(r)
        for (model, attack, backend), members in sorted(lines.items()):
            members.sort(key=lambda r: r.eps)
            xs = [0.0] + [r.eps * 255 for r in members]
            ys = [members[0].clean_acc * 100] + [r.adv_acc * 100 for r in members]
            label = f"{_short(model)} · {attack.upper()} · {backend}"
            ax.plot(xs, ys, marker="o" if len(members) > 1 else "*", ms=5 if len(members) > 1 else 11, label=label)
        ax.set_xlabel("ε (×1/255)")
        ax.set_ylabel("accuracy (%)")
        ax.set_ylim(-2, 102)
        ax.set_title(dataset)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _short(model: str) -> str:
    return model.removeprefix("models:/")


def export_robustbench(rows: Sequence[Row], folder: str | os.PathLike) -> list[Path]:
    """Write ``<folder>/<dataset>/Linf/<model>_eps<k>.json`` per (dataset, model, ε) in
    RobustBench's per-model shape; returns the paths. Written to a temporary name, then renamed."""
    paths = []
    for entry in worst_case(rows):
        name = _short(entry["model"]).replace("/", "_").replace("@", "_")
        path = Path(folder) / entry["dataset"] / entry["threat_model"] / f"{name}_eps{entry['eps'] * 255:.3g}.json"
        doc = {
            "link": "", "name": entry["model"], "authors": "", "additional_data": False, "number_forward_passes": 1,
            "dataset": entry["dataset"], "venue": "medart", "architecture": "", "eps": eps_fraction(entry["eps"]),
            "clean_acc": f"{entry['clean_acc'] * 100:.2f}", "reported": f"{entry['robust_acc'] * 100:.2f}",
            "footnote": "Robust accuracy is the worst case over medart's FGSM/BIM/PGD/CW-L∞ (paper settings), not AutoAttack.",
            "threat_model": entry["threat_model"], "robust_acc": f"{entry['robust_acc'] * 100:.2f}",
            "per_attack_acc": {k: f"{v * 100:.2f}" for k, v in entry["attacks"].items()}, "n_examples": entry["n"],
            "medart_sources": entry["sources"],
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(doc, indent=1, ensure_ascii=False))
        os.replace(tmp, path)
        paths.append(path)
    return paths


def import_robustbench(paths: Iterable[str | os.PathLike]) -> list[Row]:
    """Rows from RobustBench model-info JSON files (or medart's exports). The threat model comes
    from the file's ``threat_model`` key, else its folder (``…/<dataset>/Linf/<name>.json``); the
    robust accuracy from ``autoattack_acc``, else ``robust_acc``."""
    rows = []
    for path in map(Path, paths):
        try:
            doc = json.loads(path.read_text())
        except FileNotFoundError:
            raise DataError(f"{path} not found; give RobustBench model-info JSON files") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DataError(f"{path} is not valid JSON ({exc}); give RobustBench model-info JSON files") from None
        if not isinstance(doc, dict):
            raise DataError(f"{path} holds a JSON {type(doc).__name__}, not a RobustBench model-info object")
        robust = doc.get("autoattack_acc") or doc.get("robust_acc")
        missing = [k for k, v in (("clean_acc", doc.get("clean_acc")), ("autoattack_acc or robust_acc", robust),
                                  ("eps", doc.get("eps"))) if v in (None, "")]
        if missing:
            raise DataError(f"{path} lacks {', '.join(missing)}; a RobustBench model-info file has clean_acc, autoattack_acc and eps")
        threat = doc.get("threat_model") or (path.parent.name if path.parent.name in ("Linf", "L2", "corruptions") else "?")
        attack = "autoattack" if doc.get("autoattack_acc") else "worst-case"
        try:
            clean, adv = float(doc["clean_acc"]) / 100, float(robust) / 100
        except (TypeError, ValueError):
            raise DataError(f"{path}: clean_acc and robust accuracy must be percentages, got {doc['clean_acc']!r}, {robust!r}") from None
        rows.append(Row(str(doc.get("dataset", path.parent.parent.name)), str(doc.get("name") or path.stem), attack,
                        parse_fraction(doc["eps"]), str(doc.get("venue") or "robustbench"), clean, adv,
                        int(doc.get("n_examples") or 0), str(path), threat))
    return rows


def compare(experiments: Sequence[str] | None = None, dataset: str | None = None, model: str | None = None,
            filter_string: str | None = None, imports: Sequence[str | os.PathLike] = (),
            export_dir: str | os.PathLike | None = None) -> tuple[str, list[Row]]:
    """Collect, merge the imported JSON rows, and log the comparison as a run in
    ``medart/compare`` (``compare.md``, ``compare.json``, ``figures/compare.png``, and the
    RobustBench export under ``robustbench/``). Returns the run id and the rows."""
    rows = collect(experiments, dataset, model, filter_string)
    imported = import_robustbench(imports)
    if not rows and not imported:
        where = f"experiments {', '.join(experiments)}" if experiments else "any experiment"
        raise DataError(f"no finished attack runs in {where} of {mlflow.get_tracking_uri()}"
                        f"{f' for dataset {dataset}' if dataset else ''}{f' and model {model}' if model else ''}; "
                        "run `medart attack`/`sweep` first or check --tracking-uri")
    everything = rows + imported
    with tracking.start_run("medart/compare", f"compare-{len(rows)}runs-{len(imported)}imported") as run:
        mlflow.log_params({"experiments": ",".join(experiments or []) or "all", "dataset": dataset, "model": model,
                           "filter": filter_string, "n_rows": len(rows), "n_imported": len(imported)})
        mlflow.log_text(table(everything), "compare.md")
        mlflow.log_table({f.name: [getattr(r, f.name) for r in everything] for f in fields(Row)}, "compare.json")
        tracking.log_figure(figure(everything), "figures/compare.png")
        with contextlib.ExitStack() as stack:
            folder = export_dir or stack.enter_context(tempfile.TemporaryDirectory())
            for path in export_robustbench(rows, folder):
                mlflow.log_artifact(str(path), f"robustbench/{path.parent.parent.name}/{path.parent.name}")
    return run.info.run_id, everything


__all__ = ["Row", "collect", "compare", "eps_fraction", "export_robustbench", "figure", "import_robustbench", "table",
           "worst_case"]
