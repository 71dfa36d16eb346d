"""Run descriptions: the Markdown a run's page in the MLflow UI opens on (the ``mlflow.note.content``
tag) — a title line saying what was measured on how many images, the run's summary table as its
stage's own renderer draws it (:mod:`medart.render.detection`, :mod:`~medart.render.sweep`, …),
and, once the report is attached, a link to it. Kept short: the tables and figures are in the
run's artifacts and its report."""

from __future__ import annotations

from typing import Mapping

from medart.numbers import eps_label, pct

_REPORT = "Report: [report.html]"  # how the report's line starts, so a later report replaces it


def note(title: str, *blocks: str) -> str:
    """``title`` in bold, then each non-empty Markdown block (a table, a sentence), a blank line apart."""
    return "\n\n".join([f"**{title}**", *(b.strip() for b in blocks if b and b.strip())]) + "\n"


def attack_note(label: str, eps: float, metrics: Mapping[str, float], clean=None) -> str:
    """An attack run's description: accuracy, balanced accuracy and AUC (%) before and under the
    attack ``label`` at L∞ budget ``eps`` (pixels), its success rate and n, from the run's
    ``metrics`` (:func:`medart.attacks.metrics.attack_metrics`); with ``clean`` (a
    :class:`~medart.models.sanity.ModelCheck`) of a degenerate model, its note."""
    m, n = metrics, int(metrics["n"])
    rows = [("accuracy", "acc"), ("balanced accuracy", "balanced_acc"), ("AUC", "auc")]
    table = "\n".join(["| (%) | clean | under attack |", "|---|---|---|"]
                      + [f"| {name} | {pct(m[f'clean_{key}'])} | {pct(m[f'adv_{key}'])} |" for name, key in rows])
    correct = round(m["clean_acc"] * n)
    success = (f"Success rate {pct(m['success_rate'])} %: the share of the {correct} images the model classified "
               f"correctly whose answer the attack changed; largest perturbation L∞ {eps_label(m['linf_max'])}.")
    return note(f"{label}: ε = {eps_label(eps)}, n = {n} images (AdvTrain + AdvTest)", table, success,
                clean.note() if clean is not None and clean.degenerate else "")


def report_link(experiment_id: str, run_id: str) -> str:
    """The line linking a run's description to its ``report.html`` artifact (a link within the MLflow UI)."""
    return (f"{_REPORT}(#/experiments/{experiment_id}/runs/{run_id}/artifactPath/report.html): the tables, figures "
            "and child runs on one page, in this run's artifacts.")


def with_report(text: str, link: str) -> str:
    """Description ``text`` ending with the report's ``link`` line (in place of an earlier one)."""
    kept = "\n".join(line for line in text.splitlines() if not line.startswith(_REPORT)).rstrip()
    return (f"{kept}\n\n{link}" if kept else link) + "\n"
