"""Robust training through ART's trainers (`medart harden`): on real chest X-rays a hardened small
CNN resists PGD that breaks the standard one, the command logs and registers the copy with its
parent and trainer (medart's own format and a model card's state_dict), bad input and models it
cannot fine-tune are one line, and an interrupted hardening registers nothing."""

from __future__ import annotations

import copy
import json
import signal
import subprocess
import sys
import time

import mlflow
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from medart.cli import main
from medart.defences.copies import check_fine_tunable
from medart.defences.training import EpochBatches, HardenConfig, robust_fit, validation_metrics
from medart.errors import ConfigError, ModelError

pytestmark = pytest.mark.filterwarnings("ignore:.*official MedMNIST MD5")


def run(*args: str):
    return CliRunner().invoke(main, list(args))


def assert_one_line_error(result, *fragments: str) -> None:
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.parametrize("settings, fragment", [
    ({"trainer": "mart"}, "unknown trainer 'mart'; choose one of: pgd-at, trades, fbf, awp"),
    ({"eps": 0}, "ε must be in (0, 1]"),
    ({"eps": "300/255"}, "ε must be in (0, 1]"),
    ({"trainer": "fbf", "steps": 3}, "fbf takes one FGSM step of 1.25 ε"),
    ({"beta": 3.0}, "`beta` weighs TRADES' KL term; pgd-at has none"),
    ({"trainer": "trades", "gamma": 0.01}, "`gamma` sizes AWP's weight perturbation; trades has none"),
    ({"trainer": "awp", "gamma": 0}, "`gamma` must be > 0"),
    ({"eps": "2/255", "step_size": "3/255"}, "exceeds `eps`"),
    ({"monitor": "val_robust"}, "val_pgd_balanced_acc"),
    ({"batch_size": 1}, "`batch_size` must be >= 2"),
])
def test_settings_that_do_not_fit_the_trainer_are_refused(settings, fragment):
    with pytest.raises(ConfigError) as error:
        HardenConfig(**settings)
    assert fragment in str(error.value)


def test_the_settings_logged_are_the_trainers_own():
    pgd = HardenConfig(eps="4/255").settings()
    assert pgd["art_trainer"] == "AdversarialTrainer + ProjectedGradientDescent" and pgd["ratio"] == 1.0
    assert (pgd["steps"], pgd["step_size"], pgd["eps"]) == (7, pytest.approx(1 / 255), pytest.approx(4 / 255))
    assert HardenConfig(trainer="trades").settings()["beta"] == 6.0
    awp = HardenConfig(trainer="awp").settings()
    assert (awp["art_trainer"], awp["gamma"], awp["awp_mode"], awp["steps"]) == ("AdversarialTrainerAWPPyTorch", 0.005, "PGD", 7)
    fbf = HardenConfig(trainer="fbf", eps="4/255").settings()
    assert "lr" not in fbf and "steps" not in fbf and fbf["fbf_step"] == pytest.approx(5 / 255)


def test_an_epoch_ends_after_its_last_batch_is_trained():
    """The ART trainer's epochs, as :class:`EpochBatches` sees them, through ART's own fit_generator."""
    from art.estimators.classification import PyTorchClassifier
    from torch.utils.data import DataLoader, TensorDataset

    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 2))
    loader = DataLoader(TensorDataset(torch.rand(10, 3, 4, 4), torch.randint(0, 2, (10,))), batch_size=4, drop_last=True)
    steps = []
    optimiser = torch.optim.SGD(net.parameters(), lr=0.1)
    original_step = optimiser.step
    optimiser.step = lambda *a, **k: steps.append(1) or original_step(*a, **k)
    classifier = PyTorchClassifier(net, torch.nn.CrossEntropyLoss(), (3, 4, 4), 2, optimizer=optimiser, clip_values=(0, 1))
    ends = []
    batches = EpochBatches(loader, 2, on_epoch_end=lambda epoch, seconds: ends.append((epoch, len(steps), seconds)))
    x, y = batches.get_batch()
    assert x.shape == (4, 3, 4, 4) and x.dtype == np.float32 and y.shape == (4, 2) and set(y.sum(1)) == {1.0}
    batches = EpochBatches(loader, 2, on_epoch_end=lambda epoch, seconds: ends.append((epoch, len(steps), seconds)))
    classifier.fit_generator(batches, nb_epochs=3)
    batches.finish()
    assert [(epoch, trained) for epoch, trained, _ in ends] == [(1, 2), (2, 4), (3, 6)]  # two full batches an epoch
    assert all(seconds > 0 for *_, seconds in ends)


