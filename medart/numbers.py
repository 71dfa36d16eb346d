"""How medart writes numbers for people: accuracies and AUCs in percent, ε in units of 1/255.

On the bottom floor: render, the stages and the attacks' checklist all write numbers with it."""

from __future__ import annotations

import math

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
