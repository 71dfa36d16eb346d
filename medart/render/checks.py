"""The evaluation checklist (:mod:`medart.attacks.checklist`) as a Markdown table."""

from __future__ import annotations

from typing import Sequence


def checklist_table(results: Sequence) -> str:
    """Markdown, one row per ``CheckResult``: the question, pass/FAIL, the numbers, and what a
    failure suggests; a last line counts the failures."""
    lines = ["| check | question | result | measured | a failure suggests |", "|---" * 5 + "|"]
    for r in results:
        lines.append(f"| {r.check} | {r.question} | {'pass' if r.passed else '**FAIL**'} | {r.measured} | {r.suggests} |")
    failures = sum(not r.passed for r in results)
    verdict = "all checks pass" if not failures else f"{failures} of {len(results)} checks fail"
    return "\n".join(lines) + f"\n\n{verdict}\n"
