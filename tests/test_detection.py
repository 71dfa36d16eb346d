"""The detection stage: pairs of correctly classified images, splits, settings checked before any
attack, MLflow runs, transfer, the CLI."""

from __future__ import annotations

import re

import mlflow
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch.utils.data import TensorDataset

from medart.attacks import cache
from medart.cli import main
from medart.detectors.pairs import Pairs
from medart.errors import ConfigError
from medart.intervals import Estimate
from medart.models.evaluation import predict
from medart.models.resnet import build_model
from medart.stages.adaptive import AdaptiveBudget
from medart.stages.detect import DetectRequest, detect, parse_detector_params, resplit
from medart.stages.target import DataSpec, RunOptions, Target

pytestmark = pytest.mark.filterwarnings("ignore:.*official MedMNIST MD5")


def _pairs(n: int, offset: int = 0) -> Pairs:
    x = torch.arange(offset, offset + n, dtype=torch.float32).reshape(n, 1, 1, 1).expand(n, 3, 2, 2).clone()
    return Pairs(x, x + 0.5, np.arange(n) % 2)


def test_resplit_keeps_pairs_together_and_sizes():
    fit, test = _pairs(40), _pairs(10, offset=40)
    assert resplit(fit, test, 0, seed=0) == (fit, test)
    a, b = resplit(fit, test, 1, seed=0)
    c, _ = resplit(fit, test, 2, seed=0)
    assert (len(a), len(b)) == (40, 10)
    for part in (a, b):
        assert torch.equal(part.adversarial, part.clean + 0.5)  # a clean image and its adversarial: same side
        assert np.array_equal(part.labels, part.clean[:, 0, 0, 0].long().numpy() % 2)
    ids = lambda p: set(p.clean[:, 0, 0, 0].long().tolist())  # noqa: E731
    assert ids(a) | ids(b) == set(range(50)) and not ids(a) & ids(b)
    assert ids(a) != ids(c)  # each repeat draws anew
    assert np.bincount(b.labels).tolist() == [5, 5]  # stratified by class


def test_detector_params_are_parsed_and_checked():
    got = parse_detector_params(["lid.k=10", "lid.layers=input,layer4", "kd.bandwidth=auto", "lid.noise=none",
                                 "qfeat.C=0.5"], ["kd", "lid", "qfeat"])
    assert got == {"lid": {"k": 10, "layers": ["input", "layer4"], "noise": None}, "kd": {"bandwidth": "auto"},
                   "qfeat": {"C": 0.5}}
    with pytest.raises(ConfigError, match="not DETECTOR.NAME=VALUE"):
        parse_detector_params(["k=10"], ["lid"])
    with pytest.raises(ConfigError, match="detector 'kd', which is not among lid"):
        parse_detector_params(["kd.bandwidth=1"], ["lid"])


def test_settings_errors_come_before_any_attack_runs(tracking_store, shared_data):
    data = DataSpec("pneumonia", shared_data)
    splits = data.load(28)
    model = build_model(2, "smallcnn", "none", classes=splits.classes, image_size=28).eval()
    target = Target("untrained", model, data, splits, max_examples=20, reference_size=40)
    with pytest.raises(ConfigError, match=re.escape("must be in (0, 1]")):  # ε is checked as the request is made
        DetectRequest(attacks=("pgd",), eps=2.0)
    for request, target_, message in (
        (DetectRequest(detectors=("kd", "magnet")), target, "unknown detector 'magnet'"),
        (DetectRequest(detectors=("kd",), params={"lid": {"k": 5}}), target, "detector 'lid', which is not among kd"),
        (DetectRequest(repeats=0), target, "`repeats` must be >= 1"),
        (DetectRequest(), Target("untrained", model, data, splits), "`reference_size` must be >= 1"),
        (DetectRequest(attacks=()), target, "`attacks` is empty"),
        (DetectRequest(attacks=("fgsm",), steps=5), target, "FGSM is a single step"),
        (DetectRequest(detectors=("lid",), params={"lid": {"k": 200}}), target, "must be larger than k (200)"),
        (DetectRequest(detectors=("lid",)), target,
         "lid reference_size 100 exceeds the 40 clean reference images; raise `reference_size`"),
        (DetectRequest(detectors=("kd",), params={"kd": {"bandwith": 1}}), target, "bad parameter for detector 'kd'"),
        (DetectRequest(detectors=("art_binary",), adaptive=True), target, "`adaptive` attacks the kd, lid, mahalanobis, bu"),
        (DetectRequest(attacks=("fgsm",), adaptive=True, budget=AdaptiveBudget(steps=5)), target, "FGSM is a single step"),
        (DetectRequest(attacks=("apgd-ce",), detectors=("kd",), adaptive=True), target, "use fgsm, bim, pgd or cw"),
    ):
        with pytest.raises(ConfigError, match=re.escape(message)):
            detect(target_, request, RunOptions(progress=False))
    assert mlflow.search_runs(search_all_experiments=True, output_format="list") == []  # no attack, no detect run


