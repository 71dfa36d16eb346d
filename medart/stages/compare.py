"""Results across runs: the robustness of every finished attack run in one table and figure, with
RobustBench-style JSON in and out (``medart compare``), and the ε curves of several sweeps in one
figure (``medart eps-curves``), each logged as a run of its own.

Every finished attack run (``medart attack``, ``sweep``, ``detect``, ``evaluate``, ``mlflow run``)
logs ``attack.name``, ``attack.eps`` (``k/255``; its float under ``attack.eps_value``, which runs
before that logged under ``attack.eps``), ``backend``, ``dataset``, ``model_uri`` and the metrics
``clean_acc`` / ``adv_acc``; :func:`collect` finds them with ``mlflow.search_runs``. Runs that
repeat the same measurement (same ``medart.cache_key``: network, data, spec, backend, seed) count
once, the latest.

RobustBench keeps one JSON per model (``model_info/<dataset>/<threat model>/<name>.json``) with
``clean_acc`` and ``autoattack_acc`` as percentage strings and ``eps`` as ``"8/255"``.
:func:`export_robustbench` writes medart's results in that shape: ``autoattack_acc`` from an
``autoattack`` run of the model at that ε at the standard budget (the lower if both backends
ran it; absent without one; a run at another budget is reported as e.g. ``autoattack (10
steps)``), ``robust_acc`` (also RobustBench's ``reported``) the worst case over every attack
medart ran, and ``per_attack_acc`` each attack's; :func:`import_robustbench` reads either kind
back as rows of the same table. :func:`worst_case` puts AutoAttack beside the paper attacks'
worst case.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field, fields
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Sequence

import mlflow
from mlflow.exceptions import MlflowException

from medart import tracking
from medart.attacks.cache import CACHE_TAG
from medart.attacks.specs import reported_name
from medart.attacks.specs import PAPER_ATTACKS
from medart.budget import logged_eps
from medart.errors import ConfigError, DataError
from medart.intervals import Estimate, wilson
from medart.models import registry
from medart.render.analysis import eps_curves_figure
from medart.numbers import eps_label
from medart.render.compare import compare_figure, compare_table, short_model, tradeoff_figure, tradeoff_table, worst_case_table
from medart.render.notes import note
from medart.stages.sweep import SweepRow

THREAT_MODEL = "Linf"


def accuracy(acc: float | None, n: int) -> Estimate | None:
    """An accuracy of ``n`` images with its 95 % Wilson interval, rebuilt from the share itself
    (``acc · n`` images right); the value alone (NaN interval) where ``n`` is unknown (0)."""
    if acc is None:
        return None
    return wilson(round(acc * n), n) if n else Estimate(acc, float("nan"), float("nan"), 0)


@dataclass(frozen=True)
class RobustnessRow:
    """One robustness measurement: accuracies in [0, 1] of ``n`` images (0: not known), ε in [0, 1]
    pixel units."""

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

    @property
    def clean(self) -> Estimate:
        """Clean accuracy with its 95 % Wilson interval over the n images."""
        return accuracy(self.clean_acc, self.n)

    @property
    def adversarial(self) -> Estimate:
        """Accuracy under attack with its 95 % Wilson interval over the n images."""
        return accuracy(self.adv_acc, self.n)


@dataclass(frozen=True)
class CompareRequest:
    """Which runs to compare (``experiments``: default all; an extra MLflow ``filter_string``), which
    RobustBench files to put beside them (``imports``), and where to write the export (``export_dir``;
    it is always logged to the run)."""

    experiments: tuple[str, ...] = ()
    dataset: str | None = None
    model_uri: str | None = None
    filter_string: str | None = None
    imports: tuple[str, ...] = ()
    export_dir: str | os.PathLike | None = None


@dataclass
class CompareOutcome:
    run_id: str
    rows: list[RobustnessRow]  # the runs' rows, then the imported ones
    tradeoff: str = ""  # the trade-off table (tradeoff.md); "" when AutoAttack measured no model


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


def collect(request: CompareRequest = CompareRequest()) -> list[RobustnessRow]:
    """Rows of every FINISHED attack run in ``request.experiments`` (default: all), optionally of one
    ``dataset`` and ``model_uri`` (as the runs logged it), plus an extra MLflow ``filter_string``. A
    row's model is the registered version the run measured (``models:/<name>/<version>``, also where
    it named an alias), so a later move of the alias neither relabels nor merges it."""
    clauses = ["attributes.status = 'FINISHED'", "params.`attack.name` LIKE '%'"]
    if request.dataset:
        clauses.append(f"params.dataset = '{request.dataset}'")
    if request.model_uri:
        clauses.append(f"params.model_uri = '{request.model_uri}'")
    if request.filter_string:
        clauses.append(request.filter_string)
    query = " and ".join(clauses)
    where = {"experiment_names": list(request.experiments)} if request.experiments else {"search_all_experiments": True}
    try:
        runs = mlflow.search_runs(filter_string=query, output_format="list", order_by=["attributes.start_time DESC"], **where)
    except MlflowException as exc:
        raise ConfigError(f"cannot search runs with filter {query!r}: {str(exc).splitlines()[0]}") from None
    rows, seen = [], set()
    for run in runs:  # newest first: the first of each cache key wins
        params, metrics = run.data.params, run.data.metrics
        key = run.data.tags.get(CACHE_TAG) or run.info.run_id
        if key in seen or "adv_acc" not in metrics or "clean_acc" not in metrics:
            continue
        seen.add(key)
        name = params["attack.name"]
        steps, restarts = params.get("attack.steps"), params.get("attack.restarts")
        if steps is not None:
            name = reported_name(name, int(steps), None if restarts is None else int(restarts))
        # the version an alias named when the run loaded it (runs from before medart logged it: the alias);
        # a model behind a preprocessing defence is another model: its rows never merge with the bare one's
        measured = run.data.tags.get(registry.VERSION_URI_TAG) or params.get("model_uri", "?")
        model = measured + (f" + {params['defence']}" if params.get("defence") else "")
        rows.append(RobustnessRow(params.get("dataset", "?"), model, name,
                                  logged_eps(params, "attack.eps"), params.get("backend", "?"), metrics["clean_acc"],
                                  metrics["adv_acc"], int(metrics.get("n", 0)), f"run:{run.info.run_id}"))
    return sorted(rows, key=lambda r: (r.dataset, r.model, r.backend, r.attack, r.eps, r.source))


@dataclass(frozen=True)
class WorstCase:
    """The robust accuracies of one model at one ε (fractions): ``robust_acc`` the lowest over every
    attack and backend measured (what a leaderboard reports), ``paper_acc`` over the paper's four
    attacks, ``autoattack_acc`` AutoAttack's (``None`` where not measured); ``attacks``:
    ``<attack>/<backend>`` → accuracy. ``intervals``: each of ``clean_acc``, ``robust_acc``,
    ``paper_acc``, ``autoattack_acc`` (where measured) and ``<attack>/<backend>`` with its 95 %
    Wilson interval over the images its own row measured (:func:`accuracy`), and
    ``autoattack_clean_acc``, the clean accuracy of the AutoAttack row's images."""

    dataset: str
    model: str
    threat_model: str
    eps: float
    clean_acc: float
    robust_acc: float
    paper_acc: float | None
    autoattack_acc: float | None
    attacks: dict[str, float]
    n: int
    sources: list[str]
    intervals: dict[str, Estimate] = field(default_factory=dict)


