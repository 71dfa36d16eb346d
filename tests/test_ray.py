"""Sweeps and attack shards on Ray: a local Ray instance with 2 CPUs (one for the module), the real
chest X-rays and a real sqlite tracking store. The Ray runs must log what the in-process ones do."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from click.testing import CliRunner

import medart
from medart.attacks import cache, make_spec
from medart.cli import main
from medart.errors import ConfigError
from medart.mlproject import run as run_entry
from medart.render.sweep import sweep_table
from medart.stages.attack import attack
from medart.stages.sweep import sweep
from medart.stages.target import DataSpec, RunOptions, Target

# one worker runs them all (`make test` runs pytest-xdist): one local Ray cluster of 2 CPUs, not one per worker
pytestmark = [pytest.mark.filterwarnings("ignore:.*official MedMNIST MD5"), pytest.mark.xdist_group("ray")]

ATTACKS, EPS = ["fgsm", "pgd"], [1 / 255, 2 / 255]
QUIET = RunOptions(cache=False, progress=False)
TIMING = {"seconds", "image_steps_per_second"}
ENTRY = ["dataset=pneumonia", "attacks=fgsm", "eps=1/255", "backend=art", "seed=0", "executor=ray", "address=none",
         "workers=none", "retries=2", "cpus_per_task=1", "gpus_per_task=none"]  # as `mlflow run -e sweep` passes them


@pytest.fixture(scope="module")
def ray_instance():
    """A local Ray instance with 2 CPUs. Its workers inherit this process's environment, so with
    PYTHONPATH pointing at a checkout they import the same medart as the tests (checked)."""
    ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'medart[ray]'")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")

    @ray.remote
    def medart_file() -> str:
        import medart as worker_medart

        return worker_medart.__file__

    assert ray.get(medart_file.remote()) == medart.__file__, "Ray workers import another medart; set PYTHONPATH"
    yield ray
    ray.shutdown()


def children(parent: str) -> dict[str, mlflow.entities.Run]:
    runs = mlflow.search_runs(search_all_experiments=True, filter_string=f"tags.mlflow.parentRunId = '{parent}'",
                              output_format="list")
    return {r.info.run_name: r for r in runs if r.info.status == "FINISHED"}


def examples(run_id: str) -> dict[str, np.ndarray]:
    return {part: cache.read(run_id, part)["x_adv"] for part in ("adv_train", "adv_test")}


@pytest.mark.slow  # two sweeps of four cells: ~35 s
def test_ray_sweep_logs_what_the_in_process_sweep_logs(ray_instance, registered, shared_data):
    here = sweep(Target.load(registered, DataSpec("pneumonia", shared_data), max_examples=10), ATTACKS, EPS, QUIET)
    done = CliRunner().invoke(main, [
        "sweep", "--executor", "ray", "--model-uri", registered, "--dataset", "pneumonia", "--data-dir", str(shared_data),
        "--attacks", ",".join(ATTACKS), "--eps", "1/255,2/255", "--max-examples", "10", "--no-cache", "--no-progress"])
    assert done.exit_code == 0, done.output
    remote_id = done.output.split("sweep run ")[1].split(" ")[0]
    assert sweep_table(here.rows) in done.output  # same table, from the same numbers

    client = mlflow.MlflowClient()
    parent_here, parent_ray = client.get_run(here.run_id), client.get_run(remote_id)
    assert parent_ray.info.status == "FINISHED" and parent_ray.info.run_name == parent_here.info.run_name
    assert parent_here.data.params["executor"] == "in-process" and parent_ray.data.params["executor"] == "ray"
    assert parent_ray.data.params["ray.cluster_cpus"] == "2.0" and parent_ray.data.metrics["failed_cells"] == 0
    assert mlflow.artifacts.load_text(f"runs:/{remote_id}/sweep.md") == mlflow.artifacts.load_text(f"runs:/{here.run_id}/sweep.md")
    assert "figures/accuracy_vs_eps.png" in {a.path for a in client.list_artifacts(remote_id, "figures")}

    kids_here, kids_ray = children(here.run_id), children(remote_id)
    assert sorted(kids_ray) == sorted(kids_here) == [f"{a}-eps{e}/255-art" for a in ATTACKS for e in ("1", "2")]
    for name, mine in kids_here.items():
        theirs = kids_ray[name]
        assert theirs.info.experiment_id == parent_ray.info.experiment_id
        assert theirs.data.params == mine.data.params
        assert {k: v for k, v in theirs.data.tags.items() if k != "mlflow.parentRunId"} == \
               {k: v for k, v in mine.data.tags.items() if k != "mlflow.parentRunId"}
        assert set(theirs.data.metrics) == set(mine.data.metrics)
        assert {k: v for k, v in theirs.data.metrics.items() if k not in TIMING} == \
               {k: v for k, v in mine.data.metrics.items() if k not in TIMING}, name
        ours, remote = examples(mine.info.run_id), examples(theirs.info.run_id)
        assert all(np.array_equal(ours[p], remote[p]) for p in ours), name  # the same examples, PGD's random starts too


def test_failed_cells_are_retried_reported_and_the_rest_complete(ray_instance, registered, shared_data, capsys):
    """A cached run whose example files were lost: the cell that reuses it fails on every try."""
    target = Target.load(registered, DataSpec("pneumonia", shared_data), max_examples=10)
    cached = attack(target, make_spec("fgsm", "1/255"), RunOptions(progress=False))
    artifacts = Path(mlflow.get_run(cached.run_id).info.artifact_uri.removeprefix("file://"))
    shutil.rmtree(artifacts / "adversarial")

    status = run_entry("sweep", ENTRY + ["eps=1/255,2/255", f"data_dir={shared_data}", f"model_uri={registered}",
                                         "max_examples=10", "retries=1"])
    out, err = capsys.readouterr()
    assert status == 1 and "Error: 1 of 2 cells failed" in err
    (parent,) = mlflow.search_runs(experiment_names=["medart/pneumonia/attack"], output_format="list",
                                   filter_string="attributes.run_name = 'sweep-fgsm-art'")
    assert parent.info.status == "FINISHED" and parent.data.metrics["failed_cells"] == 1
    table = mlflow.artifacts.load_text(f"runs:/{parent.info.run_id}/sweep.md")
    assert table in out and "Failed cells (1):" in table and "| FGSM | 1/255 |" in table
    (failure,) = mlflow.artifacts.load_dict(f"runs:/{parent.info.run_id}/sweep.json")["failed"]
    assert failure["attack"] == "fgsm" and failure["eps"] == 1 / 255 and "adv_train.npz" in failure["detail"]
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list",
                              filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    tries = sorted((r.info.run_name, r.info.status) for r in runs)
    assert tries == [("fgsm-eps1/255-art", "FAILED")] * 2 + [("fgsm-eps2/255-art", "FINISHED")]  # 1 run + 1 retry


def test_map_retries_transient_failures_and_ends_on_user_errors(ray_instance, tmp_path):
    from medart.executors import RayExecutor

    attempts = tmp_path / "attempts"

    def cell(item: int) -> int:  # pickled by value into the workers
        with open(attempts, "a") as f:
            f.write(f"{item}\n")
        tries = attempts.read_text().split().count(str(item))
        if item == 1 and tries == 1:
            raise RuntimeError("worker lost its first try")
        if item == 2:
            raise OSError("disk full")
        if item == 3:
            raise ConfigError("a user error, the same on every try")
        return item * 10

    with RayExecutor(retries=2) as executor:
        first, second, third = executor.map(cell, [0, 1, 2])
        assert (first.value, second.value) == (0, 10) and first.ok and second.ok
        assert not third.ok and third.error == "OSError: disk full" and "disk full" in third.detail
        assert attempts.read_text().split().count("2") == 3  # the first try and 2 retries
        with pytest.raises(ConfigError, match="the same on every try"):
            executor.map(cell, [3, 0])
    assert attempts.read_text().split().count("3") == 1  # never retried


@pytest.mark.slow  # four attacks, two on Ray actors: ~20 s
def test_sharded_attacks_on_ray_equal_one_piece(ray_instance, registered, shared_data):
    """Shards of whole batches keep the batches of one call, so BIM's examples are the same to the
    bit; PGD's too, as each shard first draws the random starts of the batches before it."""
    from medart.executors import RayExecutor

    target = Target.load(registered, DataSpec("pneumonia", shared_data), max_examples=20)
    here = RunOptions(batch_size=4, cache=False, progress=False)
    with RayExecutor() as executor:  # its actors load the model once for both attacks
        on_ray = RunOptions(batch_size=4, cache=False, progress=False, executor=executor)
        for spec in (make_spec("bim", "1/255", steps=5, step_size="0.25/255"), make_spec("pgd", "2/255", steps=3)):
            alone = attack(target, spec, here)
            sharded = attack(target, spec, on_ray, shards=3)
            for part in ("adv_train", "adv_test"):
                assert torch.equal(sharded.adversarial[part], alone.adversarial[part]), (spec.name, part)
            assert {k: v for k, v in sharded.metrics.items() if k not in TIMING} == \
                   {k: v for k, v in alone.metrics.items() if k not in TIMING}
            assert mlflow.get_run(sharded.run_id).data.params["shards"] == "3"


