"""The ablation's table, figure and generated text, every number from the typed rows
(:class:`~medart.results.CellResult`); percentages for people, ε in grey levels (×1/255).

``settings`` is the ablation's :class:`~medart.stages.ablation_grid.AblationSettings`, read but not
imported: render stands below the stages."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Callable, Sequence

from matplotlib.figure import Figure
from matplotlib.ticker import FormatStrFormatter

from medart.intervals import interval_metrics
from medart.numbers import CHANCE_LEGEND, DEGENERATE, auc_ci, ci, eps_label, few_pairs, pct

if TYPE_CHECKING:  # the types only: rendering imports no torch
    from matplotlib.axes import Axes

    from medart.results import CellMetrics, CellResult, EpsBracket

INIT_NAMES = {"none": "from scratch", "imagenet": "ImageNet", "given": "given, not trained"}


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    if seconds >= 60:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds} s"


def _pct(value: float | None) -> str:
    return "—" if value is None or not math.isfinite(value) else pct(value, 1)


def _auc(value: float) -> str:
    """A detection AUC as :func:`_pct`, NaN (a degenerate fit) as ``degenerate``."""
    return DEGENERATE if math.isnan(value) else _pct(value)


def _millions(n: int) -> str:
    """A parameter count for people: ``0.31 M``, and below 10,000 the count itself (a given toy
    model would otherwise read ``0.00 M``)."""
    return f"{n / 1e6:.2f} M" if n >= 10_000 else f"{n:,}"


def _finished(rows: Sequence[CellResult]) -> list[CellResult]:
    return [r for r in rows if r.status == "finished"]


def _trained(rows: Sequence[CellResult]) -> list[CellResult]:
    """The grid's own cells: a given model differs from every other cell in more than one factor."""
    return [r for r in rows if not r.cell.given]


def cell_summary(row: CellResult, settings) -> str:
    """One line on how a cell ended, e.g. for a progress log."""
    if row.status != "finished":
        return f"{row.status} ({row.reason})"
    m = row.metrics
    return (f"finished in {_duration(row.seconds)}: test acc {_pct(m.test_acc)} %, least {settings.bisection.bisect_attack} "
            f"ε {m.least_eps.text()}/255, sharpness {m.sharpness:.3g} nats")


def _measured_cells(m: CellMetrics, settings) -> list[str]:
    """The table cells of a finished row between its init and its wall time, fractions with their 95 % intervals."""
    cells = [f"{ci(m.estimate('test_acc', m.test_acc))} / {ci(m.estimate('test_auc', m.test_auc))}"]
    cells += [" / ".join(ci(m.estimate(f"adv_acc.{a}.eps{e * 255:.3g}", m.adv_acc[a][e])) for a in settings.attacks)
              for e in settings.eps]
    cells += [m.least_eps.text(), f"{m.sharpness:.3g} / {m.sharpness_median:.3g}",
              f"{ci(m.estimate('vanishing_fraction', m.vanishing_fraction))} %"]
    return cells + [auc_ci(m.estimate(f"auc_{d}", m.detection_auc[d])) for d in settings.detection.detectors]