def _lowest(rows: Sequence[RobustnessRow], names: Iterable[str]) -> RobustnessRow | None:
    names = set(names)
    return min((r for r in rows if r.attack in names), key=lambda r: r.adv_acc, default=None)


def worst_case(rows: Iterable[RobustnessRow]) -> list[WorstCase]:
    """One :class:`WorstCase` per (dataset, model, threat model, ε) of ``rows``; an imported
    RobustBench row counts as AutoAttack when it is one."""
    groups: dict[tuple, list[RobustnessRow]] = defaultdict(list)
    for row in rows:
        groups[(row.dataset, row.model, row.threat_model, round(row.eps, 10))].append(row)
    out = []
    for (dataset, model, threat, eps), members in sorted(groups.items()):
        worst = min(members, key=lambda r: r.adv_acc)
        cleanest = max(members, key=lambda r: r.clean_acc)
        paper, auto = _lowest(members, PAPER_ATTACKS), _lowest(members, ("autoattack",))
        intervals = {"clean_acc": cleanest.clean, "robust_acc": worst.adversarial}
        intervals |= {k: r.adversarial for k, r in (("paper_acc", paper), ("autoattack_acc", auto)) if r is not None}
        if auto is not None:  # the clean accuracy of AutoAttack's own images, for the trade-off
            intervals["autoattack_clean_acc"] = auto.clean
        intervals |= {f"{r.attack}/{r.backend}": r.adversarial for r in members}
        out.append(WorstCase(dataset, model, threat, eps, cleanest.clean_acc, worst.adv_acc,
                             paper and paper.adv_acc, auto and auto.adv_acc,
                             {f"{r.attack}/{r.backend}": r.adv_acc for r in members}, worst.n, [r.source for r in members],
                             intervals))
    return out