def test_cli_attack_with_ray_shards(ray_instance, registered, shared_data):
    done = CliRunner().invoke(main, ["attack", "--executor", "ray", "--shards", "2", "--model-uri", registered,
                                     "--dataset", "pneumonia", "--data-dir", str(shared_data), "--attack", "fgsm",
                                     "--max-examples", "10", "--batch-size", "4", "--no-progress"])
    assert done.exit_code == 0, done.output
    assert "fgsm-eps1/255 via art on 10 images" in done.output and "max L∞ 1.0000/255" in done.output


@pytest.mark.slow  # `mlflow run` and a Ray instance of its own: ~40 s
def test_mlflow_run_sweep_entry_point_on_ray(ray_instance, registered, shared_data, tmp_path):
    """`mlflow run -e sweep -P executor=ray`: the project's run is the parent of the sweep's run; the
    local Ray workers inherit its MLFLOW_RUN_ID and must still log new child runs of the sweep, in the
    project's experiment."""
    from test_mlproject import _mlflow_run

    done = _mlflow_run(tmp_path / "mlflow.db", shared_data, "attacks=fgsm,pgd", "eps=1/255", "max_examples=10",
                       f"model_uri={registered}", "executor=ray", "workers=2", entry="sweep")
    assert done.returncode == 0, done.stderr[-3000:]
    (project,) = mlflow.search_runs(experiment_names=["medart/pneumonia/main"], output_format="list",
                                    filter_string="attributes.run_name = 'sweep-fgsm+pgd-art (mlflow run)'")
    assert project.info.status == "FINISHED" and project.data.tags["mlflow.project.entryPoint"] == "sweep"
    assert project.data.params["eps"] == "1/255"
    (sweep_run,) = children(project.info.run_id).values()
    assert sweep_run.info.run_name == "sweep-fgsm+pgd-art" and sweep_run.data.params["ray.cluster_cpus"] == "2.0"
    kids = children(sweep_run.info.run_id)
    assert sorted(kids) == ["fgsm-eps1/255-art", "pgd-eps1/255-art"]
    assert len(mlflow.search_runs(experiment_names=["medart/pneumonia/main"], output_format="list")) == 4  # nothing else
    assert all(k.info.experiment_id == project.info.experiment_id for k in kids.values())
    assert "| PGD |" in done.stdout


