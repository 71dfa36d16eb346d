"""The report's "How to read this" section (medart.render.explain): it defines what the runs did and
nothing else, gives the paper's numbers only for what they measured, and writes % or k/255."""

from __future__ import annotations

import html
import re

import mlflow
import pytest

from medart import tracking
from medart.render.explain import how_to_read
from medart.render.report import RunView, run_page
from medart.stages.report import GLOSSARY, report_run

# Params and metrics as medart's stages log them (an attack run, a detect run's per-attack child).
ATTACK_PARAMS = {"attack.name": "pgd", "attack.eps": "1/255", "attack.eps_value": str(1 / 255), "attack.targeted": "False",
                 "dataset": "pneumonia", "n_adv_train": "51", "n_adv_test": "13"}
ATTACK_METRICS = {"clean_acc": 0.875, "adv_acc": 0.125, "clean_auc": 0.91, "adv_auc": 0.05, "success_rate": 0.857,
                  "linf_max": 1 / 255, "n": 64.0, "guard.top_share": 0.55}
DETECT_PARAMS = ATTACK_PARAMS | {"detectors": "kd,lid", "n_fit_pairs": "40", "n_test_pairs": "10"}
DETECT_METRICS = {"auc_kd": 0.9, "auc_lid": 0.75, "detect_acc_kd": 0.8, "detect_acc_lid": 0.7, "seconds_kd": 0.1}


def view(name: str, params: dict, metrics: dict, children=(), start: int = 0) -> RunView:
    return RunView(name, name, "FINISHED", start, dict(params), dict(metrics), {}, children=list(children))


def text(section: str) -> str:
    """The section's visible text, cells separated by ' | '."""
    section = re.sub(r"</t[dh]>", " | ", section)
    return html.unescape(re.sub(r"<[^>]+>", " ", section))


def table_after(section: str, heading: str) -> list[list[str]]:
    """The rows (cells' text) of the first table after ``heading``, header left out."""
    start = section.index(f"<h3>{heading}")
    table = section[section.index("<table>", start):section.index("</table>", start)]
    return [[html.unescape(re.sub(r"<[^>]+>", "", c)) for c in re.findall(r"<td[^>]*>(.*?)</td>", row)]
            for row in re.findall(r"<tr>(.*?)</tr>", table)][1:]


def section_of(page: str) -> str:
    start = page.index("<h2>How to read this")
    return page[start:page.index("<h2>", start + 5)]


def test_a_grandchilds_detectors_are_defined_under_a_pipeline_parent(tracking_store, tmp_path):
    """Real runs in a real store, read back by the report's collector: the detectors that ran two
    levels down (pipeline → detect → per-attack child) are defined, and no other detector is."""
    with tracking.start_run("medart/pneumonia/main", "pipeline") as parent:
        mlflow.log_params({"dataset": "pneumonia", "attacks": "pgd"})
        with tracking.start_run("medart/pneumonia/detect", "detect"):
            mlflow.log_params({"dataset": "pneumonia", "detectors": "kd,lid"})
            with tracking.start_run("medart/pneumonia/detect", "detect-pgd"):
                mlflow.log_params(DETECT_PARAMS)
                mlflow.log_metrics(DETECT_METRICS)
    path = report_run(parent.info.run_id, tmp_path / "report.html", log=False)
    section = section_of(path.read_text())
    assert [row[0] for row in table_after(section, "Detectors")] == ["KD", "LID"]
    assert "Table 4" in section  # the grandchild's detection AUCs at 1/255 are the paper's Table 4 combos
    assert "10 AdvTest pairs" in text(section)


def test_defined_detectors_are_exactly_those_that_ran():
    runs = [view("detect-pgd", DETECT_PARAMS, {"auc_kd": 0.9, "auc_mahalanobis": 0.6})]
    section = how_to_read(runs, GLOSSARY)
    assert [row[0] for row in table_after(section, "Detectors")] == ["KD", "MAHALANOBIS"]
    about = {row[0]: row[1] for row in table_after(section, "Detectors")}
    assert about["MAHALANOBIS"] == "Mahalanobis distance to the class means"  # the declaration's words
    assert "<h3>Detectors" not in how_to_read([view("attack", ATTACK_PARAMS, ATTACK_METRICS)], GLOSSARY)


def test_paper_numbers_only_for_what_was_measured_each_with_its_table():
    runs = [view("pgd", ATTACK_PARAMS, ATTACK_METRICS),
            view("detect-pgd", DETECT_PARAMS, DETECT_METRICS),
            view("fgsm-4", ATTACK_PARAMS | {"attack.name": "fgsm", "attack.eps": "4/255", "attack.eps_value": str(4 / 255)},
                 ATTACK_METRICS)]  # ε = 4/255: the paper printed nothing for it
    rows = table_after(how_to_read(runs, GLOSSARY), "The paper's numbers")
    shown = {(r[0], r[1], r[3]): (r[6], r[7]) for r in rows}
    assert shown == {
        ("clean accuracy", "none", ""): ("93.99", "Ma et al. 2021 (Pattern Recognition 110, 107332), Table 3"),
        ("accuracy under attack", "PGD", ""): ("0.00", "Ma et al. 2021 (Pattern Recognition 110, 107332), Table 3"),
        ("model's clean AUC", "none", ""): ("61.25", "Ma et al. 2021 (Pattern Recognition 110, 107332), Table 2"),
        ("model's AUC under attack", "PGD", ""): ("0.00", "Ma et al. 2021 (Pattern Recognition 110, 107332), Table 2"),
        ("detection AUC", "PGD", "KD"): ("100.00", "Ma et al. 2021 (Pattern Recognition 110, 107332), Table 4"),
        ("detection AUC", "PGD", "LID"): ("95.20", "Ma et al. 2021 (Pattern Recognition 110, 107332), Table 4"),
    }
    measured = {(r[0], r[1], r[3]): (r[4], r[5]) for r in rows}
    assert measured[("accuracy under attack", "PGD", "")] == ("12.50 [6.47, 22.77]", "64 images")  # Wilson, 8 of 64
    assert measured[("detection AUC", "PGD", "LID")] == ("75.00", "10 pairs")
    assert "as printed in the paper, not re-measured" in text(how_to_read(runs, GLOSSARY))