def _footnote(entry: WorstCase) -> str:
    if entry.autoattack_acc is None:
        return "Robust accuracy is the worst case over the attacks medart ran (per_attack_acc); no AutoAttack run."
    return ("autoattack_acc: medart's AutoAttack, standard version (APGD-CE, APGD-DLR, FAB-T, Square in turn; ART has no "
            "FAB), the lower over the backends run; robust_acc: the worst case over every attack medart ran (per_attack_acc).")


def _interval_fields(entry: WorstCase) -> dict:
    """The export's extra fields, which RobustBench's readers and :func:`import_robustbench` ignore:
    ``<key>_ci_low`` / ``<key>_ci_high`` (percentages as strings, like the values) and ``<key>_n``
    for ``clean_acc``, ``robust_acc`` and ``autoattack_acc``, and ``per_attack_acc_ci`` (attack →
    [low, high, n])."""
    out = {}
    for key in ("clean_acc", "robust_acc", "autoattack_acc"):
        e = entry.intervals.get(key)
        if e is not None and e.n:
            out |= {f"{key}_ci_low": f"{e.low * 100:.2f}", f"{key}_ci_high": f"{e.high * 100:.2f}", f"{key}_n": e.n}
    per_attack = {k: [f"{e.low * 100:.2f}", f"{e.high * 100:.2f}", e.n] for k in entry.attacks
                  if (e := entry.intervals.get(k)) is not None and e.n}
    return out | ({"per_attack_acc_ci": per_attack} if per_attack else {})


def export_robustbench(rows: Sequence[RobustnessRow], folder: str | os.PathLike) -> list[Path]:
    """Write ``<folder>/<dataset>/Linf/<model>_eps<k>.json`` per (dataset, model, ε) in
    RobustBench's per-model shape, with the 95 % Wilson intervals and n as extra fields
    (:func:`_interval_fields`); returns the paths. Written to a temporary name, then renamed."""
    paths = []
    for entry in worst_case(rows):
        # a defended model is "<uri> + jpeg:quality=75": no spaces or colons in its file name
        name = short_model(entry.model).replace("/", "_").replace("@", "_").replace(" ", "").replace(":", "-")
        path = Path(folder) / entry.dataset / entry.threat_model / f"{name}_eps{entry.eps * 255:.3g}.json"
        doc = {
            "link": "", "name": entry.model, "authors": "", "additional_data": False, "number_forward_passes": 1,
            "dataset": entry.dataset, "venue": "medart", "architecture": "", "eps": eps_fraction(entry.eps),
            "clean_acc": f"{entry.clean_acc * 100:.2f}", "reported": f"{entry.robust_acc * 100:.2f}",
            **({} if entry.autoattack_acc is None else {"autoattack_acc": f"{entry.autoattack_acc * 100:.2f}"}),
            "footnote": _footnote(entry), "threat_model": entry.threat_model, "robust_acc": f"{entry.robust_acc * 100:.2f}",
            "per_attack_acc": {k: f"{v * 100:.2f}" for k, v in entry.attacks.items()}, "n_examples": entry.n,
            "medart_sources": entry.sources, **_interval_fields(entry),
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(doc, indent=1, ensure_ascii=False))
        os.replace(tmp, path)
        paths.append(path)
    return paths


