"""MedResNet: head, normalisation, feature taps, weights; safe save/load of model files."""

from __future__ import annotations

import os
import pickle
import tempfile
import urllib.error
import warnings

import mlflow
import numpy as np
import pytest
import torch
import torchvision

from medart.errors import ConfigError, ModelError
from medart.models import registry
from medart.models.resnet import MedResNet, build_model


@pytest.fixture(scope="module")
def resnet50() -> MedResNet:
    torch.manual_seed(0)
    return build_model(3, "resnet50", pretrained="none", classes=["a", "b", "c"], image_size=32).eval()


def test_paper_head_and_taps(resnet50):
    x = torch.rand(2, 3, 32, 32)
    f = resnet50.features(x, ["input", "dfeat", "logits", "res3a_relu", "res5b_relu", "layer1", "layer3.5"])
    assert torch.allclose(f["input"], x * 2 - 1)  # normalised to [-1, 1] inside the model
    assert f["dfeat"].shape == (2, 128) and (f["dfeat"] >= 0).all()
    assert f["logits"].shape == (2, 3)
    assert torch.allclose(f["logits"], resnet50(x), atol=1e-6)
    assert f["res3a_relu"].shape == (2, 512, 4, 4)  # first block of layer2
    assert f["res5b_relu"].shape == (2, 2048, 1, 1)  # second block of layer4
    assert f["layer1"].shape == (2, 256, 8, 8)
    head = resnet50.embed[0], resnet50.head[0], resnet50.head[1]
    assert head[0].in_features == 2048 and head[0].out_features == 128
    assert isinstance(head[1], torch.nn.Dropout) and head[1].p == 0.2
    assert head[2].out_features == 3
    # every stage and every block is a tap (LID uses them)
    assert sum(n.startswith("layer") and "." in n for n in resnet50.tap_names()) == 3 + 4 + 6 + 3


def test_bad_model_settings():
    with pytest.raises(ConfigError, match="unknown feature tap"):
        build_model(2, "resnet18", pretrained="none").features(torch.rand(1, 3, 32, 32), ["res9z"])
    with pytest.raises(ConfigError, match="unknown architecture 'vgg16'"):
        build_model(2, "vgg16", pretrained="none")
    with pytest.raises(ConfigError, match="at least 2 classes"):
        build_model(1, "resnet18", pretrained="none")


def test_imagenet_weights_unavailable_is_one_clear_line(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty weight cache

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(ModelError, match=r"ImageNet weights for resnet50 .* use `pretrained`='none'") as err:
        build_model(2, "resnet50", pretrained="imagenet")
    assert "\n" not in str(err.value)


def test_backbone_weights_from_a_local_state_dict(tmp_path):
    torch.manual_seed(1)
    donor = torchvision.models.resnet18(weights=None)
    torch.save(donor.state_dict(), tmp_path / "resnet18.pth")
    model = build_model(2, "resnet18", pretrained=str(tmp_path / "resnet18.pth"))
    assert torch.equal(model.stem[0].weight, donor.conv1.weight)
    assert torch.equal(model.layer4[1].conv2.weight, donor.layer4[1].conv2.weight)
    with pytest.raises(ModelError, match="not found"):
        build_model(2, "resnet18", pretrained=str(tmp_path / "missing.pth"))


def test_model_files_round_trip(resnet50, tmp_path):
    registry.save_files(resnet50, tmp_path)
    loaded = registry.load_model(str(tmp_path))
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(loaded(x), resnet50(x))
    assert loaded.classes == ["a", "b", "c"] and loaded.config["image_size"] == 32


class _Payload:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickled_code_in_weights_is_refused_and_not_run(resnet50, tmp_path):
    registry.save_files(resnet50, tmp_path)
    marker = tmp_path / "pwned"
    payload = _Payload()
    payload.marker = marker
    (tmp_path / registry.WEIGHTS).write_bytes(pickle.dumps({"stem.0.weight": payload}))
    with pytest.raises(ModelError, match="not a tensor-only state_dict.*refusing to unpickle"):
        registry.load_model(str(tmp_path))
    assert not marker.exists()


def test_folder_without_model_files(tmp_path):
    with pytest.raises(ModelError, match="not a medart model"):
        registry.load_model(str(tmp_path))


@pytest.fixture
def logged(tracking_store):
    """A random two-class ResNet-18 at 28 px and the ModelInfo of logging it, with the warnings
    raised while it was logged."""
    torch.manual_seed(0)
    model = build_model(2, "resnet18", pretrained="none", classes=["normal", "pneumonia"], image_size=28).eval()
    with mlflow.start_run(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        info = registry.log_model(model, image_size=28)
    return model, info, caught


def test_logged_model_serves_through_pyfunc_without_mlflow_advisories(logged):
    model, info, caught = logged
    assert not [str(w.message) for w in caught if "mlflow" in w.filename], [str(w.message) for w in caught]
    x = np.random.default_rng(0).random((3, 3, 28, 28), dtype=np.float32)
    served = mlflow.pyfunc.load_model(info.model_uri)
    with torch.no_grad():
        expected = torch.softmax(model(torch.from_numpy(x)), 1).numpy()
    np.testing.assert_allclose(served.predict(x), expected, rtol=1e-5, atol=1e-6)
    assert served.metadata.get_input_schema().inputs[0].shape == (-1, 3, 28, 28)


def test_loading_from_the_store_leaves_no_download_behind(logged, tmp_path, monkeypatch):
    model, info, _ = logged
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    for _ in range(3):
        loaded = registry.load_model(info.model_uri)
    assert torch.equal(loaded.embed[0].weight, model.embed[0].weight)
    with pytest.raises(ModelError, match="cannot be loaded"):
        registry.load_model("models:/missing/1")
    assert list((tmp_path / "tmp").iterdir()) == []


def test_loading_from_the_store_prints_no_download_bars(logged, monkeypatch, capfd):
    # a Python user who never called tracking.configure (which sets the variable) gets no bars either
    model, info, _ = logged
    monkeypatch.delenv(registry.PROGRESS_BAR_ENV, raising=False)
    capfd.readouterr()
    loaded = registry.load_model(info.model_uri)
    assert torch.equal(loaded.embed[0].weight, model.embed[0].weight)
    assert "Downloading artifacts" not in capfd.readouterr().err
    assert registry.PROGRESS_BAR_ENV not in os.environ  # the user's environment is left as it was