def test_no_paper_numbers_for_a_task_the_paper_did_not_have():
    runs = [view("pgd", ATTACK_PARAMS | {"dataset": "dermamnist"}, ATTACK_METRICS)]
    section = how_to_read(runs, GLOSSARY)
    assert "<h3>Attacks" in section and "The paper's numbers" not in section and "Table" not in section


@pytest.mark.parametrize("pairs, warned", [(10, True), (30, False)])
def test_an_auc_on_fewer_than_30_pairs_is_warned_about(pairs, warned):
    runs = [view("detect-pgd", DETECT_PARAMS | {"n_test_pairs": str(pairs)}, DETECT_METRICS)]
    section = how_to_read(runs, GLOSSARY)
    assert (f"rest on {pairs} AdvTest pairs, fewer than 30" in text(section)) is warned
    assert f"{pairs} AdvTest pairs" in text(section)


def test_numbers_are_percent_or_k_over_255_never_bare_ratios():
    train = view("train", {"dataset": "pneumonia", "n_train": "200", "n_val": "64", "n_test": "128"},
                 {"test_acc": 0.8125, "val_auc": 0.9, "best_epoch": 3.0})
    runs = [view("pipeline", {"dataset": "pneumonia", "eps": "0.3/255"}, {"pgd.adv_acc": 0.3, "pgd.auc_kd": 0.66},
                 [train, view("pgd", ATTACK_PARAMS | {"attack.eps": "0.3/255", "attack.eps_value": str(0.3 / 255)},
                              ATTACK_METRICS)])]
    section = how_to_read([runs[0], *runs[0].descendants()], GLOSSARY)
    words = text(section)
    # the paper table's number columns are headed "(%)": each cell a percentage, not a ratio
    paper = section[section.index("<h3>The paper's numbers"):]
    header = re.findall(r"<th>(.*?)</th>", paper)
    percent_columns = [k for k, h in enumerate(header) if h.endswith("(%)")]
    assert [header[k] for k in percent_columns] == ["measured (%)", "paper (%)"]
    for row in table_after(section, "The paper's numbers"):
        for k in percent_columns:
            assert re.fullmatch(r"\d+\.\d\d( \[\d+\.\d\d, \d+\.\d\d\])?", row[k]), row
    rest = text(section[:section.index("<h3>The paper's numbers")])
    bare = [m.group() for m in re.finditer(r"(?<![\d./])0?\.\d+(?![\d]*\s*/\s*255)", rest)]
    assert not bare, f"bare ratios in the section: {bare}"
    assert "0.3/255" in words and "12.50 [" in words  # ε in k/255, accuracies in %
    assert [row[0] for row in table_after(section, "Splits")] == ["Train", "Val", "Test", "AdvTrain", "AdvTest"]


def test_the_run_page_places_the_section_after_the_title():
    attack = view("pgd", ATTACK_PARAMS, ATTACK_METRICS)
    page = run_page(attack, "medart/pneumonia/attack", "sqlite:///x.db", how_to_read([attack], GLOSSARY))
    assert page.index("<h1>") < page.index("<h2>How to read this") < page.index("<h2>This run")


def test_an_interval_logged_beside_a_metric_is_explained_once_and_shown_with_the_auc():
    """``auc_<d>_ci_low``/``_ci_high``/``_n`` (medart.intervals) are one row of the metrics table,
    never 'not defined here', and the paper table's detection AUC carries its logged interval."""
    from medart.intervals import Estimate

    metrics = dict(DETECT_METRICS)
    for name, value in DETECT_METRICS.items():
        if name.startswith("auc_"):
            metrics |= Estimate(value, value - 0.1, min(1.0, value + 0.05), 36).metrics(name)
    section = how_to_read([view("detect-pgd", DETECT_PARAMS | {"n_test_pairs": "36"}, metrics)], GLOSSARY)
    assert "&lt;metric&gt;_ci_low, &lt;metric&gt;_ci_high, &lt;metric&gt;_n" in section
    assert not re.search(r"Not defined here[^<]*_ci_", section)
    measured = [row[4] for row in table_after(section, "The paper's numbers") if row[0] == "detection AUC"]
    assert measured and all(re.fullmatch(r"\d+\.\d\d \[\d+\.\d\d, \d+\.\d\d\]( †)?", m) for m in measured), measured