def _read_model_info(path: Path) -> dict:
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path} not found; give RobustBench model-info JSON files") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path} is not valid JSON ({exc}); give RobustBench model-info JSON files") from None
    if not isinstance(doc, dict):
        raise DataError(f"{path} holds a JSON {type(doc).__name__}, not a RobustBench model-info object")
    missing = [k for k, v in (("clean_acc", doc.get("clean_acc")),
                              ("autoattack_acc or robust_acc", doc.get("autoattack_acc") or doc.get("robust_acc")),
                              ("eps", doc.get("eps"))) if v in (None, "")]
    if missing:
        raise DataError(f"{path} lacks {', '.join(missing)}; a RobustBench model-info file has clean_acc, autoattack_acc and eps")
    return doc


def import_robustbench(paths: Iterable[str | os.PathLike]) -> list[RobustnessRow]:
    """Rows from RobustBench model-info JSON files (or medart's exports). The threat model comes
    from the file's ``threat_model`` key, else its folder (``…/<dataset>/Linf/<name>.json``); one
    row ``autoattack`` from ``autoattack_acc`` and one row ``worst-case`` from medart's
    ``robust_acc``, for those of the two the file has."""
    rows = []
    for path in map(Path, paths):
        doc = _read_model_info(path)
        threat = doc.get("threat_model") or (path.parent.name if path.parent.name in ("Linf", "L2", "corruptions") else "?")
        for key, attack in (("autoattack_acc", "autoattack"), ("robust_acc", "worst-case")):
            if doc.get(key) in (None, ""):
                continue
            try:
                clean, adv = float(doc["clean_acc"]) / 100, float(doc[key]) / 100
            except (TypeError, ValueError):
                raise DataError(f"{path}: clean_acc and {key} must be percentages, got {doc['clean_acc']!r}, {doc[key]!r}") from None
            rows.append(RobustnessRow(str(doc.get("dataset", path.parent.parent.name)), str(doc.get("name") or path.stem),
                                      attack, parse_fraction(doc["eps"]), str(doc.get("venue") or "robustbench"), clean, adv,
                                      int(doc.get("n_examples") or 0), str(path), threat))
    return rows


def defence_label(model: str) -> str:
    """What a compared model is defended by: its preprocessing defence (``<uri> + jpeg…``, as
    :func:`collect` names it), the robust trainer and ε a registered version was hardened with
    (``medart harden`` tags it; an alias, left by runs older than :data:`~medart.models.registry.VERSION_URI_TAG`,
    is resolved now), or ``standard`` for a registered version without one; ``''`` for a model
    outside the registry (a RobustBench import, a folder)."""
    uri, _, preprocessing = model.partition(" + ")
    tags = registry.version_tags(uri)
    if tags is None:
        trained = ""
    elif registry.TRAINER_TAG in tags:
        eps = tags.get(registry.EPS_TAG, "")  # the float, as harden tags it
        trained = f"{tags[registry.TRAINER_TAG]} {eps_label(float(eps)) if eps else ''}".strip()
    else:
        trained = "standard"
    return " + ".join(part for part in (trained, preprocessing) if part)


