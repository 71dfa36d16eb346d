"""Comparison report: attack runs read back from the store, RobustBench JSON out and in, CLI."""

from __future__ import annotations

import json

import mlflow
import pytest
from click.testing import CliRunner

from medart.attacks import make_spec
from medart.attacks.specs import reported_name
from medart.cli import main
from medart.errors import DataError
from medart.stages import DataSpec, RunOptions, Target, attack, sweep
from medart.stages.compare import CompareRequest, collect, compare, defence_label, eps_fraction, export_robustbench, import_robustbench

pytestmark = pytest.mark.filterwarnings("ignore:.*official MedMNIST MD5")

# RobustBench's own entry for a standardly trained CIFAR-10 model (model_info/cifar10/Linf/Standard.json).
STANDARD = {"link": "https://github.com/RobustBench/robustbench/", "name": "Standardly trained model", "authors": "",
            "additional_data": False, "number_forward_passes": 1, "dataset": "cifar10", "venue": "N/A",
            "architecture": "WideResNet-28-10", "eps": "8/255", "clean_acc": "94.78", "reported": "0.0",
            "autoattack_acc": "0.0"}


def test_eps_fractions():
    assert eps_fraction(8 / 255) == "8/255" and eps_fraction(0.3 / 255) == "0.3/255"


def test_only_the_standard_budget_is_reported_as_autoattack():
    assert reported_name("autoattack", 100, 1) == "autoattack" and reported_name("pgd", 40) == "pgd"
    assert reported_name("autoattack", 10, 1) == "autoattack (10 steps)"
    assert reported_name("square", 5000, 2) == "square (2 restarts)" and reported_name("square", 500, 1) == "square (500 queries)"


def _target(model_uri: str, shared_data) -> Target:
    return Target.load(model_uri, DataSpec("pneumonia", shared_data), max_examples=20)


@pytest.mark.slow  # a sweep of four cells: ~20 s
def test_compare_reads_runs_exports_and_imports_robustbench(registered, shared_data, tmp_path):
    target, quiet = _target(registered, shared_data), RunOptions(progress=False)
    cells = sweep(target, ["fgsm", "bim"], [2 / 255, 8 / 255], quiet).rows
    # the same measurement again (examples from the cache) counts once
    attack(target, make_spec("bim", 8 / 255), quiet)
    rows = collect(CompareRequest(dataset="pneumonia"))
    assert len(rows) == 4
    by_cell = {(r.attack, round(r.eps * 255)): r for r in rows}
    for cell in cells:
        row = by_cell[(cell.attack, round(cell.eps * 255))]
        assert row.adv_acc == pytest.approx(cell.adv_acc) and row.clean_acc == pytest.approx(cell.clean_acc)
        assert row.model == "models:/medart-pneumonia/1" and row.backend == "art" and row.n == 20  # what @champion named
    # the alias moves to a hardened version: the rows stay the version they measured, labelled as it is
    client = mlflow.MlflowClient()
    first = client.get_model_version("medart-pneumonia", "1")
    second = client.create_model_version("medart-pneumonia", first.source, run_id=first.run_id)
    client.set_model_version_tag("medart-pneumonia", second.version, "medart.trainer", "pgd-at")
    client.set_registered_model_alias("medart-pneumonia", "champion", second.version)
    assert {r.model for r in collect(CompareRequest(dataset="pneumonia"))} == {"models:/medart-pneumonia/1"}
    assert defence_label("models:/medart-pneumonia/1") == "standard" and defence_label(registered) == "pgd-at"

    (path,) = [p for p in export_robustbench(rows, tmp_path / "rb") if "eps8" in p.name]
    assert path.relative_to(tmp_path / "rb").parts[:2] == ("pneumonia", "Linf")
    doc = json.loads(path.read_text())
    worst = min(r.adv_acc for r in rows if round(r.eps * 255) == 8)
    assert doc["eps"] == "8/255" and doc["robust_acc"] == doc["reported"] == f"{worst * 100:.2f}"
    assert doc["clean_acc"] == f"{rows[0].clean_acc * 100:.2f}" and "autoattack_acc" not in doc
    assert set(doc["per_attack_acc"]) == {"fgsm/art", "bim/art"}

    standard = tmp_path / "cifar10" / "Linf" / "Standard.json"
    standard.parent.mkdir(parents=True)
    standard.write_text(json.dumps(STANDARD))
    (theirs,) = import_robustbench([standard])
    assert (theirs.dataset, theirs.eps, theirs.clean_acc, theirs.adv_acc, theirs.threat_model, theirs.attack) == (
        "cifar10", pytest.approx(8 / 255), pytest.approx(0.9478), 0.0, "Linf", "autoattack")
    (ours,) = import_robustbench([path])  # medart's export reads back as the row it came from
    assert ours.adv_acc == pytest.approx(worst, abs=5e-5) and ours.eps == pytest.approx(8 / 255)

    out = compare(CompareRequest(dataset="pneumonia", imports=(str(standard),)))
    run_id = out.run_id
    assert len(out.rows) == 5
    client = mlflow.MlflowClient()
    artifacts = {a.path for a in client.list_artifacts(run_id)} | {a.path for a in client.list_artifacts(run_id, "figures")}
    assert {"compare.md", "compare.json", "figures/compare.png", "robustbench"} <= artifacts
    text = mlflow.artifacts.load_text(f"runs:/{run_id}/compare.md")
    rows_table, summary, legend = text.strip().split("\n\n")
    assert legend.startswith("Accuracies in % [95 % Wilson interval]")
    assert "| cifar10 | Standardly trained model | AUTOATTACK | 8/255 |" in rows_table and rows_table.count("| pneumonia |") == 4
    assert summary.count("| pneumonia |") == 2 and "| paper attacks' worst (%) | AutoAttack (%) |" in summary
    assert "| clean acc (%) | adv acc (%) |" in text and "| 94.78 | 0.00 |" in text  # percentages, as everywhere
    # medart's rows with their Wilson interval over their n images (RobustBench's file gives no n: its values alone)
    first = next(r for r in out.rows if r.source.startswith("run:"))
    assert f"| {first.clean_acc * 100:.2f} [{first.clean.low * 100:.2f}, {first.clean.high * 100:.2f}] |" in rows_table


