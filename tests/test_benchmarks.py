"""Benchmark scripts: each answers --help, and tiny runs of the throughput, detector-feature and
paper-fidelity benchmarks write the expected JSON and MLflow run, with values that agree and a
command a reader can run anywhere. No timing assertions."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ("attack_throughput", "detector_features", "scaling", "paper_fidelity", "readme_tables", "autoattack_cost")


def run_script(name: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}  # no run/experiment leaked from tests
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / f"{name}.py"), *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=600)


def load(name: str):
    """A benchmark script as a module (in-process: no interpreter start per check)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_script_explains_itself(name):
    result = CliRunner().invoke(load(name).main, ["--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output and "--output" in result.output


def assert_portable(command: str, script: str, *paths: Path) -> None:
    """The recorded command runs from the repository root and names none of this machine's folders."""
    assert command.startswith(f"python benchmarks/{script}.py "), command
    assert not any(str(p) in command for p in (ROOT, *paths)), command
    assert " /" not in command and "sqlite:////" not in command, command


def test_the_recorded_command_names_no_folder_of_this_machine():
    benchlib = load("benchlib")
    argv = [str(ROOT / "benchmarks" / "scaling.py"), "--data-dir", "/srv/data", "--tracking-uri", "sqlite:////tmp/x/mlflow.db",
            "--output", str(ROOT / "benchmarks" / "results" / "s.json"), "--output=/tmp/elsewhere/s.json", "--sizes", "28,64"]
    assert benchlib.portable_command(argv) == (
        'python benchmarks/scaling.py --data-dir "$MEDART_DATA_DIR" --tracking-uri sqlite:///mlflow.db '
        "--output benchmarks/results/s.json --output=benchmarks/results/s.json --sizes 28,64")


def finished_run(uri: str, artifact: str) -> mlflow.entities.Run:
    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name("medart/benchmarks")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    assert artifact in [a.path for a in client.list_artifacts(run.info.run_id)]
    return run


def test_tiny_throughput_run_writes_results_and_a_run(tracking_store, shared_data, tmp_path):
    out = tmp_path / "throughput.json"
    proc = run_script("attack_throughput", "--sizes", "16", "--batch-size", "4", "--arch", "resnet18", "--steps", "2",
                      "--repeats", "2", "--attacks", "bim,pgd", "--threads", "1", "--data-dir", str(shared_data), "--output", str(out),
                      "--tracking-uri", tracking_store, "--no-progress", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert {"date", "command", "machine", "versions", "config", "results", "targets"} <= set(result)
    assert_portable(result["command"], "attack_throughput", shared_data, tmp_path)
    assert [(r["size"], r["attack"]) for r in result["results"]] == [(16, "bim"), (16, "pgd")]
    for r in result["results"]:
        assert set(r["variants"]) == {"bare", "torchattacks", "art", "medart-torchattacks", "medart-art"}
        assert all(v["image_steps_per_s"] > 0 and v["wall_seconds"]["n"] == 2 for v in r["variants"].values())
        assert {"medart-art/art", "medart-torchattacks/torchattacks", "art/bare", "torchattacks/bare"} <= set(r["ratios"])
    # BIM has no randomness: every variant must take exactly the bare loop's steps
    assert max(result["results"][0]["max_abs_diff_from_bare"].values()) <= 1e-6
    run = finished_run(tracking_store, "attack_throughput.json")
    assert run.data.metrics["16px.bim.medart-art.image_steps_per_s"] > 0


def test_tiny_autoattack_cost_run_pairs_autoattack_with_pgd(tracking_store, shared_data, tmp_path):
    out = tmp_path / "autoattack_cost.json"
    proc = run_script("autoattack_cost", "--n", "6", "--steps", "1", "--repeats", "2", "--data-dir", str(shared_data),
                      "--output", str(out), "--tracking-uri", tracking_store, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert_portable(result["command"], "autoattack_cost", shared_data, tmp_path)
    assert set(result["seconds_per_image"]) == {"pgd/art", "autoattack/art", "pgd/torchattacks", "autoattack/torchattacks"}
    assert all(t["n"] == 2 and t["median"] > 0 for t in result["seconds_per_image"].values())
    assert set(result["time_ratio_autoattack_over_pgd"]) == {"art", "torchattacks"}
    for backend, parts in result["autoattack_broken_by"].items():  # the parts account for every image AutoAttack broke
        broken = round((result["clean_acc"] - result["robust_acc"][f"autoattack/{backend}"]) * 6)
        assert sum(parts.values()) == broken and ("fab" in parts) == (backend == "torchattacks")
    run = finished_run(tracking_store, "autoattack_cost.json")
    assert run.data.metrics["time_ratio.art"] > 0


def test_tiny_detector_features_agree_with_the_references(tracking_store, shared_data, tmp_path):
    out = tmp_path / "features.json"
    proc = run_script("detector_features", "--n", "24,48", "--references", "30", "--size", "16", "--arch", "resnet18",
                      "--k", "5", "--batch-size", "12", "--repeats", "1", "--threads", "1", "--data-dir", str(shared_data), "--output", str(out),
                      "--tracking-uri", tracking_store, "--no-progress", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert_portable(result["command"], "detector_features", shared_data, tmp_path)
    assert [r["n"] for r in result["results"]] == [24, 48] and [r["batches"] for r in result["results"]] == [2, 4]
    for r in result["results"]:
        for what in ("lid", "lid_estimator", "kd", "kd_estimator", "kd_estimator_sklearn_batched"):
            assert r["max_rel_diff"][what] <= 1e-6, (r["n"], what, r["max_rel_diff"][what])
        assert all(share == 1.0 for share in r["finite_share"].values())
        assert {"lid.medart", "lid.reference", "kd.medart", "kd.reference"} <= set(r["memory"])
        assert r["speedups"]["lid"]["median"] > 0
    finished_run(tracking_store, "detector_features.json")
    rendered = run_script("readme_tables", str(out))
    assert rendered.returncode == 0, rendered.stderr
    assert "## Performance" in rendered.stdout and "LID from activations" in rendered.stdout


def test_bad_arguments_are_one_line_errors(tmp_path, monkeypatch, capsys):
    script = load("attack_throughput")
    monkeypatch.setattr(sys, "argv", ["attack_throughput.py", "--sizes", "28,x", "--output", str(tmp_path / "x.json")])
    with pytest.raises(SystemExit) as exit_info:
        script.main()
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "Error: --sizes must be comma-separated integers such as 28,64, got '28,x'"]
    assert not (tmp_path / "x.json").exists()


def test_an_interrupted_benchmark_ends_its_runs_killed(tracking_store, shared_data, tmp_path):
    import signal
    import time

    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.Popen([sys.executable, str(ROOT / "benchmarks" / "paper_fidelity.py"), "--data-dir", str(shared_data),
                             "--epochs", "10", "--tracking-uri", tracking_store, "--output", str(tmp_path / "f.json"),
                             "--no-progress"], env=env, cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    client = mlflow.MlflowClient(tracking_store)
    try:
        deadline = time.monotonic() + 300
        while not any(r.info.run_name.startswith("train-") for e in client.search_experiments()
                      for r in client.search_runs([e.experiment_id])):  # training under way
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(1)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130 and "Interrupted (SIGTERM)" in err and "Traceback" not in err, err[-2000:]
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    assert runs and all(r.info.status == "KILLED" for r in runs)
    assert not (tmp_path / "f.json").exists()


@pytest.mark.slow
def test_tiny_paper_fidelity_run_writes_tables_and_a_run(tracking_store, shared_data, tmp_path):
    out = tmp_path / "fidelity.json"
    # medart's small CNN, not the paper's ResNet-50: the same stages and files in a fraction of the time
    proc = run_script("paper_fidelity", "--data-dir", str(shared_data), "--arch", "smallcnn", "--epochs", "1", "--max-train", "64",
                      "--max-examples", "60", "--eps-sweep", "1/255", "--detectors", "dfeat", "--reference-size", "32",
                      "--threads", "1", "--output", str(out), "--tracking-uri", tracking_store, "--no-progress", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert {"table2.md", "table3.md", "table4.md", "table5.md", "stages.md"} <= set(result["tables"])
    assert {r["attack"] for r in result["sweep"]} == {"fgsm", "bim", "pgd", "cw"}
    assert set(result["detection"]["auc"]) == {"fgsm", "bim", "pgd", "cw"}
    assert set(result["seconds"]) == {"train", "attack", "detect", "total"}
    assert "n/a (not the full configuration on CPU)" in proc.stdout and result["config"]["arch"] == "smallcnn"
    assert_portable(result["command"], "paper_fidelity", shared_data, tmp_path)
    client = mlflow.MlflowClient(tracking_store)
    parent = client.get_run(result["mlflow_run"])
    assert parent.info.status == "FINISHED" and parent.data.metrics["seconds_total"] > 0
    assert {"paper_fidelity.json", "table2.md", "table4.md"} <= {a.path for a in client.list_artifacts(parent.info.run_id)}
    # every stage is a child of the benchmark's run; detection attacks the model just trained (not
    # registered, held in memory) and finds the sweep's examples at ε = 1/255 in the cache
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    children = {r.info.run_name.split("-")[0] for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    assert {"train", "sweep", "detect"} <= children
    assert client.search_registered_models() == []
    for attack, run_id in result["detection"]["attack_runs"].items():
        assert client.get_run(run_id).data.tags["medart.cached"] == "true", attack
