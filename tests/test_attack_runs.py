"""The attack stage against a registered model: MLflow runs, cached examples, nested ε sweeps, CLI."""

from __future__ import annotations

import re

import mlflow
import pytest
import torch
from click.testing import CliRunner

from medart.attacks import make_spec
from medart.cli import main
from medart.stages import DataSpec, RunOptions, Target, attack, sweep

pytestmark = pytest.mark.filterwarnings("ignore:.*official MedMNIST MD5")


def test_attack_run_logs_metrics_and_reuses_cached_examples(registered, shared_data):
    spec = make_spec("bim", "2/255", steps=5, step_size="0.5/255")
    target = Target.load(registered, DataSpec("pneumonia", shared_data), max_examples=20)
    torchattacks = RunOptions(backend="torchattacks", progress=False)
    first = attack(target, spec, torchattacks)
    assert not first.cached
    assert {len(first.clean["adv_train"][0]), len(first.clean["adv_test"][0])} == {16, 4}  # 80/20 of 20
    m = first.metrics
    assert m["linf_max"] <= spec.eps + 1e-6 and m["n"] == 20 and m["image_steps_per_second"] > 0
    assert m["adv_acc"] <= m["clean_acc"]
    client = mlflow.MlflowClient()
    run = client.get_run(first.run_id)
    # every fraction logged with its 95 % interval and n: the 20 images, a success rate's the images classified correctly
    for name in ("clean_acc", "adv_acc", "clean_auc", "adv_auc", "clean_balanced_acc", "adv_balanced_acc", "success_rate"):
        assert run.data.metrics[f"{name}_ci_low"] <= m[name] <= run.data.metrics[f"{name}_ci_high"], name
        assert run.data.metrics[name] == m[name]  # the value itself as it always was
    assert m["clean_acc_n"] == m["adv_acc_n"] == 20 and m["success_rate_n"] == round(m["clean_acc"] * 20)
    assert m["clean_acc_ci_high"] - m["clean_acc_ci_low"] > 0.2  # 20 images: a wide interval, never a point
    assert run.info.status == "FINISHED" and run.data.params["attack.steps"] == "5"
    assert {a.path for a in client.list_artifacts(first.run_id, "adversarial")} == {
        "adversarial/adv_train.npz", "adversarial/adv_test.npz"}

    again = attack(target, spec, torchattacks)
    assert again.cached and "seconds" not in again.metrics
    assert client.get_run(again.run_id).data.tags["medart.cached_from"] == first.run_id
    for part in ("adv_train", "adv_test"):
        assert torch.equal(again.adversarial[part], first.adversarial[part])  # stored losslessly
    assert again.metrics["adv_acc"] == m["adv_acc"]
    # another backend or seed is another cache entry
    other = attack(target, spec, RunOptions(backend="art", progress=False))
    assert not other.cached


def test_sweep_makes_nested_runs_a_figure_and_a_table(registered, shared_data):
    target = Target.load(registered, DataSpec("pneumonia", shared_data), max_examples=10)
    out = sweep(target, ["fgsm", "pgd"], [0.5 / 255, 2 / 255], RunOptions(progress=False))
    parent, rows = out.run_id, out.rows
    assert len(rows) == 4 and out.failed == []
    children = mlflow.search_runs(experiment_names=["medart/pneumonia/attack"],
                                  filter_string=f"tags.mlflow.parentRunId = '{parent}'", output_format="list")
    assert sorted(r.info.run_name for r in children) == [
        "fgsm-eps0.5/255-art", "fgsm-eps2/255-art", "pgd-eps0.5/255-art", "pgd-eps2/255-art"]
    client = mlflow.MlflowClient()
    paths = {a.path for a in client.list_artifacts(parent)} | {a.path for a in client.list_artifacts(parent, "figures")}
    assert {"sweep.md", "sweep.json", "figures/accuracy_vs_eps.png"} <= paths
    table = mlflow.artifacts.load_text(f"runs:/{parent}/sweep.md")
    assert "| FGSM |" in table and "ε=2/255" in table
    for r in rows:  # larger ε never helps the model in FGSM/PGD here by more than noise on 10 images
        assert r.linf_max <= r.eps + 1e-6


def test_cli_attack(registered, shared_data):
    runner = CliRunner()
    command = ["attack", "--model-uri", registered, "--dataset", "pneumonia", "--data-dir", str(shared_data),
               "--attack", "fgsm", "--eps", "1/255", "--max-examples", "10", "--no-progress"]
    ok = runner.invoke(main, command)
    assert ok.exit_code == 0, ok.output
    assert "fgsm-eps1/255 via art on 10 images" in ok.output and "max L∞ 1.0000/255" in ok.output
    assert "from cache" not in ok.output
    made = re.search(r"^attack run ([0-9a-f]+) in sqlite:///\S+: ", ok.output, re.M)[1]
    again = runner.invoke(main, command)  # a cache hit names the run that made the examples
    assert again.exit_code == 0 and f"on 10 images (examples from cache of run {made})" in again.output, again.output
    for args, fragment in (
        (["--attack", "bim", "--eps", "3"], "ε must be in (0, 1]"),
        (["--attack", "zoo"], "Invalid value for '--attack': 'zoo' is not one of"),
        (["--attack", "pgd", "--step-size", "x"], "Invalid value for '--step-size': cannot read ε from 'x'"),
        (["--attack", "pgd", "--steps", "0"], "Invalid value for '--steps': 0 is not in the range x>=1"),
    ):
        bad = runner.invoke(main, ["attack", "--model-uri", registered, "--dataset", "pneumonia",
                                   "--data-dir", str(shared_data), *args])
        assert bad.exit_code == 2 and "Traceback" not in bad.output and fragment in bad.output, bad.output
    missing = runner.invoke(main, ["attack", "--model-uri", "models:/medart-pneumonia/7", "--dataset", "pneumonia",
                                   "--data-dir", str(shared_data), "--attack", "fgsm"])
    assert missing.exit_code == 2 and "cannot be loaded" in missing.output
