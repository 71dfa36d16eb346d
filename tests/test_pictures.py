"""Pictures and the MLflow UI as a front page: each attack run's gallery, the detect run's ROC
figure, the report that shows them first, the descriptions runs open on and the report attached
to the run instead of written into the working directory."""

from __future__ import annotations

import io
import re
from pathlib import Path

import mlflow
import numpy as np
import pytest
from click.testing import CliRunner
from matplotlib.figure import Figure
from PIL import Image

from medart import tracking
from medart.attacks import make_spec
from medart.budget import Eps, eps_params
from medart.cli import main
from medart.data.splits import stratified_choice
from medart.render import gallery
from medart.render.detection import roc_panels
from medart.stages import DataSpec, RunOptions, Target, attack

pytestmark = pytest.mark.filterwarnings("ignore:.*official MedMNIST MD5")

CLASSES = ("normal", "pneumonia")


def _png(fig: Figure) -> bytes:
    out = io.BytesIO()
    fig.savefig(out, format="png")
    return out.getvalue()


def test_gallery_shows_each_image_clean_perturbed_and_adversarial_with_the_models_answers():
    rng = np.random.default_rng(0)
    x = rng.uniform(0.1, 0.9, (4, 3, 28, 28)).astype(np.float32)
    delta = rng.choice([-2 / 255, 2 / 255], x.shape).astype(np.float32)
    delta[3] = 0  # an image the attack left alone
    probs_clean = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.2, 0.8]])
    probs_adv = np.array([[0.2, 0.8], [0.55, 0.45], [0.3, 0.7], [0.2, 0.8]])
    fig = gallery.gallery_figure(x, x + delta, np.array([0, 0, 1, 1]), probs_clean, probs_adv, CLASSES, "BIM",
                                 ["AdvTest #3", "AdvTest #9", "AdvTest #1", "AdvTest #4"])
    axes = np.array(fig.axes).reshape(4, 3)  # a row per image: clean, perturbation, adversarial
    titles = [[ax.get_title() for ax in row] for row in axes]
    assert titles[0] == ["clean, true: normal\npredicted: normal 90.0 %", "perturbation ×64, ±2/255\nthis image's L∞: 2/255",
                         "adversarial (fooled)\npredicted: pneumonia 80.0 %"]
    assert titles[1][2] == "adversarial\npredicted: normal 55.0 %"  # not flipped: no "fooled"
    assert titles[2][0] == "clean, true: pneumonia\npredicted: pneumonia 70.0 %"
    assert titles[3][1].endswith("this image's L∞: 0/255") and axes[3, 0].get_ylabel() == "AdvTest #4"
    # the perturbation, amplified ×64 around mid-grey: ±2/255 reaches (nearly) black and white
    shown = axes[0, 1].get_images()[0].get_array()
    assert shown.shape == (28, 28, 3) and shown.min() == pytest.approx(0.0, abs=0.01) and shown.max() == pytest.approx(1.0, abs=0.01)
    assert np.all(axes[3, 1].get_images()[0].get_array() == 0.5)
    width, height = Image.open(io.BytesIO(_png(fig))).size
    assert (width, height) == (round(3 * gallery.CELL * fig.dpi), round((4 * gallery.CELL + gallery.TITLE) * fig.dpi))
    assert gallery.amplification(np.zeros(3)) == (1.0, 0.0) and gallery.amplification(np.full(2, 8 / 255)) == (16.0, 8 / 255)


def test_gallery_images_are_drawn_with_the_seed_and_stratified_by_class():
    labels = np.r_[np.zeros(30, int), np.ones(10, int)]
    drawn = stratified_choice(labels, 6, seed=0)
    assert len(drawn) == 6 and set(labels[drawn]) == {0, 1} and np.all(np.diff(drawn) > 0)
    assert np.array_equal(drawn, stratified_choice(labels, 6, seed=0))
    assert any(not np.array_equal(drawn, stratified_choice(labels, 6, seed=s)) for s in (1, 2, 3))
    lone = np.r_[np.zeros(9, int), 1]  # a class of one image cannot be stratified: drawn without regard to class
    assert len(stratified_choice(lone, 6, seed=0)) == 6
    assert np.array_equal(stratified_choice(labels[:4], 6, seed=0), np.arange(4))  # fewer than asked: all