def ablation_table(rows: Sequence[CellResult], settings) -> str:
    """Markdown: one row per cell, side by side (percentages; ε in grey levels, ×1/255)."""
    attacks = "/".join(a.upper() for a in settings.attacks)
    bisection, probe = settings.bisection, settings.detection
    head = (["model (parameters)", "input", "init", "test acc / AUC"]
            + [f"acc @ {eps_label(e)}: {attacks}" for e in settings.eps]
            + [f"least ε, {bisection.bisect_attack.upper()} acc < {bisection.threshold * 100:g} % (×1/255)",
               f"sharpness @ {eps_label(settings.sharpness_radius)} mean / median (nats)",
               f"∇ < {settings.landscape.vanishing:g}"]
            + [f"{d.upper()} AUC ({probe.detect_attack.upper()} {eps_label(probe.detect_eps)})" for d in probe.detectors]
            + ["wall time", "status"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cell, m = row.cell, row.metrics
        cells = [cell.arch + (f" ({_millions(m.n_parameters)})" if m else ""), f"{cell.resolution} px", INIT_NAMES[cell.init]]
        if row.status == "finished":
            cells += _measured_cells(m, settings) + [_duration(row.seconds), "finished"]
        else:
            status = row.status.upper() if row.status == "failed" else row.status
            cells += ["—"] * (len(head) - 5) + [_duration(row.seconds) if row.seconds else "—", f"{status}: {row.reason}"]
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    done = _finished(rows)
    n = next((r.metrics.n_attacked for r in done), None)
    tested = next((e.n for r in done if (e := r.metrics.intervals.get("test_acc")) is not None), None)
    pairs = {r.cell.label(): e.n for r in done for d in probe.detectors if (e := r.metrics.intervals.get(f"auc_{d}"))}
    note = (f"\nAccuracies in %, AUCs in %, each with its 95 % interval in brackets (Wilson; DeLong for AUCs); test "
            f"accuracy on {tested or '?'} test images; attacks, bisection, sharpness and detection on {n} test images "
            f"(AdvTrain + AdvTest), detection AUCs on {', '.join(sorted(set(map(str, pairs.values())))) or '?'} AdvTest pairs; "
            f"bisection over ε in (0, {eps_label(bisection.eps_max)}] to a bracket of at most "
            f"{eps_label(bisection.eps_tolerance)}; ∇ < floor: share of those images whose input gradient vanishes.\n")
    marked = any(not math.isnan(e.low) and e.contains_chance for r in done for d in probe.detectors
                 if (e := r.metrics.intervals.get(f"auc_{d}")) and not math.isnan(e.value))
    notes = [CHANCE_LEGEND] if marked else []
    notes += [w] if (w := few_pairs(pairs, "AdvTest pairs in a cell")) else []
    return "\n".join(lines) + "\n" + (note if n else "") + "".join(f"\n{line}\n" for line in notes)


def ablation_columns(rows: Sequence[CellResult], settings) -> dict[str, list]:
    """The rows as columns for an MLflow table (fractions, with their intervals' ``_ci_low``,
    ``_ci_high`` and ``_n`` under the cell metrics' names; ``None`` where a cell did not finish)."""
    measured: dict[str, Callable[[CellMetrics], Any]] = {
        "n_parameters": lambda m: m.n_parameters, "test_acc": lambda m: m.test_acc, "test_auc": lambda m: m.test_auc,
        "least_eps_lo": lambda m: m.least_eps.lo, "least_eps_hi": lambda m: m.least_eps.hi,
        "sharpness": lambda m: m.sharpness, "vanishing_fraction": lambda m: m.vanishing_fraction}
    measured |= {f"adv_acc.{a}.{eps_label(e)}": (lambda a, e: lambda m: m.adv_acc[a][e])(a, e)
                 for a in settings.attacks for e in settings.eps}
    measured |= {f"auc_{d}": (lambda d: lambda m: m.detection_auc[d])(d) for d in settings.detection.detectors}
    columns: dict[str, list] = {
        "arch": [r.cell.arch for r in rows], "resolution": [r.cell.resolution for r in rows],
        "init": [r.cell.init for r in rows], "status": [r.status for r in rows], "reason": [r.reason for r in rows],
        "seconds": [r.seconds for r in rows]}
    columns |= {name: [value(r.metrics) if r.status == "finished" else None for r in rows]
                for name, value in measured.items()}
    ranges = [interval_metrics(r.metrics.intervals) if r.status == "finished" else {} for r in rows]
    columns |= {name: [found.get(name) for found in ranges] for name in dict.fromkeys(k for found in ranges for k in found)}
    return columns


def _panels(settings) -> list[tuple[str, Callable[[CellMetrics], float] | None]]:
    """(title, value of a cell's metrics) of each panel; ``None``: the least-ε bracket."""
    attack, probe = settings.bisection.bisect_attack.upper(), settings.detection
    panels: list[tuple[str, Callable[[CellMetrics], float] | None]] = [("test accuracy (%)", lambda m: m.test_acc * 100)]
    panels += [(f"{attack} accuracy at ε = {eps_label(e)} (%)",
                (lambda e: lambda m: m.adv_acc[settings.bisection.bisect_attack][e] * 100)(e)) for e in settings.eps]
    panels += [(f"least ε with {attack} acc < {settings.bisection.threshold * 100:g} % (×1/255)", None),
               (f"sharpness at {eps_label(settings.sharpness_radius)} (nats, mean)", lambda m: m.sharpness),
               ("inputs with vanishing ∇ (%)", lambda m: m.vanishing_fraction * 100)]
    panels += [(f"{d.upper()} detection AUC (%), {probe.detect_attack.upper()} {eps_label(probe.detect_eps)}",
                (lambda d: lambda m: m.detection_auc[d] * 100)(d)) for d in probe.detectors]
    return panels


def _plot_brackets(ax: Axes, xs: list[float], group: list[CellResult], style: dict, eps_max: float) -> None:
    """Least-ε brackets as error bars around their midpoints (×1/255); ▲ where ε_max was not enough."""
    brackets = [r.metrics.least_eps for r in group]
    mids = [(b.midpoint if b.reached else b.eps_max) * 255 for b in brackets]
    low = [m - b.lo * 255 if b.reached else 0 for m, b in zip(mids, brackets)]
    high = [b.hi * 255 - m if b.reached else 0 for m, b in zip(mids, brackets)]
    ax.errorbar(xs, mids, yerr=[low, high], capsize=3, **style)
    over = [(x, m) for x, m, b in zip(xs, mids, brackets) if not b.reached]
    if over:
        ax.scatter(*zip(*over), marker="^", s=70, color=style["color"], zorder=3)
    ax.axhline(eps_max * 255, color="grey", lw=0.8, ls=":")
    ax.set_yscale("log", base=2)
    ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))


