"""The registry gate: whether a challenger may take the champion's alias.

A gate is comma-separated terms ``METRIC>=BOUND``, each a floor the challenger must reach:

- ``METRIC``: ``clean`` (accuracy on the evaluated test images) or ``<attack>@<ε>`` (accuracy
  under that attack at that L∞ budget, e.g. ``pgd@2/255``, ``autoattack@1/255``; any attack
  ``medart evaluate --attacks`` takes, ε as a number or ``k/255``).
- ``BOUND``: a fixed floor, as a fraction (``0.85``) or a percentage (``85%``); ``champion``, the
  champion's accuracy on the same metric; or ``champion-ci``, the low end of the champion's 95 %
  Wilson interval (:func:`medart.intervals.wilson`): the challenger may fall below the champion
  by no more than the champion's own sampling uncertainty.

For example ``clean>=0.85,pgd@2/255>=champion-ci``: promote a challenger whose clean accuracy is
at least 85 % and whose PGD accuracy at 2/255 is not below the champion's interval. Every term
compares the challenger's point estimate; a degenerate challenger (one that learnt nothing,
:mod:`medart.models.sanity`) is refused whatever the terms say. A refused promotion ends
``medart evaluate`` with exit code :data:`EXIT_REFUSED` (3; 2 means bad input).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from medart.budget import Eps
from medart.errors import ConfigError
from medart.intervals import Estimate

EXIT_REFUSED = 3
CLEAN = "clean"
RELATIVE = ("champion", "champion-ci")
_TERM = re.compile(r"^\s*([^<>=]+?)\s*>=\s*([^<>=\s]+)\s*$")
_EXAMPLE = "e.g. clean>=0.85,pgd@2/255>=champion-ci"


@dataclass(frozen=True)
class Term:
    """One floor: the challenger's accuracy on ``metric`` (``clean`` or an attack) at ``eps``
    (``None`` for clean) must reach ``floor`` (a fraction) or the champion's number ``relative``
    names (``champion``: its accuracy; ``champion-ci``: its 95 % interval's low end)."""

    metric: str
    eps: float | None = None
    floor: float | None = None
    relative: str | None = None

    @property
    def measure(self) -> str:
        """What is measured: ``clean`` or ``<attack>@<k>/255``."""
        return CLEAN if self.eps is None else f"{self.metric}@{self.eps * 255:.4g}/255"

    def text(self) -> str:
        bound = self.relative if self.relative is not None else f"{self.floor:.6g}"
        return f"{self.measure}>={bound}"

    def bound(self, champion: Estimate) -> float:
        """The floor as a fraction, given the champion's estimate on the same metric."""
        if self.relative == "champion":
            return champion.value
        if self.relative == "champion-ci":
            return champion.low
        return self.floor


@dataclass(frozen=True)
class Verdict:
    """One term applied: both models' estimates (fractions with 95 % intervals and n), the floor
    the challenger had to reach, and whether it did."""

    term: Term
    champion: Estimate
    challenger: Estimate
    bound: float
    passed: bool

    def line(self) -> str:
        """``pgd@2/255: challenger 61.5 [57.6, 65.2] % >= 52.6 % (champion-ci; champion 56.4 [52.6, 60.3] %), n 624``."""
        sign = ">=" if self.passed else "<"
        how = f" ({self.term.relative}; champion {self.champion.percent()})" if self.term.relative else \
            f" (champion {self.champion.percent()})"
        return (f"{self.term.measure}: challenger {self.challenger.percent()} {sign} {self.bound * 100:.1f} %{how}, "
                f"n {self.challenger.n}")


@dataclass(frozen=True)
class Decision:
    """Whether the challenger is promoted, each term's verdict, and why, in one line."""

    promote: bool
    verdicts: tuple[Verdict, ...]
    reason: str


@dataclass(frozen=True)
class Gate:
    """Parsed ``--gate`` text (see the module)."""

    terms: tuple[Term, ...]

    @classmethod
    def parse(cls, text: str) -> "Gate":
        """The gate ``text`` says; a one-line :class:`~medart.errors.ConfigError` for text that does not parse."""
        items = [item for item in text.split(",") if item.strip()]
        if not items:
            raise ConfigError(f"the gate is empty; give terms METRIC>=BOUND, {_EXAMPLE}")
        return cls(tuple(_term(item) for item in items))

    def text(self) -> str:
        return ",".join(term.text() for term in self.terms)

    def attacks(self) -> list[tuple[str, float]]:
        """The ``(attack, ε)`` pairs the gate needs measured, in order, each once."""
        return list(dict.fromkeys((t.metric, t.eps) for t in self.terms if t.eps is not None))

    def decide(self, champion: dict[str, Estimate], challenger: dict[str, Estimate], degenerate: str = "") -> Decision:
        """Apply every term to the two models' estimates, keyed by :attr:`Term.measure`;
        ``degenerate``: why the challenger is degenerate (empty when it is not), which refuses it."""
        verdicts = []
        for term in self.terms:
            ours, theirs = challenger[term.measure], champion[term.measure]
            bound = term.bound(theirs)
            passed = not math.isnan(ours.value) and not math.isnan(bound) and ours.value >= bound
            verdicts.append(Verdict(term, theirs, ours, bound, passed))
        failed = [v for v in verdicts if not v.passed]
        if degenerate:
            return Decision(False, tuple(verdicts), f"refused: the challenger is degenerate ({degenerate})")
        if failed:
            return Decision(False, tuple(verdicts), "refused: " + "; ".join(v.line() for v in failed))
        return Decision(True, tuple(verdicts), "promoted: " + "; ".join(v.line() for v in verdicts))


def _term(item: str) -> Term:
    from medart.attacks.specs import ATTACKS

    match = _TERM.match(item)
    if match is None:
        raise ConfigError(f"cannot read the gate term {item.strip()!r}: write METRIC>=BOUND, {_EXAMPLE}")
    metric, bound = match[1].strip().lower(), match[2].strip().lower()
    eps = None
    if metric != CLEAN:
        attack, at, budget = metric.partition("@")
        if not at or attack not in ATTACKS:
            raise ConfigError(f"unknown gate metric {metric!r} in {item.strip()!r}; use clean or ATTACK@EPS with an attack "
                              f"of: {', '.join(ATTACKS)} (e.g. pgd@2/255)")
        metric, eps = attack, Eps(budget)
    if bound in RELATIVE:
        return Term(metric, eps, relative=bound)
    try:
        floor = float(bound[:-1]) / 100 if bound.endswith("%") else float(bound)
    except ValueError:
        floor = math.nan
    if not 0 <= floor <= 1:
        raise ConfigError(f"the gate bound {bound!r} in {item.strip()!r} is not a fraction in [0, 1], a percentage or one "
                          f"of {', '.join(RELATIVE)}; {_EXAMPLE}")
    return Term(metric, eps, floor=floor)
