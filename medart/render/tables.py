"""Generic Markdown tables."""

from __future__ import annotations

import re

from medart.intervals import estimates, interval_names
from medart.numbers import ACCURACY_LEGEND, ci_n, pct

#: parts of metric names (between "_" and ".") that are not fractions, written as they are
COUNTS_AND_LOSSES = ("n", "loss", "linf", "l2", "seconds", "epoch", "failed")


def _is_fraction(name: str) -> bool:
    # whole parts only: "n" marks test_n, not test_balanced_acc
    return not set(COUNTS_AND_LOSSES) & set(re.split(r"[._]", name))


def _cell(name: str, value: float) -> str:
    if not _is_fraction(name):
        return f"{value:g}" if float(value).is_integer() else f"{value:.4f}"
    return pct(value)


def metric_columns(results: dict[str, dict[str, float]]) -> str:
    """Markdown: a row per metric, a column per model; fractions (accuracy, AUC, rates) in %, with
    their 95 % interval and n where one was logged beside them (:func:`~medart.intervals.estimates`:
    ``87.6 [84.3, 90.3] (n = 468)``; its ``_ci_low``, ``_ci_high`` and ``_n`` get no rows of their own)."""
    names = list(results)
    found = {n: estimates(results[n]) for n in names}
    folded = {k for n in names for name in found[n] for k in interval_names(name)}
    lines = ["| metric | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for key in results[names[0]]:
        if key in folded:
            continue
        unit = " (%)" if _is_fraction(key) else ""
        cells = [ci_n(found[n][key]) if key in found[n] else _cell(key, results[n].get(key, float("nan"))) for n in names]
        lines.append(f"| {key}{unit} | " + " | ".join(cells) + " |")
    if any(found.values()):
        lines += ["", f"[95 % intervals] {ACCURACY_LEGEND} AUCs: DeLong's (n: the smaller class)."]
    return "\n".join(lines) + "\n"