def test_roc_panels_draw_one_curve_per_detector_in_each_attacks_panel():
    curve = (np.array([0, 0.5, 1]), np.array([0, 0.8, 1]))
    curves = {f"{a}-eps1/255: 40 pairs": {"kd": (*curve, 0.75), "lid": (*curve, 0.5), "dfeat": (*curve, float("nan"))}
              for a in ("fgsm", "bim", "pgd", "cw")}
    fig = roc_panels(curves, "every detector")
    used = [ax for ax in fig.axes if ax.axison]
    assert [ax.get_title() for ax in used] == list(curves)
    for ax in used:
        assert len(ax.get_lines()) == 3 + 1  # a curve per detector and chance
        assert [t.get_text() for t in ax.get_legend().get_texts()] == ["KD (AUC 75.0)", "LID (AUC 50.0)", "DFEAT (AUC degenerate)"]
    assert len(fig.axes) == 6 and len(used) == 4  # three panels to a row, the spare ones blank


def test_attack_run_logs_its_gallery_and_opens_on_its_numbers(registered, shared_data, tmp_path):
    target = Target.load(registered, DataSpec("pneumonia", shared_data), max_examples=20)
    out = attack(target, make_spec("fgsm", 4 / 255), RunOptions(progress=False))
    client = mlflow.MlflowClient()
    path = mlflow.artifacts.download_artifacts(run_id=out.run_id, artifact_path="figures/gallery.png", dst_path=str(tmp_path))
    rows = min(6, len(out.clean["adv_test"][1]))  # 4 AdvTest images of 20: all of them
    assert rows == 4 and Image.open(path).size == (round(3 * gallery.CELL * 100), round((rows * gallery.CELL + gallery.TITLE) * 100))
    m, note = out.metrics, client.get_run(out.run_id).data.tags["mlflow.note.content"]
    assert note.startswith("**FGSM via art: ε = 4/255, n = 20 images (AdvTrain + AdvTest)**")
    assert f"| accuracy | {m['clean_acc'] * 100:.2f} | {m['adv_acc'] * 100:.2f} |" in note
    assert f"Success rate {m['success_rate'] * 100:.2f} %" in note
    # the training run the fixture made opens on its test metrics too
    (trained,) = mlflow.search_runs(experiment_names=["medart/pneumonia/train"], output_format="list")
    note = trained.data.tags["mlflow.note.content"]
    assert "medart-pneumonia/1 (alias champion); test split, n = 32 images" in note
    assert f"| test_acc (%) | {trained.data.metrics['test_acc'] * 100:.1f} [" in note and "(n = 32) |" in note


def test_evaluate_run_opens_on_its_metrics_with_n_and_eps(registered, shared_data):
    from medart.stages import evaluate

    target = Target.load(registered, DataSpec("pneumonia", shared_data), max_examples=12)
    out = evaluate(target, ("fgsm",), (Eps("2/255"),), RunOptions(progress=False))
    note = mlflow.MlflowClient().get_run(out.run_id).data.tags["mlflow.note.content"]
    assert note.startswith(f"**{registered} on 12 test images (AdvTrain + AdvTest), attacked at ε = 2/255 via art**")
    m = out.metrics()
    assert f"| test_acc (%) | {m['test_acc'] * 100:.1f} [" in note and "(n = 12) |" in note  # value [95 % interval] (n)
    assert f"| adv_acc.fgsm.eps2 (%) | {m['adv_acc.fgsm.eps2'] * 100:.1f} [" in note


def _log(figure: str, params: dict | None = None, colour: str = "k") -> None:
    """A tiny figure ``figures/<figure>.png`` (its colour makes its bytes its own) and ``params`` on the active run."""
    fig = Figure(figsize=(1, 1))
    fig.subplots().plot([0, 1], [0, 1], colour)
    mlflow.log_params(params or {})
    tracking.log_figure(fig, f"figures/{figure}.png")


