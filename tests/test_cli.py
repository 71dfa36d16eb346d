"""The ``medart`` command: user mistakes are one line without a traceback; a real run works."""

from __future__ import annotations

import os
import subprocess
import sys

import mlflow
import numpy as np
import pytest
from click.testing import CliRunner
from tqdm import tqdm

from medart.cli import main


def run(*args: str, env: dict | None = None):
    return CliRunner().invoke(main, list(args), env=env)


def assert_one_line_error(result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_help_explains_training():
    result = run("train", "--help")
    assert result.exit_code == 0
    for option in ("--dataset", "--data-dir", "MEDART_DATA_DIR", "--pretrained", "--epochs", "--image-size", "--tracking-uri"):
        assert option in result.output


def test_unknown_dataset():
    assert_one_line_error(run("train", "--dataset", "imagenet"), "'imagenet' is not one of")


def test_missing_data_file(tracking_store, tmp_path):
    result = run("train", "--dataset", "pneumonia", "--data-dir", str(tmp_path / "empty"), "--no-download", "--pretrained", "none")
    assert_one_line_error(result, "pneumoniamnist.npz not found", "MEDART_DATA_DIR")
    assert mlflow.search_runs(search_all_experiments=True, output_format="list") == []  # nothing half-done


def test_corrupt_data_file(tracking_store, tmp_path):
    (tmp_path / "pneumoniamnist.npz").write_bytes(b"PK\x03\x04 truncated")
    result = run("train", "--dataset", "pneumonia", "--data-dir", str(tmp_path), "--pretrained", "none")
    assert_one_line_error(result, "truncated or corrupt")


def test_imagenet_weights_unavailable_marks_run_failed(tracking_store, shared_data, monkeypatch, tmp_path):
    import torch.hub
    import urllib.error

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", lambda *a, **k: (_ for _ in ()).throw(urllib.error.URLError("offline")))
    result = run("train", "--dataset", "pneumonia", "--data-dir", str(shared_data), "--max-train", "8", "--epochs", "1")
    assert_one_line_error(result, "ImageNet weights for resnet50", "--pretrained='none'")
    assert [r.info.status for r in mlflow.search_runs(search_all_experiments=True, output_format="list")] == ["FAILED"]


def test_unknown_model_uri(tracking_store, shared_data):
    result = run("evaluate", "--model-uri", "models:/medart-pneumonia@champion", "--dataset", "pneumonia", "--data-dir", str(shared_data))
    assert_one_line_error(result, "models:/medart-pneumonia@champion", "cannot be loaded")


def test_train_then_evaluate_from_the_registry(tracking_store, shared_data):
    result = run(
        "train", "--dataset", "pneumonia", "--arch", "resnet18", "--pretrained", "none", "--epochs", "1",
        "--batch-size", "32", "--max-train", "256", "--balance", "sampler",
        "--monitor", "val_balanced_acc", "--no-progress", env={"MEDART_DATA_DIR": str(shared_data)},
    )
    assert result.exit_code == 0, result.output
    assert "Warning: " in result.output and "official MedMNIST MD5" in result.output
    assert "registered models:/medart-pneumonia/1@champion" in result.output
    train_run = mlflow.search_runs(experiment_names=["medart/pneumonia/train"], output_format="list")[0]
    logged = train_run.data.metrics
    assert train_run.data.params["train.balance"] == "sampler" and train_run.data.params["train.monitor"] == "val_balanced_acc"
    assert f"balanced acc {logged['test_balanced_acc'] * 100:.2f} % (recall: normal " in result.output
    assert {"test_recall_normal", "test_recall_pneumonia", "best_val_balanced_acc"} <= set(logged)
    result = run("evaluate", "--model-uri", "models:/medart-pneumonia@champion", "--dataset", "pneumonia",
                 env={"MEDART_DATA_DIR": str(shared_data)})
    assert result.exit_code == 0, result.output  # the whole test split, as train tested it
    rows = {cells[1].strip(): cells[2].strip() for cells in (line.split("|") for line in result.output.splitlines()
                                                               if line.startswith("| test_"))}
    assert float(rows["test_acc (%)"]) == pytest.approx(logged["test_acc"] * 100, abs=0.01)  # percent, as printed
    assert float(rows["test_balanced_acc (%)"]) == pytest.approx(logged["test_balanced_acc"] * 100, abs=0.01)
    assert np.isfinite(float(rows["test_auc (%)"]))


def test_library_messages_name_options_as_the_face_spells_them():
    from medart.cli import spell_for_cli

    train = main.commands["train"]
    assert spell_for_cli("raise `max_train` or use `pretrained`='none'", train) == "raise --max-train or use --pretrained='none'"
    assert spell_for_cli("pass `trusted_pickle`=True", train) == "pass --trusted-pickle"
    assert spell_for_cli("or `download`=False", train) == "or --no-download"
    assert spell_for_cli("`not_an_option` stays", train) == "`not_an_option` stays"


HEAVY = ("torch", "mlflow", "sklearn")  # what a question about the command line must not wait for


def in_fresh_python(code: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """``code`` run by a new interpreter (this one has imported everything already)."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env={**os.environ, **(env or {})})


def test_help_answers_without_importing_torch():
    """`medart --help` and every command's `--help` import neither torch nor MLflow nor scikit-learn:
    each report line names the command and the heavy modules loaded once its help was printed."""
    code = f"""
import contextlib, io, sys
from medart.cli import main
heavy = {HEAVY!r}
print('import', *[m for m in heavy if m in sys.modules])
for args in [[]] + [[name] for name in main.commands]:
    with contextlib.redirect_stdout(io.StringIO()) as shown:
        main([*args, '--help'], prog_name='medart', standalone_mode=False)
    assert shown.getvalue().startswith('Usage: medart'), shown.getvalue()
    print(' '.join(args) or '--help', *[m for m in heavy if m in sys.modules])
"""
    lines = in_fresh_python(code).stdout.splitlines()
    assert lines == ["import", "--help", *main.commands], lines
    for command in main.commands.values():  # every short help line is a whole sentence
        assert command.get_short_help_str(limit=100).endswith("."), command.name


def test_datasets_names_the_data_folder_and_what_it_holds_without_importing_torch(write_npz, tmp_path):
    folder = write_npz("pneumoniamnist.npz", {"train": [0, 1], "val": [0, 1], "test": [0, 1]}).parent
    (folder / "Data_Entry_2017.csv").write_text("Image Index,Finding Labels,Patient ID\n")
    (folder / "NORMAL").mkdir()
    code = f"""
import sys
from medart.cli import main
main(sys.argv[1:], prog_name='medart', standalone_mode=False)
print('heavy:', *[m for m in {HEAVY!r} if m in sys.modules], file=sys.stderr)
"""
    done = subprocess.run([sys.executable, "-c", code, "datasets", "--data-dir", str(folder)], capture_output=True,
                          text=True, check=True)
    assert done.stderr.splitlines()[-1] == "heavy:", done.stderr
    lines = done.stdout.splitlines()
    size = tqdm.format_sizeof((folder / "pneumoniamnist.npz").stat().st_size, "B", 1000)
    for line in (f"Data folder: {folder} (from --data-dir)",
                 f"    pneumoniamnist  28 px: {size}, 64 px: missing, 128 px: missing, 224 px: missing  (pneumonia)",
                 "    dermamnist      28 px: missing, 64 px: missing, 128 px: missing, 224 px: missing  "
                 "(dermoscopy, dermamnist)",
                 "    nih             Data_Entry_2017.csv present",
                 "    ham10000        HAM10000_metadata.csv missing",
                 "    class-folders   sub-folders: NORMAL"):
        assert line in lines, done.stdout
    # the default folder (no --data-dir, no $MEDART_DATA_DIR): said to be missing, and left so
    home = tmp_path / "home"
    done = subprocess.run([sys.executable, "-c", code, "datasets"], capture_output=True, text=True, check=True,
                          env={k: v for k, v in os.environ.items() if k != "MEDART_DATA_DIR"} | {"HOME": str(home)})
    assert done.stdout.splitlines()[-2:] == [
        f"Data folder: {home / '.medart' / 'data'} (the default; set --data-dir or $MEDART_DATA_DIR)",
        "  no such folder: a command that reads MedMNIST files downloads them into it (unless --no-download)"]
    assert not home.exists()


@pytest.mark.parametrize("command", [
    ["train", "--pretrained", "none"],
    ["train", "--pretrained", "none", "--no-download"],
    ["train", "--dataset", "chestxray2", "--source", "nih", "--pretrained", "none"],
    ["evaluate", "--model-uri", "MODEL"],
    ["attack", "--model-uri", "MODEL", "--attack", "fgsm"],
], ids=["train", "train-no-download", "train-layout", "evaluate", "attack"])
def test_a_mistyped_data_dir_is_one_line_and_leaves_no_folder(tracking_store, tmp_path, monkeypatch, command):
    """On a model medart did not train (TorchScript) where the command takes one; the download that would
    fill the folder fails (no mirror holds the file), as it does offline."""
    import torch
    from torch import nn

    model = tmp_path / "small.pt"
    torch.jit.script(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                   nn.Linear(4, 2)).eval()).save(str(model))
    monkeypatch.setenv("MEDART_MEDMNIST_URL", (tmp_path / "no-mirror").as_uri())
    typo = tmp_path / "dta"
    result = run(*[str(model) if arg == "MODEL" else arg for arg in command], "--data-dir", str(typo))
    assert_one_line_error(result, str(typo))
    line = next(line for line in result.output.splitlines() if line.startswith("Error:"))
    assert f"there is no folder {typo}" in line or f"{typo} is not a folder; point --data-dir" in line, line
    assert not typo.exists()
    statuses = {r.info.status for r in mlflow.search_runs(search_all_experiments=True, output_format="list")}
    assert statuses <= {"FAILED"}, statuses  # nothing a later run could take for a result


def test_request_fields_and_cli_defaults_agree():
    """Defaults live in one place: an option that fills a request field has the field's default."""
    import dataclasses

    from medart.cli import options as cli_options

    from medart.models.training import TrainConfig
    from medart.stages import DataSpec, ModelRequest, RunOptions
    from medart.stages.detect import DetectRequest

    requests = {"train": (DataSpec, ModelRequest, TrainConfig), "attack": (DataSpec, RunOptions),
                "detect": (DataSpec, RunOptions, DetectRequest), "adaptive": (DataSpec, RunOptions, DetectRequest),
                "sweep": (DataSpec, RunOptions)}
    for name, classes in requests.items():
        params = {p.name: p for p in main.commands[name].params}
        for cls in classes:
            for field in dataclasses.fields(cls):
                if field.name not in params or field.default is dataclasses.MISSING:
                    continue
                param = params[field.name]
                default = param.to_info_dict()["default"]
                if cls is RunOptions and (field.name == "executor" or (field.name == "batch_size" and name == "train")):
                    continue  # --executor names the executor the command makes; train's --batch-size is TrainConfig's
                if isinstance(field.default, tuple) or field.name == "size":
                    continue  # given as text on the command line
                if isinstance(param.type, (cli_options.Eps, cli_options.EpsList)):
                    default = param.type.convert(default, param, None)  # ε as the command line reads it
                assert default == field.default, (name, cls.__name__, field.name, default, field.default)
    # the adaptive budget, a group of DetectRequest, is filled from the adaptive_* options
    from medart.stages.adaptive import AdaptiveBudget

    options, budget = {p.name: p.to_info_dict()["default"] for p in main.commands["adaptive"].params}, AdaptiveBudget()
    assert (options["adaptive_steps"], options["adaptive_restarts"]) == (budget.steps, budget.restarts)
    assert tuple(float(w) for w in options["adaptive_weights"].split(",")) == budget.weights