@pytest.fixture
def target(registered, shared_data) -> Target:
    return Target.load(registered, DataSpec("pneumonia", shared_data), max_examples=40, reference_size=64)


def test_detect_logs_table_4_and_5_from_correctly_classified_pairs(target, caplog):
    import logging

    params = {"lid": {"k": 10, "reference_size": 32, "layers": ["input", "layer2", "dfeat"]}, "dfeat": {"n_estimators": 20}}
    run = RunOptions(progress=False)
    with caplog.at_level(logging.WARNING, logger="medart"):
        out = detect(target, DetectRequest(("fgsm", "pgd"), 8 / 255, ("kd", "lid", "dfeat", "qfeat"), params), run)
    # under 30 AdvTest pairs: one logged line per attack, said once however many detectors
    few = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Warning: fewer than 30 AdvTest pairs")]
    assert len(few) == 2 and "FGSM at ε = 8/255" in few[0] and "\n" not in few[0]
    # only the images the model classifies correctly become pairs
    client = mlflow.MlflowClient()
    for part, key in (("adv_train", "fit"), ("adv_test", "test")):
        x, y = target.clean[part]
        correct = int((predict(target.model, TensorDataset(x, y))[0].argmax(1) == y.numpy()).sum())
        assert out.counts["fgsm"][key] == out.counts["pgd"][key] == correct
    assert client.get_run(out.attack_runs["fgsm"]).data.params["attack.name"] == "fgsm"

    parent = client.get_run(out.run_id)
    assert parent.info.status == "FINISHED" and parent.data.params["detectors"] == "kd,lid,dfeat,qfeat"
    assert parent.data.params["reference_size"] == "64" and parent.data.params["max_examples"] == "40"
    children = mlflow.search_runs(experiment_names=["medart/pneumonia/detect"], output_format="list",
                                  filter_string=f"tags.mlflow.parentRunId = '{out.run_id}'")
    assert sorted(r.info.run_name for r in children) == ["detect-fgsm-eps8/255-art", "detect-pgd-eps8/255-art"]
    assert parent.info.run_name == "detect-eps8/255-art"
    child = client.get_run(out.child_runs["pgd"])
    assert child.data.params["lid.k"] == "10" and child.data.params["lid.layers"] == "input,layer2,dfeat"
    assert child.data.tags["medart.attack_run"] == out.attack_runs["pgd"]
    for name in ("kd", "lid", "dfeat", "qfeat"):
        assert child.data.metrics[f"auc_{name}"] == pytest.approx(out.auc["pgd"][name])
        assert 0.0 <= out.auc["pgd"][name] <= 1.0
        # its 95 % DeLong interval over the AdvTest pairs, logged beside it
        interval = out.intervals["pgd"][name]
        assert interval.value == out.auc["pgd"][name] and interval.n == out.counts["pgd"]["test"]
        assert child.data.metrics[f"auc_{name}_n"] == interval.n
        assert child.data.metrics[f"auc_{name}_ci_low"] == interval.low <= interval.value <= interval.high
        assert parent.data.metrics[f"pgd.auc_{name}_ci_high"] == interval.high
        for a in ("fgsm", "pgd"):  # the transfer diagonal is the per-attack AUC (one split)
            assert out.transfer[name][a][a].value == pytest.approx(out.auc[a][name])
    paths = {a.path for a in client.list_artifacts(out.run_id)} | {a.path for a in client.list_artifacts(out.run_id, "figures")}
    assert {"detection_auc.md", "detection_auc.json", "transfer.md", "transfer.json", "figures/detection_auc.png",
            "figures/transfer.png"} <= paths
    assert "figures/roc.png" in {a.path for a in client.list_artifacts(out.child_runs["fgsm"], "figures")}
    table = mlflow.artifacts.load_text(f"runs:/{out.run_id}/detection_auc.md")
    pairs = out.counts["fgsm"]["test"]
    assert table.splitlines()[0] == (f"| AUC (%) by detector | FGSM (n = {pairs}) | PGD (n = {pairs}) | clean acc (%) | "
                                     "clean balanced acc (%) |")
    assert "| QFEAT |" in table and f"{out.intervals['fgsm']['qfeat'].low * 100:.1f}" in table
    assert f"Warning: fewer than 30 AdvTest pairs (FGSM: {pairs}, PGD: {pairs})" in table  # 40 images: a handful of pairs
    # the degenerate-model guard: checked once on the attacked images, recorded on every run
    check = target.model_check()
    assert out.check == check and f"| {check.balanced_acc * 100:.1f} [" in table.splitlines()[2]
    for run_id in (out.run_id, out.child_runs["fgsm"], out.attack_runs["pgd"]):
        logged = client.get_run(run_id).data
        assert logged.tags["medart.degenerate"] == str(check.degenerate).lower()
        assert logged.metrics["guard.clean_balanced_acc"] == check.balanced_acc

    # a second study on the same target reuses the attack runs' examples and, with repeats, reports mean ± std
    again = detect(target, DetectRequest(("pgd",), 8 / 255, ("dfeat",), {"dfeat": {"n_estimators": 20}}, repeats=3), run)
    assert client.get_run(again.attack_runs["pgd"]).data.tags["medart.cached_from"] == out.attack_runs["pgd"]
    values = mlflow.artifacts.load_dict(f"runs:/{again.child_runs['pgd']}/repeats/dfeat.json")["auc"]
    assert len(values) == 3 and values[0] == pytest.approx(out.auc["pgd"]["dfeat"])  # split 0 = AdvTrain/AdvTest
    metrics = client.get_run(again.child_runs["pgd"]).data.metrics
    assert metrics["auc_dfeat"] == pytest.approx(np.mean(values)) and metrics["auc_dfeat_std"] == pytest.approx(np.std(values))
    assert again.auc_std["pgd"]["dfeat"] == pytest.approx(np.std(values))
    assert again.transfer == {}  # one attack: nothing to transfer to


