"""Adversarial examples as auditable run artifacts: stored losslessly, reused only by the same
network (and saying whose they are), and the adaptive study's examples stored like the attack's."""

from __future__ import annotations

import copy
import logging
import re

import mlflow
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from sklearn.metrics import roc_auc_score
from torch import nn

from medart.attacks import cache, make_spec
from medart.cli import main
from medart.detectors import make_detector
from medart.errors import DataError
from medart.models.adapter import AdaptedClassifier, InputContract, Layout
from medart.models.resnet import build_model
from medart.stages import DataSpec, RunOptions, Target, attack
from medart.stages.adaptive import undetected_success
from medart.stages.detect import detection_pairs

pytestmark = pytest.mark.filterwarnings("ignore:.*official MedMNIST MD5")
QUIET = RunOptions(progress=False, batch_size=16)
CLASSES = ("normal", "pneumonia")


class Net(nn.Module):
    """Any side in (adaptive pooling), no normalisation of its own."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.LeakyReLU(0.1), nn.AdaptiveAvgPool2d(2), nn.Flatten())
        self.head = nn.Linear(16, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


class Doubled(Net):
    """The same weights, another function."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(2 * x))


@pytest.fixture(scope="module")
def splits(shared_data):
    return DataSpec("pneumonia", shared_data), DataSpec("pneumonia", shared_data).load(28)


def _adapted(network: nn.Module, contract: InputContract = InputContract(size=28), layout: Layout = Layout()) -> AdaptedClassifier:
    return AdaptedClassifier(network, CLASSES, contract, layout=layout).eval()


def test_cached_examples_are_the_fresh_ones_bit_for_bit(tracking_store, splits, caplog):
    data, loaded = splits
    torch.manual_seed(0)
    target = Target("smallcnn", build_model(2, "smallcnn", "none", classes=CLASSES, image_size=28).eval(), data, loaded,
                    max_examples=16)
    spec = make_spec("pgd", "2/255", steps=3)  # a random start: float rounding everywhere in the ball
    fresh = attack(target, spec, QUIET)
    with caplog.at_level(logging.INFO, logger="medart"):
        cached = attack(target, spec, QUIET)
    assert fresh.cached_from is None and cached.cached_from == fresh.run_id
    assert f"pgd-eps2/255 via art: examples from cache of run {fresh.run_id}" in caplog.messages
    assert mlflow.get_run(cached.run_id).data.tags["medart.cached_from"] == fresh.run_id
    for part, indices in target.indices.items():
        assert torch.equal(cached.adversarial[part], fresh.adversarial[part])
        stored = cache.read(fresh.run_id, part)
        assert stored["x_adv"].dtype == np.float32 and np.array_equal(stored["x_adv"], fresh.adversarial[part].numpy())
        assert np.array_equal(stored["indices"], indices) and np.array_equal(stored["labels"], target.clean[part][1].numpy())
        # the indices rebuild the clean images from the splits
        rebuilt = torch.stack([getattr(loaded, part)[i][0] for i in stored["indices"]])
        assert torch.equal(rebuilt, target.clean[part][0])
    assert cached.metrics == {k: v for k, v in fresh.metrics.items() if k in cached.metrics}
    with pytest.raises(DataError, match="holds no adv_test examples of these images"):
        cache.load(fresh.run_id, "adv_test", target.indices["adv_test"][::-1])


