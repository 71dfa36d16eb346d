"""Robustness across runs: the table and figure of ``medart compare``."""

from __future__ import annotations

from collections import defaultdict
from typing import Collection, Sequence

from matplotlib.figure import Figure

from medart.numbers import ci, eps_label

#: under both tables: how their intervals are made
LEGEND = ("Accuracies in % [95 % Wilson interval] over the n images of their own row (a worst case: of the attack that "
          "gave it); without n (a file that does not say), the value alone.")


def short_model(model: str) -> str:
    """A model URI without its ``models:/`` scheme: ``medart-pneumonia@champion``."""
    return model.removeprefix("models:/")


def compare_table(rows: Sequence) -> str:
    """Markdown, one row per measurement (``RobustnessRow``s), accuracies in % with their 95 %
    intervals over the row's n images (:data:`LEGEND`, said under :func:`worst_case_table`, which follows it)."""
    lines = ["| dataset | model | attack | ε | backend | clean acc (%) | adv acc (%) | n | source |", "|---" * 9 + "|"]
    for r in rows:
        lines.append(f"| {r.dataset} | {r.model} | {r.attack.upper()} | {eps_label(r.eps)} | {r.backend} | "
                     f"{ci(r.clean, 2)} | {ci(r.adversarial, 2)} | {r.n or ''} | {r.source} |")
    return "\n".join(lines) + "\n"


def _with(value, note: str = "") -> str:
    """An estimate with its interval and a note after it; ``—`` where not measured (``None``)."""
    return "—" if value is None else f"{ci(value, 2)}{f' ({note})' if note else ''}"


def worst_case_table(entries: Sequence, paper_attacks: Collection[str]) -> str:
    """Markdown, one row per model and ε (``WorstCase``s): clean accuracy, the paper attacks'
    worst case (the attack of ``paper_attacks`` that gave it beside it), AutoAttack's, and the
    lowest of all (the robust accuracy), in % with their 95 % intervals (``WorstCase.intervals``)."""
    lines = ["| dataset | model | ε | clean acc (%) | paper attacks' worst (%) | AutoAttack (%) | robust acc, all attacks (%) | n |",
             "|---" * 8 + "|"]
    for e in entries:
        paper = min((k for k in e.attacks if k.split("/")[0] in paper_attacks), key=e.attacks.get, default=None)
        auto = [k.split("/", 1)[1] for k in e.attacks if k.startswith("autoattack/") and e.attacks[k] == e.autoattack_acc]
        lines.append(f"| {e.dataset} | {short_model(e.model)} | {eps_label(e.eps)} | {ci(e.intervals['clean_acc'], 2)} | "
                     f"{_with(e.intervals.get('paper_acc'), paper.upper() if paper else '')} | "
                     f"{_with(e.intervals.get('autoattack_acc'), ', '.join(auto))} | {ci(e.intervals['robust_acc'], 2)} | "
                     f"{e.n or ''} |")
    return "\n".join(lines) + "\n\n" + LEGEND + "\n"


def compare_figure(rows: Sequence) -> Figure:
    """Accuracy (%) vs ε, one panel per dataset, one line per (model, attack, backend); imported
    results (single points) as stars."""
    datasets = sorted({r.dataset for r in rows})
    fig = Figure(figsize=(6 * len(datasets), 4.2))
    axes = fig.subplots(1, len(datasets), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        lines: dict[tuple, list] = defaultdict(list)
        for r in rows:
            if r.dataset == dataset:
                lines[(r.model, r.attack, r.backend)].append(r)
        for (model, attack, backend), members in sorted(lines.items()):
            members.sort(key=lambda r: r.eps)
            xs = [0.0] + [r.eps * 255 for r in members]
            ys = [members[0].clean_acc * 100] + [r.adv_acc * 100 for r in members]
            single = len(members) == 1
            ax.plot(xs, ys, marker="*" if single else "o", ms=11 if single else 5,
                    label=f"{short_model(model)} · {attack.upper()} · {backend}")
        ax.set_xlabel("ε (×1/255)")
        ax.set_ylabel("accuracy (%)")
        ax.set_ylim(-2, 102)
        ax.set_title(dataset)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
