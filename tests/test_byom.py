"""Bring your own model: networks logged with plain MLflow / torch calls (not medart's), attacked,
detected and evaluated through medart on the real chest X-ray file; trust rules; ε in pixels;
ART-native equality; one-line errors for what medart cannot use; models returning a dict, tuple
or object (``output_key``); networks without a linear layer (penultimate features asked for only
by the stages that read them)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Dict, Tuple

import mlflow
import numpy as np
import pytest
import torch
import torchvision
from art.attacks.evasion import BasicIterativeMethod, FastGradientMethod
from art.estimators.classification import PyTorchClassifier
from click.testing import CliRunner
from torch import nn

from medart.attacks import make_attack, make_spec
from medart.detectors import make_detector
from medart.errors import ConfigError, ModelError
from medart.models.adapter import AdaptedClassifier, InputContract
from medart.models.loading import ModelSource
from medart.stages import DataSpec, DetectRequest, RunOptions, Target, attack, detect, evaluate

EPS = 2 / 255
RUN = RunOptions(progress=False, batch_size=32)
ALL_DETECTORS = ("kd", "lid", "dfeat", "qfeat", "bu", "mahalanobis")
SMALL = {"lid": {"k": 5, "reference_size": 15}, "bu": {"passes": 8}}  # 20 reference images
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


class SmallCNN(nn.Module):
    """A small classifier of ``channels``-channel images with dropout in its head."""

    def __init__(self, channels: int = 3, classes: int = 2) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                  nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


class GreyNormalised(nn.Module):
    """One grey channel in, normalised by the network itself: what a TorchScript user ships."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(0.5).view(1, 1, 1, 1))
        self.register_buffer("std", torch.tensor(0.25).view(1, 1, 1, 1))
        self.net = SmallCNN(channels=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)


class Normalize(nn.Module):
    def __init__(self, mean, std) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class Planted(nn.Module):
    """A model whose unpickling writes a file: the payload a pickle can carry."""

    def __init__(self, marker: str) -> None:
        super().__init__()
        self.marker, self.net = marker, SmallCNN()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def __setstate__(self, state) -> None:
        Path(state["marker"]).write_text("payload ran")
        super().__setstate__(state)


class TwoHeads(nn.Module):
    """A small classifier of 28-px images with an auxiliary head, returning both heads' outputs in a dict."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                  nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten())
        self.head = nn.Sequential(nn.Linear(784, 16), nn.ReLU(), nn.Linear(16, 2))
        self.aux = nn.Linear(784, 2)

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        z = self.body(x)
        return {"logits": self.head(z), "aux": self.aux(z)}


class TwoHeadsTuple(TwoHeads):
    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        z = self.body(x)
        return self.head(z), self.aux(z)


class TwoHeadsPlain(TwoHeads):
    """The same weights, returning the logits tensor itself."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


class Output:
    """What a HuggingFace-style model returns: an object with a ``logits`` attribute."""

    def __init__(self, logits: torch.Tensor, hidden: torch.Tensor) -> None:
        self.logits, self.hidden = logits, hidden


class TwoHeadsObject(TwoHeads):
    def forward(self, x: torch.Tensor) -> Output:
        z = self.body(x)
        return Output(self.head(z), z)


def _two_heads(x: torch.Tensor, y: torch.Tensor) -> dict[str, nn.Module]:
    """One trained network in each output form, all with the same weights."""
    torch.manual_seed(0)
    plain = _trained(TwoHeadsPlain(), x, y, steps=60)
    forms = {"plain": plain, "dict": TwoHeads(), "tuple": TwoHeadsTuple(), "object": TwoHeadsObject()}
    for network in forms.values():
        network.load_state_dict(plain.state_dict())
    return {name: network.eval() for name, network in forms.items()}


