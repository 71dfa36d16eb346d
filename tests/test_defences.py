"""Preprocessing defences (ART's JPEG, feature squeezing, median smoothing, Gaussian noise) in front
of a model: their text, BPDA's gradient against ART's own estimate, the plain gradient's masking,
EOT's average over draws, the gap a plain attack leaves and the checklist's check that flags it,
one-line errors, and the ``attack``/``evaluate`` commands with ``--defence``."""

from __future__ import annotations

import json
import warnings

import mlflow
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from art.defences.preprocessor import FeatureSqueezing, JpegCompression, SpatialSmoothing
from art.estimators.classification import PyTorchClassifier
from click.testing import CliRunner

from medart.attacks import make_attack, make_spec
from medart.attacks.cache import network_digest
from medart.attacks.checklist import ChecklistPlan, direct_accuracy, run_checklist, vanishing_share
from medart.cli import main
from medart.data import load_dataset, subsample
from medart.detectors.activations import activations
from medart.detectors.art_binary import ARTBinaryActivation
from medart.errors import ConfigError, ModelError
from medart.models.defence_specs import DEFENCES, EOT_SAMPLES, SETTINGS, parse_defence, parse_defences
from medart.models.defended import DefendedClassifier, Jpeg, attack_spec, attacking
from medart.models.resnet import build_model
from medart.models.training import TrainConfig, fit
from medart.render.checks import checklist_table
from medart.models.loading import ModelSource

pytestmark = pytest.mark.filterwarnings("ignore:.*official MedMNIST MD5")
EPS = 8 / 255
CLIP = (0.0, 1.0)