def test_adaptive_detect_logs_a_child_run_per_attackable_detector(target):
    run = RunOptions(progress=False)
    params = {"dfeat": {"n_estimators": 10}, "lid": {"reference": "batch", "k": 2, "reference_size": 4, "layers": ["dfeat"]}}
    with pytest.warns(UserWarning, match="adaptive: lid is left out: an adaptive attack needs LID with reference='train'"):
        out = detect(target, DetectRequest(("bim",), 8 / 255, ("kd", "mahalanobis", "dfeat", "lid"), params, transfer=False,
                                           steps=5, adaptive=True, budget=AdaptiveBudget(steps=4, restarts=2)), run)
    aware = [r.detector for r in out.adaptive if r.adaptive == "detector-aware"]
    # dfeat through its surrogate; lid with batch references has no fixed function to attack and is left out
    assert aware == ["kd", "mahalanobis", "dfeat"] and all(r.attack == "bim" for r in out.adaptive)
    assert "reference='train'" in mlflow.MlflowClient().get_run(out.run_id).data.tags["medart.adaptive_skipped.lid"]
    # feature matching needs no detector: every detector scores its examples
    assert [r.detector for r in out.adaptive if r.adaptive == "feature-match"] == ["kd", "mahalanobis", "dfeat", "lid"]
    client = mlflow.MlflowClient()
    for row in out.adaptive:
        assert row.auc.value == pytest.approx(out.auc["bim"][row.detector])  # the plain examples, one split: Table 4's AUC
        assert row.auc == out.intervals["bim"][row.detector]  # and its interval
        assert 0 <= row.undetected.value <= row.success.value <= 1
        assert 0 <= row.undetected_adaptive.value <= row.success_adaptive.value <= 1
        # the rates' n are the AdvTest pairs, the images the model classified correctly
        assert row.success.n == row.undetected_adaptive.n == row.auc_adaptive.n == out.counts["bim"]["test"]
        child = client.get_run(row.run_id)
        prefix = "adaptive" if row.adaptive == "detector-aware" else "feature-match"
        assert child.info.run_name == f"{prefix}-{row.detector}-bim-eps8/255-art"
        assert child.data.tags["mlflow.parentRunId"] == out.run_id
        assert child.data.metrics["auc_adaptive"] == pytest.approx(row.auc_adaptive.value)
        assert child.data.metrics["undetected_adaptive_ci_high"] == row.undetected_adaptive.high
        params = child.data.params
        assert (params["adaptive.steps"], params["adaptive.restarts"], params["attack.steps"]) == ("4", "2", "5")
        assert params["adaptive.attack"] == row.adaptive
        # its examples, stored as the attack stage stores its own (tests/test_stored_examples.py reads them back)
        assert [a.path for a in client.list_artifacts(row.run_id, "adversarial")] == ["adversarial/adv_test.npz"]
    matched = [r for r in out.adaptive if r.adaptive == "feature-match"]
    assert len({r.success_adaptive for r in matched}) == 1  # the same examples for every detector
    stored = [cache.read(r.run_id, "adv_test") for r in matched]
    assert all(np.array_equal(s["x_adv"], stored[0]["x_adv"]) for s in stored)
    assert np.isin(stored[0]["indices"], target.indices["adv_test"]).all()  # the attacked AdvTest images it kept as pairs
    table = mlflow.artifacts.load_text(f"runs:/{out.run_id}/adaptive.md")
    pairs = out.counts["bim"]["test"]
    assert f"| KD | BIM | 8/255 | detector-aware | {pairs} |" in table and f"| DFEAT | BIM | 8/255 | feature-match | {pairs} |" in table
    artifacts = {f.path for f in client.list_artifacts(out.run_id, "figures")}
    assert "figures/adaptive.png" in artifacts
    parent = client.get_run(out.run_id).data.metrics
    assert parent["bim.feature-match.undetected_adaptive_dfeat"] == matched[2].undetected_adaptive.value
    assert parent["bim.feature-match.undetected_adaptive_dfeat_n"] == pairs


