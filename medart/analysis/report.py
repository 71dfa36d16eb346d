"""A self-contained HTML report of an MLflow run (or an experiment): its numbers, tables and
figures, with the paper's numbers beside them where the task matches one of the paper's.

Everything is read back through ``MlflowClient`` — metrics, params, ``*.md`` tables,
``figures/*.png`` (embedded as base64) and the same for the run's child runs — so the page shows
what was logged, nothing recomputed. The page needs no network and no files beside it.
"""

from __future__ import annotations

import base64
import datetime
import html
import tempfile
from pathlib import Path
from typing import Iterable

import mlflow
from mlflow.entities import Run
from mlflow.exceptions import MlflowException

from medart import tracking
from medart.errors import ConfigError

# Ma et al. 2021 (PAPER.md). Table 2: ε = 1/255, (accuracy %, AUC %) of the 2-class models.
PAPER_TABLE2 = {
    "Fundoscopy": {"none": (91.03, 81.91), "fgsm": (1.15, 3.71), "bim": (0.00, 0.00), "pgd": (0.00, 0.00), "cw": (0.04, 0.09)},
    "Chest X-Ray": {"none": (93.99, 61.25), "fgsm": (1.90, 0.96), "bim": (0.00, 0.00), "pgd": (0.00, 0.00), "cw": (0.00, 0.00)},
    "Dermoscopy": {"none": (87.62, 78.74), "fgsm": (29.98, 20.58), "bim": (0.21, 0.13), "pgd": (0.43, 0.74), "cw": (0.21, 0.13)},
}
# Table 3: accuracy % by ε (×255) and task.
PAPER_TABLE3 = {
    0.3: {"Chest X-Ray": {"none": 93.99, "fgsm": 16.26, "bim": 1.60, "pgd": 0.56, "cw": 0.49},
          "Chest X-Ray-3": {"none": 90.01, "fgsm": 10.07, "bim": 0.72, "pgd": 0.30, "cw": 1.84},
          "Chest X-Ray-4": {"none": 84.26, "fgsm": 3.01, "bim": 0.19, "pgd": 0.08, "cw": 0.17}},
    1.0: {"Chest X-Ray": {"none": 93.99, "fgsm": 1.90, "bim": 0.00, "pgd": 0.00, "cw": 0.00},
          "Chest X-Ray-3": {"none": 90.01, "fgsm": 2.14, "bim": 0.00, "pgd": 0.00, "cw": 0.00},
          "Chest X-Ray-4": {"none": 84.26, "fgsm": 0.74, "bim": 0.00, "pgd": 0.00, "cw": 0.00}},
}
# Table 4: detection AUC % at ε = 1/255.
PAPER_TABLE4 = {
    "Fundoscopy": {"kd": (100.00, 100.00, 100.00, 100.00), "lid": (94.20, 99.63, 99.52, 99.20),
                   "dfeat": (99.97, 100.00, 100.00, 99.99), "qfeat": (98.87, 99.82, 99.91, 99.95)},
    "Chest X-Ray": {"kd": (99.29, 100.00, 100.00, 100.00), "lid": (78.40, 96.92, 95.20, 96.74),
                    "dfeat": (99.97, 100.00, 100.00, 100.00), "qfeat": (87.63, 96.35, 92.07, 99.16)},
    "Dermoscopy": {"kd": (100.00, 100.00, 100.00, 100.00), "lid": (64.83, 95.37, 92.72, 95.90),
                   "dfeat": (98.65, 99.77, 99.48, 99.78), "qfeat": (86.53, 89.27, 95.45, 93.92)},
}
TABLE4_ATTACKS = ("fgsm", "bim", "pgd", "cw")
# medart dataset → the paper's task it stands in for.
PAPER_TASKS = {"pneumonia": "Chest X-Ray", "chestxray2": "Chest X-Ray", "chestxray3": "Chest X-Ray-3",
               "chestxray4": "Chest X-Ray-4", "fundoscopy": "Fundoscopy", "dermoscopy": "Dermoscopy"}
REPORT_TAG = "medart.report"
# Figures in the paper's order (then any others by name).
FIGURE_ORDER = ("accuracy_vs_eps", "eps_curves", "saliency", "stages", "landscape", "embedding", "gradcam",
                "detection_auc", "transfer", "roc", "training")

_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px auto;max-width:1200px;color:#1d2430;
     line-height:1.4;padding:0 16px}