@pytest.fixture(scope="module")
def trained(shared_data):
    """The small CNN trained briefly on the real chest X-rays (28 px; ~2 s on one thread), and 16
    AdvTest images, 8 of each class."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        splits = load_dataset("pneumonia", shared_data)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same weights on any core count
    try:
        torch.manual_seed(0)
        model = build_model(2, "smallcnn", pretrained="none", classes=splits.classes, image_size=28)
        fit(model, subsample(splits.train, 600, 0), subsample(splits.val, 64, 0),
            TrainConfig(epochs=3, batch_size=32, lr=0.01, augment=False), progress=False)
    finally:
        torch.set_num_threads(threads)
    test = subsample(splits.adv_test, 64, 0)
    x, y = torch.stack([test[i][0] for i in range(len(test))]), torch.tensor([test[i][1] for i in range(len(test))])
    pick = torch.cat([(y == k).nonzero().squeeze(1)[:8] for k in (0, 1)])
    return model.eval(), x[pick], y[pick]


def loss_gradient(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    leaf = x.clone().requires_grad_(True)
    return torch.autograd.grad(F.cross_entropy(model(leaf), y, reduction="sum"), leaf)[0]


def art_classifier(model: torch.nn.Module, defences=None) -> PyTorchClassifier:
    return PyTorchClassifier(model, loss=torch.nn.CrossEntropyLoss(reduction="sum"), input_shape=(3, 28, 28), nb_classes=2,
                             clip_values=CLIP, preprocessing_defences=defences)


def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(dim=1) == y).float().mean())


def close(ours: torch.Tensor, theirs: np.ndarray) -> bool:
    theirs = torch.from_numpy(np.asarray(theirs, dtype=np.float32))
    return bool(theirs.abs().max() > 0) and torch.allclose(ours, theirs, rtol=1e-5, atol=1e-5 * float(theirs.abs().max()))


# ---- the text ----------------------------------------------------------------------------------------------------


def test_defence_text_is_canonical_and_stacks():
    assert tuple(SETTINGS) == DEFENCES  # one entry per name the command line offers
    assert [str(d) for d in parse_defences("jpeg")] == ["jpeg:quality=75"]
    stacked = ["squeeze:bits=4", "jpeg:quality=75", "smooth:window=3", "noise:sigma=0.05"]
    assert [str(d) for d in parse_defences(" Squeeze:bits=4 + jpeg +smooth:window=3+noise:sigma=0.05")] == stacked
    assert [str(d) for d in parse_defences(["squeeze:bits=4+jpeg", "smooth", "noise:sigma=5e-2"])] == stacked
    assert ModelSource("m", defence="squeeze:bits=4+jpeg").defence == ("squeeze:bits=4", "jpeg:quality=75")
    assert ModelSource("m", defence=("squeeze:bits=4", "jpeg")) == ModelSource("m", defence="squeeze:bits=4+jpeg")
    assert ModelSource("m").defence == () and parse_defences("") == ()
    assert [d.randomized for d in parse_defences("jpeg+noise")] == [False, True]


@pytest.mark.parametrize("text, message", [
    ("jpg", "unknown defence 'jpg'; choose from: jpeg, squeeze, smooth, noise (e.g. jpeg:quality=75)"),
    ("jpeg:qual=50", "jpeg takes quality=…, got 'qual=50' (e.g. jpeg:quality=75)"),
    ("jpeg:quality=0", "jpeg:quality must be an integer from 1 to 100 (PIL's JPEG quality), got 0"),
    ("squeeze:bits=9", "squeeze:bits must be an integer from 1 to 8 (medart's images have 8 bits per channel), got 9"),
    ("squeeze:bits=4.5", "squeeze:bits must be an integer from 1 to 8, got '4.5'"),
    ("smooth:window=1", "smooth:window must be an integer from 2 to the image side"),
    ("noise:sigma=0", "noise:sigma must be a number in (0, 1]"),
    ("noise:sigma=nan", "noise:sigma must be a number in (0, 1]"),
    ("jpeg:quality=50,quality=60", "jpeg:quality is given twice"),
])
def test_a_bad_defence_is_one_line(text, message):
    with pytest.raises(ConfigError) as caught:
        parse_defence(text)
    assert message in str(caught.value) and "\n" not in str(caught.value)


# ---- gradients: BPDA is ART's estimate, plain is the defence's own ----------------------------------------------


@pytest.mark.parametrize("text, preprocessor", [
    ("jpeg:quality=75", JpegCompression(clip_values=CLIP, quality=75, channels_first=True)),
    ("smooth:window=3", SpatialSmoothing(window_size=3, channels_first=True, clip_values=CLIP)),
])
def test_bpda_gradient_is_arts_loss_gradient_through_its_defence(trained, text, preprocessor):
    model, x, y = trained
    defended = DefendedClassifier(model, [text])
    art = art_classifier(model, [preprocessor])
    with attacking(defended, make_spec("pgd", EPS)) as spec:
        ours = loss_gradient(defended, x, y)
    assert spec.defence_gradient == "bpda" and spec.eot_samples is None
    assert close(ours, art.loss_gradient(x.numpy(), np.eye(2, dtype=np.float32)[y.numpy()]))
    assert torch.allclose(defended(x), torch.from_numpy(art.predict(x.numpy())))  # the same defended model


@pytest.mark.parametrize("text", ["squeeze:bits=4", "squeeze:bits=3+jpeg:quality=60+smooth:window=2"])
def test_bpda_gradient_of_a_stack_is_arts_estimates_chained(trained, text):
    """ART's classifier chains no two NumPy defences (and squeezing hands it float64): its
    preprocessors' forward passes and ``estimate_gradient`` chained by hand, as the classifier does for one."""
    model, x, y = trained
    arts = [{"squeeze": lambda d: FeatureSqueezing(clip_values=CLIP, bit_depth=d["bits"]),
             "jpeg": lambda d: JpegCompression(clip_values=CLIP, quality=d["quality"], channels_first=True),
             "smooth": lambda d: SpatialSmoothing(window_size=d["window"], channels_first=True, clip_values=CLIP)}[d.name](d)
            for d in parse_defences(text)]
    inputs, z = [], x.numpy()
    for art in arts:
        inputs.append(z)
        z = art(z)[0].astype(np.float32)
    grad = art_classifier(model).loss_gradient(z, np.eye(2, dtype=np.float32)[y.numpy()])
    for art, seen in zip(reversed(arts), reversed(inputs)):
        grad = art.estimate_gradient(seen, grad)
    defended = DefendedClassifier(model, [text])
    with attacking(defended, make_spec("pgd", EPS)):
        assert close(loss_gradient(defended, x, y), grad)