def _detect_run(output: str) -> mlflow.entities.Run:
    return mlflow.MlflowClient().get_run(re.search(r"detect run ([0-9a-f]+)", output)[1])


@pytest.mark.slow
def test_cli_detect_and_its_errors(registered, shared_data):
    runner = CliRunner()
    base = ["detect", "--model-uri", registered, "--dataset", "pneumonia", "--data-dir", str(shared_data),
            "--max-examples", "30", "--reference-size", "40", "--no-progress"]
    ok = runner.invoke(main, [*base, "--attacks", "fgsm,bim", "--eps", "4/255", "--detectors", "dfeat,mahalanobis",
                              "--param", "dfeat.n_estimators=10"])
    assert ok.exit_code == 0, ok.output
    assert "| DFEAT |" in ok.output and "| MAHALANOBIS |" in ok.output and "fitted on" in ok.output
    # the printed tables: the AdvTest pairs in the header, the intervals' method and the few-pairs warning under them
    assert "| AUC (%) by detector | FGSM (n = " in ok.output and "over the n AdvTest pairs." in ok.output
    assert ok.output.count("Warning: fewer than 30 AdvTest pairs") == 4  # logged once per attack, then under Tables 4 and 5
    assert "Warning: fewer than 30 AdvTest pairs (FGSM at ε = 4/255: " in ok.output
    assert _detect_run(ok.output).data.tags["medart.attack_run.bim"]

    # --steps and --step-size reach the attacks: the attack run logs them
    stepped = runner.invoke(main, [*base, "--attacks", "pgd", "--eps", "4/255", "--steps", "5", "--step-size", "1/255",
                                   "--detectors", "dfeat", "--param", "dfeat.n_estimators=10"])
    assert stepped.exit_code == 0, stepped.output
    attack_run = mlflow.MlflowClient().get_run(_detect_run(stepped.output).data.tags["medart.attack_run.pgd"])
    assert attack_run.data.params["attack.steps"] == "5"
    assert attack_run.data.params["attack.step_size"] == "1/255"  # ε params as k/255, the float beside it
    assert float(attack_run.data.params["attack.step_size_value"]) == pytest.approx(1 / 255)

    for args, fragment in (
        (["--detectors", "kd,magnet"], "unknown detector 'magnet'"),
        (["--detectors", "lid", "--param", "lid.k=200"], "LID reference batch (100) must be larger than k (200)"),
        (["--detectors", "lid"], "lid reference_size 100 exceeds the 40 clean reference images; raise --reference-size"),
        (["--detectors", "kd", "--param", "kd.bandwith=1"], "bad parameter for detector 'kd'"),
        (["--detectors", "kd", "--repeats", "0"], "Invalid value for '--repeats'"),
        (["--eps", "2"], "must be in (0, 1]"),
    ):
        bad = runner.invoke(main, [*base, *args])
        assert bad.exit_code == 2 and "Traceback" not in bad.output and fragment in bad.output, bad.output