def _images(shared_data: Path, side: int = 28, n: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    from medart.data import subsample
    from medart.data.base import stack

    return stack(subsample(DataSpec("pneumonia", shared_data).load(side).train, n, 0))


def _trained(network: nn.Module, x: torch.Tensor, y: torch.Tensor, grey: bool = False, steps: int = 15) -> nn.Module:
    """A few Adam steps, so attacks and detectors see a model that is not constant."""
    torch.manual_seed(0)
    optimizer = torch.optim.Adam(network.parameters(), lr=3e-3)
    network.train()
    for step in range(steps):
        rows = torch.randperm(len(x))[:32]
        xb = x[rows].mean(1, keepdim=True) if grey else x[rows]
        optimizer.zero_grad()
        nn.functional.cross_entropy(network(xb), y[rows]).backward()
        optimizer.step()
    return network.eval()


def _every_stage(source: ModelSource, shared_data: Path, detectors=ALL_DETECTORS) -> Target:
    """Attack (both backends), detect and evaluate the model through medart's stages."""
    target = Target.load(source, DataSpec("pneumonia", shared_data), max_examples=20, reference_size=20)
    assert isinstance(target.model, AdaptedClassifier) and target.model.classes == ["normal", "pneumonia"]
    for backend in ("art", "torchattacks"):
        out = attack(target, make_spec("fgsm", EPS), RunOptions(backend=backend, progress=False, batch_size=32))
        assert out.metrics["linf_max"] <= EPS + 1e-6 and out.metrics["n"] == 20
        assert all(x.shape[1:] == (3, target.side, target.side) for x in out.adversarial.values())
    request = DetectRequest(attacks=("fgsm",), eps=EPS, detectors=detectors, params={d: SMALL[d] for d in SMALL if d in detectors},
                            transfer=False)
    found = detect(target, request, RUN)
    assert set(found.auc["fgsm"]) == set(detectors)
    # an AUC, or NaN for a fit that measured nothing (on a few pairs KD may find no direction), tagged as such
    tags = mlflow.MlflowClient().get_run(found.child_runs["fgsm"]).data.tags
    assert all(0 <= v <= 1 or (math.isnan(v) and f"medart.degenerate_fit.{d}" in tags) for d, v in found.auc["fgsm"].items())
    metrics = evaluate(target, ("fgsm",), (EPS,), RUN).metrics()
    assert 0 <= metrics["test_acc"] <= 1 and "adv_acc.fgsm.eps2" in metrics
    return target


@pytest.mark.slow
@pytest.mark.parametrize("arch, width, steps", [("mobilenet_v3_small", 1024, 15), ("densenet121", 1024, 2)])
def test_torchvision_network_logged_as_pt2_runs_every_stage(tracking_store, shared_data, arch, width, steps):
    x, y = _images(shared_data, side=32)
    network = _trained(torchvision.models.get_model(arch, num_classes=2), x, y, steps=steps)
    with mlflow.start_run():  # plain MLflow: pt2 is the default format of mlflow.pytorch since 3.17
        mlflow.pytorch.log_model(network, name="model", input_example=x[:2].numpy(), registered_model_name="my-cxr",
                                 pip_requirements=["torch"])
    mlflow.MlflowClient().set_registered_model_alias("my-cxr", "prod", "1")
    detectors = ALL_DETECTORS if arch.startswith("mobilenet") else tuple(d for d in ALL_DETECTORS if d != "bu")
    target = _every_stage(ModelSource("models:/my-cxr@prod"), shared_data, detectors)
    model = target.model
    assert model.config["image_size"] == 32  # from the program's input shape
    assert "features" in model.stage_taps() and model.features(x[:3], ["dfeat"])["dfeat"].shape == (3, width)
    model.train()
    model.eval()  # what the reloaded program refuses; the adapted one allows
    if arch.startswith("mobilenet"):  # the MLproject face, as `mlflow run . -e evaluate -P model_uri=…` calls it
        from medart.mlproject import run as run_entry

        assert run_entry("evaluate", ["model_uri=models:/my-cxr@prod", "dataset=pneumonia", f"data_dir={shared_data}",
                                      "attacks=fgsm", "eps=2/255", "max_eval=20", "progress=false"]) == 0
        client = mlflow.MlflowClient()
        logged = client.get_logged_model(client.get_model_version_by_alias("my-cxr", "prod").model_id
                                         or client.get_model_version_by_alias("my-cxr", "prod").source.removeprefix("models:/"))
        assert {"test_acc", "adv_acc.fgsm.eps2"} <= {m.key for m in logged.metrics}  # robust metrics on the user's model


@pytest.mark.slow
def test_resnet18_logged_as_pickle_needs_the_opt_in_and_then_runs_every_stage(tracking_store, shared_data):
    x, y = _images(shared_data)
    network = _trained(torchvision.models.resnet18(num_classes=2), x, y, steps=5)
    with mlflow.start_run():
        mlflow.pytorch.log_model(network, name="model", serialization_format="pickle", registered_model_name="cxr-resnet",
                                 pip_requirements=["torch"])
    with pytest.raises(ModelError, match=r"pickle format, which runs code.*`trusted_pickle`") as refused:
        Target.load(ModelSource("models:/cxr-resnet/1"), DataSpec("pneumonia", shared_data))
    assert "\n" not in str(refused.value)
    source = ModelSource("models:/cxr-resnet/1", trusted_pickle=True, normalize="imagenet")
    target = _every_stage(source, shared_data, detectors=tuple(d for d in ALL_DETECTORS if d != "bu"))
    assert target.model.stage_taps() == ["conv1", "bn1", "layer1", "layer2", "layer3", "layer4"]
    with pytest.raises(ConfigError, match="BU needs dropout .* and ResNet has no dropout layer; leave bu out"):
        make_detector("bu", target.model).set_params()


@pytest.mark.slow
def test_torchscript_grey_model_with_its_own_normalisation_registered_from_a_card(tracking_store, shared_data, tmp_path):
    from medart.cli import main

    x, y = _images(shared_data)
    scripted = torch.jit.script(_trained(GreyNormalised(), x, y, grey=True))
    scripted.save(str(tmp_path / "grey.pt"))
    card = tmp_path / "card.json"
    card.write_text(json.dumps({"classes": ["normal", "pneumonia"], "input": {"channels": 1, "size": 28}}))
    done = CliRunner().invoke(main, ["register", "--weights", str(tmp_path / "grey.pt"), "--card", str(card),
                                     "--name", "cxr-grey", "--alias", "prod", "--tracking-uri", tracking_store])
    assert done.exit_code == 0, done.output
    target = _every_stage(ModelSource("models:/cxr-grey@prod"), shared_data)
    model = target.model
    assert model.contract.channels == 1 and "net.head.3" in model.tap_names()
    assert model.stage_taps() == ["net.body.3"]  # below the wrapper `net`; its head is dfeat's
    expected = scripted(x[:4].mean(1, keepdim=True))
    assert torch.allclose(model(x[:4]), expected, atol=1e-5)  # the converted program computes what the script does
    # the TorchScript file itself loads as well (torch.jit.load runs no Python code)
    direct = Target.load(ModelSource(str(tmp_path / "grey.pt"), input_channels=1), DataSpec("pneumonia", shared_data))
    assert torch.allclose(direct.model(x[:4]), expected, atol=1e-5)
    # the analysis figures that read the network's insides, on its own taps and last stage
    from medart.stages.analyze import AnalysisRequest, analyze

    request = AnalysisRequest(attacks=("fgsm",), eps=EPS, figures=("saliency", "stages", "embedding", "gradcam"), show=2)
    found = analyze(target, request, RUN)  # no layer4 here: Grad-CAM and the stage figure take net.body.3
    logged = {a.path for a in mlflow.MlflowClient().list_artifacts(found.run_id, "figures")}
    assert {f"figures/{name}.png" for name in ("saliency", "stages", "embedding", "gradcam")} <= logged


@pytest.mark.slow
def test_weights_file_and_card_of_a_torchvision_network(tracking_store, shared_data, tmp_path):
    x, y = _images(shared_data)
    network = _trained(torchvision.models.shufflenet_v2_x0_5(num_classes=2), x, y, steps=5)
    torch.save(network.state_dict(), tmp_path / "shufflenet.pt")
    card = tmp_path / "card.json"
    card.write_text(json.dumps({"architecture": "shufflenet_v2_x0_5", "weights": "shufflenet.pt",
                                "classes": ["normal", "pneumonia"], "input": {"channels": 3, "size": 32,
                                                                              "mean": IMAGENET[0], "std": IMAGENET[1]}}))
    target = _every_stage(ModelSource(str(card)), shared_data, detectors=tuple(d for d in ALL_DETECTORS if d != "bu"))
    assert target.side == 32 and target.model.config["arch"] == "shufflenet_v2_x0_5"
    pixels = torch.rand(2, 3, 32, 32)
    assert torch.allclose(target.model(pixels), network(Normalize(*IMAGENET)(pixels)), atol=1e-5)


def test_pickle_refusal_runs_no_payload(tracking_store, tmp_path):
    marker = tmp_path / "payload-ran.txt"
    with mlflow.start_run():
        info = mlflow.pytorch.log_model(Planted(str(marker)), name="model", serialization_format="pickle",
                                        pip_requirements=["torch"])
    assert not marker.exists()
    from medart.models.loading import load_model

    with pytest.raises(ModelError, match="refused"):
        load_model(ModelSource(info.model_uri))
    assert not marker.exists(), "the refusal unpickled the model"
    load_model(ModelSource(info.model_uri, trusted_pickle=True))
    assert marker.exists()  # the payload is real: the opt-in runs it


def _network_pair(x: torch.Tensor, y: torch.Tensor) -> tuple[AdaptedClassifier, AdaptedClassifier, nn.Module]:
    """One trained network (expecting ImageNet-normalised input), normalised inside the adapter or by itself."""
    torch.manual_seed(1)
    network = SmallCNN()
    _trained(nn.Sequential(Normalize(*IMAGENET), network), x, y, steps=30)
    inside = AdaptedClassifier(network, ["normal", "pneumonia"], InputContract(mean=IMAGENET[0], std=IMAGENET[1]))
    built_in = AdaptedClassifier(nn.Sequential(Normalize(*IMAGENET), network), ["normal", "pneumonia"])
    return inside, built_in, network


def test_eps_stays_in_pixel_units_whatever_the_normalisation(shared_data):
    x, y = _images(shared_data, n=32)
    inside, built_in, _ = _network_pair(x, y)
    for backend in ("art", "torchattacks"):
        spec = make_spec("bim", EPS)
        a = make_attack(inside, spec, 2, backend, 32, "cpu").generate(x, y)
        b = make_attack(built_in, spec, 2, backend, 32, "cpu").generate(x, y)
        assert (a - x).abs().max() <= EPS + 1e-6 and (b - x).abs().max() <= EPS + 1e-6
        acc_a, acc_b = ((m(v).argmax(1) == y).float().mean() for m, v in ((inside, a), (built_in, b)))
        assert acc_a == acc_b < (inside(x).argmax(1) == y).float().mean()  # the same, and the attack bites
        assert torch.allclose(a, b, atol=1e-6)


def test_art_native_equality_for_fgsm_and_bim(shared_data):
    x, y = _images(shared_data, n=16)
    inside, _, network = _network_pair(x, y)
    classifier = PyTorchClassifier(network, loss=nn.CrossEntropyLoss(), input_shape=(3, 28, 28), nb_classes=2,
                                   clip_values=(0.0, 1.0), preprocessing=(np.array(IMAGENET[0]).reshape(3, 1, 1),
                                                                          np.array(IMAGENET[1]).reshape(3, 1, 1)))
    for name in ("fgsm", "bim"):
        spec = make_spec(name, EPS)
        ours = make_attack(inside, spec, 2, "art", len(x), "cpu").generate(x, y)
        if name == "fgsm":
            art = FastGradientMethod(classifier, norm=np.inf, eps=EPS, batch_size=len(x))
        else:
            art = BasicIterativeMethod(classifier, eps=EPS, eps_step=spec.step_size, max_iter=spec.steps, batch_size=len(x),
                                       verbose=False)
        theirs = torch.from_numpy(art.generate(x.numpy(), y=y.numpy()))
        assert (ours - theirs).abs().max() <= 1e-6, name


def test_what_medart_cannot_use_is_one_line(tmp_path, shared_data):
    from medart.models.loading import load_model

    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no model here")
    errors = []
    with pytest.raises(ModelError, match="holds no model medart reads; it reads medart's own.*MLflow pytorch.*TorchScript.*card") as e:
        load_model(ModelSource(str(tmp_path / "empty")))
    errors.append(e.value)
    with pytest.raises(ModelError, match="no file or folder 'missing.pt'; give an existing path, or a URI such as models:/") as e:
        load_model(ModelSource("missing.pt"))
    errors.append(e.value)
    three = torch.jit.script(SmallCNN(classes=3).eval())
    three.save(str(tmp_path / "three.pt"))
    with pytest.raises(ModelError, match=r"has 3 outputs .* but pneumonia has 2 classes") as e:
        Target.load(ModelSource(str(tmp_path / "three.pt")), DataSpec("pneumonia", shared_data))
    errors.append(e.value)
    for bad, says in ((nn.Sequential(SmallCNN(), nn.Flatten(0)), r"shape \(4,\) for 2 images, not \(N, K\) logits"),
                      (nn.Sequential(SmallCNN(), nn.Softmax(1)), "probabilities"),
                      (nn.Conv2d(3, 2, 3), r"not \(N, K\) logits")):
        with pytest.raises(ModelError, match=says) as e:
            AdaptedClassifier(bad, contract=InputContract(size=28))
        errors.append(e.value)
    model = AdaptedClassifier(SmallCNN(), contract=InputContract(size=28))
    with pytest.raises(ConfigError, match="unknown feature tap 'head.9'; nearest: head.3, head.2") as e:
        model.features(torch.rand(2, 3, 28, 28), ["head.9"])
    errors.append(e.value)
    with pytest.raises(ConfigError, match="unknown layer 'bdy.3'; nearest: body.3"):
        make_detector("lid", model, layers=["input", "bdy.3"]).set_params()
    assert all("\n" not in str(error) for error in errors)


def test_adapter_taps_dfeat_stages_and_grey_channels():
    network = SmallCNN(channels=1)
    model = AdaptedClassifier(network, ["a", "b"], InputContract(channels=1, size=28, mean=(0.5,), std=(0.25,)))
    x = torch.rand(3, 1, 28, 28).expand(3, 3, 28, 28).contiguous()
    out = model.features(x, ["input", "body", "dfeat", "logits"])
    assert torch.equal(out["input"], x) and out["body"].shape == (3, 16) and out["dfeat"].shape == (3, 16)
    assert torch.allclose(out["logits"], network((x[:, :1] - 0.5) / 0.25), atol=1e-6)
    assert torch.allclose(out["dfeat"], network.head[:3](network.body((x[:, :1] - 0.5) / 0.25)), atol=1e-6)
    assert model.stage_taps() == ["body"] and model.config["num_classes"] == 2
    wrapped = AdaptedClassifier(nn.Sequential(Normalize((0.5,), (0.25,)), network), ["a", "b"], InputContract(channels=1, size=28))
    assert wrapped.stage_taps() == ["1.body"]  # a wrapper's stages are its weighted child's
    named = AdaptedClassifier(network, ["a", "b"], InputContract(channels=1, size=28), penultimate="body")
    assert torch.allclose(named.features(x, ["dfeat"])["dfeat"], named.features(x, ["body"])["body"])


def test_a_grey_model_on_colour_images_is_one_line_before_any_attack():
    from medart.data.base import ArrayDataset
    from medart.data.splits import ProtocolSplits
    from medart.models.loading import fit_to_dataset

    rng = np.random.default_rng(0)
    colour = ArrayDataset(rng.integers(0, 256, (8, 28, 28, 3), dtype=np.uint8), np.arange(8) % 2, ["benign", "melanoma"])
    grey = ArrayDataset(rng.integers(0, 256, (8, 28, 28), dtype=np.uint8), np.arange(8) % 2, ["benign", "melanoma"])
    model = AdaptedClassifier(SmallCNN(channels=1), contract=InputContract(channels=1, size=28))
    with pytest.raises(ModelError, match="takes 1 \\(grey\\) channel but skin images are in colour; use a 3-channel model") as e:
        fit_to_dataset(model, ProtocolSplits("skin", colour.classes, colour, colour, colour, colour), "m.pt")
    assert "\n" not in str(e.value)
    fit_to_dataset(model, ProtocolSplits("skin", grey.classes, grey, grey, grey, grey), "m.pt")  # grey images fit
    assert model.classes == ["benign", "melanoma"]  # an undeclared model takes the dataset's class names


def test_weights_file_and_card_of_a_timm_network(tracking_store, shared_data, tmp_path):
    timm = pytest.importorskip("timm", reason="timm is in medart's test extra")
    torch.manual_seed(0)
    network = timm.create_model("resnet10t", pretrained=False, num_classes=2).eval()
    torch.save(network.state_dict(), tmp_path / "resnet10t.pt")
    card = tmp_path / "card.json"
    card.write_text(json.dumps({"architecture": "timm:resnet10t", "weights": "resnet10t.pt", "classes": ["normal", "pneumonia"],
                                "input": {"channels": 3, "size": 28, "mean": IMAGENET[0], "std": IMAGENET[1]}}))
    target = Target.load(ModelSource(str(card)), DataSpec("pneumonia", shared_data), max_examples=8)
    pixels = torch.rand(2, 3, 28, 28)
    assert torch.allclose(target.model(pixels), network(Normalize(*IMAGENET)(pixels)), atol=1e-5)
    assert target.model.stage_taps()[-1] == "layer4" and "fc" not in target.model.stage_taps()
    out = attack(target, make_spec("fgsm", EPS), RUN)
    assert out.metrics["linf_max"] <= EPS + 1e-6 and out.metrics["n"] == 8


def test_dict_tuple_and_object_outputs_are_picked_with_output_key_or_refused_in_one_line(shared_data, tmp_path):
    from medart.attacks import cache
    from medart.models.cards import ModelCard
    from medart.models.loading import load_model

    x, y = _images(shared_data, n=128)
    forms = _two_heads(x, y)
    x, y = x[:16], y[:16]
    torch.jit.script(forms["dict"]).save(str(tmp_path / "two-heads.pt"))  # before an adapter hooks its layers
    contract = InputContract(size=28)
    plain = AdaptedClassifier(forms["plain"], ["normal", "pneumonia"], contract)
    errors = []
    for form, key, says in (("dict", "logits", "a dict with keys 'logits', 'aux' instead of a logits tensor"),
                            ("tuple", "0", r"a tuple of 2 items \(tensor \(2, 2\), tensor \(2, 2\)\) instead of a logits tensor"),
                            ("object", "logits", "an Output with tensor attributes logits, hidden instead of a logits tensor")):
        with pytest.raises(ModelError, match=f"returns {says}; pick one with `output_key`={key}$") as e:
            AdaptedClassifier(forms[form], contract=contract)
        errors.append(e.value)
        model = AdaptedClassifier(forms[form], ["normal", "pneumonia"], contract, output_key=key)
        assert model.config["output_key"] == key
        assert torch.equal(model(x), plain(x))  # the logits tensor, wherever the model is called
        taps, plain_taps = (m.features(x[:4], ["dfeat", "logits"]) for m in (model, plain))
        assert torch.equal(taps["logits"], plain_taps["logits"])
        assert torch.equal(taps["dfeat"], plain_taps["dfeat"]) and taps["dfeat"].shape == (4, 16)  # the logits' head's input
        for backend in ("art", "torchattacks"):
            spec = make_spec("bim", EPS)
            ours, theirs = (make_attack(m, spec, 2, backend, 16, "cpu").generate(x, y) for m in (model, plain))
            assert torch.equal(ours, theirs), (form, backend)
        # the same weights read at another output are another model: the attack cache tells them apart
        assert cache.network_digest(model) != cache.network_digest(plain)
    other = AdaptedClassifier(forms["dict"], ["normal", "pneumonia"], contract, output_key="aux")
    assert cache.network_digest(other) != cache.network_digest(AdaptedClassifier(forms["dict"], contract=contract, output_key="logits"))
    for network, key, says in ((forms["dict"], "logit", "which has no 'logit'; `output_key` must be one of logits, aux"),
                               (forms["tuple"], "2", "which has no '2'; `output_key` must be an index from 0 to 1"),
                               (forms["object"], "scores", "which has no 'scores'; `output_key` must be one of logits, hidden"),
                               (forms["plain"], "logits", "returns a tensor, which needs no `output_key`; drop `output_key`=logits")):
        with pytest.raises(ModelError, match=says) as e:
            AdaptedClassifier(network, contract=contract, output_key=key)
        errors.append(e.value)

    # a TorchScript file, its key from the card or the option (a contradiction is an error)
    card = tmp_path / "card.json"
    card.write_text(json.dumps({"weights": "two-heads.pt", "input": {"size": 28}, "output_key": "logits"}))
    scripted = load_model(ModelSource(str(card)))
    assert torch.allclose(scripted(x), plain(x), atol=1e-5)
    assert torch.allclose(scripted.features(x, ["dfeat"])["dfeat"], plain.features(x, ["dfeat"])["dfeat"], atol=1e-5)
    assert torch.allclose(load_model(ModelSource(str(tmp_path / "two-heads.pt"), output_key="logits"), 28)(x), plain(x), atol=1e-5)
    with pytest.raises(ConfigError, match="declares output_key 'logits', but `output_key` gives 'aux'; drop `output_key`") as e:
        load_model(ModelSource(str(card), output_key="aux"))
    errors.append(e.value)
    assert ModelCard.from_dict({"output_key": 0}, "card").output_key == "0" and ModelSource(output_key=0).output_key == "0"
    with pytest.raises(ConfigError, match="`output_key` must be the logits' key, attribute or index"):
        ModelCard.from_dict({"output_key": ["logits"]}, "card")
    assert all("\n" not in str(error) for error in errors)


def test_a_torchscript_dict_model_is_one_line_and_exit_2_from_medart_attack(tracking_store, shared_data, tmp_path):
    from medart.cli import main

    x, y = _images(shared_data, n=16)
    torch.jit.script(_two_heads(x, y)["dict"]).save(str(tmp_path / "two-heads.pt"))
    done = CliRunner().invoke(main, ["attack", "--model-uri", str(tmp_path / "two-heads.pt"), "--attack", "fgsm",
                                     "--data-dir", str(shared_data), "--max-examples", "8", "--no-progress"])
    assert done.exit_code == 2 and "Traceback" not in done.output, done.output
    errors = [line for line in done.output.splitlines() if line.startswith("Error:")]
    assert errors == ["Error: torchscript TwoHeads returns a dict with keys 'logits', 'aux' instead of a logits tensor; "
                      "pick one with --output-key=logits"], done.output
    assert not mlflow.search_runs(search_all_experiments=True, output_format="list")  # refused before any run


@pytest.mark.slow
def test_torchscript_dict_and_tuple_models_attacked_with_output_key_as_the_plain_model(tracking_store, shared_data, tmp_path):
    from medart.cli import main

    forms = _two_heads(*_images(shared_data, n=128))
    printed = {}
    for form, key in (("plain", None), ("dict", "logits"), ("tuple", "0")):
        torch.jit.script(forms[form]).save(str(tmp_path / f"{form}.pt"))
        done = CliRunner().invoke(main, ["attack", "--model-uri", str(tmp_path / f"{form}.pt"), "--attack", "bim",
                                         "--eps", "4/255", "--data-dir", str(shared_data), "--max-examples", "16",
                                         "--no-progress", *(["--output-key", key] if key else [])])
        assert done.exit_code == 0, done.output
        lines = [line for line in done.output.splitlines() if line.startswith(("attack run ", "accuracy "))]
        assert "from cache" not in lines[0] and "on 16 images" in lines[0], done.output  # each attacked afresh
        printed[form] = lines[1]
        run = mlflow.get_run(lines[0].split()[2])
        if key:
            assert torch.equal(*(torch.from_numpy(np.load(mlflow.artifacts.download_artifacts(
                run_id=r, artifact_path="adversarial/adv_test.npz", dst_path=str(tmp_path / f"{r}-{form}")))["x_adv"])
                for r in (run.info.run_id, plain_run)))  # the same examples as the plain model's
        else:
            plain_run = run.info.run_id
    assert printed["dict"] == printed["tuple"] == printed["plain"], printed
    assert " -> " in printed["plain"]


@pytest.mark.slow
def test_a_dict_model_logged_as_pt2_is_adapted_with_output_key(tracking_store, shared_data):
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    from medart.models.loading import load_model

    x, y = _images(shared_data, n=128)
    forms = _two_heads(x, y)
    signature = ModelSignature(inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 3, 28, 28))]))  # MLflow infers none for a dict
    with mlflow.start_run():
        info = mlflow.pytorch.log_model(forms["dict"], name="model", signature=signature, input_example=x[:2].numpy(),
                                        pip_requirements=["torch"])
    with pytest.raises(ModelError, match="pt2 program returns a dict with keys 'logits', 'aux' instead of a logits tensor; "
                                         "pick one with `output_key`=logits$"):
        load_model(ModelSource(info.model_uri))
    model = load_model(ModelSource(info.model_uri, output_key="logits"))
    plain = AdaptedClassifier(forms["plain"], contract=InputContract(size=28))
    assert torch.allclose(model(x[:16]), plain(x[:16]), atol=1e-5)
    assert torch.allclose(model.features(x[:16], ["dfeat"])["dfeat"], plain.features(x[:16], ["dfeat"])["dfeat"], atol=1e-5)