def test_plain_gradient_is_the_defences_own(trained):
    model, x, y = trained
    for text in ("jpeg:quality=75", "squeeze:bits=4"):  # rounding: zero almost everywhere
        assert loss_gradient(DefendedClassifier(model, [text]), x, y).abs().max() == 0
    for window in (2, 3, 4, 5):  # the median's: torch's filter is SciPy's, so its gradient picks ART's median
        smooth = DefendedClassifier(model, [f"smooth:window={window}"])
        layer = smooth.defences[0]
        assert torch.equal(layer.median(x), layer.transform(x, 0, b""))
    plain = loss_gradient(smooth, x, y)
    with attacking(smooth, make_spec("pgd", EPS)):
        bpda = loss_gradient(smooth, x, y)
    assert plain.abs().max() > 0 and not torch.allclose(plain, bpda)
    noisy = DefendedClassifier(model, ["noise:sigma=0.5"])
    out = noisy.defend(x)
    clipped = (out == 0) | (out == 1)
    plain = loss_gradient(noisy, x, y)
    assert clipped.any() and plain[clipped].abs().max() == 0 and plain[~clipped].abs().max() > 0


# ---- randomized defences: reproducible draws, EOT ---------------------------------------------------------------


def test_noise_is_reproducible_and_the_attack_draws_its_own(trained):
    model, x, _ = trained
    noisy = DefendedClassifier(model, ["noise:sigma=0.1"])
    predicted = noisy.defend(x)
    assert torch.equal(predicted, noisy.defend(x)) and torch.equal(predicted[:3], noisy.defend(x[:3]))  # per image
    assert not torch.equal(noisy.defend(x, 1), predicted)
    assert abs(float((predicted - x).std()) - 0.1) < 0.02  # σ = 0.1, a little less where clipped
    with attacking(noisy, make_spec("pgd", EPS)):
        assert not torch.equal(noisy.defend(x), predicted)
    assert torch.equal(noisy.defend(x), predicted)  # restored


def test_eot_averages_the_gradient_over_k_draws(trained):
    model, x, y = trained
    noisy = DefendedClassifier(model, ["noise:sigma=0.1"])
    assert attack_spec(make_spec("pgd", EPS), noisy).eot_samples == EOT_SAMPLES
    calls = []
    counting = model.register_forward_hook(lambda *_: calls.append(1))
    try:
        for k in (1, 4):
            with attacking(noisy, make_spec("pgd", EPS, eot_samples=k)) as spec:
                calls.clear()
                leaf = x.clone().requires_grad_(True)
                eot = torch.autograd.grad(noisy(leaf)[:, 1].sum(), leaf)[0]
                assert len(calls) == k and spec.defence_tag == f"bpda-eot{k}"
                each = [torch.autograd.grad(noisy.model(noisy.defend(leaf, draw))[:, 1].sum(), leaf)[0] for draw in range(k)]
            assert torch.allclose(eot, torch.stack(each).mean(dim=0), atol=1e-6)
    finally:
        counting.remove()
    assert not torch.allclose(each[0], each[1])  # the draws differ
    plain = attack_spec(make_spec("pgd", EPS, defence_gradient="plain"), noisy)
    assert plain.eot_samples is None and plain.defence_tag == "plain"


# ---- the gap a plain attack leaves, and the checklist ------------------------------------------------------------


@pytest.mark.parametrize("backend", ["art", "torchattacks"])
def test_plain_attack_is_masked_where_bpda_breaks_jpeg(trained, backend):
    model, x, y = trained
    jpeg = DefendedClassifier(model, ["jpeg:quality=75"])
    clean = accuracy(jpeg, x, y)
    plain = make_attack(jpeg, make_spec("pgd", EPS, defence_gradient="plain"), 2, backend).generate(x, y, seed=0)
    bpda = make_attack(jpeg, make_spec("pgd", EPS), 2, backend).generate(x, y, seed=0)
    acc = {"plain": accuracy(jpeg, plain, y), "bpda": accuracy(jpeg, bpda, y)}
    assert clean >= 0.75 and acc["plain"] >= clean - 1 / 16, acc  # a zero gradient moves nothing
    assert acc["bpda"] <= acc["plain"] - 4 / 16, acc  # BPDA sees through it
    assert (plain - x).abs().max() <= EPS + 1e-6 and (bpda - x).abs().max() <= EPS + 1e-6