h1{font-size:24px;margin-bottom:4px}h2{font-size:19px;border-bottom:2px solid #dde3ea;padding-bottom:4px;margin-top:28px}
h3{font-size:15px;margin:16px 0 6px}.meta{color:#5b6675;font-size:13px}
table{border-collapse:collapse;font-size:13px;margin:6px 0 12px}th,td{border:1px solid #cfd6de;padding:3px 8px;text-align:left}
th{background:#eef2f6}td.num{text-align:right;font-variant-numeric:tabular-nums}
.pair{display:flex;flex-wrap:wrap;gap:24px;align-items:flex-start}.pair>div{flex:1 1 420px;min-width:0}
figure{margin:10px 0 18px}figure img{max-width:100%;border:1px solid #e3e8ee}figcaption{font-size:12px;color:#5b6675}
.child{border-left:3px solid #dde3ea;padding-left:14px;margin:14px 0}.note{font-size:13px;color:#5b6675}
"""


def _e(value) -> str:
    return html.escape(str(value))


def markdown_tables(text: str) -> str:
    """The pipe tables of a medart ``*.md`` artifact as HTML tables (other lines as paragraphs)."""
    out, table = [], []

    def flush() -> None:
        if not table:
            return
        rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in table]
        body = [r for r in rows[1:] if not all(set(c) <= set("-: ") for c in r)]
        out.append("<table><tr>" + "".join(f"<th>{_e(c)}</th>" for c in rows[0]) + "</tr>"
                   + "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in r) + "</tr>" for r in body) + "</table>")
        table.clear()

    for line in text.splitlines():
        if line.strip().startswith("|"):
            table.append(line)
            continue
        flush()
        if line.strip():
            out.append(f"<p>{_e(line.strip())}</p>")
    flush()
    return "\n".join(out)


def _table(header: Iterable[str], rows: Iterable[Iterable]) -> str:
    def cell(v) -> str:
        if isinstance(v, float):
            return f'<td class="num">{v:.4g}</td>'
        return f"<td>{_e(v)}</td>"

    return ("<table><tr>" + "".join(f"<th>{_e(h)}</th>" for h in header) + "</tr>"
            + "".join("<tr>" + "".join(cell(v) for v in row) + "</tr>" for row in rows) + "</table>")


def _children(client: mlflow.MlflowClient, run: Run) -> list[Run]:
    runs = client.search_runs([run.info.experiment_id], f"tags.mlflow.parentRunId = '{run.info.run_id}'",
                              order_by=["attributes.start_time ASC"], max_results=500)
    return list(runs)


def _descendants(client: mlflow.MlflowClient, run: Run, depth: int = 3) -> list[Run]:
    found, level = [], [run]
    for _ in range(depth):
        level = [c for r in level for c in _children(client, r)]
        found += level
    return found


def _artifacts(client: mlflow.MlflowClient, run_id: str, path: str = "") -> list[str]:
    files = []
    for item in client.list_artifacts(run_id, path or None):
        if item.is_dir:
            if item.path.split("/")[0] not in ("model", "adversarial"):  # weights and examples: not for a page
                files += _artifacts(client, run_id, item.path)
        else:
            files.append(item.path)
    return files


def _run_body(client: mlflow.MlflowClient, run: Run, tmp: Path, heading: str = "h2", params: bool = True) -> str:
    """Tables (``*.md``), figures (``figures/*.png``), metrics and params of one run."""
    run_id = run.info.run_id
    files = _artifacts(client, run_id)
    parts = []
    for path in sorted(f for f in files if f.endswith(".md")):
        text = Path(client.download_artifacts(run_id, path, str(tmp))).read_text()
        parts.append(f"<{heading}>Table: {_e(path)}</{heading}>{markdown_tables(text)}")
    figures = [f for f in files if f.startswith("figures/") and f.endswith(".png")]
    rank = {name: k for k, name in enumerate(FIGURE_ORDER)}
    for path in sorted(figures, key=lambda f: (rank.get(Path(f).stem, len(rank)), f)):
        data = base64.b64encode(Path(client.download_artifacts(run_id, path, str(tmp))).read_bytes()).decode()
        parts.append(f'<figure><img alt="{_e(path)}" src="data:image/png;base64,{data}"><figcaption>{_e(path)}</figcaption></figure>')
    metrics = sorted(run.data.metrics.items())
    tables = [f"<div><{heading}>Metrics</{heading}>{_table(('metric', 'value'), metrics)}</div>"] if metrics else []
    if params and run.data.params:
        tables.append(f"<div><{heading}>Parameters</{heading}>{_table(('parameter', 'value'), sorted(run.data.params.items()))}</div>")
    if tables:
        parts.append('<div class="pair">' + "".join(tables) + "</div>")
    return "\n".join(parts)


def _attack_results(runs: Iterable[Run]) -> dict[tuple[str, float], dict[str, float]]:
    """(attack, ε × 255 rounded to 0.01) → the attack run's metrics, from runs that attacked (newest wins)."""
    found = {}
    for r in sorted(runs, key=lambda r: r.info.start_time or 0):
        p, m = r.data.params, r.data.metrics
        if "attack.name" in p and "adv_acc" in m and p.get("attack.targeted", "False") == "False":
            found[(p["attack.name"], round(float(p["attack.eps"]) * 255, 2))] = m
    return found


def paper_comparison(dataset: str | None, runs: Iterable[Run]) -> str:
    """HTML: measured numbers of ``runs`` beside the paper's for the matching task, and the paper's
    own rows for that task; empty when the dataset matches none of the paper's tasks."""
    task = PAPER_TASKS.get(dataset or "")
    if task is None:
        return ""
    runs = list(runs)
    attacks = _attack_results(runs)
    parts = [f"<h2>Beside the paper: {_e(task)}</h2><p class='note'>Ma et al. 2021 (Pattern Recognition 110, 107332); "
             f"medart's <code>{_e(dataset)}</code> task stands in for the paper's {_e(task)} task (see the README for "
             "what differs: image size, data source, pretraining, training length).</p>"]
    rows = []
    for (attack, eps), m in sorted(attacks.items()):
        paper_acc = PAPER_TABLE3.get(eps, {}).get(task, {}).get(attack)
        paper_auc = PAPER_TABLE2[task][attack][1] if task in PAPER_TABLE2 and eps == 1.0 else None
        if paper_acc is None:
            continue
        rows.append((attack.upper(), f"{eps:g}/255", f"{m['adv_acc'] * 100:.2f}", f"{paper_acc:.2f}",
                     f"{m['adv_auc'] * 100:.2f}" if "adv_auc" in m else "", "" if paper_auc is None else f"{paper_auc:.2f}"))
    if rows:
        clean = next(iter(attacks.values()))
        none = PAPER_TABLE3[1.0][task]["none"]
        none_auc = PAPER_TABLE2[task]["none"][1] if task in PAPER_TABLE2 else None
        rows.insert(0, ("none", "—", f"{clean['clean_acc'] * 100:.2f}", f"{none:.2f}",
                        f"{clean['clean_auc'] * 100:.2f}" if "clean_auc" in clean else "", "" if none_auc is None else f"{none_auc:.2f}"))
        parts.append("<h3>Accuracy and AUC under attack (%), measured vs paper (Tables 2 and 3)</h3>"
                     + _table(("attack", "ε", "measured acc", "paper acc", "measured AUC", "paper AUC"), rows))
    detect_rows = []
    for r in runs:
        p, m = r.data.params, r.data.metrics
        if "attack.name" in p and task in PAPER_TABLE4 and round(float(p.get("attack.eps", 0)) * 255, 2) == 1.0:
            for key, value in sorted(m.items()):
                name = key.removeprefix("auc_")
                if key.startswith("auc_") and not key.endswith("_std") and name in PAPER_TABLE4[task]:
                    paper = PAPER_TABLE4[task][name][TABLE4_ATTACKS.index(p["attack.name"])]
                    detect_rows.append((name.upper(), p["attack.name"].upper(), f"{value * 100:.2f}", f"{paper:.2f}"))
    if detect_rows:
        parts.append("<h3>Detection AUC (%), measured vs paper (Table 4, ε = 1/255)</h3>"
                     + _table(("detector", "attack", "measured AUC", "paper AUC"), detect_rows))
    reference = []
    if task in PAPER_TABLE2:
        reference.append("<div><h3>Paper, Table 2 (ε = 1/255)</h3>" + _table(
            ("attack", "acc", "AUC"), [(a.upper(), f"{v[0]:.2f}", f"{v[1]:.2f}") for a, v in PAPER_TABLE2[task].items()]) + "</div>")
    if task.startswith("Chest"):
        reference.append("<div><h3>Paper, Table 3 (accuracy)</h3>" + _table(
            ("attack", "ε = 0.3/255", "ε = 1/255"),
            [(a.upper(), f"{PAPER_TABLE3[0.3][task][a]:.2f}", f"{PAPER_TABLE3[1.0][task][a]:.2f}") for a in PAPER_TABLE3[1.0][task]]) + "</div>")
    if task in PAPER_TABLE4:
        reference.append("<div><h3>Paper, Table 4 (detection AUC)</h3>" + _table(
            ("detector", *(a.upper() for a in TABLE4_ATTACKS)),
            [(d.upper(), *(f"{v:.2f}" for v in values)) for d, values in PAPER_TABLE4[task].items()]) + "</div>")
    parts.append('<div class="pair">' + "".join(reference) + "</div>")
    return "\n".join(parts)


def _page(title: str, body: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
            f"<style>{_STYLE}</style></head><body>\n{body}\n</body></html>\n")


def _when(ms: int | None) -> str:
    return datetime.datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M:%S") if ms else "—"


def _get_run(client: mlflow.MlflowClient, run_id: str) -> Run:
    try:
        return client.get_run(run_id)
    except MlflowException:
        raise ConfigError(f"run '{run_id}' not found in {mlflow.get_tracking_uri()}; check --run-id and --tracking-uri") from None


def render_run_report(run_id: str) -> str:
    """The HTML page of one run: its tables, figures, metrics and parameters, the same for each
    child run, and the paper's numbers beside the run's where its dataset matches a paper task."""
    client = mlflow.MlflowClient()
    run = _get_run(client, run_id)
    experiment = client.get_experiment(run.info.experiment_id).name
    children = _children(client, run)
    with tempfile.TemporaryDirectory() as tmp:
        body = [f"<h1>medart report: {_e(run.info.run_name)}</h1>",
                f"<p class='meta'>run {_e(run_id)} · experiment {_e(experiment)} · {_e(run.info.status)} · started "
                f"{_when(run.info.start_time)} · medart {_e(run.data.tags.get('medart.version', '?'))} · commit "
                f"{_e(run.data.tags.get('mlflow.source.git.commit', '?')[:10])} · tracking {_e(mlflow.get_tracking_uri())}</p>",
                paper_comparison(run.data.params.get("dataset"), [run, *_descendants(client, run)]),
                "<h2>This run</h2>", _run_body(client, run, Path(tmp), "h3")]
        if children:
            body.append(f"<h2>Child runs ({len(children)})</h2>")
            for child in children:
                body.append(f"<div class='child'><h3>{_e(child.info.run_name)} <span class='meta'>({_e(child.info.run_id)}, "
                            f"{_e(child.info.status)})</span></h3>{_run_body(client, child, Path(tmp), 'h4', params=False)}</div>")
    return _page(f"medart report: {run.info.run_name}", "\n".join(body))


def render_experiment_report(experiment: str, max_runs: int = 20) -> str:
    """The HTML page of an experiment's ``max_runs`` newest top-level runs: one summary table, then
    each run's tables, figures and metrics, and the paper's numbers where the dataset matches."""
    client = mlflow.MlflowClient()
    found = client.get_experiment_by_name(experiment)
    if found is None:
        names = ", ".join(e.name for e in client.search_experiments(max_results=20))
        raise ConfigError(f"experiment '{experiment}' not found in {mlflow.get_tracking_uri()}; known: {names or 'none'}")
    runs = [r for r in client.search_runs([found.experiment_id], order_by=["attributes.start_time DESC"], max_results=1000)
            if "mlflow.parentRunId" not in r.data.tags and REPORT_TAG not in r.data.tags][:max_runs]
    if not runs:
        raise ConfigError(f"experiment '{experiment}' has no runs to report")
    datasets = {r.data.params.get("dataset") for r in runs}
    summary = _table(("run", "status", "started", "metrics"), [
        (r.info.run_name, r.info.status, _when(r.info.start_time), len(r.data.metrics)) for r in runs])
    body = [f"<h1>medart report: experiment {_e(experiment)}</h1>",
            f"<p class='meta'>{len(runs)} newest top-level runs · tracking {_e(mlflow.get_tracking_uri())}</p>", summary]
    if len(datasets) == 1:
        every = [d for r in runs for d in (r, *_descendants(client, r))]
        body.append(paper_comparison(datasets.pop(), every))
    with tempfile.TemporaryDirectory() as tmp:
        for r in runs:
            body.append(f"<h2>{_e(r.info.run_name)} <span class='meta'>({_e(r.info.run_id)}, {_e(r.info.status)})</span></h2>"
                        + _run_body(client, r, Path(tmp), "h3"))
    return _page(f"medart report: {experiment}", "\n".join(body))


def report_run(run_id: str, output: str | Path | None = None, log: bool = True) -> Path:
    """Write :func:`render_run_report` to ``output`` (default ``report-<run id>.html``) and, with
    ``log``, attach it to the run as ``report.html``. Returns the file's path."""
    page = render_run_report(run_id)
    path = Path(output or f"report-{run_id[:12]}.html")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    if log:
        with tempfile.TemporaryDirectory() as tmp:
            copy = Path(tmp) / "report.html"
            copy.write_text(page, encoding="utf-8")
            mlflow.MlflowClient().log_artifact(run_id, str(copy))
    return path


def report_experiment(experiment: str, output: str | Path | None = None, max_runs: int = 20,
                      log: bool = True) -> tuple[Path, str | None]:
    """Write :func:`render_experiment_report` to ``output`` (default ``report-<experiment>.html``)
    and, with ``log``, attach it as ``report.html`` to a new run in that experiment (tagged, so
    later reports skip it). Returns the file's path and that run's id (``None`` without ``log``)."""
    page = render_experiment_report(experiment, max_runs)
    path = Path(output or f"report-{experiment.replace('/', '-')}.html")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    if not log:
        return path, None
    with tracking.start_run(experiment, "report") as run:
        mlflow.set_tag(REPORT_TAG, "true")
        mlflow.log_text(page, "report.html")
    return path, run.info.run_id
