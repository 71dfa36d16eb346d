"""The MLflow project as users run it: the real `mlflow run` against a temporary sqlite store."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mlflow
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


SMALL = ["arch=resnet18", "pretrained=none", "epochs=1", "max_train=64", "max_eval=16", "max_examples=40",
         "reference_size=48", "detectors=kd,dfeat"]


def test_mlflow_run_main_trains_attacks_detects_and_registers(store, shared_data):
    done = _mlflow_run(store, shared_data, "attack=bim", *SMALL)
    assert done.returncode == 0, done.stderr[-3000:]
    client = mlflow.MlflowClient()
    (project_run,) = mlflow.search_runs(experiment_names=["medart/pneumonia/main"], output_format="list",
                                        filter_string="attributes.run_name = 'main-bim-eps1/255-art'")
    run_id = project_run.info.run_id
    assert project_run.info.status == "FINISHED"
    assert project_run.data.params["attack"] == "bim" and project_run.data.tags["mlflow.project.entryPoint"] == "main"
    m = project_run.data.metrics
    assert {"clean_acc", "adv_acc", "success_rate", "auc_kd", "auc_dfeat"} <= set(m)
    assert f"main run {run_id}, model models:/medart-pneumonia/1" in done.stdout
    assert f"bim ε=1/255 (art): accuracy {m['clean_acc']:.4f} clean, {m['adv_acc']:.4f} adversarial" in done.stdout
    assert 0 <= m["adv_acc"] <= m["clean_acc"] <= 1 and 0 <= m["auc_dfeat"] <= 1

    def children(parent):
        return mlflow.search_runs(search_all_experiments=True, output_format="list",
                                  filter_string=f"tags.mlflow.parentRunId = '{parent}'")

    stages = {r.info.run_name: r for r in children(run_id)}
    assert set(stages) == {"train-resnet18-28px-seed0", "bim-eps1/255-art", "detect-eps1/255-art"}
    assert all(r.info.status == "FINISHED" and r.info.experiment_id == project_run.info.experiment_id
               for r in stages.values())
    assert stages["bim-eps1/255-art"].data.metrics["adv_acc"] == m["adv_acc"]
    detect = stages["detect-eps1/255-art"].info.run_id
    (per_attack,) = children(detect)
    assert per_attack.info.run_name == "detect-bim-eps1/255-art" and per_attack.data.metrics["auc_kd"] == m["auc_kd"]
    artifacts = {a.path for a in client.list_artifacts(detect)} | {a.path for a in client.list_artifacts(detect, "figures")}
    assert {"detection_auc.md", "figures/detection_auc.png"} <= artifacts
    assert "figures/roc.png" in {a.path for a in client.list_artifacts(per_attack.info.run_id, "figures")}
    version = client.get_model_version_by_alias("medart-pneumonia", "champion")
    assert str(version.version) == "1" and project_run.data.tags["medart.model_uri"] == "models:/medart-pneumonia/1"

    # a second main run reuses the champion instead of training again
    again = _mlflow_run(store, shared_data, "attack=fgsm", *SMALL)
    assert again.returncode == 0, again.stderr[-3000:]
    (second,) = mlflow.search_runs(experiment_names=["medart/pneumonia/main"], output_format="list",
                                   filter_string="attributes.run_name = 'main-fgsm-eps1/255-art'")
    assert second.data.tags["medart.model_uri"] == "models:/medart-pneumonia@champion"
    assert {r.info.run_name for r in children(second.info.run_id)} == {"fgsm-eps1/255-art", "detect-eps1/255-art"}


@pytest.mark.parametrize("param, fragment", [
    ("attack=foo", "-P attack='foo': unknown attack 'foo'"),
    ("eps=abc", "-P eps='abc': cannot read ε from 'abc'"),
    ("eps=-1", "-P eps='-1': ε must be in (0, 1]"),
    ("model_uri=models:/missing@x", "models:/missing@x"),
    ("max_examples=many", "-P max_examples='many': must be a whole number"),
])
def test_bad_parameters_fail_the_run_with_one_line(store, shared_data, param, fragment):
    done = _mlflow_run(store, shared_data, param, "detectors=dfeat")
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and fragment in errors[0], done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    runs = mlflow.search_runs(experiment_names=["medart/pneumonia/main"], output_format="list")
    assert runs and all(r.info.status == "FAILED" for r in runs)


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
    entry_points = yaml.safe_load((ROOT / "MLproject").read_text())["entry_points"]
    assert set(entry_points) == {"main", "train", "attack", "detect", "sweep", "evaluate", "ablate"}
    for name, spec in entry_points.items():
        assert spec["command"].startswith(f"python mlproject/{name}.py")
        assert all("{" + p + "}" in spec["command"] for p in spec["parameters"])