def test_cli_compare_and_its_errors(registered, shared_data, tmp_path):
    runner = CliRunner()
    empty = runner.invoke(main, ["compare", "--dataset", "pneumonia"])
    assert empty.exit_code == 2 and "no finished attack runs" in empty.output and "Traceback" not in empty.output
    target, quiet = _target(registered, shared_data), RunOptions(progress=False)
    attack(target, make_spec("fgsm", 4 / 255), quiet)
    auto = attack(target, make_spec("autoattack", 4 / 255, steps=2), quiet).metrics  # 2 of the standard 100 steps
    broken = round((auto["clean_acc"] - auto["adv_acc"]) * auto["n"])
    assert sum(auto[f"broken_by.{p}"] for p in ("apgd-ce", "apgd-dlr", "square")) == broken  # ART: no FAB
    ok = runner.invoke(main, ["compare", "--dataset", "pneumonia", "--export-dir", str(tmp_path / "out")])
    assert ok.exit_code == 0, ok.output
    assert "| pneumonia | models:/medart-pneumonia/1 | FGSM | 4/255 | art |" in ok.output  # the version @champion named
    assert "| AUTOATTACK (2 STEPS) | 4/255 | art |" in ok.output
    (export,) = (tmp_path / "out" / "pneumonia" / "Linf").glob("*.json")
    doc = json.loads(export.read_text())  # not the standard version: no leaderboard number, but part of the worst case
    assert "autoattack_acc" not in doc and set(doc["per_attack_acc"]) == {"fgsm/art", "autoattack (2 steps)/art"}
    garbage = tmp_path / "bad.json"
    garbage.write_text("{not json")
    bad = runner.invoke(main, ["compare", "--import", str(garbage)])
    assert bad.exit_code == 2 and "is not valid JSON" in bad.output and "Traceback" not in bad.output
    lacking = tmp_path / "lacking.json"
    lacking.write_text(json.dumps({"name": "x", "eps": "8/255"}))
    with pytest.raises(DataError, match="lacks clean_acc, autoattack_acc or robust_acc"):
        import_robustbench([lacking])


