"""Detection results for people: the paper's Table 4 (AUC per detector and attack) and Table 5
(transfer between attacks) as Markdown, ROC curves and AUC heatmaps; AUCs shown in % with their
95 % interval and the pairs they rest on (:mod:`medart.intervals`), marked † where the interval
holds chance, with a warning line under fewer than 30 pairs."""

from __future__ import annotations

import math
import textwrap
from typing import Iterable, Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from medart.intervals import Estimate
from medart.numbers import ACCURACY_LEGEND, CHANCE_LEGEND, DEGENERATE, auc_ci, auc_pct, ci, few_pairs, pct

#: attack → detector → ROC-AUC in [0, 1]
AUCByAttack = Mapping[str, Mapping[str, float]]
#: attack → detector → ROC-AUC with its 95 % interval, n = AdvTest pairs
IntervalsByAttack = Mapping[str, Mapping[str, Estimate]]
#: detector → fitted on attack → scored on attack → ROC-AUC with its interval
Transfer = Mapping[str, Mapping[str, Mapping[str, Estimate]]]

#: how the AUC intervals are made, said under every table that shows them
AUC_LEGEND = "AUC in % [95 % DeLong interval; Newcombe's at 0 and 100 %] over the n AdvTest pairs."


def _pairs(row: Mapping[str, Estimate]) -> int:
    """The pairs an attack's AUCs rest on (every detector's are the same)."""
    return max((e.n for e in row.values()), default=0)


def auc_notes(estimates: Iterable[Estimate], pairs: Mapping[str, int]) -> list[str]:
    """The lines under an AUC table after its legend: † when a shown AUC's interval holds chance, and
    the warning when an attack's (a column's) AUCs rest on fewer than 30 pairs."""
    marked = any(not math.isnan(e.value) and not math.isnan(e.low) and e.contains_chance for e in estimates)
    return ([CHANCE_LEGEND] if marked else []) + ([w] if (w := few_pairs({a.upper(): n for a, n in pairs.items()})) else [])


def _clean_cells(clean) -> list[str]:
    return [ci(clean.estimate("acc")), ci(clean.estimate("balanced_acc"))]


def auc_table(intervals: IntervalsByAttack, mean: AUCByAttack | None = None, std: AUCByAttack | None = None,
              clean=None) -> str:
    """Table 4 layout: a row per detector, a column per attack with its n AdvTest pairs, AUC in % with
    its 95 % interval (:func:`~medart.numbers.auc_ci`: † where it holds chance, ``degenerate`` where
    NaN, a degenerate fit: :mod:`medart.detectors.fit_check`), the legend and the few-pairs warning
    under it. With ``mean`` and ``std`` (repeats > 1): ``mean ± std`` over the splits, then split
    0's AUC and interval.

    With ``clean`` (a :class:`~medart.models.sanity.ModelCheck` of the attacked images), each row
    also shows the model's clean accuracy and balanced accuracy, and a degenerate model's note
    follows the table."""
    attacks = list(intervals)
    pairs = {a: _pairs(intervals[a]) for a in attacks}
    extra = " clean acc (%) | clean balanced acc (%) |" if clean is not None else ""
    lines = ["| AUC (%) by detector | " + " | ".join(f"{a.upper()} (n = {pairs[a]})" for a in attacks) + " |" + extra,
             "|---" * (len(attacks) + 1 + 2 * bool(extra)) + "|"]
    for d in next(iter(intervals.values())):
        cells = [auc_ci(intervals[a][d]) for a in attacks]
        if mean is not None and std is not None:
            cells = [cell if math.isnan(mean[a][d]) else f"{pct(mean[a][d], 1)} ± {pct(std[a][d], 1)}; split 0: {cell}"
                     for a, cell in zip(attacks, cells)]
        if clean is not None:
            cells += _clean_cells(clean)
        lines.append(f"| {d.upper()} | " + " | ".join(cells) + " |")
    legend = AUC_LEGEND + (" With repeats: mean ± std over the re-drawn splits; the interval is split 0's "
                           "(AdvTrain / AdvTest)." if std is not None else "")
    lines += ["", legend, *auc_notes((e for row in intervals.values() for e in row.values()), pairs)]
    if clean is not None and clean.degenerate:
        lines += ["", clean.note()]
    return "\n".join(lines) + "\n"