def test_report_shows_the_pictures_first_and_the_attack_runs_a_detect_run_used(tracking_store, tmp_path):
    """A detect run's attack runs ran before it, outside it: the report follows its tags to them. Their
    galleries and its ROC figure open the page, once each; a sweep's other cells keep theirs."""
    from medart.stages.report import report_run

    bim = {"attack.name": "bim", "dataset": "pneumonia"}
    with tracking.start_run("medart/pneumonia/attack", "bim-eps1/255-art") as attack_run:
        _log("gallery", bim | eps_params("attack.eps", Eps("1/255")))
    with tracking.start_run("medart/pneumonia/detect", "detect-eps1/255-art") as detect_run:
        mlflow.set_tag("medart.attack_run.bim", attack_run.info.run_id)
        _log("roc_all", {"dataset": "pneumonia"})
        with tracking.start_run("medart/pneumonia/detect", "detect-bim-eps1/255-art"):
            mlflow.set_tag("medart.attack_run", attack_run.info.run_id)
            _log("roc")
    page = report_run(detect_run.info.run_id, tmp_path / "r.html", log=False).read_text()
    top = page.index("<h2>Pictures</h2>")
    assert top < page.index('alt="figures/gallery.png"') < page.index('alt="figures/roc_all.png"') < page.index("<h2>This run</h2>")
    assert page.count('alt="figures/gallery.png"') == page.count('alt="figures/roc_all.png"') == 1
    assert "Runs it used (1)" in page and f"bim-eps1/255-art <span class='meta'>({attack_run.info.run_id}" in page
    assert "figures/roc_all.png: under Pictures, at the top of the page." in page

    with tracking.start_run("medart/pneumonia/attack", "sweep") as sweep_run:  # one attack at two ε (as k/255: 10 > 4)
        for eps, colour in ((4, "r"), (10, "b")):
            with tracking.start_run("medart/pneumonia/attack", f"bim-eps{eps}/255-art"):
                _log("gallery", bim | eps_params("attack.eps", Eps(f"{eps}/255")), colour)
    page = report_run(sweep_run.info.run_id, tmp_path / "s.html", log=False).read_text()
    assert page.count('alt="figures/gallery.png"') == 2  # the larger ε's at the top, the other in its cell
    assert page.index("bim-eps10/255-art (") < page.index("<h2>This run</h2>") < page.index("bim-eps4/255-art <span")


def test_the_report_lives_in_the_run_and_a_file_only_where_one_is_asked_for(tracking_store, tmp_path):
    """``medart report`` attaches report.html, tags its URI and links it from the run's description
    (once, however often it runs); it writes a file only with --output, and --no-log without one is an error."""
    runner = CliRunner()
    with tracking.start_run("medart/pneumonia/attack", "a-run") as run:
        tracking.describe("**What it measured**\n\n| a | b |\n|---|---|\n| 1 | 2 |\n")
    run_id = run.info.run_id
    for _ in range(2):
        done = runner.invoke(main, ["report", "--run-id", run_id])
        assert done.exit_code == 0 and f"report: report.html of run {run_id}" in done.output, done.output
    experiment = runner.invoke(main, ["report", "--experiment", "medart/pneumonia/attack"])
    assert experiment.exit_code == 0 and re.search(r"^report run [0-9a-f]+ in sqlite:///\S+: report.html$", experiment.output, re.M)
    assert {p.name for p in Path.cwd().iterdir()} == {"mlflow.db", "mlruns"}  # the store and its artifacts: no page file
    client = mlflow.MlflowClient()
    logged = client.get_run(run_id)
    assert "report.html" in {a.path for a in client.list_artifacts(run_id)}
    assert logged.data.tags["medart.report_uri"] == f"runs:/{run_id}/report.html"
    note = logged.data.tags["mlflow.note.content"]
    link = f"Report: [report.html](#/experiments/{logged.info.experiment_id}/runs/{run_id}/artifactPath/report.html)"
    assert note.startswith("**What it measured**\n\n| a | b |") and note.count(link) == 1
    assert mlflow.artifacts.load_text(f"runs:/{run_id}/report.html").startswith("<!DOCTYPE html>")

    written = runner.invoke(main, ["report", "--run-id", run_id, "--no-log", "--output", str(tmp_path / "out" / "r.html")])
    assert written.exit_code == 0 and (tmp_path / "out" / "r.html").read_text().startswith("<!DOCTYPE html>")
    nowhere = runner.invoke(main, ["report", "--run-id", run_id, "--no-log"])
    assert nowhere.exit_code == 2 and "Traceback" not in nowhere.output
    assert "the report would go nowhere: give --output (a file), or let --log attach it to the run" in nowhere.output


