"""Accuracy against ε: the table and figure of a sweep."""

from __future__ import annotations

from typing import Sequence

from matplotlib.figure import Figure

from medart.intervals import Estimate
from medart.numbers import ACCURACY_LEGEND, ci, eps_label


def sweep_figure(rows: Sequence, dataset: str, backend: str) -> Figure:
    """Accuracy (%) against ε (×1/255) per attack, from ``SweepRow``s; clean accuracy at ε = 0."""
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    clean = rows[0].clean_acc * 100
    # PGD and CW often coincide (on two classes they take the same steps): shrinking markers and
    # distinct dashes keep every line visible
    styles = [("o", "-", 8), ("s", "--", 6.5), ("^", "-.", 5), ("D", ":", 3.5)]
    for k, attack in enumerate(dict.fromkeys(r.attack for r in rows)):
        pts = [(0.0, clean)] + sorted((r.eps * 255, r.adv_acc * 100) for r in rows if r.attack == attack)
        marker, dashes, size = styles[k % len(styles)]
        ax.plot(*zip(*pts), marker=marker, ls=dashes, ms=size, label=attack.upper())
    ax.axhline(clean, color="grey", ls="--", lw=0.8, label="clean")
    ax.set_xlabel("ε (×1/255)")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(-2, 102)
    ax.set_title(f"{dataset}: accuracy under attack ({backend}, {rows[0].n} images)")
    ax.legend()
    fig.tight_layout()
    return fig


def _pair(row, acc: str, other: str) -> str:
    """Two of a row's numbers with their intervals, ``acc / other``."""
    return f"{ci(_read(row, acc))} / {ci(_read(row, other))}"


def _read(row, name: str) -> Estimate:
    """The ``SweepRow``'s number ``name`` with its interval as its attack run logged it; the value
    alone (its field) for a row whose run logged no interval."""
    if f"{name}_ci_low" in row.metrics:
        return Estimate.read(row.metrics, name)
    return Estimate(getattr(row, name), float("nan"), float("nan"), 0)


def sweep_table(rows: Sequence, failed: Sequence = (), clean=None) -> str:
    """Markdown: accuracy / AUC (%) with their 95 % intervals per attack (rows) and ε (columns), the
    clean accuracy / balanced accuracy of the attacked images beside each attack, a line on the n and
    the intervals, then the cells that failed; with ``clean`` (a
    :class:`~medart.models.sanity.ModelCheck`) of a degenerate model, its note under the table."""
    lines = []
    if rows:
        eps_values = sorted({r.eps for r in rows})
        lines.append("| attack | " + " | ".join(f"ε={eps_label(e)} acc / AUC (%)" for e in eps_values)
                     + " | clean acc / balanced acc (%) |")
        lines.append("|" + "---|" * (len(eps_values) + 2))
        first = rows[0]
        clean_cell = _pair(first, "clean_acc", "clean_balanced_acc")
        lines.append("| none | " + " | ".join(_pair(first, "clean_acc", "clean_auc") for _ in eps_values) + f" | {clean_cell} |")
        for attack in dict.fromkeys(r.attack for r in rows):
            by_eps = {r.eps: r for r in rows if r.attack == attack}
            cells = [_pair(by_eps[e], "adv_acc", "adv_auc") if e in by_eps else "" for e in eps_values]
            lines.append(f"| {attack.upper()} | " + " | ".join(cells) + f" | {clean_cell} |")
        auc_n = _read(first, "clean_auc").n
        lines += ["", f"{ACCURACY_LEGEND} AUC [95 % DeLong interval] over the same images, its n the smaller class "
                      f"({auc_n or '?'}); n = {rows[0].n} images in every cell."]
        if clean is not None and clean.degenerate:
            lines += ["", clean.note()]
    if failed:
        lines += ["", f"Failed cells ({len(failed)}):", "", "| attack | ε | error |", "|---|---|---|"]
        lines += [f"| {f.attack.upper()} | {eps_label(f.eps)} | {f.error.replace('|', '/')} |" for f in failed]
    return "\n".join(lines) + "\n"
