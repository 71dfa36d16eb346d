"""Robustness across runs: the table and figure of ``medart compare``."""

from __future__ import annotations

from collections import defaultdict
from typing import Collection, Mapping, Sequence

from matplotlib.figure import Figure

from medart.numbers import ci, ci_n, eps_label

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


def _errors(estimates: Sequence) -> list[list[float]]:
    """Matplotlib's asymmetric error bars (in %) of ``Estimate``s: [[below…], [above…]]."""
    return [[max(0.0, (e.value - e.low) * 100) for e in estimates], [max(0.0, (e.high - e.value) * 100) for e in estimates]]


def compare_figure(rows: Sequence) -> Figure:
    """Accuracy (%) vs ε, one panel per dataset, one line per (model, attack, backend), clean
    accuracy at ε = 0, 95 % Wilson intervals as bars (none where a file gave no n); imported
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
            points = [members[0].clean] + [r.adversarial for r in members]
            single = len(members) == 1
            ax.errorbar([0.0] + [r.eps * 255 for r in members], [p.value * 100 for p in points], yerr=_errors(points),
                        marker="*" if single else "o", ms=11 if single else 5, capsize=3,
                        label=f"{short_model(model)} · {attack.upper()} · {backend}")
        ax.set_xlabel("ε (×1/255; 0: clean)")
        ax.set_ylabel("accuracy (%)")
        ax.set_ylim(-2, 102)
        ax.set_title(dataset)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


# -- the trade-off: clean accuracy against AutoAttack's robust accuracy ------------------------------

TRADEOFF_LEGEND = ("Robust accuracy: AutoAttack's (standard version), the lower over the backends that ran it; clean "
                   "accuracy on the same images. " + LEGEND)


def _autoattack(entries: Sequence) -> dict[tuple[str, str], list]:
    """``WorstCase``s with an AutoAttack measurement, grouped by (dataset, model), each group by ε."""
    groups: dict[tuple[str, str], list] = defaultdict(list)
    for e in entries:
        if e.autoattack_acc is not None:
            groups[(e.dataset, e.model)].append(e)
    return {key: sorted(members, key=lambda e: e.eps) for key, members in sorted(groups.items())}


def _clean(members: Sequence):
    """A model's clean accuracy on the images AutoAttack measured, the largest set of them where
    its runs differ (another attack's rows may have measured other images)."""
    return max((e.intervals["autoattack_clean_acc"] for e in members), key=lambda c: c.n)


def tradeoff_table(entries: Sequence, labels: Mapping[str, str]) -> str:
    """Markdown, one row per (dataset, model) that AutoAttack measured (``WorstCase``s): its
    defence (``labels``: model → e.g. ``pgd-at 2/255``, ``standard``), clean accuracy and
    AutoAttack's robust accuracy at every ε measured, in % with 95 % Wilson intervals, and n; then,
    where two backends ran AutoAttack at one ε, each backend's. ``''`` when AutoAttack measured none."""
    groups = _autoattack(entries)
    if not groups:
        return ""
    budgets = sorted({round(e.eps, 10) for members in groups.values() for e in members})
    lines = ["| dataset | model | defence | clean acc (%) | "
             + " | ".join(f"AutoAttack {eps_label(eps)} (%)" for eps in budgets) + " | n |",
             "|---" * (5 + len(budgets)) + "|"]
    both = []  # (model, ε, backend → estimate) where two backends ran AutoAttack
    for (dataset, model), members in groups.items():
        at = {round(e.eps, 10): e for e in members}
        cells = [ci(at[eps].intervals["autoattack_acc"], 1) if eps in at else "—" for eps in budgets]
        ns = sorted({e.intervals["autoattack_acc"].n for e in members} - {0})  # 0: a file that does not say
        lines.append(f"| {dataset} | {short_model(model)} | {labels.get(model) or '—'} | {ci(_clean(members), 1)} | "
                     + " | ".join(cells) + f" | {'–'.join(map(str, (ns[0], ns[-1]) if len(ns) > 1 else ns)) or '—'} |")
        for e in members:
            runs = {k.split("/", 1)[1]: v for k, v in e.intervals.items() if k.startswith("autoattack/")}
            if len(runs) > 1:
                both.append((model, e.eps, runs))
    out = "\n".join(lines) + "\n\n" + TRADEOFF_LEGEND + "\n"
    if both:
        names = sorted({b for _, _, runs in both for b in runs})
        out += ("\nAutoAttack through each backend at the same ε (the same sequence of parts; ART has no FAB):\n\n| model | ε | "
                + " | ".join(f"{b} (%)" for b in names) + " |\n" + "|---" * (2 + len(names)) + "|\n"
                + "\n".join(f"| {short_model(model)} | {eps_label(eps)} | "
                            + " | ".join(ci_n(runs[b]) if b in runs else "—" for b in names) + " |"
                            for model, eps, runs in both) + "\n")
    return out


def tradeoff_figure(entries: Sequence, labels: Mapping[str, str]) -> Figure:
    """Per dataset two panels, a colour per model (``WorstCase``s that AutoAttack measured; 95 %
    Wilson intervals as bars): AutoAttack's robust accuracy (%) against ε, clean accuracy at ε = 0
    (left), and robust against clean accuracy, a marker per ε (right: up and to the right is better,
    the diagonal is no loss)."""
    groups = _autoattack(entries)
    datasets = sorted({dataset for dataset, _ in groups})
    markers = "osD^vP*X"
    budgets = sorted({round(e.eps, 10) for members in groups.values() for e in members})
    fig = Figure(figsize=(11, 4.4 * len(datasets)))
    axes = fig.subplots(len(datasets), 2, squeeze=False)
    colours = {model: f"C{k}" for k, (_, model) in enumerate(groups)}
    for (ax_eps, ax_trade), dataset in zip(axes, datasets):
        for (ds, model), members in groups.items():
            if ds != dataset:
                continue
            name = f"{short_model(model)} ({labels.get(model) or '—'})"
            clean = _clean(members)
            points = [clean] + [e.intervals["autoattack_acc"] for e in members]
            ax_eps.errorbar([0.0] + [e.eps * 255 for e in members], [p.value * 100 for p in points], yerr=_errors(points),
                            marker="o", ms=4, capsize=3, color=colours[model], label=name)
            for e in members:
                robust = e.intervals["autoattack_acc"]
                ax_trade.errorbar([clean.value * 100], [robust.value * 100], xerr=_errors([clean]), yerr=_errors([robust]),
                                  marker=markers[budgets.index(round(e.eps, 10)) % len(markers)], ms=7, capsize=3,
                                  color=colours[model], ls="none")
        ax_eps.set_xlabel("ε (×1/255; 0: clean)")
        ax_eps.set_ylabel("accuracy under AutoAttack (%)")
        ax_eps.set_ylim(-2, 102)
        ax_eps.set_title(f"{dataset}: robust accuracy against ε")
        ax_eps.legend(fontsize=7)
        lowest = min(_clean(members).low for (ds, _), members in groups.items() if ds == dataset)
        ax_trade.set_xlim(max(0.0, lowest * 100 - 10), 101)  # where the clean accuracies are, the diagonal beside them
        ax_trade.plot([0, 100], [0, 100], color="grey", lw=0.8, ls=":")
        for k, eps in enumerate(budgets):  # the ε legend: one black marker each
            ax_trade.plot([], [], marker=markers[k % len(markers)], color="black", ls="none", label=f"ε {eps_label(eps)}")
        ax_trade.set_xlabel("clean accuracy (%)")
        ax_trade.set_ylabel("accuracy under AutoAttack (%)")
        ax_trade.set_ylim(-2, 102)
        ax_trade.set_title(f"{dataset}: robust against clean accuracy")
        ax_trade.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return fig