@pytest.mark.slow
def test_parent_runs_open_on_their_summary_and_carry_their_report(registered, shared_data):
    """sweep, detect, adaptive, pipeline and compare, as a user runs them: each parent run's
    description is its summary table and ends with a link to its report.html; --no-report leaves
    the report out, not the description."""
    runner, client = CliRunner(), mlflow.MlflowClient()
    data = ["--dataset", "pneumonia", "--data-dir", str(shared_data), "--no-progress"]
    small = ["--model-uri", registered, *data, "--max-examples", "40"]
    study = [*small, "--attacks", "fgsm", "--eps", "4/255", "--detectors", "dfeat", "--param", "dfeat.n_estimators=10",
             "--reference-size", "16"]
    commands = {  # command → its arguments, the first line of its description, a line of its table
        "sweep": ([*small, "--attacks", "fgsm", "--eps", "4/255"], "**Accuracy / AUC (%) under attack", "| FGSM |"),
        "detect": (study, "**Detection AUC (%) at ε = 4/255, art", "| DFEAT |"),
        "adaptive": ([*study, "--adaptive-weights", "1"], "**Detection AUC (%) at ε = 4/255, art", "| DFEAT | FGSM | 4/255 |"),
        "pipeline": (["--model-uri", registered, *data, "--max-examples", "40", "--attacks", "fgsm", "--eps", "4/255",
                      "--detectors", "dfeat", "--reference-size", "16"], f"**{registered} at ε = 4/255, art", "| FGSM |"),
        "compare": (["--dataset", "pneumonia"], "**Robust accuracy per model and ε", "| pneumonia | medart-pneumonia/1 |"),  # the version @champion named
    }
    pages = {}
    for command, (args, title, row) in commands.items():
        done = runner.invoke(main, [command, *args])
        assert done.exit_code == 0, done.output
        run_id = re.search(rf"^report: report.html of run ([0-9a-f]+)$", done.output, re.M)[1]
        assert re.search(rf"^\w+ run {run_id} in sqlite:", done.output, re.M)  # the run the command made
        tags = client.get_run(run_id).data.tags
        note = tags["mlflow.note.content"]
        assert note.startswith(title) and row in note, (command, note)
        assert note.rstrip().splitlines()[-1].startswith("Report: [report.html](#/experiments/"), command
        assert tags["medart.report_uri"] == f"runs:/{run_id}/report.html"
        pages[command] = mlflow.artifacts.load_text(f"runs:/{run_id}/report.html")
    # the pipeline's page opens on the attack's gallery and the detectors' ROC figure (its detect run's, copied)
    page = pages["pipeline"]
    assert page.index("<h2>Pictures</h2>") < page.index('alt="figures/gallery.png"') < page.index('alt="figures/roc_all.png"')
    assert page.count('alt="figures/gallery.png"') == page.count('alt="figures/roc_all.png"') == 1
    quiet = runner.invoke(main, ["detect", *study, "--no-report"])
    assert quiet.exit_code == 0 and "report:" not in quiet.output, quiet.output
    run_id = re.search(r"^detect run ([0-9a-f]+)", quiet.output, re.M)[1]
    assert "report.html" not in {a.path for a in client.list_artifacts(run_id)}
    assert "Report:" not in client.get_run(run_id).data.tags["mlflow.note.content"]


@pytest.mark.slow
def test_analyze_attaches_its_report_and_writes_a_file_only_with_output(registered, shared_data, tmp_path):
    runner = CliRunner()
    args = ["analyze", "--model-uri", registered, "--dataset", "pneumonia", "--data-dir", str(shared_data), "--attacks",
            "fgsm", "--eps", "4/255", "--max-examples", "8", "--figures", "saliency", "--show", "2", "--no-progress"]
    done = runner.invoke(main, args)
    assert done.exit_code == 0, done.output
    run_id = re.search(r"^report: report.html of run ([0-9a-f]+)$", done.output, re.M)[1]
    assert {p.name for p in Path.cwd().iterdir()} == {"mlflow.db", "mlruns"}  # no report-<id>.html beside the store
    tags = mlflow.MlflowClient().get_run(run_id).data.tags
    assert tags["medart.report_uri"] == f"runs:/{run_id}/report.html"
    assert tags["mlflow.note.content"].startswith(f"**Analysis of {registered} under FGSM at ε = 4/255, art: n = ")
    only_file = runner.invoke(main, [*args, "--no-report", "--output", str(tmp_path / "out.html")])
    assert only_file.exit_code == 0 and re.search(r"^report: \S+out.html$", only_file.output, re.M), only_file.output
    assert (tmp_path / "out.html").read_text().startswith("<!DOCTYPE html>")
