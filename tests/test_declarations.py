"""Each family declared once: every declared name walked through every backend and stage that
claims it, every implementation found in its declaration, the command line offering exactly the
declared names, and an unknown name anywhere a one-line error, never a fallback.

The detectors' own walk (fit and detect, each declared detector) is tests/test_detectors.py's,
parametrised over :data:`medart.detectors.DETECTORS`; the layouts' (each loader on its files) is
tests/test_sources.py's and tests/test_splits.py's."""

from __future__ import annotations

import importlib
import inspect
import json
import pkgutil
import re

import numpy as np
import pytest
import torch
from torch import nn

from medart import catalog
from medart.attacks import make_attack, make_spec
from medart.attacks.specs import ATTACK_ENTRIES, AUTOATTACK_PARTS, BACKEND_ENTRIES, PAPER_ATTACKS, declared
from medart.data.sources import LAYOUTS, SOURCES
from medart.detectors import DETECTORS, NEEDS_REFERENCES, PAPER_DETECTORS, make_detector
from medart.errors import ConfigError
from medart.models import MODEL_FORMATS
from medart.models.resnet import build_model


def _backend_class(name: str) -> type:
    module, _, cls = BACKEND_ENTRIES[name].where.partition(":")
    return getattr(importlib.import_module(module), cls)


@pytest.mark.parametrize("backend", BACKEND_ENTRIES)
def test_each_backend_builds_exactly_the_attacks_whose_entries_name_it(backend):
    """Fails when an entry claims a backend that has no builder for it (the attack would not run
    there), or a backend module builds an attack no entry gives it (dead, or undeclared)."""
    claimed = {a.name for a in ATTACK_ENTRIES.values() if backend in a.backends and not a.parts}
    assert set(_backend_class(backend).builders) == claimed


def test_attack_entries_are_consistent():
    for a in ATTACK_ENTRIES.values():
        assert a.backends and set(a.backends) <= set(BACKEND_ENTRIES), a.name
        assert a.defaults.steps >= 1 and a.takes <= {"steps", "random_start", "targeted", "kappa"}, a.name
        for part in a.parts:  # an attack of parts runs on the backends that have at least one of them
            assert not declared(part).parts
        if a.parts:
            assert set(a.backends) == {b for p in a.parts for b in declared(p).backends}
    assert PAPER_ATTACKS == ("fgsm", "bim", "pgd", "cw") and AUTOATTACK_PARTS == ("apgd-ce", "apgd-dlr", "fab", "square")


@pytest.fixture(scope="module")
def small():
    """An untrained small CNN and 4 random 28-px images, labelled as the model labels them."""
    torch.manual_seed(0)
    model = build_model(2, "smallcnn", pretrained="none").eval()
    x = torch.rand(4, 3, 28, 28)
    with torch.no_grad():
        y = model(x).argmax(dim=1)
    return model, x, y


@pytest.mark.parametrize("backend", BACKEND_ENTRIES)
@pytest.mark.parametrize("name", ATTACK_ENTRIES)
def test_every_attack_runs_on_the_backends_its_entry_names_and_is_refused_by_the_others(small, name, backend):
    model, x, y = small
    attack = declared(name)
    spec = make_spec(name, "8/255", steps=min(attack.defaults.steps, 2) if "steps" in attack.takes else None)
    if backend not in attack.backends:
        title = BACKEND_ENTRIES[backend].title
        with pytest.raises(ConfigError, match=f"^{re.escape(title)} has no {re.escape(attack.title)} attack; use "):
            make_attack(model, spec, 2, backend)
        return
    adv = make_attack(model, spec, 2, backend, batch_size=4).generate(x, y, seed=0)
    assert adv.shape == x.shape and adv.dtype == torch.float32
    assert (adv - x).abs().max() <= spec.eps + 1e-6 and adv.min() >= 0 and adv.max() <= 1