@pytest.mark.slow  # a whole sweep process on Ray: ~40 s
def test_sigterm_ends_a_ray_sweep_with_every_run_killed(registered, tracking_store, shared_data, tmp_path):
    """A real SIGTERM while Ray workers attack: the parent and the running cells end KILLED (none
    left RUNNING), and the local Ray instance is gone with the process."""
    pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'medart[ray]'")
    import signal
    import time

    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")} | {"MLFLOW_TRACKING_URI": tracking_store}
    proc = subprocess.Popen([sys.executable, "-c", "from medart.cli import main; main()", "sweep", "--executor", "ray",
                             "--workers", "2", "--model-uri", registered, "--dataset", "pneumonia", "--data-dir",
                             str(shared_data), "--attacks", "bim", "--eps", "1/255,2/255", "--max-examples", "200",
                             "--no-cache", "--no-progress"], env=env, cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while sum(r.info.status == "RUNNING" for r in mlflow.search_runs(search_all_experiments=True, output_format="list",
                                                                    filter_string="tags.mlflow.parentRunId != ''")) < 2:
        assert proc.poll() is None and time.monotonic() < deadline, "the cells never ran"
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Interrupted" in err and "Traceback" not in err, err[-2000:]
    runs = mlflow.search_runs(experiment_names=["medart/pneumonia/attack"], output_format="list")
    assert sorted((r.info.run_name, r.info.status) for r in runs) == [
        ("bim-eps1/255-art", "KILLED"), ("bim-eps2/255-art", "KILLED"), ("sweep-bim-art", "KILLED")]


@pytest.mark.parametrize("param, fragment", [
    ("executor=spark", "Invalid value for -P executor: 'spark' is not one of 'in-process', 'ray'."),
    ("retries=-1", "Invalid value for -P retries: -1 is not in the range x>=0."),
    ("workers=0", "Invalid value for -P workers: 0 is not in the range x>=1."),
    ("gpus_per_task=half", "Invalid value for -P gpus_per_task: 'half' is not a valid float range."),
    ("cpus_per_task=0", "Invalid value for -P cpus_per_task: 0.0 is not in the range x>0."),
])
def test_sweep_entry_point_checks_the_executor_values(tracking_store, param, fragment, capsys):
    assert run_entry("sweep", ENTRY + [param]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("Error: ") and fragment in line


def test_cli_refuses_ray_options_without_ray_executor(tracking_store):
    done = CliRunner().invoke(main, ["sweep", "--model-uri", "models:/medart-pneumonia@champion", "--dataset", "pneumonia",
                                     "--retries", "3"])
    assert done.exit_code == 2 and "Error: --retries applies to --executor='ray' only" in done.output


def test_executor_ray_without_ray_installed_names_the_extra(tmp_path):
    """Ray absent (an import of it fails, as when it is not installed): one line naming the extra."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env |= {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
            "PYTHONPATH": os.pathsep.join([str(Path(medart.__file__).parents[1]), env.get("PYTHONPATH", "")])}
    blocked = "import sys; sys.modules['ray'] = None; from medart.cli import main; main()"
    done = subprocess.run([sys.executable, "-c", blocked, "sweep", "--executor", "ray", "--model-uri", "models:/m@champion",
                           "--dataset", "pneumonia"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("Error: --executor='ray' needs Ray, an optional extra: pip install 'medart[ray]'"), line


def test_shard_actors_load_a_model_brought_from_outside_medart(ray_instance, shared_data, tmp_path):
    """A TorchScript classifier has no medart config to rebuild it from: each actor loads the file
    itself, and the shards still equal one piece."""
    from medart.executors import RayExecutor
    from medart.models.loading import ModelSource

    torch.manual_seed(0)
    network = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                  torch.nn.Flatten(), torch.nn.Linear(4, 2)).eval()
    torch.jit.script(network).save(str(tmp_path / "outside.pt"))
    target = Target.load(ModelSource(str(tmp_path / "outside.pt")), DataSpec("pneumonia", shared_data), max_examples=12)
    spec = make_spec("bim", "2/255", steps=3)
    alone = attack(target, spec, RunOptions(batch_size=4, cache=False, progress=False))
    with RayExecutor() as executor:
        sharded = attack(target, spec, RunOptions(batch_size=4, cache=False, progress=False, executor=executor), shards=2)
    for part in ("adv_train", "adv_test"):
        assert torch.equal(sharded.adversarial[part], alone.adversarial[part]), part