def test_autoattack_fills_the_export_and_sits_beside_the_paper_attacks(tracking_store, tmp_path):
    """An autoattack measurement fills ``autoattack_acc`` (the lower backend), the per-attack
    accuracies stay, and the export loads with ``--import`` beside a RobustBench file."""
    from medart.stages.compare import RobustnessRow

    measured = (("fgsm", "art", 0.50), ("pgd", "art", 0.30), ("pgd", "torchattacks", 0.32),
                ("autoattack", "art", 0.26), ("autoattack", "torchattacks", 0.24), ("square", "art", 0.60))
    rows = [RobustnessRow("pneumonia", "models:/medart-pneumonia@champion", attack, 8 / 255, backend, 0.9, acc, 100,
                          f"run:{attack}-{backend}") for attack, backend, acc in measured]
    (path,) = export_robustbench(rows, tmp_path / "rb")
    doc = json.loads(path.read_text())
    assert doc["autoattack_acc"] == doc["robust_acc"] == "24.00" and doc["clean_acc"] == "90.00"
    assert doc["per_attack_acc"]["pgd/art"] == "30.00" and len(doc["per_attack_acc"]) == 6
    # the intervals and n as extra fields, which RobustBench's readers and medart's import ignore
    assert (doc["clean_acc_ci_low"], doc["clean_acc_ci_high"], doc["clean_acc_n"]) == ("82.56", "94.48", 100)
    assert doc["robust_acc_ci_low"] == doc["autoattack_acc_ci_low"] == "16.69" and doc["robust_acc_n"] == 100
    assert doc["per_attack_acc_ci"]["pgd/art"] == ["21.89", "39.58", 100] and len(doc["per_attack_acc_ci"]) == 6

    standard = tmp_path / "cifar10" / "Linf" / "Standard.json"
    standard.parent.mkdir(parents=True)
    standard.write_text(json.dumps(STANDARD))
    out = CliRunner().invoke(main, ["compare", "--import", str(path), "--import", str(standard)])
    assert out.exit_code == 0, out.output
    # Wilson intervals over the export's 100 images; RobustBench's file says no n: its values alone
    assert ("| pneumonia | medart-pneumonia@champion | 8/255 | 90.00 [82.56, 94.48] | — | 24.00 [16.69, 33.23] (medart) | "
            "24.00 [16.69, 33.23] | 100 |") in out.output
    assert "| cifar10 | Standardly trained model | 8/255 | 94.78 | — | 0.00 (N/A) | 0.00 |  |" in out.output
    # AutoAttack rows make the trade-off table and figure; neither model is a registered version: no defence named
    assert "tradeoff.md, figures/tradeoff.png" in out.output
    tradeoff = out.output.split("Clean accuracy against AutoAttack's")[1]
    assert "| cifar10 | Standardly trained model | — | 94.8 | 0.0 | — |" in tradeoff
    assert "| pneumonia | medart-pneumonia@champion | — | 90.0 [82.6, 94.5] | 24.0 [16.7, 33.2] | 100 |" in tradeoff
    (run,) = mlflow.search_runs(experiment_names=["medart/compare"], output_format="list")
    assert "figures/tradeoff.png" in {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id, "figures")}
    assert "| pneumonia | medart-pneumonia@champion | — |" in mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/tradeoff.md")
    page = mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/report.html")  # the report opens on the trade-off
    assert page.index("<h2>Pictures</h2>") < page.index('alt="figures/tradeoff.png"') < page.index("Table: tradeoff.md")
    assert "figures/tradeoff.png: under Pictures, at the top of the page." in page
    # it reads on its own: each table it logged is explained, nothing of the paper's that was not measured
    explained = page[page.index("<h2>How to read this"):page.index("<h2>", page.index("<h2>How to read this") + 5)]
    assert "<code>compare.md</code>" in explained and "<code>tradeoff.md</code>" in explained
    assert "the lowest over every attack" in explained and "Beside the paper" not in page
    (theirs,) = import_robustbench([standard])
    assert theirs.attack == "autoattack" and theirs.adv_acc == 0.0
    assert {r.attack for r in import_robustbench([path])} == {"autoattack", "worst-case"}


def _tradeoff_rows():
    from medart.stages.compare import RobustnessRow

    measured = (("models:/medart-pneumonia/1", "autoattack", "torchattacks", 2, 0.68), ("models:/medart-pneumonia/1", "autoattack", "art", 2, 0.70),
                ("models:/medart-pneumonia/1", "autoattack", "torchattacks", 8, 0.055), ("models:/medart-pneumonia/2", "autoattack", "torchattacks", 2, 0.835),
                ("models:/medart-pneumonia/2", "autoattack", "torchattacks", 8, 0.33), ("models:/medart-pneumonia/2", "pgd", "art", 8, 0.40),
                ("models:/medart-pneumonia/3", "pgd", "art", 2, 0.9))
    return [RobustnessRow("pneumonia", model, attack, k / 255, backend, 0.885 if model.endswith("1") else 0.92, acc, 200,
                          f"run:{model[-1]}-{attack}-{backend}-{k}") for model, attack, backend, k, acc in measured]