def transfer_table(transfer: Transfer, clean=None) -> str:
    """Table 5 layout: per detector, a row per attack it was fitted on, a column per attack scored
    (with its n AdvTest pairs), AUC in % with its interval as in :func:`auc_table`; the legend and
    warning under the tables, and with ``clean`` (a :class:`~medart.models.sanity.ModelCheck`), its note."""
    blocks, shown = [], []
    pairs: dict[str, int] = {}
    for name, matrix in transfer.items():
        attacks = list(matrix)
        pairs |= {t: _pairs({f: matrix[f][t] for f in attacks}) for t in attacks}
        lines = [f"| {name.upper()} AUC (%): fitted on ↓ scored on → | "
                 + " | ".join(f"{a.upper()} (n = {pairs[a]})" for a in attacks) + " |", "|---" * (len(attacks) + 1) + "|"]
        for fit_attack in attacks:
            lines.append(f"| {fit_attack.upper()} | " + " | ".join(auc_ci(matrix[fit_attack][t]) for t in attacks) + " |")
            shown += [matrix[fit_attack][t] for t in attacks]
        blocks.append("\n".join(lines))
    blocks.append("\n".join([AUC_LEGEND, *auc_notes(shown, pairs)]))
    if clean is not None:
        blocks.append(clean.note())
    return "\n\n".join(blocks) + "\n"


def summary_table(metrics: Mapping[str, Mapping[str, float]], intervals: IntervalsByAttack, detectors: Sequence[str],
                  clean=None) -> str:
    """The pipeline's summary: a row per attack with its run's ``metrics`` (clean accuracy and balanced
    accuracy, accuracy under attack, success rate, each with its 95 % interval as logged) and the AUC
    of each of ``detectors`` with its interval (as in :func:`auc_table`), all in %, the n of each
    row beside it; with ``clean`` (a :class:`~medart.models.sanity.ModelCheck`) of a degenerate
    model, its note under the table."""
    lines = ["| attack | images | clean acc (%) | clean balanced acc (%) | adversarial acc (%) | success rate (%) | "
             "AdvTest pairs | " + " | ".join(f"AUC {d.upper()} (%)" for d in detectors) + " |",
             "|---" * (7 + len(detectors)) + "|"]
    for name, m in metrics.items():
        success = Estimate.read(m, "success_rate")
        cells = [f"{int(m['n'])}", *(ci(Estimate.read(m, k)) for k in ("clean_acc", "clean_balanced_acc", "adv_acc")),
                 ci(success) + (f" of {success.n}" if success.n else ""), str(_pairs(intervals[name]))]
        lines.append(f"| {name.upper()} | " + " | ".join(cells) + " | "
                     + " | ".join(auc_ci(intervals[name][d]) for d in detectors) + " |")
    lines += ["", f"{ACCURACY_LEGEND} {AUC_LEGEND}",
              *auc_notes((intervals[a][d] for a in metrics for d in detectors), {a: _pairs(intervals[a]) for a in metrics})]
    if clean is not None and clean.degenerate:
        lines += ["", clean.note()]
    return "\n".join(lines) + "\n"


#: detector → (false positive rates, true positive rates, AUC in [0, 1]) of one attack
Curves = Mapping[str, tuple[np.ndarray, np.ndarray, float]]


def _roc(ax, curves: Curves, title: str) -> None:
    for name, (fpr, tpr, auc) in curves.items():
        ax.plot(fpr, tpr, label=f"{name.upper()} (AUC {auc_pct(auc, 1)})")
    ax.plot([0, 1], [0, 1], color="grey", ls="--", lw=0.8)  # chance
    ax.set_xlabel("false positive rate (clean flagged)")
    ax.set_ylabel("true positive rate (adversarial flagged)")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="lower right", fontsize=8)


