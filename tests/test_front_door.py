"""The front door, knocked on as users knock: every MLproject entry point through the real
``mlflow run . -e <entry> --env-manager local``, on its defaults, and with the settings changed that
once broke (an attack other than the default, a list of attacks, another architecture or trainer, a
tri-state flag set to none), and every command on an outside model of each format medart loads (pt2,
TorchScript, model card).

The data is a MedMNIST-format file of real chest X-rays cut down to a few images per class
(:func:`tiny_chest_xrays`), so the defaults run as they are — except the size of ``ablate``'s grid
(8 cells of 10 epochs, minutes even on these images): its other parameters keep their defaults.
Every case is a whole process or a whole command, hence ``slow``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from click.testing import CliRunner
import torchvision
from torch import nn

from medart.cli import main

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:.*official MedMNIST MD5")]

ROOT = Path(__file__).resolve().parents[1]
PER_CLASS = {"train": 100, "val": 16, "test": 12}  # real images per class and split


def tiny_chest_xrays(shared_data: Path, folder: Path) -> Path:
    """``pneumoniamnist.npz`` in ``folder`` holding the first ``PER_CLASS`` real chest X-rays of
    each class and split of the shared file."""
    arrays = {}
    with np.load(shared_data / "pneumoniamnist.npz") as real:
        for split, n in PER_CLASS.items():
            labels = real[f"{split}_labels"]
            keep = np.concatenate([np.flatnonzero(labels[:, 0] == c)[:n] for c in (0, 1)])
            arrays[f"{split}_labels"], arrays[f"{split}_images"] = labels[keep], real[f"{split}_images"][keep]
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / "pneumoniamnist.npz", **arrays)
    return folder


def mlflow_run(store: Path, data: Path, entry: str, *params: str) -> subprocess.CompletedProcess:
    """``mlflow run <checkout> -e entry -P …`` as a user's shell runs it (no MLflow variables of
    this test process), against ``store``, from its folder."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")} | {
        "MLFLOW_TRACKING_URI": f"sqlite:///{store}", "MEDART_DATA_DIR": str(data),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",  # `python` = this one
    }
    args = [sys.executable, "-m", "mlflow", "run", str(ROOT), "-e", entry, "--env-manager", "local",
            "--experiment-name", f"front-door/{entry}"]
    for p in params:
        args += ["-P", p]
    return subprocess.run(args, env=env, cwd=store.parent, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def door(tmp_path_factory, shared_data, migrated_store):
    """A store and the tiny data file, with the champion every later entry point needs trained by
    the ``train`` entry point itself (the small CNN from scratch; on 200 images it needs a few
    epochs to learn enough for the degenerate-model guard to let it become champion)."""
    folder = tmp_path_factory.mktemp("front-door")
    store = folder / "mlflow.db"
    shutil.copy(migrated_store, store)
    data = tiny_chest_xrays(shared_data, folder / "data")
    done = mlflow_run(store, data, "train", "epochs=5", "lr=0.05", "batch_size=16", "arch=smallcnn", "pretrained=none")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "registered models:/medart-pneumonia/1@champion" in done.stdout, done.stdout[-2000:]
    return store, data


CHAMPION = ("model_uri", "models:/medart-pneumonia@champion")  # `-P model_uri` is none: the stage found the champion
# entry point → the settings changed (None: the defaults only), the stage run's name on the defaults and
# with those settings, a param the stage resolved
ENTRIES = {
    "main": ("attacks=fgsm,pgd", ("main-bim-eps1/255-art", "main-fgsm+pgd-eps1/255-art"), CHAMPION),
    "train": ("arch=resnet18", ("train-resnet50-28px-seed0", "train-resnet18-28px-seed0"), ("image_size", "28")),
    # -P random_start=none: a tri-state flag's "none" is the attack's own default (once refused)
    "attack": ("attack=fgsm random_start=none", ("bim-eps1/255-art", "fgsm-eps1/255-art"), CHAMPION),
    "detect": (None, ("detect-eps1/255-art",), CHAMPION),
    "adaptive": (None, ("detect-eps1/255-art",), CHAMPION),
    "sweep": (None, ("sweep-fgsm+bim+pgd+cw-art",), CHAMPION),
    "evaluate": ("attacks=fgsm", ("evaluate-28px",) * 2, CHAMPION),
    "analyze": (None, ("analyze-pgd-eps1/255-art",), CHAMPION),
    "ablate": (None, ("ablate-pneumonia",), ("archs", "smallcnn")),
    "harden": ("trainer=trades", ("harden-pgd-at-eps2/255-smallcnn-seed0", "harden-trades-eps2/255-smallcnn-seed0"),
               ("harden.parent_model_uri", "models:/medart-pneumonia@champion")),
}
CASES = [(entry, setting) for entry, (change, _, _) in ENTRIES.items() for setting in ("defaults", "changed")[:1 + bool(change)]]
# ablate's grid, cut to one cell; its other parameters stay at their defaults
ABLATE_GRID = ["resolutions=28", "inits=none", "archs=smallcnn", "epochs=1"]


def test_every_entry_point_of_the_mlproject_is_run_here():
    from medart.mlproject import ENTRY_POINTS

    assert set(ENTRIES) == set(ENTRY_POINTS)


def _newest_project_run(entry: str) -> list[mlflow.entities.Run]:
    return mlflow.search_runs(experiment_names=[f"front-door/{entry}"], output_format="list", max_results=1,
                              filter_string=f"tags.`mlflow.project.entryPoint` = '{entry}'",
                              order_by=["attributes.start_time DESC"])


@pytest.mark.parametrize(("entry", "setting"), CASES)
def test_entry_point_finishes(door, entry, setting):
    """``mlflow run -e <entry>`` ends FINISHED (exit 0); the project run keeps the ``-P`` strings
    MLflow logged and its child, the stage's run, the values the stage resolved — one writer of
    params per run; the command printed the stage run's id and the tracking store."""
    store, data = door
    change, names, (key, value) = ENTRIES[entry]
    params = change.split() if setting == "changed" else []
    if entry == "train":  # a ResNet-50 from ImageNet weights is not for a test: the fixture trained the champion
        params = ["epochs=1", "pretrained=none", "max_train=32", "register=false"] + params
    if entry == "ablate":
        params = ABLATE_GRID + params
    done = mlflow_run(store, data, entry, *params)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    mlflow.set_tracking_uri(f"sqlite:///{store}")
    (project,) = _newest_project_run(entry)
    assert project.info.status == "FINISHED" and project.data.tags["mlflow.project.entryPoint"] == entry
    stage = mlflow.get_run(project.data.tags["medart.stage_run_id"])
    assert stage.info.status == "FINISHED" and stage.data.tags["mlflow.parentRunId"] == project.info.run_id
    assert stage.info.run_name == names[setting == "changed"]
    assert project.info.run_name == f"{stage.info.run_name} (mlflow run)"
    for p in params:  # what was asked, as typed
        name, _, text = p.partition("=")
        assert project.data.params[name] == text
    assert stage.data.params.get(key) == value, (key, stage.data.params.get(key))
    assert re.search(rf"\brun {stage.info.run_id} in sqlite:///", done.stdout), done.stdout[-2000:]


def test_bad_input_is_one_line_and_leaves_a_failed_run(door):
    store, data = door
    done = mlflow_run(store, data, "attack", "eps=2")
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    assert errors == ["Error: Invalid value for -P eps: ε must be in (0, 1] in [0,1] pixel units (1/255 = one grey "
                      "level), got '2'"], done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    mlflow.set_tracking_uri(f"sqlite:///{store}")
    (project,) = _newest_project_run("attack")
    assert project.info.status == "FAILED" and "medart.stage_run_id" not in project.data.tags


# ---- every command on an outside model of each format ----------------------------------------------------------


class OutsideCNN(nn.Module):
    """Somebody else's small chest X-ray classifier (not one of medart's architectures)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _outside_model(data: Path, network: nn.Module) -> nn.Module:
    """``network`` trained a little on the tiny file's training images, so that it is not constant."""
    with np.load(data / "pneumoniamnist.npz") as f:
        x = torch.from_numpy(f["train_images"]).float().div(255).unsqueeze(1).expand(-1, 3, -1, -1).contiguous()
        y = torch.from_numpy(f["train_labels"][:, 0]).long()
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-2)
    network.train()
    for _ in range(30):
        optimizer.zero_grad()
        nn.functional.cross_entropy(network(x), y).backward()
        optimizer.step()
    return network.eval()


