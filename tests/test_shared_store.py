"""Several medart processes writing to one sqlite tracking store at once: all succeed, nothing lost."""

from __future__ import annotations

import os
import subprocess
import sys

import mlflow
import pytest

pytestmark = pytest.mark.filterwarnings("ignore:.*official MedMNIST MD5")

PROCESSES, ATTACKS, EPS = 4, ("fgsm",), ("2/255", "8/255")  # 8 child runs written at once: the race, not the volume
CHILD_METRICS = {"clean_acc", "clean_auc", "adv_acc", "adv_auc", "success_rate", "clean_balanced_acc", "adv_balanced_acc", "linf_mean", "linf_max", "l2_mean",
                 "l2_max", "n", "seconds", "image_steps_per_second"}


@pytest.mark.slow  # four sweeps at once, each its own process
def test_four_concurrent_sweeps_lose_nothing(registered, tracking_store, shared_data, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env |= {"MLFLOW_TRACKING_URI": tracking_store, "MEDART_DATA_DIR": str(shared_data)}
    procs = [
        subprocess.Popen([sys.executable, "-c", "from medart.cli import main; main()", "sweep", "--model-uri", registered,
                          "--dataset", "pneumonia", "--attacks", ",".join(ATTACKS), "--eps", ",".join(EPS),
                          "--max-examples", "10", "--seed", str(seed), "--no-progress"],
                         env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for seed in range(PROCESSES)  # own seeds: own splits and cache keys, so no process reuses another's work
    ]
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=900)
            assert proc.returncode == 0, err[-3000:]
    finally:
        for proc in procs:
            proc.kill()  # none outlives a failed test

    client = mlflow.MlflowClient()
    runs = mlflow.search_runs(experiment_names=["medart/pneumonia/attack"], output_format="list")
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert not mlflow.search_runs(experiment_names=["Default"], output_format="list")  # no process lost the experiment
    assert len(parents) == PROCESSES and len(children) == PROCESSES * len(ATTACKS) * len(EPS)
    assert all(r.info.status == "FINISHED" for r in runs)
    for parent in parents:
        mine = [c for c in children if c.data.tags["mlflow.parentRunId"] == parent.info.run_id]
        assert len(mine) == len(ATTACKS) * len(EPS)
        assert {a.path for a in client.list_artifacts(parent.info.run_id)} >= {"sweep.md", "sweep.json", "figures"}
        assert len(mlflow.artifacts.load_dict(f"runs:/{parent.info.run_id}/sweep.json")["rows"]) == len(mine)
    for child in children:
        assert CHILD_METRICS <= set(child.data.metrics) and child.data.tags["medart.cached"] == "false"
        stored = {a.path for a in client.list_artifacts(child.info.run_id, "adversarial")}
        assert stored == {"adversarial/adv_train.npz", "adversarial/adv_test.npz"}
