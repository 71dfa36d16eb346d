"""How medart writes numbers for people: accuracies and AUCs in percent with their 95 % interval
and n (:mod:`medart.intervals`), ε in units of 1/255.

On the bottom floor: render, the stages and the attacks' checklist all write numbers with it."""

from __future__ import annotations

import math
from typing import Mapping

from medart.intervals import MIN_PAIRS, Estimate

#: What a detection AUC logged as NaN reads as: its fit was degenerate (:mod:`medart.detectors.fit_check`).
DEGENERATE = "degenerate"


def pct(fraction: float, digits: int = 2) -> str:
    """A fraction in [0, 1] as a percentage without the sign: ``0.8912`` → ``89.12``."""
    return f"{fraction * 100:.{digits}f}"


def auc_pct(fraction: float, digits: int = 2) -> str:
    """A detection AUC in [0, 1] as :func:`pct` does, and NaN — the AUC of a degenerate fit — as ``degenerate``."""
    return DEGENERATE if math.isnan(fraction) else pct(fraction, digits)


def eps_label(eps: float) -> str:
    """An L∞ budget in [0, 1] pixels as k/255: ``2/255`` → ``2/255``, ``0.002`` → ``0.51/255``."""
    return f"{eps * 255:.3g}/255"


#: The mark of an AUC whose 95 % interval holds 50 %: the detector may not separate at all.
CHANCE_MARK = "†"
CHANCE_LEGEND = f"{CHANCE_MARK} its 95 % interval contains 50 % (chance): it may not separate at all."
#: how the accuracies' intervals are made, said under the tables that show them
ACCURACY_LEGEND = ("Accuracies and rates in % [95 % Wilson interval] over their n images (a success rate's n: the images "
                   "the model classified correctly); balanced accuracy [MOVER over the per-class Wilson intervals].")


def ci(estimate: Estimate, digits: int = 1) -> str:
    """An estimate in percent with its interval, without the sign: ``87.6 [84.3, 90.3]``; the value
    alone where no interval was logged (a run from before intervals), ``–`` for NaN."""
    if math.isnan(estimate.value):
        return "–"
    if math.isnan(estimate.low):
        return pct(estimate.value, digits)
    return f"{pct(estimate.value, digits)} [{pct(estimate.low, digits)}, {pct(estimate.high, digits)}]"


def auc_ci(estimate: Estimate, digits: int = 1) -> str:
    """A detection AUC as :func:`ci` does, :data:`CHANCE_MARK` after it where its interval holds 50 %,
    and ``degenerate`` for NaN (a degenerate fit)."""
    if math.isnan(estimate.value):
        return DEGENERATE
    return ci(estimate, digits) + (f" {CHANCE_MARK}" if not math.isnan(estimate.low) and estimate.contains_chance else "")


def ci_n(estimate: Estimate, digits: int = 1) -> str:
    """:func:`ci` with its n: ``87.6 [84.3, 90.3] (n = 468)``."""
    return ci(estimate, digits) + (f" (n = {estimate.n})" if estimate.n else "")


def few_pairs(pairs: Mapping[str, int], what: str = "AdvTest pairs") -> str:
    """The warning line for the attacks (or rows) whose AUCs rest on fewer than
    :data:`~medart.intervals.MIN_PAIRS` pairs, ``''`` when none do: ``pairs`` maps a name to its n."""
    few = {name: n for name, n in pairs.items() if n < MIN_PAIRS}
    if not few:
        return ""
    listed = ", ".join(f"{name}: {n}" for name, n in few.items())
    return (f"Warning: fewer than {MIN_PAIRS} {what} ({listed}): those AUCs' intervals are wide; "
            "attack more images before ranking detectors on them.")
