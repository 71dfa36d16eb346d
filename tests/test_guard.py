"""The degenerate-model guard: its thresholds, the tag and one-line warning in a run, and the clean
and balanced accuracy the tables and report print beside attack and detection numbers."""

from __future__ import annotations

import logging

import mlflow
import numpy as np
import pytest
import torch
from torch import nn

from medart.data import subsample
from medart.intervals import Estimate, wilson
from medart.models.sanity import CHANCE_MARGIN, CONSTANT_SHARE, check_predictions
from medart.models.training import TrainConfig, fit
from medart.numbers import CHANCE_LEGEND
from medart.render.detection import auc_table, summary_table, transfer_table
from medart.render.report import RunView, degenerate_banner, paper_comparison
from medart.render.sweep import sweep_table
from medart.stages import DataSpec, Target
from medart.stages.guard import guard
from medart.stages.sweep import SweepRow

pytestmark = pytest.mark.filterwarnings("ignore:.*official MedMNIST MD5")

CLASSES = ["normal", "pneumonia"]


def predictions(labels: np.ndarray, right: dict[int, int]) -> np.ndarray:
    """``labels`` with all but ``right[c]`` images of each class ``c`` answered as the other class."""
    out = labels.copy()
    for c, n in right.items():
        out[np.flatnonzero(labels == c)[n:]] = 1 - c
    return out


def test_thresholds():
    assert CHANCE_MARGIN == 0.10 and CONSTANT_SHARE == 0.95
    half = np.r_[np.zeros(20, np.int64), np.ones(20, np.int64)]
    constant = check_predictions(np.ones(40, np.int64), half, CLASSES)
    assert constant.degenerate and constant.balanced_acc == 0.5 and constant.top_share == 1.0
    assert "within 10 points of chance" in constant.reason and "answers 'pneumonia' for 100.0 %" in constant.reason
    near_chance = check_predictions(predictions(half, {0: 11, 1: 11}), half, CLASSES)  # balanced accuracy 0.55
    assert near_chance.degenerate and near_chance.top_share == 0.5
    assert not check_predictions(predictions(half, {0: 14, 1: 14}), half, CLASSES).degenerate  # 0.70
    # one answer for 97 of 100 images, 90 of which are that class: its balanced accuracy (0.65) passes
    lopsided = np.r_[np.ones(90, np.int64), np.zeros(10, np.int64)]
    mostly = check_predictions(predictions(lopsided, {1: 90, 0: 3}), lopsided, CLASSES)
    assert mostly.degenerate and mostly.reason.startswith("it answers 'pneumonia' for 97.0 %")
    # … while labels that lopsided excuse it when the rare class is still found
    lopsided = np.r_[np.ones(97, np.int64), np.zeros(3, np.int64)]
    assert not check_predictions(predictions(lopsided, {1: 97, 0: 2}), lopsided, CLASSES).degenerate


