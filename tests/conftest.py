"""Shared fixtures: the real chest X-ray file, MedMNIST-format files made on the spot, a real
MLflow sqlite store per test (copied from one migrated template, saving ~6 s a test; with the
registered model, from a template that holds it) and a small trained chest X-ray ResNet-18 and
small CNN."""

from __future__ import annotations

import copy
import os
import shutil
import warnings
from pathlib import Path

# One thread for torch (and OpenMP, BLAS) in the tests and in every process they start (`mlflow run`,
# the CLI, benchmarks), as developers run them (OMP_NUM_THREADS=1), unless the caller set it: the
# tests' models and batches are tiny, and on CI's two shared cores two threads each spin-wait for the
# other (measured under load: tests/test_autoattack.py 82 s on two threads, 15 s on one). Set before torch loads.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import mlflow  # noqa: E402  (after the thread setting)
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from medart import tracking  # noqa: E402

SHARED_DATA = Path(os.environ.get("MEDART_TEST_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Folder holding the real ``pneumoniamnist.npz`` (``../shared/data`` beside the checkout)."""
    if not (SHARED_DATA / "pneumoniamnist.npz").is_file():
        pytest.fail(f"real test data missing: {SHARED_DATA}/pneumoniamnist.npz (set MEDART_TEST_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def migrated_store(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("store-template") / "mlflow.db"
    mlflow.MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()  # runs the migrations
    return path


@pytest.fixture(scope="session")
def registered_store(migrated_store, shared_data, tmp_path_factory) -> Path:
    """A store template holding the model of :func:`registered`, trained once a session (its
    artifacts stay in the template's folder, which the copies of the store point to)."""
    from medart.models.training import TrainConfig
    from medart.stages import DataSpec, ModelRequest, RunOptions, train

    folder = tmp_path_factory.mktemp("registered-template")
    db = folder / "mlflow.db"
    shutil.copy(migrated_store, db)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        tracking.configure(f"sqlite:///{db}")
        # 256 images: fewer leave a model that answers one class, which `train` never makes champion
        train(DataSpec("pneumonia", shared_data), ModelRequest(arch="resnet18", pretrained="none", max_train=256, max_eval=16),
              TrainConfig(epochs=1, batch_size=32, lr=1e-2), RunOptions(progress=False))
    return db


@pytest.fixture
def tracking_store(migrated_store, tmp_path, monkeypatch, request) -> str:
    """A fresh sqlite tracking store in ``tmp_path``, which is also the working directory (artifacts land there);
    for a test that asks for :func:`registered`, a copy of the store that holds its model."""
    db = tmp_path / "mlflow.db"
    template = request.getfixturevalue("registered_store") if "registered" in request.fixturenames else migrated_store
    shutil.copy(template, db)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = tracking.configure(f"sqlite:///{db}")
    mlflow.set_experiment("Default")  # forget the experiment an earlier test's store made active
    yield uri
    while mlflow.active_run() is not None:  # never leak a run into the next test
        mlflow.end_run("FAILED")


def medmnist_arrays(labels: dict[str, np.ndarray], side: int = 28, channels: int = 1, seed: int = 0) -> dict[str, np.ndarray]:
    """MedMNIST ``.npz`` content for the given per-split labels, with random uint8 images."""
    rng = np.random.default_rng(seed)
    shape = (side, side) if channels == 1 else (side, side, channels)
    out = {}
    for split, y in labels.items():
        out[f"{split}_images"] = rng.integers(0, 256, size=(len(y), *shape), dtype=np.uint8)
        out[f"{split}_labels"] = np.asarray(y, dtype=np.uint8).reshape(len(y), -1)
    return out


@pytest.fixture
def write_npz(tmp_path):
    """``write_npz(name, labels_by_split, side=28, channels=1)`` → path of a MedMNIST-layout file in ``tmp_path/data``."""

    def write(name: str, labels: dict[str, np.ndarray], side: int = 28, channels: int = 1) -> Path:
        folder = tmp_path / "data"
        folder.mkdir(exist_ok=True)
        path = folder / name
        np.savez_compressed(path, **medmnist_arrays(labels, side, channels))
        return path

    return write


@pytest.fixture
def registered(tracking_store) -> str:
    """A quickly trained ResNet-18 on 256 real chest X-rays, registered as ``medart-pneumonia@champion``
    (version 1) in the test's store: trained once a session (:func:`registered_store`), copied per test."""
    return "models:/medart-pneumonia@champion"


def _briefly_trained(shared_data: Path, arch: str, max_train: int, epochs: int):
    """``(model, splits)``: ``arch`` trained from seed 0 on ``max_train`` real chest X-rays (28 px)
    for ``epochs``, on one thread — the same weights on any machine (float sums add in another
    order over more threads), so the tests' tiny attack budgets break the same images everywhere."""
    import torch

    from medart.data import load_dataset, subsample
    from medart.models.resnet import build_model
    from medart.models.training import TrainConfig, fit

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        splits = load_dataset("pneumonia", shared_data)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        model = build_model(2, arch, pretrained="none")
        fit(model, subsample(splits.train, max_train, 0), subsample(splits.val, 64, 0),
            TrainConfig(epochs=epochs, batch_size=32, lr=0.01, augment=False), progress=False)
    finally:
        torch.set_num_threads(threads)
    return model.eval(), splits


@pytest.fixture(scope="session")
def _trained_chest_resnet18(shared_data):
    """The one training behind :func:`chest_resnet18` (private: its users get copies)."""
    return _briefly_trained(shared_data, "resnet18", 384, 2)


@pytest.fixture(scope="module")
def chest_resnet18(_trained_chest_resnet18):
    """A ResNet-18 trained briefly (2 epochs, 384 images, seed 0, one thread) on the real chest X-rays
    (28 px), and the splits it came from: ``(model, splits)``. Trained once a session; each test module
    gets its own deep copy of the model, so one module's attacks or edits cannot reach another's."""
    model, splits = _trained_chest_resnet18
    return copy.deepcopy(model).eval(), splits


@pytest.fixture(scope="session")
def _trained_chest_small_cnn(shared_data):
    """The one training behind :func:`chest_small_cnn` (private: its users get copies)."""
    return _briefly_trained(shared_data, "smallcnn", 600, 3)


@pytest.fixture(scope="module")
def chest_small_cnn(_trained_chest_small_cnn):
    """The repo's small CNN trained briefly (3 epochs, 600 images, seed 0, one thread) on the real
    chest X-rays (28 px), and the splits: ``(model, splits)``; a deep copy for each test module."""
    model, splits = _trained_chest_small_cnn
    return copy.deepcopy(model).eval(), splits