def roc_figure(curves: Curves, title: str) -> Figure:
    """ROC curves of one attack: detector → (false positive rates, true positive rates, AUC in [0, 1])."""
    fig = Figure(figsize=(5, 5))
    _roc(fig.subplots(), curves, title)
    fig.tight_layout()
    return fig


def roc_panels(curves: Mapping[str, Curves], title: str) -> Figure:
    """Every detector's ROC curve in one figure: a panel per attack (its title the key of
    ``curves``, three to a row), a curve per detector with its AUC (``degenerate`` where NaN), and
    the chance diagonal."""
    ncols = min(3, len(curves))
    nrows = -(-len(curves) // ncols)
    fig = Figure(figsize=(4.6 * ncols, 4.6 * nrows + 0.4), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax, (attack, by_detector) in zip(axes.flat, curves.items()):
        _roc(ax, by_detector, attack)
    for ax in axes.flat[len(curves):]:
        ax.axis("off")
    fig.suptitle(textwrap.fill(title, 45 * ncols))  # about 45 characters fit over one panel
    return fig


def auc_figure(auc: AUCByAttack, title: str) -> Figure:
    """Table 4 as one heatmap: a row per detector, a column per attack."""
    detectors = list(next(iter(auc.values())))
    return _heatmaps({"auc": {d: {a: auc[a][d] for a in auc} for d in detectors}}, "attack", "detector", title)


def transfer_figure(transfer: Transfer, title: str) -> Figure:
    """Table 5 as a heatmap per detector: a row per attack fitted on, a column per attack scored."""
    return _heatmaps({name.upper(): matrix for name, matrix in transfer.items()}, "scored on", "fitted on", title)


def _heatmaps(matrices: Mapping[str, Mapping[str, Mapping[str, float]]], xlabel: str, ylabel: str, title: str) -> Figure:
    """One annotated heatmap per matrix (rows → columns → AUC in [0, 1]), four to a row, on a shared
    50–100 % colour scale (lower values show in the darkest colour, with their number; NaN blank,
    marked ``degenerate``)."""
    ncols = min(4, len(matrices))
    nrows = -(-len(matrices) // ncols)
    sample = next(iter(matrices.values()))
    cell = 0.55
    width = ncols * (1.6 + cell * len(next(iter(sample.values())))) + 1.0
    height = nrows * (1.3 + cell * len(sample)) + 0.6
    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for k, ax in enumerate(axes.flat):
        if k >= len(matrices):
            ax.axis("off")
            continue
        name, matrix = list(matrices.items())[k]
        rows, cols = list(matrix), list(next(iter(matrix.values())))
        values = np.array([[matrix[r][c] * 100 for c in cols] for r in rows])
        image = ax.imshow(values, vmin=50, vmax=100, cmap="viridis")
        for (i, j), v in np.ndenumerate(values):  # a NaN cell (a degenerate fit) stays blank, and says so
            ax.text(j, i, DEGENERATE if np.isnan(v) else f"{v:.1f}", ha="center", va="center",
                    color="black" if np.isnan(v) or v >= 80 else "white", fontsize=5 if np.isnan(v) else 8)
        ax.set_xticks(range(len(cols)), [c.upper() for c in cols])
        ax.set_yticks(range(len(rows)), [r.upper() for r in rows])
        ax.set_xlabel(xlabel)
        if k % ncols == 0:
            ax.set_ylabel(ylabel)
        if len(matrices) > 1:
            ax.set_title(name)
    fig.colorbar(image, ax=axes, shrink=0.8, label="AUC (%)")
    fig.suptitle(title)
    return fig


def bandwidth_figure(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], auto: Mapping[str, float], title: str) -> Figure:
    """Detection AUC (%) against the KD bandwidth σ (log axis): one line per ``curves`` label
    (σ values, AUCs in [0, 1]); a dotted vertical line at each ``auto`` σ, chance at 50 %."""
    fig = Figure(figsize=(7, 4.2), layout="constrained")
    ax = fig.add_subplot()
    for label, (sigma, auc) in curves.items():
        ax.semilogx(sigma, 100 * np.asarray(auc), marker="o", label=label)
    for label, sigma in auto.items():
        ax.axvline(sigma, linestyle=":", color="grey")
        ax.annotate(f"auto σ ({label})", (sigma, 0.02), xycoords=("data", "axes fraction"), rotation=90, fontsize=7)
    ax.axhline(50, color="black", linewidth=0.8)
    ax.set(xlabel="bandwidth σ (feature units)", ylabel="AUC on AdvTest (%)", ylim=(0, 102), title=title)
    ax.legend(fontsize=7)
    return fig


def adaptive_table(rows) -> str:
    """Plain against adaptive attacks, a row per (detector, attack, adaptive attack) with its n
    AdvTest pairs: AUC, success rate and undetected success rate (misclassified and not flagged at 5 %
    false positives), in % with their 95 % intervals (AUC as in :func:`auc_table`; the rates Wilson's
    over the pairs, ``degenerate`` where the fit was), the legend and the few-pairs warning under it."""
    lines = ["| detector | attack | ε | adaptive attack | pairs | AUC (%) | adaptive AUC (%) | success (%) | "
             "adaptive success (%) | undetected success (%) | adaptive undetected success (%) | seconds |", "|---" * 12 + "|"]
    for r in rows:
        lines.append(f"| {r.detector.upper()} | {r.attack.upper()} | {r.eps * 255:.3g}/255 | {r.adaptive} | {r.auc.n} | "
                     f"{auc_ci(r.auc)} | {auc_ci(r.auc_adaptive)} | {ci(r.success)} | {ci(r.success_adaptive)} | "
                     f"{_rate(r.undetected)} | {_rate(r.undetected_adaptive)} | {r.seconds:.1f} |")
    lines += ["", f"{AUC_LEGEND} Success and undetected success in % [95 % Wilson interval] over the same pairs.",
              *auc_notes((e for r in rows for e in (r.auc, r.auc_adaptive)), {r.attack: r.auc.n for r in rows})]
    return "\n".join(lines) + "\n"


def _rate(estimate: Estimate) -> str:
    """An undetected success rate: NaN only where the detector's fit was degenerate."""
    return DEGENERATE if math.isnan(estimate.value) else ci(estimate)


def adaptive_figure(rows, title: str) -> Figure:
    """Two panels of grouped bars, a group per (detector, attack): AUC (%) and undetected success
    rate (%, at 5 % false positives) of the plain attack and of each adaptive attack in ``rows``
    (:class:`~medart.stages.adaptive.AdaptiveRow`); ε goes in the ``title`` and the legend."""
    groups = list(dict.fromkeys((r.detector, r.attack) for r in rows))
    kinds = list(dict.fromkeys(r.adaptive for r in rows))
    eps = ", ".join(dict.fromkeys(f"{r.eps * 255:.3g}/255" for r in rows))
    fig = Figure(figsize=(max(6.0, 1.1 * len(groups) * (len(kinds) + 1) + 1.5), 6.5), layout="constrained")
    axes = fig.subplots(2, 1, sharex=True)
    width = 0.8 / (len(kinds) + 1)
    for ax, (plain, adaptive, label) in zip(axes, (("auc", "auc_adaptive", "AUC (%)"),
                                                   ("undetected", "undetected_adaptive", "undetected success (%)"))):
        series = {"plain": {(r.detector, r.attack): getattr(r, plain).value for r in rows}}
        series |= {kind: {(r.detector, r.attack): getattr(r, adaptive).value for r in rows if r.adaptive == kind}
                   for kind in kinds}
        for j, (name, values) in enumerate(series.items()):
            x = [i for i, g in enumerate(groups) if g in values]
            ax.bar(np.array(x) + (j - len(kinds) / 2) * width, [100 * values[groups[i]] for i in x], width,
                   label=f"{name} (ε = {eps})")
        ax.set(ylabel=label, ylim=(0, 105))
        ax.grid(axis="y", alpha=0.3)
    axes[0].axhline(50, color="black", linewidth=0.8)  # chance
    axes[1].set_xticks(range(len(groups)), [f"{d.upper()}\n{a.upper()}" for d, a in groups])
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncols=len(kinds) + 1, fontsize=8)
    fig.suptitle(title)
    return fig
