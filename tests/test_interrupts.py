"""Interrupted runs, with real `medart` processes stopped by real signals: the runs end KILLED,
nothing half-made is taken for a result, and a re-run resumes from the last completed stage."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest

pytestmark = pytest.mark.filterwarnings("ignore:.*official MedMNIST MD5")

MEDART = [sys.executable, "-c", "from medart.cli import main; main()"]


def _env(store: str, data: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    return env | {"MLFLOW_TRACKING_URI": store, "MEDART_DATA_DIR": str(data), "PYTHONUNBUFFERED": "1"}


def _rerun(args: list[str], store: str, data: Path):
    """The command again, in this process (no interpreter start): click's result."""
    from click.testing import CliRunner

    from medart.cli import main

    return CliRunner().invoke(main, args[len(MEDART):], env={"MLFLOW_TRACKING_URI": store, "MEDART_DATA_DIR": str(data)})


def _runs(experiment: str) -> list:
    return mlflow.search_runs(experiment_names=[experiment], output_format="list")


def _interrupt_when(proc: subprocess.Popen, ready, sig: int, timeout: float = 300) -> tuple[int, str]:
    """Send ``sig`` once ``ready()`` holds (polled), then wait for the process to end."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, f"finished before it could be interrupted: {proc.communicate()[1][-2000:]}"
        assert time.monotonic() < deadline, "never reached the point to interrupt"
        time.sleep(0.2)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err


def test_sigterm_during_training_kills_the_run_and_registers_nothing(tracking_store, shared_data, tmp_path):
    proc = subprocess.Popen([*MEDART, "train", "--dataset", "pneumonia", "--arch", "resnet18", "--pretrained", "none",
                             "--epochs", "200", "--max-train", "64", "--max-eval", "16", "--no-progress"],
                            env=_env(tracking_store, shared_data), cwd=tmp_path, stderr=subprocess.PIPE, text=True)

    def one_epoch_done() -> bool:
        runs = _runs("medart/pneumonia/train") if mlflow.get_experiment_by_name("medart/pneumonia/train") else []
        return bool(runs) and "val_acc" in runs[0].data.metrics

    code, err = _interrupt_when(proc, one_epoch_done, signal.SIGTERM)
    assert code == 130 and "Interrupted (SIGTERM)" in err and "Traceback" not in err, err[-2000:]
    (run,) = _runs("medart/pneumonia/train")
    assert run.info.status == "KILLED"
    assert mlflow.MlflowClient().search_registered_models() == []


@pytest.mark.slow  # an attack process interrupted, then two attacks: ~35 s
def test_interrupted_attack_is_never_reused_and_a_rerun_completes(registered, tracking_store, shared_data, tmp_path):
    base = [*MEDART, "attack", "--model-uri", registered, "--dataset", "pneumonia", "--attack", "bim", "--eps", "2/255",
            "--max-examples", "40", "--no-progress"]
    # one image per batch: slow enough to be caught half-way; the batch size is not part of what is attacked
    proc = subprocess.Popen([*base, "--batch-size", "1"], env=_env(tracking_store, shared_data), cwd=tmp_path,
                            stderr=subprocess.PIPE, text=True)

    def attacking() -> bool:
        exp = mlflow.get_experiment_by_name("medart/pneumonia/attack")
        return exp is not None and any(r.info.status == "RUNNING" for r in _runs("medart/pneumonia/attack"))

    code, err = _interrupt_when(proc, attacking, signal.SIGINT)
    assert code == 130 and "Interrupted" in err and "Traceback" not in err, err[-2000:]
    (killed,) = _runs("medart/pneumonia/attack")
    assert killed.info.status == "KILLED"

    done = _rerun(base, tracking_store, shared_data)
    assert done.exit_code == 0, done.output[-2000:]
    assert "examples from cache" not in done.output  # the killed run's examples were not taken as complete
    again = _rerun(base, tracking_store, shared_data)
    made = re.search(r"^attack run ([0-9a-f]+) in ", done.output, re.M)[1]
    assert again.exit_code == 0 and f"(examples from cache of run {made})" in again.output, again.output[-2000:]
    statuses = sorted(r.info.status for r in _runs("medart/pneumonia/attack"))
    assert statuses == ["FINISHED", "FINISHED", "KILLED"]


@pytest.mark.slow  # a detect process interrupted, then a detection: ~20 s
def test_detection_interrupted_resumes_from_the_cached_attack(registered, tracking_store, shared_data, tmp_path):
    base = [*MEDART, "detect", "--model-uri", registered, "--dataset", "pneumonia", "--attacks", "fgsm", "--eps", "4/255",
            "--max-examples", "60", "--reference-size", "40", "--detectors", "dfeat", "--param", "dfeat.n_estimators=20",
            "--no-progress"]
    # many repeats: a detection stage long enough to be interrupted once its parent run has started
    proc = subprocess.Popen([*base, "--repeats", "2000"], env=_env(tracking_store, shared_data), cwd=tmp_path,
                            stderr=subprocess.PIPE, text=True)

    def detecting() -> bool:
        exp = mlflow.get_experiment_by_name("medart/pneumonia/detect")
        return exp is not None and any(r.info.status == "RUNNING" for r in _runs("medart/pneumonia/detect"))

    code, err = _interrupt_when(proc, detecting, signal.SIGTERM)
    assert code == 130, err[-2000:]
    assert {r.info.status for r in _runs("medart/pneumonia/detect")} == {"KILLED"}  # parent and child
    (attack,) = _runs("medart/pneumonia/attack")
    assert attack.info.status == "FINISHED"  # the stage completed before the interrupt

    done = _rerun(base, tracking_store, shared_data)
    assert done.exit_code == 0, done.output[-2000:]
    rerun = [r for r in _runs("medart/pneumonia/attack") if r.info.run_id != attack.info.run_id]
    assert len(rerun) == 1 and rerun[0].data.tags["medart.cached_from"] == attack.info.run_id
    finished = [r for r in _runs("medart/pneumonia/detect") if r.info.status == "FINISHED"]
    assert len(finished) == 2 and all(0 <= r.data.metrics.get("fgsm.auc_dfeat", r.data.metrics.get("auc_dfeat", -1)) <= 1
                                      for r in finished)