class Constant(nn.Module):
    """A model that learnt nothing: the same logits whatever the image (a one-epoch model at its worst)."""

    def __init__(self) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.tensor([-1.0, 1.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(len(x), 2)


class Linear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3 * 28 * 28, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


def test_guard_fires_on_a_constant_model_and_stays_quiet_on_a_trained_one(tracking_store, shared_data, caplog):
    data = DataSpec("pneumonia", shared_data)
    splits = data.load()
    torch.manual_seed(0)
    trained = Linear()
    fit(trained, subsample(splits.train, 400, 0), subsample(splits.val, 100, 0),
        TrainConfig(epochs=5, batch_size=32, augment=False), progress=False)
    for model, degenerate in ((Constant(), True), (trained, False)):
        target = Target("test", model, data, splits, max_examples=60)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="medart"):
            # two stages on one target: one check, both runs tagged and each saying so; a child
            # run is tagged too, its parent's warning covering it
            for _ in range(2):
                with mlflow.start_run() as run:
                    check = guard(target)
                    with mlflow.start_run(nested=True) as child:
                        assert guard(target) is check
                for logged in (mlflow.get_run(r.info.run_id).data for r in (run, child)):
                    assert logged.tags["medart.degenerate"] == str(degenerate).lower()
                    assert logged.metrics["guard.clean_balanced_acc"] == check.balanced_acc
                    assert logged.metrics["guard.clean_acc"] == check.acc
        warnings = [r.getMessage() for r in caplog.records]
        if degenerate:
            assert check.balanced_acc == 0.5 and check.top_share == 1.0 and "medart.degenerate_reason" in logged.tags
            assert len(warnings) == 2 and warnings[0] == warnings[1]
            assert "\n" not in warnings[0] and warnings[0].startswith("warning: degenerate model (")
        else:
            assert check.balanced_acc > 0.5 + CHANCE_MARGIN and warnings == []


def test_tables_and_report_print_clean_and_balanced_accuracy_beside_the_numbers():
    half = np.r_[np.zeros(20, np.int64), np.ones(20, np.int64)]
    constant = check_predictions(np.ones(40, np.int64), half, CLASSES)
    kd = {"fgsm": {"kd": Estimate(0.99, 0.9, 1.0, 40)}, "pgd": {"kd": Estimate(0.6, 0.4, 0.78, 40)}}
    table = auc_table(kd, clean=constant).splitlines()
    assert table[0] == "| AUC (%) by detector | FGSM (n = 40) | PGD (n = 40) | clean acc (%) | clean balanced acc (%) |"
    # the clean numbers with their Wilson (accuracy) and MOVER (balanced accuracy) intervals over the 40 images
    assert table[2] == "| KD | 99.0 [90.0, 100.0] | 60.0 [40.0, 78.0] † | 50.0 [35.2, 64.8] | 50.0 [41.9, 58.1] |"
    assert CHANCE_LEGEND in table and "DEGENERATE MODEL: balanced accuracy" in table[-1]
    assert not any(line.startswith("Warning: fewer than") for line in table)  # 40 pairs: no warning
    assert transfer_table({"kd": {"fgsm": {"fgsm": Estimate(0.9, 0.8, 0.95, 40)}}}, constant).splitlines()[-1] == constant.note()
    measured = {"fgsm": {"n": 40, "clean_acc": 0.5, "clean_balanced_acc": 0.5, "adv_acc": 0.0, "success_rate": 1.0}
                | wilson(20, 40).metrics("clean_acc") | wilson(20, 20).metrics("success_rate")}
    nan = float("nan")
    pairs = {"fgsm": {"kd": Estimate(0.99, 0.9, 1.0, 20), "dfeat": Estimate(nan, nan, nan, 20)}}
    summary = summary_table(measured, pairs, ("kd", "dfeat"), constant).splitlines()
    assert summary[0] == ("| attack | images | clean acc (%) | clean balanced acc (%) | adversarial acc (%) | success rate (%) | "
                          "AdvTest pairs | AUC KD (%) | AUC DFEAT (%) |")
    # a number logged without an interval (clean_balanced_acc, adv_acc here) is shown alone, never with a made-up one
    assert summary[2] == "| FGSM | 40 | 50.0 [35.2, 64.8] | 50.0 | 0.0 | 100.0 [83.9, 100.0] of 20 | 20 | 99.0 [90.0, 100.0] | degenerate |"
    assert "Warning: fewer than 30 AdvTest pairs (FGSM: 20)" in summary[5] and summary[-1] == constant.note()
    rows = [SweepRow("fgsm", 1 / 255, "run", False, 40, 0.5, 0.61, 0.0, 0.02, 1.0, 1 / 255, {}, 0.5)]
    table = sweep_table(rows, clean=constant).splitlines()
    assert table[0].endswith("| clean acc / balanced acc (%) |") and table[3] == "| FGSM | 0.0 / 2.0 | 50.0 / 50.0 |"
    # the report: a warning at the top, and clean / balanced accuracy beside each attack and detection number
    tags = constant.tags()
    attack = RunView("a", "bim", "FINISHED", 0, {"attack.name": "bim", "attack.eps": str(1 / 255)},
                     {"adv_acc": 0.0, "clean_acc": 0.5, "clean_auc": 0.6, "clean_balanced_acc": 0.5, "n": 40.0}
                     | wilson(0, 40).metrics("adv_acc"), tags)
    detect = RunView("d", "detect", "FINISHED", 1, dict(attack.params), {"auc_kd": 0.99} | constant.metrics(), tags)
    page = paper_comparison("pneumonia", [attack, detect])
    assert "<th>clean balanced acc (%)</th>" in page
    # nothing the paper printed (an attack at 8/255, a training run): no paper section at all
    far = RunView("f", "bim", "FINISHED", 0, {"attack.name": "bim", "attack.eps": str(8 / 255)}, dict(attack.metrics), tags)
    assert paper_comparison("pneumonia", [far, RunView("t", "train", "FINISHED", 0, {"dataset": "pneumonia"}, {"test_acc": 0.9}, {})]) == ""
    # measured numbers with their interval where the run logged one, and their n
    assert "<td>BIM</td><td>1/255</td><td>0.0 [0.0, 8.8]</td><td>0.00</td><td></td><td>0.00</td><td>50.0</td><td>50.0</td><td>40</td>" in page
    assert "<td>KD</td><td>BIM</td><td>99.0</td><td>100.00</td><td>50.0 [35.2, 64.8]</td><td>50.0 [41.9, 58.1]</td>" in page
    assert "Degenerate model</b>: balanced accuracy 50.0 %" in degenerate_banner([attack, detect])
    assert degenerate_banner([RunView("q", "quiet", "FINISHED", 0, {}, {}, {"medart.degenerate": "false"})]) == ""


def _degenerate_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("warning: degenerate model (")]


