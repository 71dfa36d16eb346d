"""Registry-driven evaluation: by alias, robust metrics linked to the logged model, two aliases compared."""

from __future__ import annotations

import mlflow
import pytest
from click.testing import CliRunner

from medart.cli import main
from medart.experiment import evaluate_model, train_model
from medart.models.training import TrainConfig

pytestmark = pytest.mark.filterwarnings("ignore:.*official MedMNIST MD5")


def test_evaluate_by_alias_links_robust_metrics_to_the_model(registered, shared_data):
    metrics = evaluate_model(registered, "pneumonia", shared_data, max_eval=20, attacks=["fgsm", "pgd"],
                             eps_values=[2 / 255])
    assert {"acc", "auc", "adv_acc.fgsm.eps2", "adv_acc.pgd.eps2", "success_rate.pgd.eps2"} <= set(metrics)
    assert metrics["adv_acc.pgd.eps2"] <= 1.0
    client = mlflow.MlflowClient()
    model_id = client.get_model_version_by_alias("medart-pneumonia", "champion").source.removeprefix("models:/")
    linked = {m.key: m.value for m in client.get_logged_model(model_id).metrics}
    assert linked["test_acc"] == pytest.approx(metrics["acc"])
    assert linked["adv_acc.fgsm.eps2"] == pytest.approx(metrics["adv_acc.fgsm.eps2"])
    (run,) = mlflow.search_runs(experiment_names=["medart/pneumonia/evaluate"], output_format="list",
                                filter_string="attributes.run_name = 'evaluate-28px'")
    assert run.data.tags["medart.logged_model_id"] == model_id
    children = mlflow.search_runs(experiment_names=["medart/pneumonia/evaluate"], output_format="list",
                                  filter_string=f"tags.mlflow.parentRunId = '{run.info.run_id}'")
    assert sorted(r.info.run_name for r in children) == ["fgsm-eps2/255-art", "pgd-eps2/255-art"]


def test_cli_compares_champion_and_challenger(registered, shared_data):
    train_model("pneumonia", shared_data, arch="resnet18", pretrained="none", max_train=64, max_eval=16,
                train_config=TrainConfig(epochs=1, batch_size=32, lr=1e-2, seed=1), register=True, progress=False)
    client = mlflow.MlflowClient()
    client.set_registered_model_alias("medart-pneumonia", "challenger", "2")
    out = CliRunner().invoke(main, ["evaluate", "--model-uri", registered, "--dataset", "pneumonia", "--data-dir",
                                    str(shared_data), "--max-eval", "16", "--attacks", "fgsm", "--eps", "4/255",
                                    "--compare-with", "challenger"])
    assert out.exit_code == 0, out.output
    lines = [line for line in out.output.splitlines() if line.startswith("|")]  # MLflow logs to stderr too
    assert lines[0] == "| metric | models:/medart-pneumonia@champion | models:/medart-pneumonia@challenger |"
    assert any(line.startswith("| adv_acc.fgsm.eps4 |") for line in lines)
    bad = CliRunner().invoke(main, ["evaluate", "--model-uri", "models:/medart-pneumonia@nobody", "--dataset",
                                    "pneumonia", "--data-dir", str(shared_data)])
    assert bad.exit_code == 2 and "models:/medart-pneumonia@nobody" in bad.output and "Traceback" not in bad.output