def ablation_figure(rows: Sequence[CellResult], settings, dataset: str) -> Figure:
    """Each measured quantity against the input side, one line per (architecture, initialisation)."""
    done = _finished(rows)
    panels = _panels(settings)
    ncols = 4
    nrows = -(-len(panels) // ncols)
    fig = Figure(figsize=(4.2 * ncols, 3.4 * nrows))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    groups = list(dict.fromkeys((r.cell.arch, r.cell.init) for r in done))
    colours = {arch: f"C{i}" for i, arch in enumerate(dict.fromkeys(r.cell.arch for r in rows))}
    sides = sorted({r.cell.resolution for r in rows})
    for ax, (title, value) in zip(axes.flat, panels):
        for k, (arch, init) in enumerate(groups):
            group = sorted((r for r in done if (r.cell.arch, r.cell.init) == (arch, init)), key=lambda r: r.cell.resolution)
            shift = 2 ** (0.04 * (k - (len(groups) - 1) / 2))  # side by side, so equal values stay visible
            xs = [r.cell.resolution * shift for r in group]
            style = dict(color=colours[arch], ls="-" if init == "none" else "--", label=f"{arch}, {INIT_NAMES[init]}",
                         marker="s" if init == "given" else "o")  # a given model: one point, at its own side
            if value is None:
                _plot_brackets(ax, xs, group, style, settings.bisection.eps_max)
            else:
                ax.plot(xs, [value(r.metrics) for r in group], **style)
        if "(%)" in title:
            ax.set_ylim(-4, 104)
        ax.set_title(title, fontsize=9)
        ax.set_xscale("log", base=2)
        ax.set_xticks(sides, [str(s) for s in sides])
        ax.minorticks_off()
        ax.set_xlabel("input side (px)", fontsize=8)
        ax.tick_params(labelsize=8)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower right", fontsize=8, title="▲: above ε_max (not reached)", title_fontsize=8)
    n = next((r.metrics.n_attacked for r in done), 0)
    fig.suptitle(f"{dataset}: ablation of input side, initialisation and capacity ({n} attacked test images each)",
                 fontsize=10)
    fig.tight_layout()
    return fig


def compare_brackets(a: EpsBracket, b: EpsBracket) -> str:
    """How the least successful ε moved from ``a`` to ``b``: ``lowers``, ``raises``, ``unchanged``
    (the brackets overlap) or ``above`` (neither reached ε* below ε_max)."""
    if not a.reached and not b.reached:
        return "above"
    if not a.reached or (b.reached and b.hi <= a.lo):
        return "lowers"
    if not b.reached or b.lo >= a.hi:
        return "raises"
    return "unchanged"


def _chain(rows: Sequence[CellResult], settings) -> str:
    """Other measured quantities along a sequence of cells, ``a → b → c``."""
    measured = [r.metrics for r in rows]
    arrow = " → ".join
    eps = settings.eps[0]
    parts = [f"{settings.bisection.bisect_attack.upper()} accuracy at {eps_label(eps)} "
             + arrow(f"{_pct(m.adv_acc[settings.bisection.bisect_attack][eps])} %" for m in measured),
             f"sharpness at {eps_label(settings.sharpness_radius)} " + arrow(f"{m.sharpness:.3g}" for m in measured) + " nats",
             "test accuracy " + arrow(f"{_pct(m.test_acc)} %" for m in measured)]
    parts += [f"{d.upper()} AUC " + arrow(_auc(m.detection_auc[d]) + ("" if math.isnan(m.detection_auc[d]) else " %")
                                          for m in measured) for d in settings.detection.detectors]
    parts.append("vanishing gradients " + arrow(f"{_pct(m.vanishing_fraction)} %" for m in measured))
    return "; ".join(parts)


def _sentence(rows: Sequence[CellResult], change: str, settings) -> tuple[str, str]:
    """The verdict of ``change`` (e.g. "upsampling 28 → 128 px") on the least successful ε between
    the first and last of ``rows``, and a sentence with it and the other quantities."""
    brackets = [r.metrics.least_eps for r in rows]
    first, last = brackets[0], brackets[-1]
    verdict = compare_brackets(first, last)
    path = " → ".join(b.text() for b in brackets)
    what = f"the least ε at which {_goal(settings)}"
    if verdict in ("lowers", "raises"):
        text = f"{change} {verdict} {what} from {first.text()} to {last.text()} ×1/255"
        text += f" (every step: {path})" if len(rows) > 2 else ""
    elif verdict == "unchanged":
        text = f"{change} leaves {what} unchanged within the bisection brackets ({path} ×1/255)"
    else:
        text = f"{change} leaves {what} above ε_max = {eps_label(settings.bisection.eps_max)} ({path})"
    return verdict, f"{text}; {_chain(rows, settings)}."


def _goal(settings) -> str:
    """What the bisection looks for, e.g. ``PGD leaves accuracy below 1 %``."""
    bisection = settings.bisection
    return f"{bisection.bisect_attack.upper()} leaves accuracy below {bisection.threshold * 100:g} %"


def _tally(verdicts: list[str], factor: str) -> str:
    if not verdicts:
        return ""
    count = {k: verdicts.count(k) for k in ("lowers", "raises", "unchanged", "above")}
    return (f"Over {len(verdicts)} comparison{'s' * (len(verdicts) > 1)}, {factor} lowered the least successful ε in "
            f"{count['lowers']}, raised it in {count['raises']}, left it unchanged within the brackets in "
            f"{count['unchanged']} and above ε_max in {count['above']}.")


def _resolution(done: list[CellResult], settings) -> list[str]:
    out, verdicts = ["## Input resolution", ""], []
    for arch, init in dict.fromkeys((r.cell.arch, r.cell.init) for r in done):
        group = sorted((r for r in done if (r.cell.arch, r.cell.init) == (arch, init)), key=lambda r: r.cell.resolution)
        if len(group) > 1:
            change = "upsampling " + " → ".join(str(r.cell.resolution) for r in group) + " px"
            verdict, text = _sentence(group, change, settings)
            verdicts.append(verdict)
            out.append(f"- **{arch}, {INIT_NAMES[init]}**: {text}")
    return out + [_tally(verdicts, "upsampling") or "- not measured: no architecture finished at two resolutions.", ""]


def _initialisation(rows: Sequence[CellResult], settings) -> list[str]:
    done, out, verdicts = _finished(rows), ["## Initialisation", ""], []
    for arch, side in dict.fromkeys((r.cell.arch, r.cell.resolution) for r in done):
        pair = {r.cell.init: r for r in done if (r.cell.arch, r.cell.resolution) == (arch, side)}
        if len(pair) == 2:
            verdict, text = _sentence([pair["none"], pair["imagenet"]], "ImageNet weights instead of training from scratch",
                                      settings)
            verdicts.append(verdict)
            out.append(f"- **{arch}, {side} px**: {text}")
    skipped = dict.fromkeys(f"{r.cell.arch}: {r.reason}" for r in rows if r.status == "skipped")
    if skipped:
        out.append("- ImageNet cells skipped: " + "; ".join(skipped))
    return out + [_tally(verdicts, "ImageNet initialisation")
                  or "- not measured: no cell finished with both initialisations.", ""]


def _capacity(done: list[CellResult], settings) -> list[str]:
    out, verdicts = ["## Capacity", ""], []
    for side, init in dict.fromkeys((r.cell.resolution, r.cell.init) for r in done):
        group = sorted((r for r in done if (r.cell.resolution, r.cell.init) == (side, init)),
                       key=lambda r: r.metrics.n_parameters)
        if len(group) > 1:
            change = "more parameters, " + " → ".join(f"{r.cell.arch} ({_millions(r.metrics.n_parameters)})" for r in group)
            verdict, text = _sentence(group, change, settings)
            verdicts.append(verdict)
            out.append(f"- **{side} px, {INIT_NAMES[init]}**: {text}")
    return out + [_tally(verdicts, "more parameters") or "- not measured: no resolution finished with two architectures.", ""]


def _given(done: list[CellResult], settings) -> list[str]:
    """One line per finished given model: what it measured (it differs from the grid in more than one factor)."""
    if not done:
        return []
    out = ["## Given models", ""]
    for r in done:
        out.append(f"- **{r.cell.arch}, {r.cell.resolution} px** ({_millions(r.metrics.n_parameters)} parameters): the least "
                   f"ε at which {_goal(settings)} is "
                   f"{r.metrics.least_eps.text()} ×1/255; {_chain([r], settings)}.")
    return out + [""]


def findings(rows: Sequence[CellResult], settings) -> str:
    """Markdown: per factor, the measured change between cells that differ in that factor only; a
    line per given model."""
    done, trained = _finished(rows), _trained(rows)
    out = ["# What each factor changed (generated from the measured cells)", ""]
    if trained:  # else the grid is the given models only: no factor was varied
        out += _resolution(_finished(trained), settings) + _initialisation(trained, settings)
        out += _capacity(_finished(trained), settings)
    out += _given([r for r in done if r.cell.given], settings)
    failed = [r for r in rows if r.status == "failed"]
    if failed:
        out += ["## Failed cells", ""] + [f"- {r.cell.label()}: {r.reason}" for r in failed] + [""]
    return "\n".join(out)


__all__ = ["INIT_NAMES", "ablation_columns", "ablation_figure", "ablation_table", "cell_summary", "compare_brackets",
           "findings"]
