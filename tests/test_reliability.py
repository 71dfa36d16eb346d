"""Reliability: trusted pickles only on request, model mode always eval and restored, determinism."""

from __future__ import annotations

import argparse
import os

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from medart.attacks import make_attack, make_spec
from medart.detectors import DETECTORS, NEEDS_REFERENCES, make_detector
from medart.detectors.activations import activations
from medart.errors import ModelError
from medart.models import registry
from medart.models.evaluation import predict
from medart.models.resnet import build_model, load_state_dict_file


class _Payload:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_trusted_pickle_is_opt_in_and_reads_checkpoints(tmp_path):
    model = build_model(2, "resnet18", pretrained="none")
    checkpoint = tmp_path / "checkpoint.pth"
    torch.save({"state_dict": model.state_dict(), "args": argparse.Namespace(lr=0.1), "epoch": 3}, checkpoint)
    with pytest.raises(ModelError, match="refusing to unpickle it .* `trusted_pickle`=True"):
        load_state_dict_file(checkpoint)
    state = load_state_dict_file(checkpoint, trusted_pickle=True)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    whole = tmp_path / "module.pth"
    torch.save(model, whole)
    assert set(load_state_dict_file(whole, trusted_pickle=True)) == set(model.state_dict())
    # a planted payload in a model folder: refused by default, and nothing runs
    registry.save_files(model, tmp_path / "folder")
    payload = _Payload()
    payload.marker = tmp_path / "pwned"
    torch.save({"stem.0.weight": payload}, tmp_path / "folder" / registry.WEIGHTS)
    with pytest.raises(ModelError, match="refusing to unpickle"):
        registry.load_model(str(tmp_path / "folder"))
    assert not payload.marker.exists()


@pytest.fixture(scope="module")
def small():
    torch.manual_seed(0)
    model = build_model(2, "resnet18", pretrained="none", dropout=0.5)
    x = torch.rand(12, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = model.eval()(x).argmax(1)
    return model, x, y


@pytest.mark.parametrize("backend", ["art", "torchattacks"])
def test_attacks_run_in_eval_mode_and_restore_the_callers_mode(small, backend):
    """A model left in train mode (dropout on, batch-norm updating) would weaken the attack and drift."""
    model, x, y = small
    spec = make_spec("bim", 8 / 255, steps=3)
    reference = make_attack(model.eval(), spec, 2, backend).generate(x, y)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    again = make_attack(model, spec, 2, backend).generate(x, y)
    assert model.training and torch.equal(again, reference)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())  # batch-norm statistics untouched


def test_predictions_features_and_detectors_run_in_eval_mode(small):
    model, x, y = small
    model.eval()
    probs = predict(model, TensorDataset(x, y))[0]
    feats = activations(model, x, ["dfeat", "layer2"])[0]
    model.train()
    assert np.array_equal(predict(model, TensorDataset(x, y))[0], probs) and model.training
    again = activations(model, x, ["dfeat", "layer2"])[0]
    assert all(torch.equal(again[k], feats[k]) for k in feats) and model.training
    detector = make_detector("dfeat", model, n_estimators=5)
    detector.fit(torch.cat([x, 0.5 * x]), np.r_[np.zeros(12), np.ones(12)])
    assert model.training


@pytest.mark.parametrize("name", list(DETECTORS))
def test_detectors_are_deterministic_for_a_seed(small, name):
    model, x, y = small
    model.eval()
    x_fit = torch.cat([x, (x + 0.3 * torch.rand(x.shape, generator=torch.Generator().manual_seed(4))).clamp(0, 1)])
    labels = np.r_[np.zeros(12), np.ones(12)]
    params = {"lid": dict(k=3, reference_size=8, layers=["input", "dfeat"]), "bu": dict(passes=6),
              "dfeat": dict(n_estimators=10), "art_binary": dict(nb_epochs=3)}.get(name, {})
    scores = []
    for _ in range(2):
        detector = make_detector(name, model, random_state=7, **params)
        extra = dict(x_ref=x, y_ref=y.numpy()) if name in NEEDS_REFERENCES else {}
        detector.fit(x_fit, labels, **extra)
        scores.append(detector.detect(x_fit)[0]["scores"])
    np.testing.assert_array_equal(scores[0], scores[1])


@pytest.mark.parametrize("attack", ["fgsm", "bim", "pgd", "cw"])
def test_attacks_are_deterministic_for_a_seed(small, attack):
    model, x, y = small
    spec = make_spec(attack, 4 / 255, steps=None if attack == "fgsm" else 3)
    for backend in ("art", "torchattacks"):
        first = make_attack(model, spec, 2, backend).generate(x, y, seed=5)
        assert torch.equal(first, make_attack(model, spec, 2, backend).generate(x, y, seed=5)), backend
