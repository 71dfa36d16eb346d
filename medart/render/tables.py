"""Generic Markdown tables."""

from __future__ import annotations

import re

from medart.numbers import pct

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
    """Markdown: a row per metric, a column per model; fractions (accuracy, AUC, rates) in %."""
    names = list(results)
    lines = ["| metric | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for key in results[names[0]]:
        unit = " (%)" if _is_fraction(key) else ""
        lines.append(f"| {key}{unit} | " + " | ".join(_cell(key, results[n].get(key, float("nan"))) for n in names) + " |")
    return "\n".join(lines) + "\n"