def test_models_share_examples_only_when_they_are_the_same_network(tracking_store, splits):
    data, loaded = splits
    torch.manual_seed(0)
    network = Net().eval()
    spec = make_spec("fgsm", "1/255")

    def run(model: nn.Module) -> str | None:
        return attack(Target("m", model, data, loaded, max_examples=16), spec, QUIET).cached_from

    first = attack(Target("m", _adapted(network), data, loaded, max_examples=16), spec, QUIET).run_id
    assert run(_adapted(copy.deepcopy(network))) == first  # a copy of the same network, loaded anew
    assert run(_adapted(copy.deepcopy(network), InputContract(size=28, mean=(0.5,), std=(0.25,)))) is None

    # what a state_dict does not say, and the digest does
    same = cache.network_digest(_adapted(network))
    variants = {
        "normalisation": _adapted(network, InputContract(size=28, mean=(0.5,), std=(0.5,))),
        "input side": _adapted(network, InputContract(size=32)),
        "stored format": _adapted(network, layout=Layout(format="pickle")),
        "forward code": _adapted(_copy_into(Doubled(), network)),
        "layer setting": _adapted(_with_slope(network, 0.2)),
    }
    for what, model in variants.items():
        if what != "normalisation":  # which adds the mean and std buffers
            assert _weights(model) == _weights(_adapted(network)), what
        assert cache.network_digest(model) != same, what
    named = _adapted(copy.deepcopy(network))
    named.config["source"] = "models:/other/7"  # where it came from is no part of it
    assert cache.network_digest(named) == same


def _copy_into(empty: nn.Module, network: nn.Module) -> nn.Module:
    empty.load_state_dict(network.state_dict())
    return empty.eval()


def _with_slope(network: nn.Module, slope: float) -> nn.Module:
    other = copy.deepcopy(network)
    other.body[1].negative_slope = slope
    return other


def _weights(model: nn.Module) -> dict:
    return {k: v.tolist() for k, v in model.state_dict().items()}


@pytest.mark.slow
def test_registered_copies_share_examples_and_other_formats_do_not(tracking_store, shared_data):
    """Two registered versions of one pt2 file are one network; its pickle copy is another."""
    torch.manual_seed(0)
    network = Net().eval()
    example = torch.rand(2, 3, 28, 28).numpy()
    for name, fmt in (("cxr", "pt2"), ("cxr", "pt2"), ("cxr-pickle", "pickle")):
        with mlflow.start_run():
            mlflow.pytorch.log_model(network, name="model", input_example=example, registered_model_name=name,
                                     serialization_format=fmt, pip_requirements=["torch"])
    from medart.models.loading import ModelSource

    data, spec = DataSpec("pneumonia", shared_data), make_spec("fgsm", "1/255")
    out = {uri: attack(Target.load(ModelSource(uri, trusted_pickle=True), data, max_examples=16), spec, QUIET)
           for uri in ("models:/cxr/1", "models:/cxr/2", "models:/cxr-pickle/1")}
    assert out["models:/cxr/1"].cached_from is None
    assert out["models:/cxr/2"].cached_from == out["models:/cxr/1"].run_id
    assert out["models:/cxr-pickle/1"].cached_from is None


@pytest.mark.slow
def test_the_network_digest_is_the_same_in_every_process(tmp_path):
    """Bytecode constants such as frozensets print in hash-seed order: the digest must not."""
    import os
    import subprocess
    import sys

    code = ("import torch; from medart.models.resnet import build_model; from medart.attacks.cache import network_digest; "
            "torch.manual_seed(0); print(network_digest(build_model(2, 'smallcnn', 'none', image_size=28)))")
    digests = {subprocess.run([sys.executable, "-c", code], env=os.environ | {"PYTHONHASHSEED": seed, "OMP_NUM_THREADS": "1"},
                              capture_output=True, text=True, check=True).stdout for seed in ("0", "1")}
    assert len(digests) == 1