def compare(request: CompareRequest = CompareRequest()) -> CompareOutcome:
    """Collect, merge the imported JSON rows, and log the comparison as a run in
    ``medart/compare`` (``compare.md``: every row, then per model and ε AutoAttack beside the paper
    attacks' worst case, which is also its description; ``compare.json``, ``figures/compare.png``,
    and the RobustBench export under ``robustbench/``)."""
    rows = collect(request)
    imported = import_robustbench(request.imports)
    if not rows and not imported:
        where = f"experiments {', '.join(request.experiments)}" if request.experiments else "any experiment"
        which = (f"{f' for dataset {request.dataset}' if request.dataset else ''}"
                 f"{f' and model {request.model_uri}' if request.model_uri else ''}")
        raise DataError(f"no finished attack runs in {where} of {mlflow.get_tracking_uri()}{which}; "
                        "run `medart attack`/`sweep` first or check `tracking_uri`")
    everything = rows + imported
    with tracking.start_run("medart/compare", f"compare-{len(rows)}runs-{len(imported)}imported") as run:
        mlflow.log_params({"experiments": ",".join(request.experiments) or "all", "dataset": request.dataset,
                           "model": request.model_uri, "filter": request.filter_string, "n_rows": len(rows),
                           "n_imported": len(imported)})
        entries = worst_case(everything)
        worst = worst_case_table(entries, PAPER_ATTACKS)
        mlflow.log_text(compare_table(everything) + "\n" + worst, "compare.md")
        labels = {e.model: defence_label(e.model) for e in entries if e.autoattack_acc is not None}
        tradeoff = tradeoff_table(entries, labels)
        if tradeoff:  # clean against AutoAttack's robust accuracy, per model: what a defence buys and costs
            mlflow.log_text(tradeoff, "tradeoff.md")
            tracking.log_figure(tradeoff_figure(entries, labels), "figures/tradeoff.png")
        tracking.describe(note(f"Robust accuracy per model and ε: {len(rows)} attack runs, {len(imported)} imported "
                               "results (every row in compare.md; n = attacked images)", tradeoff, worst))
        mlflow.log_table({f.name: [getattr(r, f.name) for r in everything] for f in fields(RobustnessRow)}, "compare.json")
        tracking.log_figure(compare_figure(everything), "figures/compare.png")
        with contextlib.ExitStack() as stack:
            folder = request.export_dir or stack.enter_context(tempfile.TemporaryDirectory())
            for path in export_robustbench(rows, folder):
                mlflow.log_artifact(str(path), f"robustbench/{path.parent.parent.name}/{path.parent.name}")
    return CompareOutcome(run.info.run_id, everything, tradeoff)


# -- the ε curves of several sweeps -------------------------------------------------------------

_ROW_KEYS = ("attack", "eps", "run_id", "cached")
_NOT_METRICS = (*_ROW_KEYS, "cached_from")


def sweep_rows(run_id: str) -> list[SweepRow]:
    """The rows a ``medart sweep`` run logged in ``sweep.json``, one per (attack, ε)."""
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="sweep.json", dst_path=tmp)
            records = json.loads(Path(path).read_text())["rows"]
        # cached_from is absent from sweeps logged before it was recorded
        return [SweepRow.from_metrics(*(r[k] for k in _ROW_KEYS), {k: v for k, v in r.items() if k not in _NOT_METRICS},
                                      r.get("cached_from"))
                for r in records]
    except (MlflowException, OSError, KeyError, TypeError) as exc:
        raise ConfigError(f"run {run_id} has no readable sweep.json ({type(exc).__name__}); "
                          "pass the id of a `medart sweep` run (the parent run, not a child)") from None


def sweep_record(row: SweepRow) -> dict:
    """A sweep row as ``sweep.json`` writes it: attack, eps, run_id, cached, cached_from and the attack metrics."""
    return {"attack": row.attack, "eps": row.eps, "run_id": row.run_id, "cached": row.cached, "cached_from": row.cached_from,
            **row.metrics}


def sweep_label(run_id: str) -> str:
    """A short legend label for a sweep run: its dataset and model, e.g. ``pneumonia · medart-pneumonia@champion``."""
    params = mlflow.MlflowClient().get_run(run_id).data.params
    return f"{params.get('dataset', '?')} · {short_model(params.get('model_uri', '?'))}"


def compare_sweeps(run_ids: Sequence[str], labels: Sequence[str] = ()) -> str:
    """Draw the sweeps ``run_ids`` in one figure, logged as ``figures/eps_curves.png`` (with
    ``eps_curves.json``, the rows by label) in a new run of ``medart/<dataset>/analysis`` (or
    ``medart/analysis`` when the datasets differ). ``labels``: one legend label per run (default:
    dataset · model). Returns that run's id."""
    if not run_ids:
        raise ConfigError("no sweep runs given; pass `run_ids` of one or more `medart sweep` runs")
    if labels and len(labels) != len(run_ids):
        raise ConfigError(f"{len(labels)} labels for {len(run_ids)} runs; give one of `labels` per `run_ids` or none")
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
        mlflow.log_dict({label: [sweep_record(r) for r in members] for label, members in curves.items()}, "eps_curves.json")
        tracking.log_figure(eps_curves_figure(curves), "figures/eps_curves.png")
    return run.info.run_id
