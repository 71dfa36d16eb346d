"""The HTML report of a run (or an experiment): its tables, figures, metrics and parameters, those
of all its descendant runs, and the paper's numbers beside them where the task matches one of the
paper's. Pure rendering of :class:`RunView` records; :mod:`medart.stages.report` reads them.

Accuracies and AUCs appear in percent everywhere on the page (the unit in the header or the
metric's name), with their 95 % interval and n where the run logged them (``<m>_ci_low``,
``<m>_ci_high``, ``<m>_n``: :mod:`medart.intervals`); other metrics as logged. The page needs no
network and no files beside it.
"""

from __future__ import annotations

import base64
import datetime
import html
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Collection, Iterable, Iterator, Sequence

from medart.budget import logged_eps
from medart.intervals import Estimate, estimates, interval_names
from medart.numbers import CHANCE_LEGEND, DEGENERATE, auc_ci, ci, ci_n, pct

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
# Figures in a run's section: an attack's gallery and every detector's ROC curves (the figures a
# run's page also shows first, under "Pictures": :func:`pictures`), then the paper's order (then any
# others by name).
FIGURE_ORDER = ("gallery", "roc_all", "tradeoff", "accuracy_vs_eps", "eps_curves", "saliency", "stages", "landscape", "embedding", "gradcam",
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
.warn{background:#fff4e5;border-left:4px solid #e8a33d;padding:6px 10px}
"""


@dataclass
class RunView:
    """What the page shows of one run, as read from the tracking store."""

    run_id: str
    name: str
    status: str
    start_time: int | None  # ms since the epoch
    params: dict[str, str]
    metrics: dict[str, float]  # as logged: accuracies and AUCs are fractions
    tags: dict[str, str]
    tables: list[tuple[str, str]] = field(default_factory=list)  # (artifact path, Markdown) of its *.md
    figures: list[tuple[str, bytes]] = field(default_factory=list)  # (artifact path, PNG) of its figures/*.png
    children: list["RunView"] = field(default_factory=list)  # oldest first

    def descendants(self) -> Iterator["RunView"]:
        """Children, their children, and so on, at any depth (depth first)."""
        for child in self.children:
            yield child
            yield from child.descendants()


def _e(value) -> str:
    return html.escape(str(value))


def html_table(header: Iterable[str], rows: Iterable[Iterable], numeric: Sequence[int] = ()) -> str:
    """An HTML table; the columns ``numeric`` (indices) are right-aligned."""
    def cell(k: int, value) -> str:
        return f'<td class="num">{_e(value)}</td>' if k in numeric else f"<td>{_e(value)}</td>"

    return ("<table><tr>" + "".join(f"<th>{_e(h)}</th>" for h in header) + "</tr>"
            + "".join("<tr>" + "".join(cell(k, v) for k, v in enumerate(row)) + "</tr>" for row in rows) + "</table>")


def markdown_tables(text: str) -> str:
    """The pipe tables of a medart ``*.md`` artifact as HTML tables (other lines as paragraphs)."""
    out, table = [], []

    def flush() -> None:
        if not table:
            return
        rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in table]
        body = [r for r in rows[1:] if not all(set(c) <= set("-: ") for c in r)]
        out.append(html_table(rows[0], body))
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


def _attack_results(runs: Iterable[RunView]) -> dict[tuple[str, float], dict[str, float]]:
    """(attack, ε × 255 rounded to 0.01) → the attack run's metrics, from runs that attacked (newest wins)."""
    found = {}
    for r in sorted(runs, key=lambda r: r.start_time or 0):
        p, m = r.params, r.metrics
        if "attack.name" in p and "adv_acc" in m and p.get("attack.targeted", "False") == "False":
            found[(p["attack.name"], round(logged_eps(p, "attack.eps") * 255, 2))] = m
    return found


def _optional(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def _measured(m: dict[str, float], *names: str) -> str:
    """The first of ``names`` that ``m`` holds, in % with its interval (:func:`~medart.numbers.ci`); empty where none is."""
    name = next((k for k in names if k in m), None)
    return "" if name is None else ci(Estimate.read(m, name))


def _clean_cells(m: dict[str, float]) -> tuple[str, str]:
    """Clean accuracy and balanced accuracy (%) of the attacked images with their intervals, from an
    attack run's metrics (``clean_*``) or a detection run's guard (``guard.clean_*``); empty where a run predates them."""
    return _measured(m, "clean_acc", "guard.clean_acc"), _measured(m, "clean_balanced_acc", "guard.clean_balanced_acc")


def _accuracy_rows(task: str, runs: Sequence[RunView]) -> list[tuple]:
    """Measured vs paper accuracy and AUC (%) per (attack, ε) where Tables 2 and 3 have the paper's,
    with the clean accuracy and balanced accuracy of the attacked images beside each."""
    attacks, rows = _attack_results(runs), []
    for (attack, eps), m in sorted(attacks.items()):
        paper_acc = PAPER_TABLE3.get(eps, {}).get(task, {}).get(attack)
        paper_auc = PAPER_TABLE2[task][attack][1] if task in PAPER_TABLE2 and eps == 1.0 else None
        if paper_acc is not None:
            rows.append((attack.upper(), f"{eps:g}/255", _measured(m, "adv_acc"), f"{paper_acc:.2f}",
                         _measured(m, "adv_auc"), _optional(paper_auc), *_clean_cells(m), int(m.get("n", 0)) or ""))
    if rows:
        clean = next(iter(attacks.values()))
        none_auc = PAPER_TABLE2[task]["none"][1] if task in PAPER_TABLE2 else None
        rows.insert(0, ("none", "—", _measured(clean, "clean_acc"), f"{PAPER_TABLE3[1.0][task]['none']:.2f}",
                        _measured(clean, "clean_auc"), _optional(none_auc), *_clean_cells(clean),
                        int(clean.get("n", 0)) or ""))
    return rows


def _detection_rows(task: str, runs: Sequence[RunView]) -> list[tuple]:
    """Measured vs paper detection AUC (%) at ε = 1/255 (Table 4), with the model's clean accuracy
    and balanced accuracy beside each."""
    rows = []
    for r in runs:
        p, m = r.params, r.metrics
        if p.get("attack.name") in TABLE4_ATTACKS and task in PAPER_TABLE4 and round(logged_eps(p, "attack.eps") * 255, 2) == 1.0:
            for key, value in sorted(m.items()):
                name = key.removeprefix("auc_")
                if key.startswith("auc_") and not key.endswith("_std") and name in PAPER_TABLE4[task]:
                    paper = PAPER_TABLE4[task][name][TABLE4_ATTACKS.index(p["attack.name"])]
                    rows.append((name.upper(), p["attack.name"].upper(), auc_ci(Estimate.read(m, key)), f"{paper:.2f}",
                                 *_clean_cells(m), int(m.get(interval_names(key)[2], 0)) or p.get("n_test_pairs", "")))
    return rows


def degenerate_banner(runs: Iterable[RunView]) -> str:
    """HTML: a warning naming the degenerate-model guard's reason when any of ``runs`` is tagged
    ``medart.degenerate=true``; empty otherwise."""
    reasons = dict.fromkeys(r.tags.get("medart.degenerate_reason", "") for r in runs
                            if r.tags.get("medart.degenerate") == "true")
    if not reasons:
        return ""
    return ("<p class='warn'><b>Degenerate model</b>: " + _e("; ".join(filter(None, reasons)) or "see the runs' tags")
            + ". Its attack and detection numbers say little about robustness; compare them with the clean and "
            "balanced accuracy beside them.</p>")


def _paper_tables(task: str) -> str:
    """The paper's own rows for ``task``: Tables 2, 3 (chest X-ray tasks) and 4, in %."""
    reference = []
    if task in PAPER_TABLE2:
        reference.append("<div><h3>Paper, Table 2 (ε = 1/255)</h3>" + html_table(
            ("attack", "acc (%)", "AUC (%)"), [(a.upper(), f"{v[0]:.2f}", f"{v[1]:.2f}") for a, v in PAPER_TABLE2[task].items()],
            (1, 2)) + "</div>")
    if task.startswith("Chest"):
        reference.append("<div><h3>Paper, Table 3 (accuracy)</h3>" + html_table(
            ("attack", "ε = 0.3/255 acc (%)", "ε = 1/255 acc (%)"),
            [(a.upper(), f"{PAPER_TABLE3[0.3][task][a]:.2f}", f"{PAPER_TABLE3[1.0][task][a]:.2f}") for a in PAPER_TABLE3[1.0][task]],
            (1, 2)) + "</div>")
    if task in PAPER_TABLE4:
        reference.append("<div><h3>Paper, Table 4 (detection AUC)</h3>" + html_table(
            ("detector", *(f"{a.upper()} AUC (%)" for a in TABLE4_ATTACKS)),
            [(d.upper(), *(f"{v:.2f}" for v in values)) for d, values in PAPER_TABLE4[task].items()], (1, 2, 3, 4)) + "</div>")
    return '<div class="pair">' + "".join(reference) + "</div>"


def paper_comparison(dataset: str | None, runs: Iterable[RunView]) -> str:
    """HTML: measured numbers of ``runs`` beside the paper's for the matching task, and the paper's
    own rows for that task; empty when the dataset matches none of the paper's tasks or the runs
    measured nothing the paper printed (a training run, a comparison, attacks at other budgets)."""
    task = PAPER_TASKS.get(dataset or "")
    if task is None:
        return ""
    runs = list(runs)
    accuracy, detection = _accuracy_rows(task, runs), _detection_rows(task, runs)
    if not accuracy and not detection:
        return ""
    parts = [f"<h2>Beside the paper: {_e(task)}</h2><p class='note'>Ma et al. 2021 (Pattern Recognition 110, 107332); "
             f"medart's <code>{_e(dataset)}</code> task stands in for the paper's {_e(task)} task (see the README for "
             "what differs: image size, data source, pretraining, training length).</p>"]
    if rows := accuracy:
        parts.append("<h3>Accuracy and AUC under attack, measured vs paper (Tables 2 and 3)</h3>" + html_table(
            ("attack", "ε", "measured acc (%)", "paper acc (%)", "measured AUC (%)", "paper AUC (%)", "clean acc (%)",
             "clean balanced acc (%)", "images"), rows)
            + "<p class='note'>Measured: 95 % intervals in brackets (Wilson for accuracies, DeLong for AUCs) over the "
              "images counted; the paper gives none.</p>")
    if rows := detection:
        parts.append("<h3>Detection AUC, measured vs paper (Table 4, ε = 1/255)</h3>"
                     + html_table(("detector", "attack", "measured AUC (%)", "paper AUC (%)", "clean acc (%)",
                                   "clean balanced acc (%)", "AdvTest pairs"), rows)
                     + f"<p class='note'>Measured: 95 % DeLong intervals over the AdvTest pairs. {_e(CHANCE_LEGEND)}</p>")
    parts.append(_paper_tables(task))
    return "\n".join(parts)


def is_percent(metric: str) -> bool:
    """Whether a metric is an accuracy, AUC or success rate (a fraction shown in %): ``clean_acc``,
    ``adv_acc.pgd``, ``auc_kd``, ``fgsm.auc_lid``, ``val_auc``, ``success_rate``."""
    return bool({"acc", "auc"} & set(re.split(r"[._]", metric))) or "success_rate" in metric


def metric_rows(metrics: dict[str, float]) -> list[tuple[str, str]]:
    """(name, value) per metric, sorted by name: accuracies/AUCs in % with "(%)" after the name, with
    their 95 % interval and n where they were logged beside them (those three get no rows of their
    own; a detection AUC whose interval holds chance marked †); a detection AUC logged as NaN (a
    degenerate fit) as ``degenerate``, any other NaN as ``—``."""
    found = estimates(metrics)
    folded = {k for name in found for k in interval_names(name)}

    def value(name: str, v: float) -> str:
        if math.isnan(v):
            return DEGENERATE if is_detection_auc(name) else "—"
        if name in found:
            return auc_ci(found[name], 2) + f" (n = {found[name].n})" if is_detection_auc(name) else ci_n(found[name], 2)
        return pct(v) if is_percent(name) else f"{v:.4g}"

    return [(f"{k} (%)" if is_percent(k) else k, value(k, v)) for k, v in sorted(metrics.items()) if k not in folded]


def is_detection_auc(metric: str) -> bool:
    """Whether a metric is a detector's AUC (``auc_kd``, ``fgsm.auc_lid``, ``auc_kd_std``, an
    adaptive row's ``auc``/``auc_adaptive`` and ``undetected*``), not a model's (``clean_auc``, ``val_auc``)."""
    return bool(re.search(r"(^|\.)(auc_|auc$|undetected)", metric))


def _heading(level: int) -> str:
    return f"h{min(level, 6)}"


def _figure(path: str, png: bytes, caption: str) -> str:
    data = base64.b64encode(png).decode()
    return f'<figure><img alt="{_e(path)}" src="data:image/png;base64,{data}"><figcaption>{_e(caption)}</figcaption></figure>'


#: (run id, artifact path) of figures the page already shows under "Pictures"
Shown = Collection[tuple[str, str]]


def run_body(view: RunView, level: int = 2, params: bool = True, shown: Shown = ()) -> str:
    """Tables (``*.md``), figures (``figures/*.png``: the headline ones first, then in the paper's
    order; those ``shown`` higher on the page named only), metrics and params of one run."""
    h = _heading(level)
    parts = [f"<{h}>Table: {_e(path)}</{h}>{markdown_tables(text)}" for path, text in sorted(view.tables)]
    rank = {name: k for k, name in enumerate(FIGURE_ORDER)}
    for path, png in sorted(view.figures, key=lambda f: (rank.get(Path(f[0]).stem, len(rank)), f[0])):
        if (view.run_id, path) in shown:
            parts.append(f"<p class='note'>{_e(path)}: under Pictures, at the top of the page.</p>")
        else:
            parts.append(_figure(path, png, path))
    tables = []
    if view.metrics:
        tables.append(f"<div><{h}>Metrics</{h}>{html_table(('metric', 'value'), metric_rows(view.metrics), (1,))}</div>")
    if params and view.params:
        tables.append(f"<div><{h}>Parameters</{h}>{html_table(('parameter', 'value'), sorted(view.params.items()))}</div>")
    if tables:
        parts.append('<div class="pair">' + "".join(tables) + "</div>")
    return "\n".join(parts)


def child_section(view: RunView, level: int = 3, shown: Shown = ()) -> str:
    """A child run's body, its own children's sections nested inside it (any depth)."""
    h = _heading(level)
    nested = "".join(child_section(c, level + 1, shown) for c in view.children)
    return (f"<div class='child'><{h}>{_e(view.name)} <span class='meta'>({_e(view.run_id)}, {_e(view.status)})</span></{h}>"
            f"{run_body(view, level + 1, params=False, shown=shown)}{nested}</div>")


def pictures(views: Sequence[RunView]) -> tuple[str, set[tuple[str, str]]]:
    """HTML: the headline figures of ``views`` (a run, its descendants, the attack runs it used) —
    a comparison's trade-off (clean against AutoAttack's robust accuracy), per attack the gallery of
    its largest ε (a sweep's other cells keep theirs in their sections), then each distinct
    ``roc_all`` figure (the pipeline's run holds a copy of its detection run's) — and the (run id,
    path) of every figure shown. Empty when there are none."""
    galleries: dict[str, tuple[float, RunView, str, bytes]] = {}
    rocs: dict[bytes, list[tuple[RunView, str]]] = {}
    tradeoffs: list[tuple[RunView, str, bytes]] = []
    for view in views:
        for path, png in view.figures:
            if Path(path).stem == "tradeoff":
                tradeoffs.append((view, path, png))
            elif Path(path).stem == "gallery":
                # an attack through a defence (BPDA, plain, EOT) is an attack of its own
                attack = "-".join(view.params[k] for k in ("attack.name", "attack.defence_gradient", "attack.eot_samples")
                                  if k in view.params) or view.run_id
                eps = logged_eps(view.params, "attack.eps") if "attack.eps" in view.params else 0.0
                if attack not in galleries or eps > galleries[attack][0]:
                    galleries[attack] = (eps, view, path, png)
            elif Path(path).stem == "roc_all":
                rocs.setdefault(png, []).append((view, path))
    if not galleries and not rocs and not tradeoffs:
        return "", set()
    shown = ({(v.run_id, path) for _, v, path, _ in galleries.values()} | {(v.run_id, path) for at in rocs.values()
                                                                          for v, path in at}
             | {(v.run_id, path) for v, path, _ in tradeoffs})
    parts = ["<h2>Pictures</h2>"]
    for view, path, png in tradeoffs:
        parts.append(_figure(path, png, "what each model's defence buys and costs: AutoAttack's robust accuracy against ε "
                                        "(left) and against clean accuracy (right), 95 % Wilson intervals as bars (the "
                                        f"numbers: tradeoff.md below): {view.name} ({view.run_id}): {path}"))
    if galleries:
        parts.append("<p class='note'>What each attack did: AdvTest images drawn with the run's seed, stratified by class — "
                     "clean, the perturbation amplified (its factor and span on it), adversarial — with the true class "
                     "and the model's answer and confidence before and after.</p>")
        parts.append('<div class="pair">' + "".join(
            f"<div>{_figure(path, png, f'{view.name} ({view.run_id}): {path}')}</div>"
            for _, view, path, png in galleries.values()) + "</div>")
    for png, at in rocs.items():
        view, path = at[0]
        parts.append(_figure(path, png, f"every detector's ROC curve on AdvTest, a panel per attack: {view.name} "
                                        f"({view.run_id}): {path}"))
    return "\n".join(parts), shown


def when(ms: int | None) -> str:
    return datetime.datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M:%S") if ms else "—"


def page(title: str, body: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
            f"<style>{_STYLE}</style></head><body>\n{body}\n</body></html>\n")


def run_page(view: RunView, experiment: str, tracking_uri: str, explanation: str = "",
             linked: Sequence[RunView] = ()) -> str:
    """The page of one run: the headline figures of it and its descendants (:func:`pictures`),
    ``explanation`` (HTML: :func:`medart.render.explain.how_to_read`), the paper's numbers beside
    the run's where its dataset matches, its tables, figures, metrics and parameters, then each
    descendant run's nested under its parent. ``linked``: runs it used that are not its
    descendants (a ``detect`` run's attack runs, which ran before it), in pictures, comparison and
    a section of their own."""
    tags, runs = view.tags, [view, *view.descendants(), *linked]
    headline, shown = pictures(runs)
    body = [f"<h1>medart report: {_e(view.name)}</h1>",
            f"<p class='meta'>run {_e(view.run_id)} · experiment {_e(experiment)} · {_e(view.status)} · started "
            f"{when(view.start_time)} · medart {_e(tags.get('medart.version', '?'))} · commit "
            f"{_e(tags.get('mlflow.source.git.commit', '?')[:10])} · tracking {_e(tracking_uri)}</p>",
            degenerate_banner(runs), headline, explanation, paper_comparison(view.params.get("dataset"), runs),
            "<h2>This run</h2>", run_body(view, 3, shown=shown)]
    if view.children:
        total = sum(1 for _ in view.descendants())
        more = f", {total} with theirs" if total > len(view.children) else ""
        body.append(f"<h2>Child runs ({len(view.children)}{more})</h2>")
        body += [child_section(child, 3, shown) for child in view.children]
    if linked:
        body.append(f"<h2>Runs it used ({len(linked)})</h2><p class='note'>Named in its tags (medart.attack_run…): "
                    "they ran before it, outside it.</p>")
        body += [child_section(other, 3, shown) for other in linked]
    return page(f"medart report: {view.name}", "\n".join(body))


def experiment_page(experiment: str, runs: Sequence[RunView], tracking_uri: str, explanation: str = "") -> str:
    """The page of an experiment's top-level ``runs`` (newest first): one summary table, then each
    run's tables, figures and metrics, and the paper's numbers (over every run and its descendants)
    where they all share a dataset."""
    summary = html_table(("run", "status", "started", "metrics"),
                         [(r.name, r.status, when(r.start_time), len(r.metrics)) for r in runs], (3,))
    body = [f"<h1>medart report: experiment {_e(experiment)}</h1>",
            f"<p class='meta'>{len(runs)} newest top-level runs · tracking {_e(tracking_uri)}</p>",
            degenerate_banner([d for r in runs for d in (r, *r.descendants())]), summary,
            explanation]
    datasets = {r.params.get("dataset") for r in runs}
    if len(datasets) == 1:
        body.append(paper_comparison(datasets.pop(), [d for r in runs for d in (r, *r.descendants())]))
    for r in runs:
        body.append(f"<h2>{_e(r.name)} <span class='meta'>({_e(r.run_id)}, {_e(r.status)})</span></h2>" + run_body(r, 3))
    return page(f"medart report: {experiment}", "\n".join(body))


__all__ = ["FIGURE_ORDER", "PAPER_TASKS", "RunView", "child_section", "degenerate_banner", "experiment_page",
           "html_table", "is_detection_auc", "is_percent", "markdown_tables", "metric_rows", "page", "paper_comparison",
           "pictures", "run_body", "run_page"]
