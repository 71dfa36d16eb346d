"""How medart writes numbers for people: accuracies and AUCs in percent, ε in units of 1/255."""

from __future__ import annotations


def pct(fraction: float, digits: int = 2) -> str:
    """A fraction in [0, 1] as a percentage without the sign: ``0.8912`` → ``89.12``."""
    return f"{fraction * 100:.{digits}f}"


def eps_label(eps: float) -> str:
    """An L∞ budget in [0, 1] pixels as k/255: ``2/255`` → ``2/255``, ``0.002`` → ``0.51/255``."""
    return f"{eps * 255:.3g}/255"
