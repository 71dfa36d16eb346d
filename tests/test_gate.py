"""The registry gate: its grammar, its decisions on Wilson intervals, and `medart evaluate --gate`
moving (or not) the champion alias between a standard small CNN and its PGD-hardened copy,
trained on the real chest X-rays, with the decision on both evaluation runs and both versions."""

from __future__ import annotations

import json
import math
import shutil

import mlflow
import pytest
import torch
from click.testing import CliRunner

from medart import tracking
from medart.errors import ConfigError
from medart.gate import EXIT_REFUSED, Gate, Term
from medart.intervals import Estimate, wilson

pytestmark = pytest.mark.filterwarnings("ignore:.*official MedMNIST MD5")


def test_the_grammar_reads_floors_percentages_and_the_champions_numbers():
    gate = Gate.parse("clean>=0.85, pgd@2/255>=champion-ci,autoattack@1/255 >= 60%,CW@0.5/255>=champion")
    assert gate.terms == (Term("clean", None, floor=0.85), Term("pgd", 2 / 255, relative="champion-ci"),
                          Term("autoattack", 1 / 255, floor=0.6), Term("cw", 0.5 / 255, relative="champion"))
    assert [t.measure for t in gate.terms] == ["clean", "pgd@2/255", "autoattack@1/255", "cw@0.5/255"]
    assert gate.attacks() == [("pgd", 2 / 255), ("autoattack", 1 / 255), ("cw", 0.5 / 255)]
    assert Gate.parse(gate.text()) == gate


@pytest.mark.parametrize("text, fragment", [
    ("", "the gate is empty"),
    ("clean", "write METRIC>=BOUND"),
    ("clean>0.8", "write METRIC>=BOUND"),
    ("pgd@2/255>=", "write METRIC>=BOUND"),
    ("pgd>=0.5", "unknown gate metric 'pgd'"),
    ("pgdx@2/255>=0.5", "unknown gate metric 'pgdx@2/255'"),
    ("pgd@0>=0.5", "ε must be in (0, 1]"),
    ("pgd@2/255>=1.2", "not a fraction in [0, 1]"),
    ("pgd@2/255>=champion+ci", "one of champion, champion-ci"),
    ("clean>=0.8;pgd@2/255>=0.5", "cannot read"),
])
def test_a_gate_that_does_not_parse_is_one_line(text, fragment):
    with pytest.raises(ConfigError) as error:
        Gate.parse(text)
    assert fragment in str(error.value) and "\n" not in str(error.value)


def _measured(clean: tuple[int, int], pgd: tuple[int, int]) -> dict[str, Estimate]:
    return {"clean": wilson(*clean), "pgd@2/255": wilson(*pgd)}


def test_champion_ci_allows_the_champions_own_uncertainty_and_no_more():
    gate = Gate.parse("clean>=0.85,pgd@2/255>=champion-ci")
    champion = _measured((90, 100), (60, 100))  # PGD 60 %, Wilson [50.2, 69.1] %
    low = champion["pgd@2/255"].low
    assert 0.50 < low < 0.51
    within = gate.decide(champion, _measured((88, 100), (51, 100)))  # 9 points worse, inside the interval
    assert within.promote and within.reason.startswith("promoted: clean: challenger 88.0")
    assert [v.passed for v in within.verdicts] == [True, True] and within.verdicts[1].bound == low
    beyond = gate.decide(champion, _measured((88, 100), (50, 100)))  # below the interval's low end
    assert not beyond.promote and [v.passed for v in beyond.verdicts] == [True, False]
    assert beyond.reason == ("refused: pgd@2/255: challenger 50.0 [40.4, 59.6] % < 50.2 % (champion-ci; champion "
                             "60.0 [50.2, 69.1] %), n 100")
    floor = gate.decide(champion, _measured((84, 100), (70, 100)))  # more robust, but under the clean floor
    assert not floor.promote and floor.reason.startswith("refused: clean: challenger 84.0") and "pgd" not in floor.reason
    strict = Gate.parse("pgd@2/255>=champion").decide(champion, _measured((88, 100), (59, 100)))
    assert not strict.promote


def test_a_degenerate_or_unmeasured_challenger_is_refused():
    gate = Gate.parse("clean>=0.5")
    champion = _measured((90, 100), (60, 100))
    refused = gate.decide(champion, _measured((95, 100), (90, 100)), degenerate="balanced accuracy 50.0 % is chance")
    assert not refused.promote and refused.reason == "refused: the challenger is degenerate (balanced accuracy 50.0 % is chance)"
    nothing = gate.decide(champion, {"clean": Estimate(math.nan, math.nan, math.nan, 0), "pgd@2/255": wilson(1, 2)})
    assert not nothing.promote


