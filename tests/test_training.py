"""Training on the real chest X-ray file into a real MLflow store and registry, and loading back."""

from __future__ import annotations

import dataclasses

import mlflow
import numpy as np
import pytest
import torch
from torch.utils.data import ConcatDataset

from medart.data import load_dataset, subsample
from medart.errors import ModelError
from medart.models import registry
from medart.models.evaluation import classification_metrics, evaluate
from medart.models.resnet import build_model
from medart.models.training import TrainConfig, fit
from medart.stages import DataSpec, ModelRequest, RunOptions, Target, train
from medart.stages import evaluate as evaluate_stage

pytestmark = pytest.mark.filterwarnings("ignore:.*official MedMNIST MD5")

SMALL = ModelRequest(arch="resnet18", pretrained="none", max_train=256, max_eval=32)
QUIET = RunOptions(progress=False)


def train_model(data_dir, config: TrainConfig, request: ModelRequest = SMALL):
    return train(DataSpec("pneumonia", data_dir), request, config, QUIET)


def test_train_logs_registers_and_reloads_with_same_accuracy(tracking_store, shared_data):
    out = train_model(shared_data, TrainConfig(epochs=2, batch_size=32, lr=1e-2))
    client = mlflow.MlflowClient()
    run = client.get_run(out.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["medart.degenerate"] == "false"
    assert run.data.params["train.lr"] == "0.01" and run.data.params["dataset"] == "pneumonia"
    assert run.data.params["data.file_md5"] == "3062d8c693378b506564f35a50301b11"
    assert [m.step for m in client.get_metric_history(out.run_id, "val_acc")] == [1, 2]
    assert {i.dataset.name for i in run.inputs.dataset_inputs} >= {"pneumonia-train", "pneumonia-adv_test"}
    artifacts = {a.path for a in client.list_artifacts(out.run_id, "figures")}
    assert "figures/training.png" in artifacts

    assert out.version == "1" and out.promoted
    assert str(client.get_model_version_by_alias("medart-pneumonia", "champion").version) == "1"
    # models:/…@alias gives the test accuracy the run logged, on the same test subset
    model = registry.load_model("models:/medart-pneumonia@champion")
    splits = load_dataset("pneumonia", shared_data)
    test = ConcatDataset([subsample(p, 32, 0) for p in splits.test])
    metrics = evaluate(model, test)
    assert metrics["acc"] == pytest.approx(run.data.metrics["test_acc"], abs=1e-9)
    assert metrics["auc"] == pytest.approx(run.data.metrics["test_auc"], abs=1e-9)
    # … and so do the version and run URIs
    for uri in (out.model_uri, f"runs:/{out.run_id}/model"):
        assert torch.equal(registry.load_model(uri).embed[0].weight, model.embed[0].weight)
    target = Target.load("models:/medart-pneumonia@champion", DataSpec("pneumonia", shared_data))
    whole = evaluate(model, ConcatDataset(splits.test))  # the evaluation stage's images: the whole test split
    assert evaluate_stage(target, run=QUIET).clean["acc"] == whole["acc"]
    # the trained model the stage hands back is the registered one
    assert all(torch.equal(p, q) for p, q in zip(out.model.state_dict().values(), model.state_dict().values()))


def test_alias_stays_on_the_best_version(tracking_store, shared_data):
    # two models that learnt something (the alias never goes to a degenerate one: test_guard.py)
    first = train_model(shared_data, TrainConfig(epochs=1, batch_size=32))
    second = train_model(shared_data, TrainConfig(epochs=2, batch_size=32))
    assert not (first.check.degenerate or second.check.degenerate)
    name = "medart-pneumonia"
    client = mlflow.MlflowClient()
    # pretend version 1 scored higher than anything: version 2 must not take the alias from it
    assert registry.promote_if_best(name, first.version, "champion", "val_acc", 2.0)
    assert not registry.promote_if_best(name, second.version, "champion", "val_acc", 0.5)
    assert str(client.get_model_version_by_alias(name, "champion").version) == first.version
    assert registry.promote_if_best(name, second.version, "champion", "val_acc", 3.0)
    assert str(client.get_model_version_by_alias(name, "champion").version) == second.version


def test_training_is_deterministic_with_a_seed(shared_data):
    splits = load_dataset("pneumonia", shared_data)
    train, val = subsample(splits.train, 32, 0), subsample(splits.val, 16, 0)
    config = TrainConfig(epochs=1, batch_size=16, lr=1e-3, seed=3)
    runs = []
    for _ in range(2):
        torch.manual_seed(123)
        model = build_model(2, "resnet18", pretrained="none")
        runs.append((fit(model, train, val, config, progress=False), model))
    (r1, m1), (r2, m2) = runs
    assert r1.history[0]["train_loss"] == r2.history[0]["train_loss"]
    assert torch.equal(m1.embed[0].weight, m2.embed[0].weight)
    assert train.transform is None  # augmentation never leaks into the caller's dataset


def test_train_model_with_a_seed_gives_the_same_model_whatever_ran_before(tracking_store, shared_data):
    config = TrainConfig(epochs=1, batch_size=32, lr=1e-2, seed=5)
    outs = []
    for draws in (1, 1000):
        torch.rand(draws)  # other work in the same process (a CLI, a sweep, a benchmark) moves the global RNG
        outs.append(train_model(shared_data, config, dataclasses.replace(SMALL, register=False)))
    client = mlflow.MlflowClient()
    first, second = (client.get_run(o.run_id).data.metrics for o in outs)
    assert first["train_loss"] == second["train_loss"] and first["test_acc"] == second["test_acc"]
    a, b = (registry.load_model(o.model_uri) for o in outs)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


def test_failed_run_is_marked_failed_and_registers_nothing(tracking_store, shared_data, tmp_path):
    with pytest.raises(ModelError, match="not found"):
        train_model(shared_data, TrainConfig(), dataclasses.replace(SMALL, pretrained=str(tmp_path / "missing.pth")))
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert [r.info.status for r in runs] == ["FAILED"]
    assert mlflow.MlflowClient().search_registered_models() == []


def test_unknown_model_uri(tracking_store):
    with pytest.raises(ModelError, match=r"model URI 'models:/medart-nothing@champion' cannot be loaded.*not found"):
        registry.load_model("models:/medart-nothing@champion")
    with pytest.raises(ModelError, match="cannot be loaded"):
        registry.load_model("runs:/0123456789abcdef0123456789abcdef/model")


def test_metrics_match_definitions():
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    labels = np.array([0, 1, 1, 0])
    m = classification_metrics(probs, labels)
    assert m["acc"] == 0.5
    assert m["auc"] == 0.75  # positives scored 0.8, 0.4; negatives 0.1, 0.7 → 3 of 4 pairs ordered
    assert np.isnan(classification_metrics(probs[:1], labels[:1])["auc"])