def test_a_degenerate_fit_is_reported_as_such_never_as_an_auc(target, tmp_path, caplog):
    """KD at σ = 1e10: every log density rounds to log 1 = 0, one feature value for every input, and
    the regression puts weight 0 on it. Its AUC is NaN on every run and in every table (the
    pipeline's summary, Tables 4 and 5, the report), shown as "degenerate", with a warning and a
    tag; DFeat beside it is measured as usual."""
    import logging

    from medart.numbers import auc_ci
    from medart.stages import pipeline
    from medart.stages.report import report_run

    request = DetectRequest(("fgsm", "pgd"), 1 / 255, ("kd", "dfeat"), {"kd": {"bandwidth": 1e10}, "dfeat": {"n_estimators": 10}})
    with caplog.at_level(logging.WARNING, logger="medart"):
        out = pipeline(target.data, request, target.model_uri, max_examples=40, reference_size=64,
                       run=RunOptions(progress=False)).detection
    fits = [r.getMessage() for r in caplog.records if r.getMessage().startswith("warning: degenerate fit of KD on ")]
    assert len(fits) == 2 and "its LogisticRegression's coefficients are all 0" in fits[0] and "\n" not in fits[0]
    assert all(np.isnan(out.auc[a]["kd"]) and 0 <= out.auc[a]["dfeat"] <= 1 for a in ("fgsm", "pgd"))
    client = mlflow.MlflowClient()
    child = client.get_run(out.child_runs["pgd"]).data
    assert child.tags["medart.degenerate_fit.kd"].startswith("its LogisticRegression's coefficients are all 0 (w = [0.0])")
    assert "medart.degenerate_fit.dfeat" not in child.tags
    assert np.isnan(child.metrics["auc_kd"]) and np.isnan(child.metrics["detect_acc_kd"]) and child.metrics["auc_dfeat"] >= 0
    assert np.isnan(client.get_run(out.run_id).data.metrics["pgd.auc_kd"])
    assert all(np.isnan(v.value) and np.isnan(v.low) for v in out.transfer["kd"]["fgsm"].values())
    assert np.isnan(child.metrics["auc_kd_ci_low"]) and child.metrics["auc_kd_n"] == out.counts["pgd"]["test"]

    main_run = client.get_run(out.run_id).data.tags["mlflow.parentRunId"]
    texts = {name: mlflow.artifacts.load_text(f"runs:/{run_id}/{name}") for run_id, name in
             ((main_run, "summary.md"), (out.run_id, "detection_auc.md"), (out.run_id, "transfer.md"))}
    assert texts["summary.md"].splitlines()[2].endswith(f"| degenerate | {auc_ci(out.intervals['fgsm']['dfeat'])} |")
    assert texts["detection_auc.md"].splitlines()[2].startswith("| KD | degenerate | degenerate |")
    assert "| FGSM | degenerate | degenerate |" in texts["transfer.md"]
    page = report_run(main_run, tmp_path / "report.html", log=False).read_text()
    assert "<td>KD</td><td>PGD</td><td>degenerate</td>" in page and '<td class="num">degenerate</td>' in page
    words = re.sub(r"base64,[A-Za-z0-9+/=]+", "", page)  # the figures' bytes spell anything
    assert not any(re.search(r"\bnan\b", text, re.IGNORECASE) for text in (*texts.values(), words))