def test_each_detector_entry_names_its_class_and_every_detector_class_has_an_entry():
    from art.defences.detector.evasion import EvasionDetector

    import medart.detectors
    from medart.attacks.adaptive import LOGITS

    for entry in DETECTORS.values():
        assert entry.load().name == entry.name
    classes = set()
    for info in pkgutil.iter_modules(medart.detectors.__path__):
        module = importlib.import_module(f"medart.detectors.{info.name}")
        classes |= {f"{cls.__module__}:{cls.__qualname__}" for _, cls in inspect.getmembers(module, inspect.isclass)
                    if issubclass(cls, EvasionDetector) and cls.__module__ == module.__name__ and not inspect.isabstract(cls)}
    assert classes == {entry.where for entry in DETECTORS.values()}
    assert set(LOGITS) <= set(DETECTORS)  # the adaptive stage attacks declared detectors only
    assert set(NEEDS_REFERENCES) <= set(DETECTORS) and set(PAPER_DETECTORS) == {"kd", "lid", "dfeat", "qfeat"}


def test_each_layout_has_its_loader_and_a_task_that_reads_it():
    from medart.data.tasks import TASKS

    for layout in LAYOUTS.values():
        assert callable(layout.load()), layout.name
    assert {name for task in TASKS.values() for name in task.layouts} == set(LAYOUTS)
    assert SOURCES == ("medmnist", "original", *LAYOUTS)
    assert tuple(TASKS) == catalog.DATASETS


def test_each_layout_declares_the_label_file_its_loader_reads(tmp_path):
    """``Layout.metadata`` (what ``medart datasets`` looks for) is the file the loader asks for in an empty root."""
    from medart.errors import DataError

    for layout in LAYOUTS.values():
        if not layout.metadata:  # class folders: the sub-folders are the labels
            continue
        with pytest.raises(DataError) as err:
            layout.load()(tmp_path)
        assert any(f"{tmp_path / name} does not exist" in str(err.value) for name in layout.metadata), (layout.name, err.value)


def test_every_declared_architecture_and_executor_is_made():
    from medart.executors import make_executor

    for arch in catalog.ARCHS:
        assert build_model(2, arch, pretrained="none").config["arch"] == arch
    for name in catalog.EXECUTORS:
        with make_executor(name) as executor:
            assert executor is not None


def test_the_command_line_offers_exactly_the_declared_names():
    from medart.cli import main

    def choices(command: str, option: str) -> tuple[str, ...]:
        return tuple(next(p for p in main.commands[command].params if p.name == option).type.choices)

    assert choices("attack", "attack") == tuple(ATTACK_ENTRIES)
    assert choices("sweep", "attacks") == choices("detect", "attacks") == tuple(ATTACK_ENTRIES)
    assert choices("attack", "backend") == tuple(BACKEND_ENTRIES)
    assert choices("detect", "detectors") == tuple(DETECTORS)
    assert choices("attack", "source") == SOURCES
    assert choices("train", "arch") == catalog.ARCHS and choices("attack", "executor") == catalog.EXECUTORS
    attack_help = next(p for p in main.commands["attack"].params if p.name == "attack").help
    assert all(f"{name}: {a.about}" in attack_help for name, a in ATTACK_ENTRIES.items())


def test_an_unknown_name_anywhere_is_a_one_line_error(small, tmp_path):
    from medart.attacks.feature_matching import FeatureMatching
    from medart.data import load_dataset
    from medart.executors import make_executor
    from medart.models.cards import ModelCard
    from medart.models.loading import ModelSource, adapt

    model, _, _ = small
    pgd = make_spec("pgd", "1/255")
    for call, message in (
        (lambda: make_spec("deepfool", "1/255"), "unknown attack 'deepfool'; choose from: fgsm, bim, pgd, cw"),
        (lambda: make_attack(model, pgd, 2, "foolbox"), "unknown backend 'foolbox'; choose from: art, torchattacks"),
        (lambda: FeatureMatching(model, pgd, backend="foolbox"), "unknown backend 'foolbox'"),
        (lambda: make_detector("magnet", model), "unknown detector 'magnet'; choose from: kd, lid"),
        (lambda: load_dataset("pneumonia", tmp_path, source="kermany"), "unknown source 'kermany'; choose one of: medmnist"),
        (lambda: make_executor("dask"), "unknown executor 'dask'; choose from: in-process, ray"),
        (lambda: build_model(2, "vgg16", pretrained="none"), "unknown architecture 'vgg16'; choose one of: resnet50"),
        (lambda: adapt(nn.Flatten(), ModelCard(), ModelSource("x"), stored_as="onnx"), "unknown model format 'onnx'"),
        (lambda: make_attack(model, make_spec("apgd-ce", "1/255"), 2, "art", loss=nn.CrossEntropyLoss()),
         "apgd-ce runs its own loss; give `loss` to an attack with a step size (fgsm, bim, pgd, cw"),
    ):
        with pytest.raises(ConfigError, match=f"^{re.escape(message)}") as error:
            call()
        assert "\n" not in str(error.value)