def test_a_model_medart_cannot_fine_tune_is_one_line(tracking_store, shared_data, tmp_path):
    """A TorchScript program is read, attacked and evaluated, but its copy could not be stored again."""
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                              torch.nn.Linear(4, 2))
    torch.jit.script(net.eval()).save(str(tmp_path / "scripted.pt"))
    result = run("harden", "--model-uri", str(tmp_path / "scripted.pt"), "--input-size", "28", "--dataset", "pneumonia",
                 "--data-dir", str(shared_data), "--no-progress")
    assert_one_line_error(result, "is a TorchScript file, a fixed graph medart reads but does not export again",
                          "register its state_dict with a model card")
    assert mlflow.search_runs(search_all_experiments=True, output_format="list") == []  # refused before any run


def test_fine_tunable_models_are_medarts_own_and_card_state_dicts():
    from medart.models.adapter import AdaptedClassifier, InputContract, Layout
    from medart.models.resnet import build_model

    def adapted(layout: Layout) -> AdaptedClassifier:
        return AdaptedClassifier(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 2)),
                                 contract=InputContract(size=8), layout=layout)

    model = build_model(2, "smallcnn", "none")
    check_fine_tunable(model, "models:/own/1")
    check_fine_tunable(adapted(Layout(format="state_dict")), "card.json")
    for layout, fragment in ((Layout(format="pt2"), "is an MLflow pytorch model in pt2, a fixed graph"),
                             (Layout(format="pickle"), "could only store as a pickle"),
                             (Layout(), "is a torch.nn.Module handed over in Python")):
        other = adapted(layout)
        with pytest.raises(ModelError, match=fragment):
            check_fine_tunable(other, "x")
    for p in model.parameters():
        p.requires_grad_(False)
    with pytest.raises(ModelError, match="no trainable parameters"):
        check_fine_tunable(model, "models:/own/1")


def test_cli_bad_input_is_one_line_before_anything_loads(tracking_store, shared_data):
    common = ["--dataset", "pneumonia", "--data-dir", str(shared_data), "--model-uri", "models:/absent@champion"]
    assert_one_line_error(run("harden", "--trainer", "mart", *common), "'mart' is not one of 'pgd-at', 'trades', 'fbf', 'awp'")
    assert_one_line_error(run("harden", "--eps", "0", *common), "--eps", "ε must be in (0, 1]")
    assert_one_line_error(run("harden", "--eps", "2", *common), "--eps", "ε must be in (0, 1]")
    assert_one_line_error(run("harden", "--trainer", "fbf", "--steps", "3", *common), "drop --steps")
    assert_one_line_error(run("harden", "--trainer", "pgd-at", "--beta", "1", *common), "drop --beta")
    assert_one_line_error(run("harden", *common), "models:/absent@champion")  # a fine setting, then the missing model
    assert mlflow.search_runs(search_all_experiments=True, output_format="list") == []


# --- the trainers on real chest X-rays ---------------------------------------------------------------------

EPS = 8 / 255  # where two epochs of 256 images separate a robust small CNN from a standard one