def test_the_checklist_flags_a_defence_that_holds_only_against_the_plain_attack(trained):
    model, x, y = trained
    jpeg = DefendedClassifier(model, ["jpeg:quality=75"])
    plain = make_attack(jpeg, make_spec("pgd", EPS, defence_gradient="plain"), 2).generate(x, y, seed=0)
    acc = {"plain": accuracy(jpeg, plain, y)}
    plan = ChecklistPlan((EPS,), steps=2, queries=50, plain=True)
    results = run_checklist(plan, direct_accuracy(jpeg, x, y, 2), vanishing_share(jpeg, x, y), len(y))
    table = checklist_table(results)
    failed = {r.check: r for r in results if not r.passed}
    assert len(results) == 7 and {"defence_holds_adaptively", "no_vanishing_gradients"} <= set(failed), table
    check = failed["defence_holds_adaptively"]
    assert f"PGD plain {acc['plain'] * 100:.1f} %" in check.measured and "8/255" in check.measured
    assert "works only against the plain attack" in check.suggests
    undefended_checks = run_checklist(ChecklistPlan((EPS,), steps=2, queries=50), direct_accuracy(model, x, y, 2),
                                      vanishing_share(model, x, y), len(y))
    assert [r.check for r in undefended_checks] == [r.check for r in results][:6]


# ---- fitting the model, one-line errors ---------------------------------------------------------------------------


class _Declared(torch.nn.Module):
    """A model that says it takes ``side``-px images (a network medart never runs at that side)."""

    def __init__(self, side: int) -> None:
        super().__init__()
        self.config = {"arch": "wide", "image_size": side, "num_classes": 2}


def test_a_defence_that_does_not_fit_the_model_is_one_line(trained):
    model, _, _ = trained
    with pytest.raises(ModelError, match=r"^defence smooth:window=31 does not fit smallcnn: its 31-px window is wider "
                                         r"than the 28-px images; change the defence or the model's `input_size`$"):
        DefendedClassifier(model, ["smooth:window=31"])
    with pytest.raises(ModelError, match="defence jpeg:quality=75 does not fit wide: JPEG takes images of at most 65500 px"):
        DefendedClassifier(_Declared(70000), ["jpeg"])
    assert Jpeg(parse_defence("jpeg")).misfit(65500) is None
    with pytest.raises(ConfigError, match="`eot_samples` averages a randomized defence .* jpeg:quality=75 is deterministic"):
        attack_spec(make_spec("pgd", EPS, eot_samples=4), DefendedClassifier(model, ["jpeg"]))
    with pytest.raises(ConfigError, match="apply to a model behind a preprocessing defence"):
        make_attack(model, make_spec("pgd", EPS, defence_gradient="plain"), 2).generate(*trained[1:])
    with pytest.raises(ConfigError, match="unknown `defence_gradient` 'bdpa'; choose from: bpda, plain"):
        make_spec("pgd", EPS, defence_gradient="bdpa")


# ---- the same interface: taps, detectors, the cache's digest ------------------------------------------------------


def test_features_detectors_and_digest_see_the_defended_model(trained):
    model, x, y = trained
    jpeg = DefendedClassifier(model, ["squeeze:bits=4+jpeg"])
    assert jpeg.config["defence"] == "squeeze:bits=4+jpeg:quality=75" and jpeg.config["num_classes"] == 2
    assert jpeg.classes == model.classes and jpeg.tap_names() == model.tap_names() and jpeg.head is model.head
    ours, logits = activations(jpeg, x, ["dfeat", "layer2"])
    theirs, their_logits = activations(model, jpeg.defend(x), ["dfeat", "layer2"])
    assert torch.equal(ours["dfeat"], theirs["dfeat"]) and torch.equal(ours["layer2"], theirs["layer2"])
    assert torch.equal(logits, their_logits) and torch.equal(jpeg.features(x)["dfeat"], theirs["dfeat"])
    assert ARTBinaryActivation(jpeg).layer == "dfeat"  # ART reaches top-level layers: the routed penultimate
    digests = {network_digest(m) for m in (model, jpeg, DefendedClassifier(model, ["squeeze:bits=4+jpeg:quality=50"]))}
    assert len(digests) == 3 and network_digest(DefendedClassifier(model, ["squeeze:bits=4", "jpeg"])) in digests


# ---- the commands ------------------------------------------------------------------------------------------------


