"""The evaluation checklist (:mod:`medart.attacks.checklist`) as a Markdown table."""

from __future__ import annotations

from typing import Sequence

from medart.intervals import wilson


def checklist_table(results: Sequence, n: int | None = None) -> str:
    """Markdown, one row per ``CheckResult``: the question, pass/FAIL, the numbers, and what a
    failure suggests; a line counts the failures and, with ``n`` (the images every accuracy of the
    checklist is measured on), the line after it gives that n and the widest 95 % Wilson interval
    at it (an accuracy of 50 %), so the differences the checks compare can be read against it."""
    lines = ["| check | question | result | measured | a failure suggests |", "|---" * 5 + "|"]
    for r in results:
        lines.append(f"| {r.check} | {r.question} | {'pass' if r.passed else '**FAIL**'} | {r.measured} | {r.suggests} |")
    failures = sum(not r.passed for r in results)
    verdict = "all checks pass" if not failures else f"{failures} of {len(results)} checks fail"
    out = "\n".join(lines) + f"\n\n{verdict}\n"
    if n:
        widest = wilson(n // 2, n)
        out += (f"\nEvery accuracy above is over the same {n} images; at this n a 95 % Wilson interval is up to "
                f"±{(widest.high - widest.low) * 50:.1f} points wide (at 50 %).\n")
    return out