@pytest.fixture(scope="module")
def standard_cnn(shared_data):
    """A small CNN trained the standard way (3 epochs, 256 real chest X-rays, one thread), the
    images it trained on and 64 validation images."""
    from medart.data import load_dataset, subsample
    from medart.models.resnet import build_model
    from medart.models.training import TrainConfig, fit

    splits = load_dataset("pneumonia", shared_data)
    train, val = subsample(splits.train, 256, 0), subsample(splits.val, 64, 0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        model = build_model(2, "smallcnn", "none", splits.classes, 28)
        fit(model, train, val, TrainConfig(epochs=3, batch_size=32, lr=0.05, augment=False), progress=False)
    finally:
        torch.set_num_threads(threads)
    return model.eval(), train, val


@pytest.mark.slow  # two adversarial epochs a trainer: ~5-15 s each
@pytest.mark.parametrize("trainer, extra", [("pgd-at", {}), ("trades", {"beta": 1.0}), ("fbf", {}), ("awp", {})])
def test_robust_training_lifts_pgd_accuracy_above_the_standard_models(standard_cnn, trainer, extra):
    # TRADES at its paper's beta 6 drives this small CNN towards one answer at 8/255 (a constant model has KL 0)
    from medart.attacks import make_attack, make_spec
    from medart.data.base import stack

    standard, train, val = standard_cnn
    model = copy.deepcopy(standard)
    config = HardenConfig(trainer=trainer, eps=EPS, epochs=2, batch_size=32, augment=False, **extra)
    seen = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = robust_fit(model, train, val, config, on_epoch=lambda epoch, metrics: seen.append((epoch, metrics)))
    finally:
        torch.set_num_threads(threads)
    x, y = stack(val)
    assert [epoch for epoch, _ in seen] == [0, 1, 2] and seen[0][1] == result.before
    # epoch 0 is the standard model on the same 64 images: PGD at 8/255 breaks it
    adv = make_attack(standard, make_spec("pgd", EPS), 2, "art", 32, "cpu").generate(x, y, 0)
    assert result.before["val_pgd_acc"] == (standard(adv).argmax(1) == y).float().mean().item() <= 0.45
    assert result.before["val_acc"] >= 0.9
    # the hardened copy resists it, and still classifies clean images
    assert result.best["val_pgd_acc"] >= result.before["val_pgd_acc"] + 0.15, (result.before, result.best)
    assert result.best["val_acc"] >= 0.8
    assert validation_metrics(model, x, y, config, val.classes) == {k: v for k, v in result.best.items() if k != "epoch_seconds"}
    assert len(result.history) == 2 and result.n_val == 64
    assert all(h["epoch_seconds"] > 0 for h in result.history) and result.standard_seconds_per_epoch > 0


@pytest.mark.slow  # the whole command on the registered ResNet-18: ~20 s
def test_cli_hardens_registers_the_challenger_and_records_its_parent(registered, shared_data):
    from medart.data import load_dataset, subsample
    from medart.data.base import stack
    from medart.models import registry

    done = run("harden", "--model-uri", registered, "--dataset", "pneumonia", "--data-dir", str(shared_data),
               "--trainer", "pgd-at", "--eps", "2/255", "--epochs", "2", "--max-train", "64", "--max-eval", "16",
               "--batch-size", "32", "--no-augment", "--no-progress")
    assert done.exit_code == 0, done.output
    (hardening,) = mlflow.search_runs(experiment_names=["medart/pneumonia/harden"], output_format="list")
    run_id = hardening.info.run_id
    assert f"harden run {run_id} in " in done.output
    assert "pgd-at at ε 2/255 from models:/medart-pneumonia@champion (version 1)" in done.output
    assert "kept epoch" in done.output and "on 16 validation images" in done.output and "per standard epoch" in done.output
    test = hardening.data.metrics  # the test numbers with their 95 % intervals and n, logged and printed
    assert test["test_acc_ci_low"] <= test["test_acc"] <= test["test_acc_ci_high"] and test["test_acc_n"] == test["test_n"]
    assert f"test accuracy {test['test_acc'] * 100:.1f} [{test['test_acc_ci_low'] * 100:.1f}, " in done.output
    params = hardening.data.params
    assert params["harden.parent_model_uri"] == registered and params["harden.parent_version"] == "1"
    assert params["harden.trainer"] == "pgd-at" and params["harden.eps"] == "2/255"
    assert float(params["harden.eps_value"]) == pytest.approx(2 / 255)
    assert params["harden.steps"] == "7" and params["harden.art_trainer"] == "AdversarialTrainer + ProjectedGradientDescent"
    assert params["n_train"] == "64" and params["n_val"] == "16"
    client = mlflow.MlflowClient()
    history = {key: [(m.step, m.value) for m in client.get_metric_history(run_id, key)] for key in
               ("val_acc", "val_pgd_acc", "epoch_seconds")}
    assert [step for step, _ in history["val_pgd_acc"]] == [0, 1, 2]  # the parent, then each epoch
    assert [step for step, _ in history["epoch_seconds"]] == [1, 2]
    metrics = hardening.data.metrics
    assert metrics["seconds_per_epoch"] == pytest.approx(np.mean([v for _, v in history["epoch_seconds"]]))
    assert metrics["time_ratio"] == pytest.approx(metrics["seconds_per_epoch"] / metrics["standard_seconds_per_epoch"])
    assert metrics["test_n"] == 32 and 0 <= metrics["best_val_pgd_acc"] <= metrics["best_val_acc"] <= 1
    artifacts = {a.path for a in client.list_artifacts(run_id)} | {a.path for a in client.list_artifacts(run_id, "figures")}
    assert {"history.json", "figures/hardening.png", "splits.json"} <= artifacts
    assert len(json.loads(mlflow.artifacts.load_text(f"runs:/{run_id}/history.json"))) == 2
    description = hardening.data.tags["mlflow.note.content"]  # what the MLflow UI opens on
    assert description.startswith(f"**{registered} hardened by pgd-at at ε = 2/255: models:/medart-pneumonia/2")
    assert "test split, n = 32 images" in description and f"{test['test_acc'] * 100:.1f} [" in description
    assert f"(×{metrics['time_ratio']:.1f})" in description

    version = client.get_model_version("medart-pneumonia", "2")
    tags = version.tags
    assert tags["medart.parent_model_uri"] == registered and tags["medart.parent_version"] == "1"
    assert tags["medart.trainer"] == "pgd-at" and tags["medart.harden_run_id"] == run_id
    assert str(client.get_model_version_by_alias("medart-pneumonia", "champion").version) == "1"  # the gate moves it, not harden
    if tags["medart.degenerate"] == "false":
        assert "registered models:/medart-pneumonia/2@challenger" in done.output
        assert str(client.get_model_version_by_alias("medart-pneumonia", "challenger").version) == "2"
    # the stored copy is the kept epoch: the same validation numbers, read back tensor-only
    hardened = registry.load_model("models:/medart-pneumonia/2")
    parent = registry.load_model("models:/medart-pneumonia/1")
    assert any(not torch.equal(a, b) for a, b in zip(hardened.state_dict().values(), parent.state_dict().values()))
    x, y = stack(subsample(load_dataset("pneumonia", shared_data).val, 16, 0))
    measured = validation_metrics(hardened, x, y, HardenConfig(eps="2/255", batch_size=32), hardened.classes)
    assert measured["val_pgd_acc"] == pytest.approx(metrics["best_val_pgd_acc"])
    assert measured["val_acc"] == pytest.approx(metrics["best_val_acc"])


@pytest.mark.slow  # a torchvision network from a model card, hardened with FBF: ~15 s
def test_a_card_models_copy_is_a_card_with_its_new_state_dict(tracking_store, shared_data, tmp_path):
    import torchvision

    from medart.stages import DataSpec, RunOptions, Target
    from medart.stages.register import register
    from medart.stages.harden import HardenRequest, harden

    torch.manual_seed(0)
    network = torchvision.models.shufflenet_v2_x0_5(num_classes=2).eval()
    torch.save(network.state_dict(), tmp_path / "shufflenet.pt")
    imagenet = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    (tmp_path / "card.json").write_text(json.dumps({"architecture": "shufflenet_v2_x0_5", "weights": "shufflenet.pt",
                                                    "classes": ["normal", "pneumonia"], "input": {"size": 32, **imagenet}}))
    register(tmp_path / "shufflenet.pt", tmp_path / "card.json", "cxr-shufflenet", alias="prod")
    data = DataSpec("pneumonia", shared_data)
    target = Target.load("models:/cxr-shufflenet@prod", data)
    before = copy.deepcopy(target.model.state_dict())
    outcome = harden(target, HardenConfig(trainer="fbf", eps="2/255", epochs=1, batch_size=32, augment=False),
                     HardenRequest(max_train=64, max_eval=16), RunOptions(progress=False))
    assert (outcome.registered_name, outcome.version, outcome.parent_version) == ("cxr-shufflenet", "2", "1")
    assert outcome.aliased == (not outcome.check.degenerate)
    assert all(torch.equal(before[k], v) for k, v in target.model.state_dict().items())  # the parent was not touched
    copy_ = Target.load("models:/cxr-shufflenet/2", data).model
    assert copy_.config["format"] == "state_dict" and copy_.config["arch"] == "shufflenet_v2_x0_5"
    assert copy_.contract == target.model.contract and copy_.classes == ["normal", "pneumonia"]
    pixels = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(copy_(pixels), outcome.model(pixels), atol=1e-5)
        assert not torch.allclose(copy_(pixels), target.model(pixels), atol=1e-5)
    tags = mlflow.MlflowClient().get_model_version("cxr-shufflenet", "2").tags
    assert tags["medart.parent_model_uri"] == "models:/cxr-shufflenet@prod" and tags["medart.trainer"] == "fbf"


@pytest.mark.slow  # a hardening process stopped by a real SIGTERM after its first epoch
def test_sigterm_during_hardening_kills_the_run_and_registers_nothing(registered, tracking_store, shared_data, tmp_path):
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")} | {
        "MLFLOW_TRACKING_URI": tracking_store, "MEDART_DATA_DIR": str(shared_data), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-c", "from medart.cli import main; main()", "harden", "--model-uri", registered,
                             "--dataset", "pneumonia", "--epochs", "200", "--max-train", "64", "--max-eval", "16",
                             "--batch-size", "32", "--no-progress"], env=env, cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while True:
        experiment = mlflow.get_experiment_by_name("medart/pneumonia/harden")
        runs = mlflow.search_runs(experiment_names=["medart/pneumonia/harden"], output_format="list") if experiment else []
        if runs and "epoch_seconds" in runs[0].data.metrics:  # one adversarial epoch done
            break
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.monotonic() < deadline, "never finished an epoch"
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Interrupted (SIGTERM)" in err and "Traceback" not in err, err[-2000:]
    (killed,) = mlflow.search_runs(experiment_names=["medart/pneumonia/harden"], output_format="list")
    assert killed.info.status == "KILLED"
    versions = mlflow.MlflowClient().search_model_versions("name='medart-pneumonia'")
    assert [str(v.version) for v in versions] == ["1"]
    assert "challenger" not in mlflow.MlflowClient().get_registered_model("medart-pneumonia").aliases
