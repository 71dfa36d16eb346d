"""Registry-driven evaluation: by alias, robust metrics linked to the logged model, two aliases compared."""

from __future__ import annotations

import json

import mlflow
import pytest
from click.testing import CliRunner

from medart.cli import main
from medart.models.training import TrainConfig
from medart.stages import DataSpec, ModelRequest, RunOptions, Target, evaluate, train

pytestmark = pytest.mark.filterwarnings("ignore:.*official MedMNIST MD5")


def test_evaluate_by_alias_links_robust_metrics_to_the_model(registered, shared_data):
    target = Target.load(registered, DataSpec("pneumonia", shared_data), max_examples=20)
    outcome = evaluate(target, ["fgsm", "pgd"], [2 / 255], run=RunOptions(progress=False))
    metrics = outcome.metrics()
    assert {"test_acc", "test_auc", "adv_acc.fgsm.eps2", "adv_acc.pgd.eps2", "success_rate.pgd.eps2"} <= set(metrics)
    assert [(r.attack, r.eps) for r in outcome.robust] == [("fgsm", 2 / 255), ("pgd", 2 / 255)]
    assert metrics["adv_acc.pgd.eps2"] <= 1.0
    # each fraction with its interval and n, clean and robust numbers on the same 20 images
    assert metrics["test_acc_n"] == metrics["adv_acc.pgd.eps2_n"] == 20
    assert metrics["adv_acc.pgd.eps2_ci_low"] <= metrics["adv_acc.pgd.eps2"] <= metrics["adv_acc.pgd.eps2_ci_high"]
    assert metrics["success_rate.fgsm.eps2_n"] == round(metrics["test_acc"] * 20)
    client = mlflow.MlflowClient()
    model_id = client.get_model_version_by_alias("medart-pneumonia", "champion").source.removeprefix("models:/")
    linked = {m.key: m.value for m in client.get_logged_model(model_id).metrics}
    assert linked["test_acc"] == pytest.approx(metrics["test_acc"])
    assert linked["adv_acc.fgsm.eps2"] == pytest.approx(metrics["adv_acc.fgsm.eps2"])
    (run,) = mlflow.search_runs(experiment_names=["medart/pneumonia/evaluate"], output_format="list",
                                filter_string="attributes.run_name = 'evaluate-28px'")
    assert run.data.tags["medart.logged_model_id"] == model_id
    children = mlflow.search_runs(experiment_names=["medart/pneumonia/evaluate"], output_format="list",
                                  filter_string=f"tags.mlflow.parentRunId = '{run.info.run_id}'")
    assert sorted(r.info.run_name for r in children) == ["fgsm-eps2/255-art", "pgd-eps2/255-art"]


def test_cli_compares_champion_and_challenger(registered, shared_data):
    train(DataSpec("pneumonia", shared_data), ModelRequest(arch="resnet18", pretrained="none", max_train=64, max_eval=16),
          TrainConfig(epochs=1, batch_size=32, lr=1e-2, seed=1), RunOptions(progress=False))
    client = mlflow.MlflowClient()
    client.set_registered_model_alias("medart-pneumonia", "challenger", "2")
    out = CliRunner().invoke(main, ["evaluate", "--model-uri", registered, "--dataset", "pneumonia", "--data-dir",
                                    str(shared_data), "--max-eval", "16", "--attacks", "fgsm", "--eps", "4/255",
                                    "--compare-with", "challenger", "--no-progress"])
    assert out.exit_code == 0, out.output
    lines = [line for line in out.output.splitlines() if line.startswith("|")]  # MLflow logs to stderr too
    assert lines[0] == "| metric | models:/medart-pneumonia@champion | models:/medart-pneumonia@challenger |"
    assert any(line.startswith("| adv_acc.fgsm.eps4 (%) |") for line in lines)
    assert any(line.startswith("| test_n |") for line in lines)
    bad = CliRunner().invoke(main, ["evaluate", "--model-uri", "models:/medart-pneumonia@nobody", "--dataset",
                                    "pneumonia", "--data-dir", str(shared_data)])
    assert bad.exit_code == 2 and "models:/medart-pneumonia@nobody" in bad.output and "Traceback" not in bad.output


def test_evaluate_loads_the_model_once_however_many_attacks(registered, shared_data, monkeypatch):
    """A stage receives the loaded model: one load per model, not one per stage (it was 2 before)."""
    from medart.models import loading

    loads = []
    real = loading.load_model
    monkeypatch.setattr(loading, "load_model", lambda source, *a, **k: loads.append(source.model_uri) or real(source, *a, **k))
    out = CliRunner().invoke(main, ["evaluate", "--model-uri", registered, "--dataset", "pneumonia", "--data-dir",
                                    str(shared_data), "--max-eval", "10", "--attacks", "fgsm,bim", "--eps", "1/255,2/255",
                                    "--no-progress"])
    assert out.exit_code == 0, out.output
    assert loads == [registered]


def test_cli_checks_log_one_table(registered, shared_data):
    # without --model-uri: the dataset's champion (printing its metrics used to fail on the missing URI)
    out = CliRunner().invoke(main, ["evaluate", "--dataset", "pneumonia", "--data-dir",
                                    str(shared_data), "--max-eval", "8", "--eps", "2/255", "--checks", "--check-steps", "2",
                                    "--check-queries", "20", "--no-progress"])
    assert out.exit_code == 0, out.output
    assert f"checklist of {registered}" in out.output and "| monotone_eps |" in out.output
    # the n every checklist accuracy rests on, and how wide an interval is at it
    assert "Every accuracy above is over the same 8 images; at this n a 95 % Wilson interval is up to ±" in out.output
    (run,) = [r for r in mlflow.search_runs(search_all_experiments=True, output_format="list") if "checks_failed" in r.data.metrics]
    table = json.loads(mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/checklist.json"))
    assert table["columns"] == ["check", "question", "passed", "measured", "suggests"] and len(table["data"]) == 6
    assert run.data.metrics["checks_failed"] == sum(not row[2] for row in table["data"])
