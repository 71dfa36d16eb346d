"""Tracking defaults: where runs and artifacts go, how runs are tagged, FAILED on errors."""

from __future__ import annotations

import mlflow
import pytest

from medart import __version__, tracking
from medart.errors import ConfigError


def test_artifacts_go_under_the_users_root_and_runs_are_tagged(tracking_store, tmp_path, monkeypatch):
    monkeypatch.setenv(tracking.ARTIFACT_ROOT_ENV, str(tmp_path / "artifacts"))
    with tracking.start_run("medart/pneumonia/attack", "bim-eps1/255-art") as run:
        mlflow.log_text("hello", "note.txt")
    experiment = mlflow.get_experiment_by_name("medart/pneumonia/attack")
    assert experiment.artifact_location == str(tmp_path / "artifacts" / "medart/pneumonia/attack")
    assert (tmp_path / "artifacts" / "medart/pneumonia/attack" / run.info.run_id / "artifacts" / "note.txt").read_text() == "hello"
    tags = mlflow.get_run(run.info.run_id).data.tags
    assert tags["medart.version"] == __version__ and tags["mlflow.runName"] == "bim-eps1/255-art"
    assert len(tags.get("mlflow.source.git.commit", "")) in (0, 40)  # a commit where medart runs from a checkout


def test_a_user_error_inside_a_run_marks_it_failed(tracking_store):
    with pytest.raises(ConfigError):
        with tracking.start_run("medart/pneumonia/attack", "broken") as run:
            raise ConfigError("bad ε")
    assert mlflow.get_run(run.info.run_id).info.status == "FAILED"


def _race_for_experiments(uri: str, names: list[str], barrier, results) -> None:
    tracking.configure(uri)
    for name in names:
        barrier.wait()  # every process asks for the same new experiment at once
        tracking.use_experiment(name)
        with mlflow.start_run() as run:
            results.put((name, mlflow.get_experiment(run.info.experiment_id).name))


def test_processes_racing_to_create_an_experiment_all_end_up_in_it(tracking_store):
    # MLflow's set_experiment(name) returns without activating the experiment when another process
    # created it first; the loser then logged its runs to the previously active experiment.
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    processes, names = 4, [f"medart/race/{i}" for i in range(6)]
    barrier, results = ctx.Barrier(processes), ctx.Queue()
    workers = [ctx.Process(target=_race_for_experiments, args=(tracking_store, names, barrier, results)) for _ in range(processes)]
    for worker in workers:
        worker.start()
    got = [results.get(timeout=300) for _ in range(processes * len(names))]
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    assert [active for _, active in got] == [name for name, _ in got]