def _bring(fmt: str, data: Path, folder: Path, store: str) -> str:
    """A model in format ``fmt``, brought the way its users bring it; the URI medart reads it by."""
    torch.manual_seed(0)
    if fmt == "pt2":  # plain MLflow: pt2 is mlflow.pytorch's default format since 3.17
        network = _outside_model(data, OutsideCNN())
        with mlflow.start_run():
            mlflow.pytorch.log_model(network, name="model", input_example=np.zeros((2, 3, 28, 28), np.float32),
                                     registered_model_name="outside-pt2", pip_requirements=["torch"])
        return "models:/outside-pt2/1"
    if fmt == "torchscript":  # a scripted network's file, read by its path
        torch.jit.script(_outside_model(data, OutsideCNN())).save(str(folder / "outside.pt"))
        return str(folder / "outside.pt")
    # a tensor-only state dict of a torchvision network and its card, registered with `medart register`
    torch.save(_outside_model(data, torchvision.models.resnet18(num_classes=2)).state_dict(), folder / "outside.pt")
    (folder / "card.json").write_text(json.dumps({"architecture": "resnet18", "weights": "outside.pt",
                                                  "classes": ["normal", "pneumonia"], "input": {"channels": 3, "size": 28}}))
    done = CliRunner().invoke(main, ["register", "--weights", str(folder / "outside.pt"), "--card", str(folder / "card.json"),
                                     "--name", "outside-card", "--alias", "prod", "--tracking-uri", store])
    assert done.exit_code == 0, done.output
    assert re.search(r"^registered models:/outside-card/1 ", done.output, re.M), done.output
    return "models:/outside-card@prod"