@pytest.mark.slow
def test_adaptive_examples_are_stored_and_reproduce_the_logged_numbers(tracking_store, shared_data):
    from medart.models.training import TrainConfig
    from medart.stages import ModelRequest, train

    data = DataSpec("pneumonia", shared_data)
    # 3 epochs without augmentation: on one thread (conftest) 2 augmented epochs left a degenerate model, never champion
    trained = train(data, ModelRequest(arch="smallcnn", pretrained="none", max_train=256, max_eval=32),
                    TrainConfig(epochs=3, batch_size=32, lr=0.05, augment=False), QUIET)
    assert trained.promoted
    runner = CliRunner()
    common = ["--dataset", "pneumonia", "--data-dir", str(shared_data), "--eps", "8/255", "--steps", "3",
              "--max-examples", "40", "--no-progress"]
    made = runner.invoke(main, ["attack", "--attack", "bim", *common])
    assert made.exit_code == 0, made.output
    attack_run = re.search(r"^attack run ([0-9a-f]+) in ", made.output, re.M)[1]
    done = runner.invoke(main, ["adaptive", "--attacks", "bim", *common, "--reference-size", "40",
                                "--detectors", "kd,mahalanobis", "--adaptive-weights", "1", "--adaptive-steps", "3"])
    assert done.exit_code == 0, done.output
    assert f"bim-eps8/255 via art: examples from cache of run {attack_run}" in done.output  # detect says whose they are

    target = Target.load(None, data, max_examples=40, reference_size=40)  # the champion, as the command loaded it
    parent = re.search(r"detect run ([0-9a-f]+)", done.output)[1]
    rows = mlflow.search_runs(search_all_experiments=True, output_format="list",
                              filter_string=f"tags.mlflow.parentRunId = '{parent}' and params.`adaptive.attack` LIKE '%'")
    assert sorted((r.data.params["adaptive.attack"], r.data.params["detector"]) for r in rows) == [
        ("detector-aware", "kd"), ("detector-aware", "mahalanobis"), ("feature-match", "kd"), ("feature-match", "mahalanobis")]
    mahalanobis = _refit_mahalanobis(target, attack_run)
    for row in rows:
        stored = cache.read(row.info.run_id, "adv_test")
        x_adv, labels, indices, scores = (stored[k] for k in ("x_adv", "labels", "indices", "scores"))
        n = int(row.data.params["n_test_pairs"])
        assert x_adv.shape == (n, 3, 28, 28) and x_adv.dtype == np.float32 and scores.shape == (2 * n,)
        clean = torch.stack([target.splits.adv_test[i][0] for i in indices])  # rebuilt from the dataset
        assert np.array_equal(labels, target.splits.adv_test.targets[indices])
        assert (torch.from_numpy(x_adv) - clean).abs().max() <= 8 / 255 + 1e-6
        with torch.no_grad():
            fooled = (target.model(torch.from_numpy(x_adv)).argmax(1) != torch.from_numpy(labels)).numpy()
        metrics = row.data.metrics
        assert fooled.mean() == pytest.approx(metrics["success_adaptive"], abs=1e-12)
        assert undetected_success(fooled, scores)[1] == pytest.approx(metrics["undetected_adaptive"], abs=1e-12)
        assert roc_auc_score(np.r_[np.zeros(n), np.ones(n)], scores) == pytest.approx(metrics["auc_adaptive"], abs=1e-12)
        if row.data.params["detector"] == "mahalanobis":  # the scores, again from a detector fitted anew
            again = mahalanobis.detect(torch.cat([clean, torch.from_numpy(x_adv)]), x_clean=clean)[0]["scores"]
            assert np.allclose(again, scores, rtol=1e-5, atol=1e-6)


def _refit_mahalanobis(target: Target, attack_run: str):
    """Mahalanobis fitted as the detection stage fits it, on the attack run's stored AdvTrain pairs."""
    stored = cache.read(attack_run, "adv_train")
    x, y = target.clean["adv_train"]
    assert np.array_equal(stored["indices"], target.indices["adv_train"])
    fit = detection_pairs(target.model, (x, y), torch.from_numpy(stored["x_adv"]), run=QUIET)
    detector = make_detector("mahalanobis", target.model, batch_size=QUIET.batch_size, device=QUIET.device,
                             random_state=target.seed)
    x_fit, y_fit = fit.xy()
    detector.fit(x_fit, y_fit, x_clean=fit.clean, x_ref=target.reference[0], y_ref=target.reference[1].numpy())
    return detector