def test_the_tradeoff_table_puts_autoattack_at_every_eps_beside_clean_accuracy():
    """One row per model AutoAttack measured (the lower backend; other attacks left out), a column
    per ε, Wilson intervals over the rows' n, each backend's where two ran at one ε; a model without
    AutoAttack has no row, and no AutoAttack at all is no table."""
    from medart.render.compare import tradeoff_figure, tradeoff_table
    from medart.stages.compare import worst_case

    entries = worst_case(_tradeoff_rows())
    labels = {"models:/medart-pneumonia/1": "standard", "models:/medart-pneumonia/2": "pgd-at 2/255"}
    table = tradeoff_table(entries, labels)
    lines = table.splitlines()
    assert lines[0] == "| dataset | model | defence | clean acc (%) | AutoAttack 2/255 (%) | AutoAttack 8/255 (%) | n |"
    assert lines[2] == "| pneumonia | medart-pneumonia/1 | standard | 88.5 [83.3, 92.2] | 68.0 [61.2, 74.1] | 5.5 [3.1, 9.6] | 200 |"
    assert lines[3] == "| pneumonia | medart-pneumonia/2 | pgd-at 2/255 | 92.0 [87.4, 95.0] | 83.5 [77.7, 88.0] | 33.0 [26.9, 39.8] | 200 |"
    assert "medart-pneumonia/3" not in table.split("\n\n")[0]  # PGD only: not on the trade-off
    assert "| medart-pneumonia/1 | 2/255 | 70.0 [63.3, 75.9] (n = 200) | 68.0 [61.2, 74.1] (n = 200) |" in table
    assert tradeoff_table(worst_case([r for r in _tradeoff_rows() if r.attack != "autoattack"]), labels) == ""

    fig = tradeoff_figure(entries, labels)
    left, right = fig.axes
    # the ε panel: a line per model through clean (ε 0) and each ε, with the Wilson bars
    assert [text.get_text() for text in left.get_legend().get_texts()] == [
        "medart-pneumonia/1 (standard)", "medart-pneumonia/2 (pgd-at 2/255)"]
    standard = left.containers[0]
    assert list(standard.lines[0].get_xdata()) == pytest.approx([0, 2, 8]) and list(standard.lines[0].get_ydata()) == pytest.approx([88.5, 68, 5.5])
    (bars,) = standard.lines[2]
    assert bars.get_segments()[1][:, 1] == pytest.approx([61.25, 74.07], abs=0.01)
    # the trade-off panel: a point per model and ε, at (clean, robust)
    points = sorted((round(c.lines[0].get_xdata()[0], 6), round(c.lines[0].get_ydata()[0], 6)) for c in right.containers)
    assert points == [(88.5, 5.5), (88.5, 68.0), (92.0, 33.0), (92.0, 83.5)]


def test_the_accuracy_against_eps_figure_draws_each_rows_interval():
    """``figures/compare.png``: a line per (model, attack, backend) through clean (ε 0) and each ε,
    with the Wilson bars of the rows' n; a row without n (a file that did not say) has no bar."""
    from medart.render.compare import compare_figure
    from medart.stages.compare import RobustnessRow

    rows = [r for r in _tradeoff_rows() if r.model.endswith("1") and r.backend == "torchattacks"]
    unknown_n = RobustnessRow("pneumonia", "imported", "autoattack", 8 / 255, "robustbench", 0.9, 0.3, 0, "file.json")
    (ax,) = compare_figure([*rows, unknown_n]).axes
    imported, standard = ax.containers  # sorted by model: "imported" < "models:/…"
    assert list(standard.lines[0].get_xdata()) == pytest.approx([0, 2, 8]) and list(standard.lines[0].get_ydata()) == pytest.approx([88.5, 68, 5.5])
    (bars,) = standard.lines[2]
    assert bars.get_segments()[1][:, 1] == pytest.approx([61.25, 74.07], abs=0.01)
    (no_bars,) = imported.lines[2]
    assert all(segment[0, 1] == segment[1, 1] for segment in no_bars.get_segments())