def assert_one_line_error(result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert "Traceback" not in result.output and len(lines) == 1, result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_commands_refuse_a_bad_defence_in_one_line(trained, tracking_store, shared_data, tmp_path):
    model, x, _ = trained
    torch.jit.save(torch.jit.trace(model, x[:2]), str(tmp_path / "cnn.pt"))  # a model medart did not package
    common = ["--model-uri", str(tmp_path / "cnn.pt"), "--dataset", "pneumonia", "--data-dir", str(shared_data), "--no-progress"]
    invoke = lambda *args: CliRunner().invoke(main, [*args, *common])  # noqa: E731
    assert_one_line_error(invoke("attack", "--defence", "squeeze:bits=0"),
                          "Invalid value for '--defence': squeeze:bits must be an integer from 1 to 8")
    assert_one_line_error(invoke("evaluate", "--defence", "jpeg+blur"), "unknown defence 'blur'")
    assert_one_line_error(invoke("attack", "--defence", "smooth:window=40", "--attack", "fgsm"),
                          "defence smooth:window=40 does not fit torchscript", "40-px window is wider than the 28-px images")
    assert_one_line_error(invoke("attack", "--defence-gradient", "plain", "--attack", "fgsm"),
                          "apply to a model behind a preprocessing defence")
    assert_one_line_error(invoke("attack", "--defence", "jpeg", "--eot-samples", "4", "--attack", "fgsm"),
                          "jpeg:quality=75 is deterministic")
    assert mlflow.search_runs(search_all_experiments=True, output_format="list") == []  # nothing half-done


@pytest.mark.slow
def test_attack_command_through_a_defence_on_a_model_medart_did_not_package(trained, tracking_store, shared_data, tmp_path):
    """BPDA by default, plain on request, each its own run (and cache key) with what it went through."""
    model, x, _ = trained
    torch.jit.save(torch.jit.trace(model, x[:2]), str(tmp_path / "cnn.pt"))
    runs = {}
    for gradient in ("bpda", "plain"):
        result = CliRunner().invoke(main, ["attack", "--model-uri", str(tmp_path / "cnn.pt"), "--dataset", "pneumonia",
                                           "--data-dir", str(shared_data), "--max-examples", "16", "--attack", "pgd",
                                           "--eps", "8/255", "--defence", "jpeg:quality=75", "--defence-gradient", gradient,
                                           "--no-progress"])
        assert result.exit_code == 0, result.output
        assert f"pgd-{gradient}-eps8/255 via art on 16 images" in result.output
        (runs[gradient],) = mlflow.search_runs(search_all_experiments=True, output_format="list",
                                               filter_string=f"attributes.run_name = 'pgd-{gradient}-eps8/255-art'")
    for gradient, run in runs.items():
        assert run.data.params["defence"] == run.data.tags["medart.defence"] == "jpeg:quality=75"
        assert run.data.params["attack.defence_gradient"] == gradient
    plain, bpda = (runs[g].data.metrics for g in ("plain", "bpda"))
    assert plain["clean_acc"] == bpda["clean_acc"] and plain["adv_acc"] >= bpda["adv_acc"] + 2 / 16, (plain, bpda)
    assert runs["plain"].data.tags["medart.cache_key"] != runs["bpda"].data.tags["medart.cache_key"]


@pytest.mark.slow
def test_evaluate_command_runs_each_attack_through_the_defence_and_plain(trained, tracking_store, shared_data, tmp_path):
    model, x, _ = trained
    torch.jit.save(torch.jit.trace(model, x[:2]), str(tmp_path / "cnn.pt"))
    result = CliRunner().invoke(main, ["evaluate", "--model-uri", str(tmp_path / "cnn.pt"), "--dataset", "pneumonia",
                                       "--data-dir", str(shared_data), "--max-eval", "16",
                                       "--attacks", "pgd", "--eps", "8/255", "--defence", "squeeze:bits=5+jpeg:quality=75",
                                       "--checks", "--check-steps", "2", "--check-queries", "20", "--no-progress"])
    assert result.exit_code == 0, result.output
    rows = {line.split("|")[1].strip() for line in result.output.splitlines() if line.startswith("| ")}
    assert {"adv_acc.pgd-bpda.eps8 (%)", "adv_acc.pgd-plain.eps8 (%)", "masking_gap.pgd.eps8 (%)"} <= rows, result.output
    assert "| defence_holds_adaptively |" in result.output
    (run,) = [r for r in mlflow.search_runs(search_all_experiments=True, output_format="list") if "checks_failed" in r.data.metrics]
    m = run.data.metrics
    assert run.data.params["defence"] == "squeeze:bits=5+jpeg:quality=75"
    assert m["masking_gap.pgd.eps8"] == pytest.approx(m["adv_acc.pgd-plain.eps8"] - m["adv_acc.pgd-bpda.eps8"])
    table = json.loads(mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/checklist.json"))
    assert len(table["data"]) == 7 and table["data"][-1][0] == "defence_holds_adaptively"
    assert table["data"][-1][2] == (m["adv_acc.pgd-plain.eps8"] <= m["adv_acc.pgd-bpda.eps8"] + 1 / 16)
