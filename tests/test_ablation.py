"""Ablations: the bisection against a closed form, the small CNN everywhere a model goes, a cell
that attacks its trained model without reading it back, a user's TorchScript model measured beside a
trained cell without training, a real tiny grid whose failed cell does not lose the others, and
one-line errors for bad grids."""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from medart.attacks.difficulty import Bisection, adversarial_accuracy, least_successful_eps
from medart.cli import main
from medart.detectors import make_detector
from medart.errors import ConfigError, ModelError
from medart.mlproject import run as run_entry
from medart.models import registry
from medart.models.resnet import build_model, parameter_count
from medart.models.training import TrainConfig
from medart.render.ablation import compare_brackets
from medart.results import Cell, CellMetrics, EpsBracket
from medart.stages.ablate import AblationSettings, DetectionProbe, LandscapeProbe, ablate, make_grid, run_cell
from medart.stages.target import DataSpec, RunOptions

TINY = ["--epochs", "1", "--max-train", "32", "--max-eval", "16", "--max-examples", "20", "--attacks", "pgd", "--eps", "2/255",
        "--eps-max", "8/255", "--eps-tol", "4/255", "--detect-eps", "2/255", "--detectors", "dfeat", "--reference-size", "8",
        "--no-progress"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models on a shared, oversubscribed 2-core machine run several times faster on one
    thread than on two (measured: 235 vs 21 ResNet-18 28-px gradients/s under load)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class LinearBinary(nn.Module):
    """f(x) = w·x + b as logits [0, f]: class 1 iff f > 0."""

    def __init__(self, w: torch.Tensor, b: float) -> None:
        super().__init__()
        self.w, self.b = nn.Parameter(w), nn.Parameter(torch.tensor(b))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = x.flatten(1) @ self.w + self.b
        return torch.stack([torch.zeros_like(f), f], dim=1)


@pytest.fixture(scope="module")
def linear_case():
    """A linear model, 200 images kept inside [0.3, 0.7] (ε ≤ 0.1 never clips), 5 of them
    mislabelled, and the closed-form least ε with accuracy < 1 %."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(3 * 8 * 8, generator=g)
    model = LinearBinary(w, 0.1).eval()
    x = 0.3 + 0.4 * torch.rand(200, 3, 8, 8, generator=g)
    with torch.no_grad():
        f = model(x)[:, 1]
    y = (f > 0).long()
    y[:5] = 1 - y[:5]
    # The optimal L∞ attack on a linear model moves f by ε‖w‖₁ towards the wrong side (FGSM does
    # exactly that, and so does PGD from any start in the ball), so a correct image is flipped
    # iff ε > |f(x)| / ‖w‖₁; a wrong one stays wrong at every ε.
    t = torch.where((f > 0).long() == y, f.abs(), torch.zeros_like(f)).double() / w.abs().sum().double()
    n = len(y)
    survivors = int(np.ceil(0.01 * n)) - 1  # accuracy < 1 % ⇔ at most this many images still correct
    eps_star = float(np.sort(t.numpy())[n - survivors - 1])
    assert 0.01 < eps_star < 0.09  # inside the searched range, away from its ends
    return model, x, y, eps_star


@pytest.mark.parametrize("attack, backend", [("fgsm", "art"), ("pgd", "art"), ("fgsm", "torchattacks")])
def test_bisection_brackets_the_closed_form_threshold_of_a_linear_model(linear_case, attack, backend):
    model, x, y, eps_star = linear_case
    bracket = least_successful_eps(model, x, y, Bisection(attack, eps_max=0.1, eps_tolerance=1e-3), backend=backend)
    assert bracket.reached and bracket.lo <= eps_star <= bracket.hi
    assert bracket.hi - bracket.lo <= 1e-3
    assert len(bracket.evaluations) <= 1 + int(np.ceil(np.log2(0.1 / 1e-3)))
    accuracy = dict(bracket.evaluations)
    assert accuracy[bracket.hi] < 0.01 <= accuracy[bracket.lo]
    # the numbers are accuracies of the attack, measured again independently
    assert adversarial_accuracy(model, x, y, attack, bracket.hi, backend) == accuracy[bracket.hi]


def test_bisection_beyond_eps_max_and_from_known_points(linear_case):
    model, x, y, eps_star = linear_case
    above = least_successful_eps(model, x, y, Bisection("fgsm", eps_max=eps_star / 2, eps_tolerance=1e-4))
    assert not above.reached and above.lo == eps_star / 2 and above.text() == f"> {eps_star / 2 * 255:.3g}"
    assert len(above.evaluations) == 1  # ε_max alone answers "never reached"

    known = {0.01: adversarial_accuracy(model, x, y, "fgsm", 0.01), 0.09: adversarial_accuracy(model, x, y, "fgsm", 0.09)}
    seeded = least_successful_eps(model, x, y, Bisection("fgsm", eps_max=0.1, eps_tolerance=1e-3), known=known)
    assert seeded.lo <= eps_star <= seeded.hi and seeded.hi - seeded.lo <= 1e-3
    assert 0.1 not in dict(seeded.evaluations)  # a known success below ε_max spares that attack
    assert len(seeded.evaluations) - len(known) <= int(np.ceil(np.log2(0.08 / 1e-3)))


def test_bracket_comparison_verdicts():
    def b(lo, hi):
        return EpsBracket("pgd", 0.01, 8 / 255, lo, hi)

    assert compare_brackets(b(2 / 255, 3 / 255), b(0.5 / 255, 1 / 255)) == "lowers"
    assert compare_brackets(b(0.5 / 255, 1 / 255), b(1 / 255, 2 / 255)) == "raises"
    assert compare_brackets(b(1 / 255, 2 / 255), b(1.5 / 255, 2.5 / 255)) == "unchanged"
    assert compare_brackets(b(8 / 255, None), b(1 / 255, 2 / 255)) == "lowers"
    assert compare_brackets(b(1 / 255, 2 / 255), b(8 / 255, None)) == "raises"
    assert compare_brackets(b(8 / 255, None), b(8 / 255, None)) == "above"


def test_small_cnn_goes_everywhere_a_model_goes(tracking_store):
    torch.manual_seed(0)
    model = build_model(2, "smallcnn", "none", classes=["normal", "pneumonia"], image_size=16).eval()
    assert 1e5 < parameter_count(model) < 1e6  # "a few hundred thousand"
    x = torch.rand(6, 3, 16, 16)
    taps = model.features(x, ["input", "layer1", "res3a_relu", "res5b_relu", "pool", "dfeat", "logits"])
    assert taps["dfeat"].shape == (6, 128) and taps["pool"].shape == (6, 128) and taps["res5b_relu"].shape == (6, 128, 1, 1)
    assert torch.allclose(taps["logits"], model(x)) and torch.allclose(taps["input"], x * 2 - 1)
    with mlflow.start_run() as run:
        registry.log_model(model)
    loaded = registry.load_model(f"runs:/{run.info.run_id}/model")
    assert loaded.config["arch"] == "smallcnn" and loaded.classes == ["normal", "pneumonia"]
    assert torch.equal(loaded(x), model(x))

    g = torch.Generator().manual_seed(1)
    clean = torch.nn.functional.interpolate(torch.rand(40, 3, 4, 4, generator=g), size=16, mode="bilinear")
    adversarial = (clean + 0.3 * torch.randn(clean.shape, generator=g).sign()).clamp(0, 1)
    x_fit, is_adv = torch.cat([clean[:30], adversarial[:30]]), np.r_[np.zeros(30), np.ones(30)]
    x_test, is_adv_test = torch.cat([clean[30:], adversarial[30:]]), np.r_[np.zeros(10), np.ones(10)]
    reference = torch.rand(30, 3, 16, 16, generator=g)
    for name, extra in (("kd", {"x_ref": reference, "y_ref": loaded(reference).argmax(1).numpy()}), ("dfeat", {}),
                        ("bu", {}), ("lid", {"x_ref": reference})):
        params = {"reference_size": 25, "k": 5} if name == "lid" else {"passes": 8} if name == "bu" else {}
        detector = make_detector(name, loaded, **params)
        detector.fit(x_fit, is_adv, **extra)
        assert 0.0 <= detector.score(x_test, is_adv_test) <= 1.0

    with pytest.raises(ModelError, match="at least 16 px, got 8 px"):
        build_model(2, "smallcnn", "none", image_size=8)
    with pytest.raises(ModelError, match="no ImageNet or other pretrained weights"):
        build_model(2, "smallcnn", "imagenet")


@pytest.mark.parametrize("call, fragment", [
    (lambda: make_grid("28,abc", "none", "smallcnn"), "resolution 'abc' is not a whole number"),
    (lambda: make_grid("4", "none", "smallcnn"), "resolution 4 px is outside 8…1024 px"),
    (lambda: make_grid("", "none", "smallcnn"), "the resolution list `resolutions` is empty"),
    (lambda: make_grid("28", "random", "smallcnn"), "unknown initialisation 'random'; choose from: none, imagenet"),
    (lambda: make_grid("28", "none", "vgg16"), "unknown architecture 'vgg16'"),
    (lambda: Bisection(eps_max=1 / 255, eps_tolerance=2 / 255),
     "bisection tolerance `eps_tolerance` must be in (0, `eps_max`)"),
    (lambda: AblationSettings(eps=()), "the ε list `eps` is empty"),
    (lambda: AblationSettings(eps="1/255,4/255"), "`eps` takes a sequence of ε"),
    (lambda: AblationSettings(eps=("9/0",)), "cannot read ε from '9/0'"),
    (lambda: DetectionProbe(detectors=("kd", "foo")), "unknown detector 'foo'"),
    (lambda: AblationSettings(max_examples=4), "`max_examples` must be >= 10"),
    (lambda: Bisection(threshold=0), "accuracy `threshold` must be in (0, 1]"),
    (lambda: LandscapeProbe(vanishing=0), "the vanishing-gradient floor `vanishing` must be > 0"),
    (lambda: AblationSettings(attacks="fgsm", bisection=Bisection("pgd")), "`bisect_attack` 'pgd' is not among `attacks`"),
    (lambda: ablate(DataSpec("pneumonia"), make_grid("28", "none", "none")),
     "the ablation grid is empty; give at least one of each of `resolutions`, `inits` and `archs`, or `models`"),
])
def test_bad_grids_and_settings_are_one_line_errors(call, fragment):
    with pytest.raises(ConfigError) as err:
        call()
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_cli_and_project_refuse_a_bad_grid_before_any_run(tracking_store):
    result = CliRunner().invoke(main, ["ablate", "--dataset", "pneumonia", "--archs", "smallcnn,vgg16"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert [line for line in result.output.splitlines() if line.startswith("Error:")] == [
        "Error: unknown architecture 'vgg16'; choose from: resnet50, resnet18, resnet34, smallcnn"]
    assert run_entry("ablate", ["dataset=pneumonia", "resolutions=28,big", "inits=none", "archs=smallcnn"]) == 2
    assert run_entry("ablate", ["dataset=pneumonia", "archs=none", "models=missing.pt"]) == 2  # loaded before any run
    assert mlflow.search_runs(search_all_experiments=True, output_format="list") == []


def test_settings_take_what_the_command_line_gives():
    """The command line reads ε into Eps (its types) and names as text; the settings hold them checked."""
    # the ablate command's options as it hands them over, without running anything
    given = main.commands["ablate"].make_context("ablate", [
        "--attacks", "pgd,fgsm,pgd", "--eps", "4/255,1/255", "--eps-max", "16/255", "--eps-tolerance", "0.5/255",
        "--detect-eps", "2/255", "--detectors", "kd", "--radius", "1/255"]).params
    settings = AblationSettings(attacks=given["attacks"], eps=given["eps"],
                                bisection=Bisection(eps_max=given["eps_max"], eps_tolerance=given["eps_tolerance"]),
                                detection=DetectionProbe(detect_eps=given["detect_eps"], detectors=given["detectors"]),
                                landscape=LandscapeProbe(given["radius"]))
    assert settings.attacks == ("pgd", "fgsm") and settings.eps == (1 / 255, 4 / 255) and settings.detection.detectors == ("kd",)
    bisection, detection = settings.bisection, settings.detection
    assert (bisection.eps_max, bisection.eps_tolerance, detection.detect_eps) == (16 / 255, 0.5 / 255, 2 / 255)
    assert settings.sharpness_radius == 1 / 255
    params = settings.as_params(RunOptions())
    assert (params["eps"], params["eps_value"]) == ("1/255,4/255", f"{1 / 255!r},{4 / 255!r}")
    # the groups' fields are logged under their own names, in the order the flat settings had them, each ε
    # as k/255 with its float after it
    assert list(params)[:21] == ["max_train", "max_eval", "attacks", "eps", "eps_value", "bisect_attack", "eps_max",
                                 "eps_max_value", "eps_tolerance", "eps_tolerance_value", "threshold", "detect_attack",
                                 "detect_eps", "detect_eps_value", "detectors", "radius", "radius_value", "vanishing",
                                 "max_examples", "reference_size", "models"]
    assert (params["eps_max"], params["detectors"], params["radius"]) == ("16/255", "kd", "1/255")
    assert float(params["eps_max_value"]) == 16 / 255


class CountingLoads:
    """Wraps the real :func:`medart.models.registry.load_model` and counts its calls."""

    def __init__(self, load):
        self.load, self.calls = load, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.load(*args, **kwargs)


def test_a_cell_attacks_its_trained_model_without_reading_it_back(tracking_store, shared_data, monkeypatch):
    loads = CountingLoads(registry.load_model)
    monkeypatch.setattr(registry, "load_model", loads)
    settings = AblationSettings(train=TrainConfig(epochs=1, batch_size=32), max_train=32, max_eval=16, attacks=("pgd",),
                                eps=(2 / 255,), bisection=Bisection(eps_max=8 / 255, eps_tolerance=4 / 255),
                                detection=DetectionProbe(detect_eps=2 / 255, detectors=("dfeat",)), max_examples=40,
                                reference_size=8)
    with mlflow.start_run() as run:
        cell = run_cell(Cell(16, "none", "smallcnn"), DataSpec("pneumonia", shared_data), settings,
                        RunOptions(progress=False))
    assert loads.calls == 0
    assert isinstance(cell, CellMetrics) and set(cell.adv_acc) == {"pgd"} and set(cell.detection_auc) == {"dfeat"}
    # the stages saw the model that was trained: the attack runs name its logged copy
    attack_run = mlflow.MlflowClient().get_run(
        mlflow.MlflowClient().get_run(cell.detect_run_id).data.tags["medart.attack_run.pgd"])
    assert attack_run.data.params["model_uri"] == cell.model_uri == f"runs:/{cell.train_run_id}/model"
    logged = mlflow.MlflowClient().get_run(run.info.run_id).data.metrics
    assert logged["adv_acc.pgd.eps2"] == cell.adv_acc["pgd"][2 / 255] and logged["test_acc"] == cell.test_acc


def test_a_given_model_is_measured_beside_a_trained_cell_without_training(tracking_store, shared_data):
    torch.manual_seed(0)
    network = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    torch.jit.save(torch.jit.script(network.eval()), "my-model.pt")  # a user's TorchScript file, plain torch
    result = CliRunner().invoke(main, ["ablate", "--data-dir", str(shared_data), "--resolutions", "16", "--inits", "none",
                                       "--archs", "smallcnn", "--models", "my-model.pt", "--input-size", "16",
                                       "--tracking-uri", tracking_store, *TINY])
    assert result.exit_code == 0, result.output
    parent = mlflow.search_runs(search_all_experiments=True, output_format="list", filter_string="run_name = 'ablate-pneumonia'")[0]
    assert parent.data.params["models"] == "my-model.pt" and parent.data.params["model.input_size"] == "16"
    assert parent.data.params["archs"] == "smallcnn" and parent.data.metrics["cells_finished"] == 2

    def children(run_id):
        return {r.info.run_name: r for r in mlflow.search_runs(search_all_experiments=True, output_format="list",
                                                               filter_string=f"tags.mlflow.parentRunId = '{run_id}'")}

    cells = children(parent.info.run_id)
    assert set(cells) == {"smallcnn-16px-none", "my-model.pt-16px-given"}  # the given model at the side it was given
    given, trained = cells["my-model.pt-16px-given"], cells["smallcnn-16px-none"]
    for cell in (given, trained):
        assert cell.info.status == "FINISHED"
        assert {"test_acc", "test_auc", "clean_acc", "adv_acc.pgd.eps2", "least_eps_lo", "sharpness", "vanishing_fraction",
                "auc_dfeat"} <= set(cell.data.metrics)
    assert given.data.params["init"] == "given" and given.data.params["network"] == "torchscript Sequential"
    # the given model is loaded, never trained: its stages are its attack and detection runs only
    assert {r.info.run_name for r in children(given.info.run_id).values()} == {"pgd-eps2/255-art", "detect-eps2/255-art"}
    assert "train-smallcnn-16px-seed0" in {r.info.run_name for r in children(trained.info.run_id).values()}
    train_runs = mlflow.search_runs(search_all_experiments=True, output_format="list", filter_string="run_name LIKE 'train-%'")
    assert len(train_runs) == 1
    attack_run = next(r for r in children(given.info.run_id).values() if r.info.run_name.startswith("pgd"))
    assert attack_run.data.params["model_uri"] == "my-model.pt"

    rows = {r["init"]: r for r in json.loads(mlflow.artifacts.load_text(f"runs:/{parent.info.run_id}/ablation.json"))["rows"]}
    assert rows["given"]["arch"] == rows["given"]["model_uri"] == "my-model.pt" and rows["given"]["resolution"] == 16
    assert rows["given"]["train_run_id"] is None and rows["given"]["best_epoch"] is None
    assert rows["given"]["test_acc"] == given.data.metrics["test_acc"] and rows["none"]["train_run_id"] is not None
    assert "| my-model.pt (122) | 16 px | given, not trained |"  # 112 + 10 parameters in result.output
    assert "## Given models" in result.output and "- **my-model.pt, 16 px**" in result.output
    assert make_grid("28,abc", "none", "none") == []  # `--archs none`: the given models only


@pytest.fixture(scope="module")
def tiny_grid(migrated_store, tmp_path_factory, shared_data):
    """A real grid on the chest X-ray file: smallcnn and ResNet-18 at 8 and 16 px from scratch — the
    small CNN refuses 8 px, so that cell fails — plus an ImageNet cell of the small CNN, which has
    no such weights (skipped)."""
    import shutil

    from medart import tracking

    folder = tmp_path_factory.mktemp("ablation")
    shutil.copy(migrated_store, folder / "mlflow.db")
    uri = tracking.configure(f"sqlite:///{folder / 'mlflow.db'}")
    cells = make_grid("8,16", "none", "smallcnn,resnet18") + [Cell(16, "imagenet", "smallcnn")]
    settings = AblationSettings(train=TrainConfig(epochs=1, lr=0.01, batch_size=32), max_train=64, max_eval=32,
                                eps=(1 / 255,), bisection=Bisection(eps_max=16 / 255, eps_tolerance=2 / 255),
                                max_examples=40, reference_size=32)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)  # artifacts land beside the store
        out = ablate(DataSpec("pneumonia", shared_data), cells, settings, RunOptions(progress=False))
    yield out, settings, uri
    while mlflow.active_run() is not None:
        mlflow.end_run("FAILED")


@pytest.mark.slow
def test_a_failed_cell_does_not_lose_the_others(tiny_grid):
    out, settings, uri = tiny_grid
    mlflow.set_tracking_uri(uri)
    status = {(r.cell.arch, r.cell.resolution, r.cell.init): r for r in out.rows}
    failed = status[("smallcnn", 8, "none")]
    assert failed.status == "failed" and "at least 16 px, got 8 px" in failed.reason and failed.metrics is None
    assert status[("smallcnn", 16, "imagenet")].status == "skipped"
    assert "no ImageNet weights exist for smallcnn" in status[("smallcnn", 16, "imagenet")].reason
    finished = [r for r in out.rows if r.status == "finished"]
    assert {(r.cell.arch, r.cell.resolution) for r in finished} == {("smallcnn", 16), ("resnet18", 8), ("resnet18", 16)}
    assert out.counts == {"finished": 3, "failed": 1, "skipped": 1}

    client = mlflow.MlflowClient()
    parent = client.get_run(out.run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["cells_finished"] == 3 and parent.data.metrics["cells_failed"] == 1
    assert parent.data.metrics["cells_skipped"] == 1
    assert parent.data.params["backend"] == "art" and parent.data.params["batch_size"] == "128"
    assert parent.data.params["eps_tolerance"] == "2/255" and parent.data.params["train.seed"] == "0"
    assert parent.data.params["eps_tolerance_value"] == repr(2 / 255)
    children = {r.info.run_name: r for r in mlflow.search_runs(
        search_all_experiments=True, output_format="list", filter_string=f"tags.mlflow.parentRunId = '{out.run_id}'")}
    assert set(children) == {"smallcnn-8px-none", "smallcnn-16px-none", "resnet18-8px-none", "resnet18-16px-none"}
    bad = children["smallcnn-8px-none"]
    assert bad.info.status == "FAILED" and "at least 16 px" in bad.data.tags["medart.error"]
    assert "ModelError" in mlflow.artifacts.load_text(f"runs:/{bad.info.run_id}/error.txt")
    for name in ("smallcnn-16px-none", "resnet18-8px-none", "resnet18-16px-none"):
        run = children[name]
        assert run.info.status == "FINISHED"
        assert {"test_acc", "least_eps_lo", "sharpness", "vanishing_fraction", "auc_kd", "auc_dfeat", "seconds",
                "adv_acc.pgd.eps1"} <= set(run.data.metrics)
    # the cells' stages are their child runs; no training run registered a model
    stages = mlflow.search_runs(search_all_experiments=True, output_format="list",
                                filter_string=f"tags.mlflow.parentRunId = '{children['resnet18-16px-none'].info.run_id}'")
    assert {"train-resnet18-16px-seed0", "pgd-eps1/255-art", "detect-eps1/255-art"} <= {r.info.run_name for r in stages}
    assert client.search_registered_models() == []

    artifacts = {a.path for a in client.list_artifacts(out.run_id)} | {a.path for a in client.list_artifacts(out.run_id, "figures")}
    assert {"ablation.md", "findings.md", "ablation.json", "ablation_table.json", "figures/ablation.png"} <= artifacts
    table = mlflow.artifacts.load_text(f"runs:/{out.run_id}/ablation.md")
    assert table == out.table
    assert "FAILED: ModelError: smallcnn halves the image side" in table and "skipped: no ImageNet weights" in table
    assert len([line for line in table.splitlines() if line.startswith("| ")]) == 1 + len(out.rows)


@pytest.mark.slow
def test_grid_numbers_are_consistent_and_the_text_is_computed_from_them(tiny_grid):
    out, settings, uri = tiny_grid
    mlflow.set_tracking_uri(uri)
    for m in (r.metrics for r in out.rows if r.status == "finished"):
        bracket = m.least_eps
        accuracy = dict(bracket.evaluations)
        assert accuracy[bracket.lo] >= 0.01 if bracket.lo > 0 else True
        if bracket.hi is not None:
            assert accuracy[bracket.hi] < 0.01 and bracket.hi - bracket.lo <= settings.bisection.eps_tolerance
        else:
            assert bracket.lo == settings.bisection.eps_max and accuracy[settings.bisection.eps_max] >= 0.01
        assert 0 <= m.vanishing_fraction <= 1 and np.isfinite(m.sharpness)
        assert all(0 <= v <= 1 for v in m.detection_auc.values())
        assert m.adv_acc["pgd"][1 / 255] <= m.clean_acc + 1e-9
        assert set(m.seconds_by_stage) == {"train", "attacks", "bisection", "landscape", "detection"}
    resnet = [r.metrics for r in sorted((r for r in out.rows if r.cell.arch == "resnet18"), key=lambda r: r.cell.resolution)]
    text = out.findings
    assert "- **resnet18, from scratch**: upsampling 8 → 16 px" in text
    assert f"sharpness at 1/255 {resnet[0].sharpness:.3g} → {resnet[1].sharpness:.3g} nats" in text
    assert "more parameters, smallcnn (0.31 M) → resnet18 (11.24 M)" in text
    assert "no cell finished with both initialisations" in text and "smallcnn-8px-none: ModelError" in text
    saved = json.loads(mlflow.artifacts.load_text(f"runs:/{out.run_id}/ablation.json"))
    assert [r["status"] for r in saved["rows"]] == [r.status for r in out.rows]
    finished = next(r for r in saved["rows"] if r["status"] == "finished")
    assert set(finished["adv_acc"]["pgd"]) == {"1/255"} and set(finished["least_eps"]) == {
        "attack", "lo", "hi", "eps_max", "threshold", "evaluations"}
