"""Generic Markdown tables."""

from __future__ import annotations

from medart.render.numbers import pct

#: metrics that are not fractions, written as they are
COUNTS_AND_LOSSES = ("n", "loss", "linf", "l2", "seconds", "epoch")


def _cell(name: str, value: float) -> str:
    if any(part in name for part in COUNTS_AND_LOSSES):
        return f"{value:g}" if float(value).is_integer() else f"{value:.4f}"
    return pct(value)


def metric_columns(results: dict[str, dict[str, float]]) -> str:
    """Markdown: a row per metric, a column per model; fractions (accuracy, AUC, rates) in %."""
    names = list(results)
    lines = ["| metric | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for key in results[names[0]]:
        unit = "" if any(part in key for part in COUNTS_AND_LOSSES) else " (%)"
        lines.append(f"| {key}{unit} | " + " | ".join(_cell(key, results[n].get(key, float("nan"))) for n in names) + " |")
    return "\n".join(lines) + "\n"