def test_a_network_without_a_linear_layer_loads_and_dfeat_suggests_layers_before_its_classifier(tracking_store, shared_data, tmp_path):
    from medart.cli import main

    torch.manual_seed(0)
    network = torchvision.models.squeezenet1_1(num_classes=2).eval()  # its classifier is a 1x1 convolution
    model = AdaptedClassifier(network, ["normal", "pneumonia"], InputContract(size=28), name="squeezenet1_1")
    x = torch.rand(4, 3, 28, 28)
    assert model(x).shape == (4, 2) and model.stage_taps() == ["features"]  # the classifier's stage is not a stage
    says = (r"squeezenet1_1 runs no nn.Linear layer, so its penultimate features \(dfeat\) cannot be found; name the layer "
            r"whose output they are with `penultimate`, e\.g\. features, features\.12, features\.12\.expand3x3_activation "
            r"\(what feeds 'classifier', which computes the logits\)$")
    with pytest.raises(ModelError, match=says):
        model.features(x, ["dfeat"])
    for name in ("kd", "dfeat", "lid", "mahalanobis"):  # the detectors ask when their settings are checked
        with pytest.raises(ModelError, match=says):
            make_detector(name, model).set_params()
    with pytest.raises(ModelError, match=says):
        make_detector("art_binary", model)
    named = AdaptedClassifier(network, ["normal", "pneumonia"], InputContract(size=28), penultimate="features")
    assert torch.equal(named.features(x, ["dfeat"])["dfeat"], network.features(x))
    make_detector("kd", named).set_params()

    # from the command line: detect refuses before its first attack, nothing logged
    torch.save(network.state_dict(), tmp_path / "squeezenet.pt")
    card = tmp_path / "card.json"
    card.write_text(json.dumps({"architecture": "squeezenet1_1", "weights": "squeezenet.pt", "input": {"size": 28}}))
    done = CliRunner().invoke(main, ["detect", "--model-uri", str(card), "--attacks", "fgsm", "--detectors", "kd",
                                     "--data-dir", str(shared_data), "--max-examples", "8", "--reference-size", "8",
                                     "--no-progress"])
    assert done.exit_code == 2 and "Traceback" not in done.output, done.output
    errors = [line for line in done.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "with --penultimate, e.g. features, features.12" in errors[0], done.output
    assert not mlflow.search_runs(search_all_experiments=True, output_format="list")


@pytest.mark.slow
def test_attack_evaluate_and_sweep_of_a_network_without_a_linear_layer_need_no_penultimate(tracking_store, shared_data, tmp_path):
    from medart.cli import main

    torch.manual_seed(0)
    torch.save(torchvision.models.squeezenet1_1(num_classes=2).state_dict(), tmp_path / "squeezenet.pt")
    card = tmp_path / "card.json"
    card.write_text(json.dumps({"architecture": "squeezenet1_1", "weights": "squeezenet.pt", "input": {"size": 28}}))
    common = ["--model-uri", str(card), "--data-dir", str(shared_data), "--no-progress"]
    for command in (["attack", "--attack", "pgd", "--max-examples", "8"], ["evaluate", "--attacks", "fgsm", "--max-eval", "8"],
                    ["sweep", "--attacks", "fgsm", "--eps", "1/255,2/255", "--max-examples", "8"]):
        done = CliRunner().invoke(main, [*command, *common])
        assert done.exit_code == 0, (command[0], done.output)
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert runs and all(r.info.status == "FINISHED" for r in runs)