def test_a_nan_auc_renders_as_degenerate_everywhere():
    """Every table and figure that shows a detection AUC reads NaN (a degenerate fit) as
    "degenerate", never as "nan" or a number; a model's NaN AUC (one class in the labels) is no fit's."""
    from medart.render.detection import adaptive_table, auc_figure, auc_table, roc_figure, transfer_figure, transfer_table
    from medart.render.report import metric_rows
    from medart.stages.adaptive import AdaptiveRow

    nan = float("nan")
    none = Estimate(nan, nan, nan, 40)
    auc = {"fgsm": {"kd": nan, "dfeat": 0.9}, "pgd": {"kd": nan, "dfeat": 0.95}}
    intervals = {"fgsm": {"kd": none, "dfeat": Estimate(0.88, 0.8, 0.96, 40)},
                 "pgd": {"kd": none, "dfeat": Estimate(0.95, 0.9, 1.0, 40)}}
    table = auc_table(intervals, auc, {"fgsm": {"kd": nan, "dfeat": 0.01}, "pgd": {"kd": nan, "dfeat": 0.02}}).splitlines()
    assert table[2] == "| KD | degenerate | degenerate |"
    assert table[3] == "| DFEAT | 90.0 ± 1.0; split 0: 88.0 [80.0, 96.0] | 95.0 ± 2.0; split 0: 95.0 [90.0, 100.0] |"
    transfer = {"kd": {"fgsm": {"fgsm": none, "pgd": none}, "pgd": {"fgsm": none, "pgd": none}}}
    assert "| FGSM | degenerate | degenerate |" in transfer_table(transfer)
    one = Estimate(1.0, 0.9, 1.0, 40)
    row = AdaptiveRow("kd", "bim", 8 / 255, none, none, one, one, none, none, 1.0, "run")
    assert "| KD | BIM | 8/255 | detector-aware | 40 | degenerate | degenerate | 100.0 [90.0, 100.0] | 100.0 [90.0, 100.0] | " \
        "degenerate | degenerate |" in adaptive_table([row])
    for figure in (auc_figure(auc, "t"), transfer_figure({"kd": {"fgsm": {"fgsm": nan}}}, "t"),
                   roc_figure({"kd": (np.array([0.0, 1.0]), np.array([0.0, 1.0]), nan)}, "t")):
        texts = [t.get_text() for ax in figure.axes for t in ax.texts] + [
            t.get_text() for ax in figure.axes if ax.get_legend() for t in ax.get_legend().get_texts()]
        assert any("degenerate" in t for t in texts) and not any("nan" in t.lower() for t in texts)
    rows = dict(metric_rows({"auc_kd": nan, "pgd.auc_kd": nan, "clean_auc": nan, "auc_dfeat": 0.9}
                            | none.metrics("auc_kd") | Estimate(0.6, 0.45, 0.75, 12).metrics("auc_lid")))
    assert rows == {"auc_kd (%)": "degenerate", "pgd.auc_kd (%)": "degenerate", "clean_auc (%)": "—", "auc_dfeat (%)": "90.00",
                    "auc_lid (%)": "60.00 [45.00, 75.00] † (n = 12)"}  # the interval's three metrics fold into its row