def test_train_never_moves_the_alias_to_a_degenerate_model(tracking_store, shared_data):
    """A small CNN that learns (1 epoch at lr 0.1) becomes champion; one that cannot (lr 1e-6) is
    registered as version 2, tagged degenerate, said so on stderr and in the summary, and the alias
    stays on version 1 although its validation accuracy may be no lower."""
    from click.testing import CliRunner

    from medart.cli import main
    from medart.models import registry
    from medart.stages import ModelRequest, RunOptions, train

    request = ModelRequest(arch="smallcnn", pretrained="none", max_train=512, max_eval=32)
    good = train(DataSpec("pneumonia", shared_data), request, TrainConfig(epochs=1, batch_size=32, lr=0.1),
                 RunOptions(progress=False))
    assert not good.check.degenerate and good.promoted and good.check.n == 64
    common = ["--dataset", "pneumonia", "--data-dir", str(shared_data), "--arch", "smallcnn", "--pretrained", "none",
              "--max-train", "64", "--max-eval", "32", "--epochs", "1", "--no-progress"]
    done = CliRunner().invoke(main, ["train", *common, "--lr", "1e-6"])
    assert done.exit_code == 0, done.output
    assert len(_degenerate_lines(done.stderr)) == 1
    assert "DEGENERATE MODEL: balanced accuracy" in done.stdout
    assert "registered models:/medart-pneumonia/2 (alias 'champion' not moved: the model is degenerate)" in done.stdout
    client = mlflow.MlflowClient()
    assert str(client.get_model_version_by_alias("medart-pneumonia", "champion").version) == "1"
    assert client.get_model_version("medart-pneumonia", "2").tags["medart.degenerate"] == "true"
    assert client.get_model_version("medart-pneumonia", "1").tags["medart.degenerate"] == "false"
    run = mlflow.search_runs(search_all_experiments=True, output_format="list", max_results=1,
                             order_by=["attributes.start_time DESC"])[0]
    assert run.data.tags["medart.degenerate"] == "true" and run.data.tags["alias_promoted"] == "False"
    assert run.data.tags["medart.alias_withheld"] == "'champion' not moved to a degenerate model"
    assert run.data.metrics["guard.clean_balanced_acc"] == run.data.metrics["test_balanced_acc"] <= 0.5 + CHANCE_MARGIN
    # whatever the metric says, the degenerate version never takes it …
    assert not registry.promote_if_best("medart-pneumonia", "2", "champion", "val_acc", 2.0)
    # … and a sound version takes it from a degenerate holder even with a lower metric
    registry.tag_version("medart-pneumonia", "1", {"medart.degenerate": "true"})
    registry.tag_version("medart-pneumonia", "2", {"medart.degenerate": "false"})
    assert registry.promote_if_best("medart-pneumonia", "2", "champion", "val_acc", 0.0)
    assert str(client.get_model_version_by_alias("medart-pneumonia", "champion").version) == "2"


def test_attack_warns_on_every_run_cached_or_not(tracking_store, shared_data, caplog):
    """The warning once per run that is tagged, not once per loaded model: a second attack on the
    same target (its examples from the cache) says it again, and so does the command line."""
    from click.testing import CliRunner

    from medart.attacks import make_spec
    from medart.cli import main
    from medart.stages import ModelRequest, RunOptions, attack, train

    data = DataSpec("pneumonia", shared_data)
    # a small CNN that learnt nothing
    degenerate = train(data, ModelRequest(arch="smallcnn", pretrained="none", max_train=64, max_eval=16),
                       TrainConfig(epochs=1, batch_size=32, lr=1e-6), RunOptions(progress=False))
    assert degenerate.check.degenerate
    target = Target(degenerate.model_uri, degenerate.model, data, data.load(), max_examples=16)
    spec = make_spec("fgsm", 1 / 255)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="medart"):
        runs = [attack(target, spec, RunOptions(progress=False)) for _ in range(2)]
    assert [r.cached for r in runs] == [False, True]
    assert len([r for r in caplog.records if r.getMessage().startswith("warning: degenerate model (")]) == 2
    assert all(mlflow.get_run(r.run_id).data.tags["medart.degenerate"] == "true" for r in runs)

    # the command line, loading the model: one line per command, cached examples or not
    outputs = []
    for _ in range(2):
        done = CliRunner().invoke(main, ["attack", "--model-uri", degenerate.model_uri, "--dataset", "pneumonia",
                                         "--data-dir", str(shared_data), "--attack", "bim", "--eps", "1/255",
                                         "--max-examples", "16", "--no-progress"])
        assert done.exit_code == 0, done.output
        outputs.append(done)
    assert "examples from cache" not in outputs[0].stdout and "(examples from cache of run " in outputs[1].stdout
    assert [len(_degenerate_lines(o.stderr)) for o in outputs] == [1, 1]
