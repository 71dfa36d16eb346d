"""The MLflow project as users run it: the real `mlflow run` against a temporary sqlite store."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
import yaml
from packaging.requirements import Requirement

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parents[1]


def _mlflow_run(store: Path, data: Path, *params: str, entry: str = "main") -> subprocess.CompletedProcess:
    # In-process tests leave MLflow's variables behind (`mlflow.set_experiment` exports
    # MLFLOW_EXPERIMENT_ID); a user's shell would not have them.
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_ID")} | {
        "MLFLOW_TRACKING_URI": f"sqlite:///{store}",
        "MEDART_DATA_DIR": str(data),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",  # `python` = this one
    }
    args = [sys.executable, "-m", "mlflow", "run", str(ROOT), "-e", entry, "--env-manager", "local",
            "--experiment-name", "medart/pneumonia/main"]
    for p in params:
        args += ["-P", p]
    return subprocess.run(args, env=env, cwd=store.parent, capture_output=True, text=True, timeout=900)


@pytest.fixture
def store(migrated_store, tmp_path) -> Path:
    import shutil

    db = tmp_path / "mlflow.db"
    shutil.copy(migrated_store, db)
    mlflow.set_tracking_uri(f"sqlite:///{db}")
    mlflow.set_registry_uri(f"sqlite:///{db}")
    return db


# enough to learn something (balanced accuracy 0.84 on 32 test images): `train` never makes a model that
# answers one class champion, and the second run below reuses the champion
SMALL = ["arch=resnet18", "pretrained=none", "epochs=5", "lr=0.05", "max_train=200", "max_eval=16", "max_examples=40",
         "reference_size=48", "detectors=kd,dfeat", "progress=false"]


def _children(parent: str) -> list:
    return mlflow.search_runs(search_all_experiments=True, output_format="list",
                              filter_string=f"tags.mlflow.parentRunId = '{parent}'")


def _chest_xrays_at_64_px(shared_data: Path, folder: Path, per_class: int = 100) -> Path:
    """``pneumoniamnist_64.npz`` made from the first real chest X-rays of each class and split, scaled up from 28 px."""
    from PIL import Image

    arrays = {}
    with np.load(shared_data / "pneumoniamnist.npz") as real:
        for split in ("train", "val", "test"):
            labels = real[f"{split}_labels"]
            keep = np.concatenate([np.flatnonzero(labels[:, 0] == c)[:per_class] for c in (0, 1)])
            arrays[f"{split}_labels"] = labels[keep]
            arrays[f"{split}_images"] = np.stack([np.asarray(Image.fromarray(image).resize((64, 64), Image.BILINEAR))
                                                  for image in real[f"{split}_images"][keep]])
    folder.mkdir()
    np.savez(folder / "pneumoniamnist_64.npz", **arrays)
    return folder


@pytest.mark.slow
def test_mlflow_run_main_trains_attacks_detects_and_registers(store, shared_data, tmp_path):
    """Two `mlflow run -e main` on real chest X-rays from the 64 px MedMNIST file (``-P size=64``):
    the first trains, registers and attacks; the second reuses the champion."""
    data = _chest_xrays_at_64_px(shared_data, tmp_path / "data")
    done = _mlflow_run(store, data, "attacks=bim", "steps=10", "size=64", *SMALL)
    assert done.returncode == 0, done.stderr[-3000:]
    client = mlflow.MlflowClient()
    (project_run,) = mlflow.search_runs(experiment_names=["medart/pneumonia/main"], output_format="list",
                                        filter_string="attributes.run_name = 'main-bim-eps1/255-art (mlflow run)'")
    assert project_run.info.status == "FINISHED"
    # the project run: the -P values as typed; its one child, the pipeline's run: what it resolved and measured
    assert project_run.data.params["attacks"] == "bim" and project_run.data.tags["mlflow.project.entryPoint"] == "main"
    assert project_run.data.params["data_dir"] == "none"  # an unset -P is logged as none, not as ''
    assert project_run.data.params["size"] == "64" and project_run.data.params["eps"] == "1/255"
    (main_run,) = _children(project_run.info.run_id)
    run_id = main_run.info.run_id
    assert main_run.info.run_name == "main-bim-eps1/255-art" and project_run.data.tags["medart.stage_run_id"] == run_id
    # ε as typed (k/255), its float beside it
    assert (main_run.data.params["eps"], main_run.data.params["eps_value"]) == ("1/255", repr(1 / 255))
    m = main_run.data.metrics
    assert {"clean_acc", "adv_acc", "success_rate", "auc_kd", "auc_dfeat"} <= set(m)
    assert f"main run {run_id} in sqlite:///{store}: model models:/medart-pneumonia/1 (trained here)" in done.stdout
    # the summary table: each accuracy with its 95 % interval, on the run's images
    row = next(line for line in done.stdout.splitlines() if line.startswith("| BIM |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert [c.split(" [")[0] for c in cells[2:5]] == [f"{m[k] * 100:.1f}" for k in ("clean_acc", "clean_balanced_acc", "adv_acc")]
    assert cells[1] == f"{m['clean_acc_n']:.0f}" and all(" [" in c for c in cells[2:5])
    assert 0 <= m["adv_acc"] <= m["clean_acc"] <= 1 and 0 <= m["auc_dfeat"] <= 1

    stages = {r.info.run_name: r for r in _children(run_id)}
    assert set(stages) == {"train-resnet18-64px-seed0", "bim-eps1/255-art", "detect-eps1/255-art"}
    assert stages["train-resnet18-64px-seed0"].data.params["data.size"] == "64"  # read from pneumoniamnist_64.npz
    assert all(r.info.status == "FINISHED" and r.info.experiment_id == project_run.info.experiment_id
               for r in stages.values())
    assert main_run.data.tags["medart.model_uri"] == "models:/medart-pneumonia/1"
    assert stages["bim-eps1/255-art"].data.metrics["adv_acc"] == m["adv_acc"]
    detect = stages["detect-eps1/255-art"].info.run_id
    (per_attack,) = _children(detect)
    assert per_attack.info.run_name == "detect-bim-eps1/255-art" and per_attack.data.metrics["auc_kd"] == m["auc_kd"]
    artifacts = {a.path for a in client.list_artifacts(detect)} | {a.path for a in client.list_artifacts(detect, "figures")}
    assert {"detection_auc.md", "figures/detection_auc.png"} <= artifacts
    assert "figures/roc.png" in {a.path for a in client.list_artifacts(per_attack.info.run_id, "figures")}
    # the parent run's artifact tab shows the results too
    parent_artifacts = {a.path for a in client.list_artifacts(run_id)} | {
        a.path for a in client.list_artifacts(run_id, "figures")}
    assert {"summary.md", "detection_auc.md", "figures/detection_auc.png"} <= parent_artifacts
    version = client.get_model_version_by_alias("medart-pneumonia", "champion")
    assert str(version.version) == "1"

    # a second main run reuses the champion instead of training again; --steps reaches the attack
    again = _mlflow_run(store, data, "attacks=fgsm", "steps=1", "step_size=1/255", "size=64", *SMALL)
    assert again.returncode == 0, again.stderr[-3000:]
    (second,) = mlflow.search_runs(experiment_names=["medart/pneumonia/main"], output_format="list",
                                   filter_string="attributes.run_name = 'main-fgsm-eps1/255-art'")
    assert second.data.tags["medart.model_uri"] == "models:/medart-pneumonia@champion"
    children = {r.info.run_name: r for r in _children(second.info.run_id)}
    assert set(children) == {"fgsm-eps1/255-art", "detect-eps1/255-art"}
    fgsm = children["fgsm-eps1/255-art"].data.params
    assert (fgsm["attack.step_size"], float(fgsm["attack.step_size_value"])) == ("1/255", 1 / 255)


# every test image attacked: with 40+ stratified test images even a near-constant model of random
# pixels keeps >= 2 correctly classified AdvTest images, which detection needs
SMALL_TRAIN = ["epochs=1", "max_train=32", "max_eval=16", "reference_size=16", "detectors=kd", "progress=false",
               "arch=resnet18"]


@pytest.mark.slow
def test_mlflow_run_reads_an_original_class_folder_tree(store, tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    tree = tmp_path / "chest_xray"
    for split, n in (("train", 24), ("test", 30)):
        for name in ("NORMAL", "PNEUMONIA"):
            (tree / split / name).mkdir(parents=True)
            for k in range(n):
                Image.fromarray(rng.integers(0, 256, (40, 40), dtype=np.uint8)).save(tree / split / name / f"{k}.png")
    done = _mlflow_run(store, tree, "attacks=fgsm", "source=original", "image_size=32", "pretrained=none", *SMALL_TRAIN)
    assert done.returncode == 0, done.stderr[-3000:]
    (project,) = mlflow.search_runs(experiment_names=["medart/pneumonia/main"], output_format="list",
                                    filter_string="tags.`mlflow.project.entryPoint` = 'main'")
    (run,) = _children(project.info.run_id)
    assert run.info.status == "FINISHED" and project.data.params["source"] == "original"
    (train,) = [r for r in _children(run.info.run_id) if r.info.run_name.startswith("train-")]
    assert train.info.run_name == "train-resnet18-32px-seed0" and train.data.params["data.source"] == "original"
    # no patient ids in class folders: the run says so, in its params and in the splits.json the main run shows
    assert train.data.params["data.grouping"] == "none: class folders carry no patient id"
    assert mlflow.artifacts.load_dict(f"runs:/{run.info.run_id}/splits.json")["grouping"] == train.data.params["data.grouping"]


BAD_PARAMETERS = [
    ("attacks=foo", "-P attacks: unknown attack 'foo'"),
    ("eps=abc", "cannot read ε from 'abc'"),
    ("size=65", "-P size"),
    ("model_uri=models:/missing@x", "models:/missing@x"),
    ("max_examples=many", "-P max_examples"),
    ("cache=maybe", "-P cache='maybe': use true or false"),
    ("colour=red", "-P colour: no such parameter"),
]


@pytest.mark.parametrize("param, fragment", BAD_PARAMETERS)
def test_bad_parameters_end_the_entry_point_with_one_line(store, shared_data, param, fragment, capsys):
    """What `mlflow run -e main` runs, in this process: exit code 2 and one line naming the -P parameter."""
    from medart.mlproject import run

    name, _, value = param.partition("=")
    argv = [f"--{name}", value] if name == "colour" else [param]  # mlflow run passes undeclared -P as --name value
    assert run("pipeline", [*argv, "detectors=dfeat", f"data_dir={shared_data}"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and fragment in errors[0] and "--" not in errors[0], errors


def test_the_old_attack_parameter_of_main_still_runs_with_a_warning(store, shared_data, capsys):
    """`-P attack=` (MLflow passes a -P the entry point no longer declares as --attack) reaches the
    pipeline as `attacks`, with one warning; here it stops at the missing model, before any run."""
    from medart.mlproject import run

    assert run("pipeline", ["--attack", "fgsm", "detectors=dfeat", f"data_dir={shared_data}", "model_uri=missing.pt"]) == 2
    err = capsys.readouterr().err
    assert "Warning: --attack (-P attack) is deprecated; use --attacks (-P attacks)" in err and "missing.pt" in err
    assert run("pipeline", ["--attack", "zoo", "detectors=dfeat"]) == 2
    assert "Error: Invalid value for -P attack: unknown attack 'zoo'" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("param, fragment", BAD_PARAMETERS[:2])
def test_bad_parameters_fail_the_run_with_one_line(store, shared_data, param, fragment):
    done = _mlflow_run(store, shared_data, param, "detectors=dfeat")
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and fragment in errors[0], done.stderr[-2000:]
    assert "Traceback" not in done.stderr and "--" not in errors[0]
    runs = mlflow.search_runs(experiment_names=["medart/pneumonia/main"], output_format="list")
    assert runs and all(r.info.status == "FAILED" for r in runs)


def test_every_entry_point_takes_its_commands_options_with_the_same_defaults():
    """One face: the MLproject is generated from the commands; its -P names and defaults are theirs."""
    import click

    from medart.cli import main
    from medart.mlproject import ENTRY_POINTS, mlproject_text

    assert (ROOT / "MLproject").read_text() == mlproject_text(), "run: python -m medart.mlproject --write"
    entry_points = yaml.safe_load((ROOT / "MLproject").read_text())["entry_points"]
    assert set(entry_points) == set(ENTRY_POINTS)
    for entry, spec in entry_points.items():
        command = main.commands[ENTRY_POINTS[entry]]
        options = {p.name: p for p in command.params
                   if isinstance(p, click.Option) and p.name != "tracking_uri" and not p.hidden}  # hidden: an old name
        assert list(spec["parameters"]) == list(options), entry
        for name, option in options.items():
            default = option.to_info_dict()["default"]
            expected = "none" if default is None or default == () else str(default).lower() if isinstance(default, bool) \
                else str(default)
            assert spec["parameters"][name]["default"] == expected, (entry, name)
        assert spec["command"].startswith(f"python -m medart.mlproject {ENTRY_POINTS[entry]} ")
        assert all("{" + p + "}" in spec["command"] for p in spec["parameters"])
    # the options the old MLproject could not reach
    assert {"size", "source", "steps", "step_size", "device"} <= set(entry_points["main"]["parameters"])
    assert {"steps", "step_size"} <= set(entry_points["attack"]["parameters"])


def test_environment_files_pin_the_same_versions_inside_pyproject_ranges():
    conda = yaml.safe_load((ROOT / "conda.yaml").read_text())
    conda_pins = next(d for d in conda["dependencies"] if isinstance(d, dict))["pip"]
    python_env = yaml.safe_load((ROOT / "python_env.yaml").read_text())
    assert conda_pins == python_env["dependencies"]
    assert f"python={python_env['python']}" in conda["dependencies"]
    pins = {Requirement(p).name: Requirement(p) for p in conda_pins if p != "."}
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for requirement in map(Requirement, declared):
        pinned = pins[requirement.name].specifier
        (version,) = [s.version for s in pinned]
        assert requirement.specifier.contains(version), (requirement, version)


def test_none_is_the_default_only_where_the_option_has_none():
    from medart.cli import main
    from medart.mlproject import arguments

    pipeline = main.commands["pipeline"]
    assert arguments(pipeline, {"pretrained": "none", "model_uri": "none", "data_dir": "", "cache": "false"}) == [
        "--pretrained", "none", "--no-cache"]