# --- the gate in the registry: a standard small CNN and its PGD-hardened copy --------------------------------

EPS = "8/255"  # where 2 epochs of PGD training on 256 images separate the two clearly


@pytest.fixture(scope="module")
def two_versions(migrated_store, shared_data, tmp_path_factory):
    """A store template: version 1 a small CNN trained on 256 real chest X-rays (champion),
    version 2 its copy hardened by 2 epochs of PGD training at 8/255 (challenger)."""
    from medart.defences.training import HardenConfig
    from medart.models.training import TrainConfig
    from medart.stages import DataSpec, ModelRequest, RunOptions, Target, train
    from medart.stages.harden import HardenRequest, harden

    folder = tmp_path_factory.mktemp("gate-template")
    db = folder / "mlflow.db"
    shutil.copy(migrated_store, db)
    data = DataSpec("pneumonia", shared_data)
    quiet = RunOptions(progress=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same weights on any core count: on two threads 3 epochs learnt nothing
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.chdir(folder)
            patch.delenv("MLFLOW_TRACKING_URI", raising=False)
            tracking.configure(f"sqlite:///{db}")
            trained = train(data, ModelRequest(arch="smallcnn", pretrained="none", max_train=256, max_eval=64),
                            TrainConfig(epochs=3, batch_size=32, lr=0.05, augment=False), quiet)
            assert trained.promoted
            config = HardenConfig(trainer="pgd-at", eps=EPS, epochs=2, batch_size=32, augment=False)
            hardened = harden(Target.load(trained.model_uri, data), config, HardenRequest(max_train=256, max_eval=64), quiet)
            assert hardened.version == "2" and hardened.aliased
    finally:
        torch.set_num_threads(threads)
    return db


@pytest.fixture
def store(two_versions, tmp_path, monkeypatch) -> str:
    db = tmp_path / "mlflow.db"
    shutil.copy(two_versions, db)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = tracking.configure(f"sqlite:///{db}")
    yield uri
    while mlflow.active_run() is not None:
        mlflow.end_run("FAILED")


def _gate(shared_data, gate: str, *extra: str):
    from medart.cli import main

    return CliRunner().invoke(main, ["evaluate", "--dataset", "pneumonia", "--data-dir", str(shared_data), "--max-eval", "64",
                                     "--compare-with", "challenger", "--gate", gate, "--no-progress", *extra])


def _version(number: str):
    return mlflow.MlflowClient().get_model_version("medart-pneumonia", number)


def _gate_runs() -> dict[str, mlflow.entities.Run]:
    runs = mlflow.search_runs(experiment_names=["medart/pneumonia/evaluate"], output_format="list",
                              filter_string="attributes.run_name = 'evaluate-28px'")
    return {r.data.tags["medart.gate.role"]: r for r in runs}


@pytest.mark.slow  # the fixture's training (~25 s once a module) and two evaluations under PGD
def test_a_robust_challenger_takes_the_champion_alias(store, shared_data):
    done = _gate(shared_data, f"clean>=0.6,pgd@{EPS}>=champion-ci")
    assert done.exit_code == 0, done.output
    assert "PROMOTED: medart-pneumonia@champion -> version 2" in done.output
    client = mlflow.MlflowClient()
    assert str(client.get_model_version_by_alias("medart-pneumonia", "champion").version) == "2"
    runs = _gate_runs()
    assert set(runs) == {"champion", "challenger"} and all(r.info.status == "FINISHED" for r in runs.values())
    # the gate's attack ran alone (no --attacks): PGD at 8/255 on both models' same 64 images
    assert runs["challenger"].data.params["attacks"] == "pgd" and runs["challenger"].data.metrics["test_n"] == 64
    for role, run in runs.items():
        metrics, tags = run.data.metrics, run.data.tags
        assert tags["medart.gate.decision"] == "promoted" and tags["medart.gate"] == f"clean>=0.6,pgd@{EPS}>=champion-ci"
        expected = wilson(round(metrics["adv_acc.pgd.eps8"] * 64), 64)
        assert metrics["adv_acc.pgd.eps8_ci_low"] == pytest.approx(expected.low)
        assert metrics["adv_acc.pgd.eps8_ci_high"] == pytest.approx(expected.high) and metrics["test_acc_n"] == 64
        record = json.loads(mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/gate.json"))
        assert record["decision"] == "promoted" and record["champion"]["version"] == "1"
        assert record["challenger"]["accuracy"]["pgd@8/255"]["value"] == pytest.approx(
            runs["challenger"].data.metrics["adv_acc.pgd.eps8"])
    robust, fragile = runs["challenger"].data.metrics["adv_acc.pgd.eps8"], runs["champion"].data.metrics["adv_acc.pgd.eps8"]
    assert robust > runs["champion"].data.metrics["adv_acc.pgd.eps8_ci_high"] > fragile  # clearly, not by the interval
    for number, role, other in (("1", "champion", "2"), ("2", "challenger", "1")):
        tags = _version(number).tags
        assert tags["medart.gate.decision"] == "promoted" and tags["medart.gate.role"] == role
        assert tags["medart.gate.against"] == other and tags["medart.gate.run_id"] == runs[role].info.run_id
        assert tags["medart.gate.reason"].startswith("promoted: clean: challenger")


@pytest.mark.slow
def test_a_fragile_challenger_is_refused_with_exit_3(store, shared_data):
    client = mlflow.MlflowClient()
    client.set_registered_model_alias("medart-pneumonia", "champion", "2")  # the robust model is champion
    client.set_registered_model_alias("medart-pneumonia", "challenger", "1")  # the standard one challenges it
    done = _gate(shared_data, f"clean>=0.6,pgd@{EPS}>=champion-ci")
    assert done.exit_code == EXIT_REFUSED == 3, done.output
    assert "REFUSED: medart-pneumonia@champion stays on version 2; refused: pgd@8/255: challenger" in done.output
    assert "Traceback" not in done.output
    assert str(client.get_model_version_by_alias("medart-pneumonia", "champion").version) == "2"
    runs = _gate_runs()
    assert all(r.info.status == "FINISHED" and r.data.tags["medart.gate.decision"] == "refused" for r in runs.values())
    for number in ("1", "2"):
        tags = _version(number).tags
        assert tags["medart.gate.decision"] == "refused" and "pgd@8/255: challenger" in tags["medart.gate.reason"]
        assert "clean:" not in tags["medart.gate.reason"]  # the clean floor held


@pytest.mark.slow
def test_a_challenger_under_the_clean_floor_is_refused(store, shared_data):
    done = _gate(shared_data, "clean>=0.99", "--attacks", "fgsm", "--eps", "1/255")
    assert done.exit_code == 3, done.output
    client = mlflow.MlflowClient()
    assert str(client.get_model_version_by_alias("medart-pneumonia", "champion").version) == "1"
    assert _version("2").tags["medart.gate.reason"].startswith("refused: clean: challenger")
    assert _gate_runs()["challenger"].data.params["attacks"] == "fgsm"  # --attacks run beside the gate's (clean adds none)


@pytest.mark.slow
def test_a_gate_without_two_versions_of_one_model_is_one_line(store, shared_data):
    from medart.cli import main

    def evaluate(*args):
        return CliRunner().invoke(main, ["evaluate", "--dataset", "pneumonia", "--data-dir", str(shared_data),
                                         "--max-eval", "8", "--no-progress", *args])

    for args, fragment in ((["--gate", "clean>=0.5"], "give --compare-with"),
                           (["--model-uri", "models:/medart-pneumonia/1", "--compare-with", "models:/medart-pneumonia/2",
                             "--gate", "clean>=0.5"], "give --model-uri as models:/<name>@<alias>"),
                           (["--compare-with", "runs:/0123/model", "--gate", "clean>=0.5"], None),
                           (["--compare-with", "challenger", "--gate", "pgd@2/255>=1.5"], "not a fraction in [0, 1]")):
        result = evaluate(*args)
        assert result.exit_code == 2 and "Traceback" not in result.output, result.output
        errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
        assert len(errors) == 1 and (fragment is None or fragment in errors[0]), result.output
    assert mlflow.search_runs(experiment_names=["medart/pneumonia/evaluate"], output_format="list") == []
    assert str(mlflow.MlflowClient().get_model_version_by_alias("medart-pneumonia", "champion").version) == "1"


def test_a_compared_model_is_labelled_with_what_hardened_it(store):
    """The trade-off's defence column reads the registry: harden's tags on version 2, none on the
    standard version 1, a preprocessing defence after either, nothing outside the registry."""
    from medart.stages.compare import defence_label

    assert defence_label("models:/medart-pneumonia/2") == defence_label("models:/medart-pneumonia@challenger") == "pgd-at 8/255"
    assert defence_label("models:/medart-pneumonia/1") == "standard"
    assert defence_label("models:/medart-pneumonia/1 + jpeg:quality=75") == "standard + jpeg:quality=75"
    assert defence_label("models:/medart-pneumonia/9") == defence_label("runs:/0123/model") == ""