def _bring(fmt: str, folder, network: nn.Module) -> str:
    """``network`` stored in format ``fmt`` under ``folder`` (MLflow formats: in the active store); its URI."""
    import mlflow

    from medart.models import registry

    if fmt == "medart":
        model = build_model(2, "smallcnn", pretrained="none", image_size=28)
        registry.save_files(model, folder)
        return str(folder)
    if fmt in ("pt2", "pickle"):
        extra = {"serialization_format": "pickle"} if fmt == "pickle" else {}
        with mlflow.start_run() as run:
            mlflow.pytorch.log_model(network, name="model", input_example=np.zeros((2, 3, 28, 28), np.float32),
                                     pip_requirements=["torch"], **extra)
        return f"runs:/{run.info.run_id}/model"
    if fmt == "torchscript":
        torch.jit.script(network).save(str(folder / "net.pt"))
        return str(folder / "net.pt")
    assert fmt == "state_dict"
    resnet = __import__("torchvision").models.resnet18(num_classes=2)
    torch.save(resnet.state_dict(), folder / "weights.pt")
    (folder / "medart-card.json").write_text(json.dumps({"architecture": "resnet18", "weights": "weights.pt",
                                                        "input": {"channels": 3, "size": 28}}))
    return str(folder / "medart-card.json")


@pytest.mark.parametrize("fmt", MODEL_FORMATS)
def test_every_declared_model_format_loads_and_is_recorded_as_itself(fmt, tracking_store, tmp_path):
    from medart.models import registry
    from medart.models.cards import CARD, ModelCard
    from medart.models.resnet import MedResNet
    from medart.models.loading import ModelSource, adapt, load_model

    assert registry.CONFIG in MODEL_FORMATS["medart"].reads and CARD in MODEL_FORMATS["state_dict"].reads
    torch.manual_seed(0)
    network = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)).eval()
    if fmt == "module":
        model = adapt(network, ModelCard(), ModelSource("in-python", input_size=28))
    else:
        model = load_model(ModelSource(_bring(fmt, tmp_path, network), trusted_pickle=fmt == "pickle"), side=28)
    if fmt == "medart":
        assert isinstance(model, MedResNet)
    else:
        assert model.config["format"] == fmt
    assert model(torch.rand(2, 3, 28, 28)).shape == (2, 2)


def test_a_backend_without_the_attack_is_one_line_before_any_model_loads_or_run_starts(tracking_store, shared_data):
    import mlflow
    from click.testing import CliRunner

    from medart.cli import main
    from medart.stages import DataSpec, RunOptions, Target
    from medart.stages.analyze import AnalysisRequest, analyze
    from medart.stages.detect import DetectRequest, detect
    from medart.stages.evaluate import evaluate
    from medart.stages.sweep import sweep

    done = CliRunner().invoke(main, ["attack", "--model-uri", "no-such-model.pt", "--attack", "fab", "--backend", "art",
                                     "--tracking-uri", tracking_store, "--dataset", "pneumonia", "--data-dir", str(shared_data)])
    assert (done.exit_code, done.output) == (2, "Error: ART has no FAB attack; use --backend='torchattacks' for fab\n")
    data = DataSpec("pneumonia", shared_data)
    splits = data.load(28)
    model = build_model(2, "smallcnn", "none", classes=splits.classes, image_size=28).eval()
    target = Target("untrained", model, data, splits, max_examples=20, reference_size=40)
    art = RunOptions(backend="art", progress=False)
    for call in (lambda: sweep(target, ["pgd", "fab"], [1 / 255], art),
                 lambda: evaluate(target, ["pgd", "fab"], [1 / 255], art),
                 lambda: detect(target, DetectRequest(attacks=("pgd", "fab"), detectors=("kd",)), art),
                 lambda: analyze(target, AnalysisRequest(attacks=("fab",), figures=("saliency",)), art)):
        with pytest.raises(ConfigError, match="^ART has no FAB attack; use `backend`='torchattacks' for fab$"):
            call()
    assert not mlflow.search_runs(search_all_experiments=True, output_format="list")
