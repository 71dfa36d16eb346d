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
from medart.stages.compare import CompareRequest, collect, compare, eps_fraction, export_robustbench, import_robustbench

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
        assert row.model == registered and row.backend == "art" and row.n == 20

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
    assert "| pneumonia | models:/medart-pneumonia@champion | FGSM | 4/255 | art |" in ok.output
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
    (theirs,) = import_robustbench([standard])
    assert theirs.attack == "autoattack" and theirs.adv_acc == 0.0
    assert {r.attack for r in import_robustbench([path])} == {"autoattack", "worst-case"}