@pytest.mark.parametrize("fmt", ["pt2", "torchscript", "card"])
def test_every_command_on_an_outside_model(fmt, tracking_store, shared_data, tmp_path):
    data = tiny_chest_xrays(shared_data, tmp_path / "data")
    uri = _bring(fmt, data, tmp_path, tracking_store)
    store = ["--tracking-uri", tracking_store]
    on_data = ["--dataset", "pneumonia", "--data-dir", str(data), "--no-progress"] + store
    model = ["--model-uri", uri] + on_data
    calls = {
        "attack": model + ["--attack", "pgd", "--eps", "4/255"],
        "evaluate": model + ["--attacks", "fgsm", "--eps", "4/255"],
        "sweep": model + ["--attacks", "fgsm", "--eps", "1/255,4/255"],
        "detect": model + ["--attacks", "pgd", "--eps", "8/255", "--detectors", "kd,dfeat,mahalanobis"],
        "adaptive": model + ["--attacks", "pgd", "--eps", "8/255", "--detectors", "dfeat", "--adaptive-steps", "5"],
        "analyze": model + ["--attacks", "fgsm", "--figures", "saliency,stages,embedding"],
        "ablate": on_data + ["--archs", "none", "--models", uri, "--max-examples", "40", "--eps-tolerance", "2/255"],
        "pipeline": model + ["--attacks", "fgsm", "--detectors", "kd,dfeat"],
        "compare": ["--dataset", "pneumonia"] + store,
        "report": ["--experiment", "medart/pneumonia/attack", "--output", str(tmp_path / "report.html")] + store,
    }
    for command, args in calls.items():
        done = CliRunner().invoke(main, [command, *args])
        assert done.exit_code == 0, f"medart {command} {' '.join(args)}\n{done.output[-3000:]}"
        assert re.search(r"\brun [0-9a-f]{32} in sqlite:///", done.output), (command, done.output[-1500:])
    assert (tmp_path / "report.html").stat().st_size > 10_000
