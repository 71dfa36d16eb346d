"""Detectors: the LID and KD formulas, their edge cases, fitting only on fit data, sanity AUCs, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from art.defences.detector.evasion import EvasionDetector
from sklearn.preprocessing import StandardScaler

from medart.detectors import DETECTORS, NEEDS_REFERENCES, make_detector
from medart.detectors.activations import activations, iter_activations
from medart.detectors.kd import log_kernel_density
from medart.detectors.lid import MAX_LID, lid_mle, minibatches
from medart.errors import ConfigError, DataError
from medart.models.resnet import build_model


def test_lid_recovers_the_dimension_of_a_linear_manifold():
    g = torch.Generator().manual_seed(0)
    for dim in (2, 5):
        basis = torch.linalg.qr(torch.randn(64, dim, generator=g, dtype=torch.float64))[0]  # orthonormal (64, dim)
        points = torch.randn(2000, dim, generator=g, dtype=torch.float64) @ basis.T
        lid = lid_mle(points[:200], points[200:], k=20)
        assert abs(lid.median().item() - dim) < 0.35 * dim, (dim, lid.median().item())


def test_lid_matches_the_formula_per_sample():
    rng = np.random.default_rng(1)
    query, ref = rng.normal(size=(7, 12)), rng.normal(size=(30, 12))
    got = lid_mle(torch.from_numpy(query), torch.from_numpy(ref), k=5).numpy()
    for i, q in enumerate(query):
        r = np.sort(np.linalg.norm(ref - q, axis=1))[:5]
        expected = -1.0 / np.mean(np.log(r / r[-1]))
        assert got[i] == pytest.approx(expected, rel=1e-6)
    # excluding self by index: the query is row 3 of the reference
    own = lid_mle(torch.from_numpy(ref[3:4]), torch.from_numpy(ref), k=5, self_index=torch.tensor([3])).item()
    r = np.sort(np.linalg.norm(np.delete(ref, 3, axis=0) - ref[3], axis=1))[:5]
    assert own == pytest.approx(-1.0 / np.mean(np.log(r / r[-1])), rel=1e-6)


def test_lid_edge_cases_stay_finite():
    ref = torch.randn(10, 4, dtype=torch.float64)
    dup = torch.cat([ref, ref[:1]])  # row 10 duplicates row 0
    lid = lid_mle(dup, dup, k=3, self_index=torch.arange(11))
    assert torch.isfinite(lid).all() and lid[0] == 0 and lid[10] == 0  # an exact duplicate → LID 0
    square = torch.tensor([[1.0, 0], [-1, 0], [0, 1], [0, -1]], dtype=torch.float64)
    assert lid_mle(torch.zeros(1, 2, dtype=torch.float64), square, k=4).item() == MAX_LID  # all distances equal
    assert torch.isfinite(lid_mle(ref[:2], ref, k=9, self_index=torch.tensor([0, 1]))).all()  # k = M − 1
    with pytest.raises(ConfigError, match="LID k = 10 needs"):
        lid_mle(ref[:2], ref, k=10, self_index=torch.tensor([0, 1]))


def test_kd_matches_the_formula_per_sample():
    rng = np.random.default_rng(2)
    z, ref, sigma = rng.normal(size=(5, 8)), rng.normal(size=(40, 8)), 1.7
    got = log_kernel_density(torch.from_numpy(z), torch.from_numpy(ref), sigma).numpy()
    for i, q in enumerate(z):
        expected = math.log(np.mean(np.exp(-np.sum((ref - q) ** 2, axis=1) / sigma**2)))
        assert got[i] == pytest.approx(expected, rel=1e-6)
    far = log_kernel_density(torch.full((1, 8), 1e3, dtype=torch.float64), torch.from_numpy(ref), 0.1)
    assert torch.isfinite(far).all()  # log-sum-exp: no underflow to log(0)


@pytest.fixture(scope="module")
def tiny():
    """A small random MedResNet-18, smooth 16 px images (bilinear-upsampled 4 px noise, so they lie on
    a low-dimensional set as real images do) and the classes the model predicts for them."""
    torch.manual_seed(0)
    model = build_model(2, "resnet18", pretrained="none").eval()
    coarse = torch.rand(96, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    x = torch.nn.functional.interpolate(coarse, size=16, mode="bilinear", align_corners=False)
    with torch.no_grad():
        y = model(x).argmax(1).numpy()
    return model, x, y


def _params(name):
    return {"lid": dict(k=20, reference_size=32, layers=["input", "layer1", "dfeat"]), "bu": dict(passes=8),
            "dfeat": dict(n_estimators=20)}.get(name, {})


def _fit(name, model, x_fit, y_fit, x_ref, y_ref):
    detector = make_detector(name, model, **_params(name))
    kwargs = dict(x_ref=x_ref, y_ref=y_ref) if name in NEEDS_REFERENCES else {}
    detector.fit(x_fit, y_fit, **kwargs)
    return detector


@pytest.mark.parametrize("name", list(DETECTORS))
def test_identical_inputs_score_half_and_separable_inputs_score_one(tiny, name):
    model, x, y = tiny
    ref, clean_fit, clean_test = slice(0, 32), slice(32, 64), slice(64, 96)
    labels = lambda n: np.r_[np.zeros(n), np.ones(n)]  # noqa: E731
    # "adversarial" = the very same images: nothing to find
    same = _fit(name, model, torch.cat([x[clean_fit]] * 2), labels(32), x[ref], y[ref])
    assert isinstance(same, EvasionDetector)
    same_auc = same.score(torch.cat([x[clean_test]] * 2), labels(32))
    if name in ("dfeat", "art_binary"):  # scores that vary from image to image, tied within each pair
        assert same_auc == pytest.approx(0.5, abs=1e-9)
    else:  # a classifier that put no weight on its features: a degenerate fit, never "AUC 50 %"
        assert np.isnan(same_auc) and same.degenerate_fit_.startswith(("its LogisticRegression's coefficients are all 0",
                                                                       "its SVC gives all 64 fit inputs one score"))
    # "adversarial" = copies with strong pixel noise: off the images' smooth manifold, trivially apart
    noise = 0.3 * torch.randn(x.shape, generator=torch.Generator().manual_seed(2))
    noisy = lambda s: (x[s] + noise[s]).clamp(0, 1)  # noqa: E731
    apart = _fit(name, model, torch.cat([x[clean_fit], noisy(clean_fit)]), labels(32), x[ref], y[ref])
    assert apart.score(torch.cat([x[clean_test], noisy(clean_test)]), labels(32)) > 0.95
    report, flagged = apart.detect(x[clean_test])
    assert report["scores"].shape == (32,) and flagged.dtype == bool
    assert set(apart.get_params()) == set(apart.defence_params)


def test_scores_depend_on_the_input_alone(tiny):
    """Fit and detect see an input the same way (LID's reference batch holds no fit input), and
    BU's MC-dropout masks do not depend on an input's position in the batch."""
    model, x, y = tiny
    labels = np.r_[np.zeros(16), np.ones(16)]
    fit_x = torch.cat([x[32:48], 0.2 * x[32:48]])
    for name in ("lid", "bu"):
        detector = _fit(name, model, fit_x, labels, x[:32], y[:32])
        assert np.array_equal(detector._fit_features(fit_x, labels)[0], detector._features(fit_x))
        alone = detector.detect(x[40:41])[0]["scores"]
        shuffled = detector.detect(torch.cat([x[60:70], x[40:41], x[70:80]]))[0]["scores"][10:11]
        np.testing.assert_allclose(alone, shuffled, rtol=1e-5)  # float32 convolutions vary with batch size


def test_thresholds_and_scaler_come_from_fit_data_only(tiny):
    model, x, _ = tiny
    fit_x = torch.cat([x[:32], 0.2 * x[:32]])
    detector = make_detector("qfeat", model, levels=3)
    detector.fit(fit_x, np.r_[np.zeros(32), np.ones(32)])
    z_clean = activations(model, x[:32], ["dfeat"])[0]["dfeat"].numpy()
    assert np.allclose(detector.thresholds_, np.quantile(z_clean, [1 / 3, 2 / 3], axis=0))
    codes = detector._features(fit_x)
    scaler = detector.pipeline_.named_steps["scale"]
    assert np.array_equal(scaler.data_min_, codes.min(0)) and np.array_equal(scaler.data_max_, codes.max(0))
    before = (detector.thresholds_.copy(), scaler.data_min_.copy(), scaler.data_max_.copy())
    detector.detect(torch.zeros(8, 3, 16, 16))  # scoring other data changes nothing learnt
    assert all(np.array_equal(a, b) for a, b in zip(before, (detector.thresholds_, scaler.data_min_, scaler.data_max_)))


def test_hooks_are_removed_and_nested_layers_reachable(tiny):
    model, x, _ = tiny
    acts, logits = activations(model, x[:4], ["layer3.1", "res5b_relu", "input"])
    assert acts["layer3.1"].shape == (4, 256 * 1 * 1) and acts["input"].shape == (4, 3 * 16 * 16) and logits.shape == (4, 2)
    assert all(not m._forward_hooks for m in model.modules())
    gen = iter_activations(model, x[:8], ["layer1"], batch_size=4)
    next(gen)
    gen.close()  # abandoned half-way: hooks still removed
    assert all(not m._forward_hooks for m in model.modules())


def test_bad_detector_input(tiny):
    model, x, y = tiny
    with pytest.raises(DataError, match="8 inputs but 6 labels"):
        make_detector("dfeat", model).fit(x[:8], np.r_[np.zeros(3), np.ones(3)])
    with pytest.raises(DataError, match="single class"):
        make_detector("dfeat", model).fit(x[:8], np.zeros(8))
    with pytest.raises(ConfigError, match="unknown layer 'layer9.9'"):
        make_detector("lid", model, layers=["layer9.9"]).fit(x[:8], np.r_[np.zeros(4), np.ones(4)])
    with pytest.raises(ConfigError, match=r"reference batch \(10\) must be larger than k \(20\)"):
        make_detector("lid", model, reference_size=10).fit(x[:8], np.r_[np.zeros(4), np.ones(4)], x_ref=x)
    with pytest.raises(DataError, match="LID needs 20 clean reference images"):
        make_detector("lid", model, k=5, reference_size=20).fit(x[:8], np.r_[np.zeros(4), np.ones(4)], x_ref=x[:8])
    with pytest.raises(DataError, match="KD needs clean reference images"):
        make_detector("kd", model).fit(x[:8], np.r_[np.zeros(4), np.ones(4)])
    with pytest.raises(ConfigError, match="unknown detector 'magnet'"):
        make_detector("magnet", model)
    with pytest.raises(ConfigError, match="not fitted"):
        make_detector("bu", model).detect(x[:2])


def test_art_binary_activation_adapter_logs_its_params_and_leaves_no_hooks(tiny, tracking_store):
    import mlflow
    from art.defences.detector.evasion import BinaryActivationDetector
    from art.estimators.classification import PyTorchClassifier

    model, x, _ = tiny
    detector = make_detector("art_binary", model, nb_epochs=5)
    detector.fit(torch.cat([x[:16], 0.2 * x[:16]]), np.r_[np.zeros(16), np.ones(16)])
    first = detector.detect(x[16:24])[0]["scores"]
    second = detector.detect(0.2 * x[16:24])[0]["scores"]
    assert not np.allclose(first, second)  # each call sees its own activations, not a stale hook's
    assert all(not m._forward_hooks for m in model.modules())
    art_classifier = PyTorchClassifier(model, torch.nn.CrossEntropyLoss(), input_shape=(3, 16, 16), nb_classes=2)
    with pytest.raises(AttributeError):  # ART 1.20.1's own get_params: why the adapter has its own
        BinaryActivationDetector(art_classifier, art_classifier, "embed").get_params()
    with mlflow.start_run():
        mlflow.log_params(detector.get_params())
    with pytest.raises(ConfigError, match="top-level layers: stem, layer1"):
        make_detector("art_binary", model, layer="layer3.1")
    with pytest.raises(ConfigError, match="bad parameter for detector 'kd'"):
        make_detector("kd", model, bandwith=1.0)


def test_minibatches_fold_a_short_tail_into_the_batch_before():
    assert minibatches(45, 20, 5) == [slice(0, 20), slice(20, 45)]
    assert minibatches(50, 20, 5) == [slice(0, 20), slice(20, 40), slice(40, 50)]
    assert minibatches(15, 20, 5) == [slice(0, 15)]


@pytest.mark.parametrize("reference", ["batch", "batch_excluding_source"])
def test_lid_batch_mode_matches_ma_et_al_computed_directly(tiny, reference):
    """reference='batch': each clean image against the other clean images of its mini-batch (self
    excluded by index), each adversarial one against the whole clean mini-batch (with
    'batch_excluding_source': without its own source) — per batch, in NumPy."""
    model, x, y = tiny
    clean, adv = x[:50], (x[:50] + 0.05 * torch.randn(50, 3, 16, 16, generator=torch.Generator().manual_seed(3))).clamp(0, 1)
    layers = ["input", "layer1", "dfeat"]
    detector = make_detector("lid", model, layers=layers, k=5, reference=reference, reference_size=20)
    detector.fit(torch.cat([clean, adv]), np.r_[np.zeros(50), np.ones(50)], x_clean=clean)
    got = detector._features(torch.cat([clean, adv]), x_clean=clean)
    for rows in (slice(0, 20), slice(20, 40), slice(40, 50)):
        # per mini-batch forward passes, as the detector makes them (float32 convolutions vary with batch size)
        acts_clean = {k: v.double().numpy() for k, v in activations(model, clean[rows], layers)[0].items()}
        acts_adv = {k: v.double().numpy() for k, v in activations(model, adv[rows], layers)[0].items()}
        for j, layer in enumerate(layers):
            ref = acts_clean[layer]
            for i in range(rows.stop - rows.start):
                own = np.delete(ref, i, axis=0)
                adv_others = ref if reference == "batch" else own
                for row, point, others in ((rows.start + i, ref[i], own), (50 + rows.start + i, acts_adv[layer][i], adv_others)):
                    r = np.sort(np.linalg.norm(others - point, axis=1))[:5]
                    assert got[row, j] == pytest.approx(-1.0 / np.mean(np.log(r / r[-1])), rel=1e-6)
    same = make_detector("lid", model, layers=layers, k=5, reference=reference, reference_size=20)
    same.fit(torch.cat([clean, clean]), np.r_[np.zeros(50), np.ones(50)], x_clean=clean)
    # nothing to find: the regression puts no weight on the features, a degenerate fit (not "AUC 50 %")
    assert np.isnan(same.score(torch.cat([clean, clean]), np.r_[np.zeros(50), np.ones(50)], x_clean=clean))
    assert same.degenerate_fit_.startswith("its LogisticRegression's coefficients are all 0")
    with pytest.raises(DataError, match="pass x_clean"):
        detector.detect(adv)
    with pytest.raises(DataError, match="blocks aligned row by row"):
        detector.detect(adv[:30], x_clean=clean)
    with pytest.raises(ConfigError, match="reference must be 'train'"):
        make_detector("lid", model, reference="global").fit(clean, np.r_[np.zeros(25), np.ones(25)], x_clean=clean)


def test_kd_batch_reference_puts_each_clean_image_in_its_own_density(tiny):
    """The paper code's KD (``reference="batch"``): a clean image scored against the clean images it
    was given is its own nearest neighbour, so at a small σ its feature is the self term
    log(1 / n_class) exactly, and a copy with a grey level of noise, not among them, falls far below."""
    model, x, y = tiny
    clean, labels = x[:32], np.r_[np.zeros(16), np.ones(16)]
    kd = make_detector("kd", model, reference="batch", bandwidth=1e-3)
    kd.fit(torch.cat([clean[:16], 0.5 * clean[:16]]), labels, x_clean=clean[:16])
    predicted = y[32:64]
    own = kd._features(x[32:64], x_clean=x[32:64])[:, 0]
    assert own == pytest.approx(-np.log(np.bincount(predicted)[predicted]))
    nudged = (x[32:64] + 1 / 255 * torch.sign(torch.randn(32, *x.shape[1:], generator=torch.Generator().manual_seed(3)))).clamp(0, 1)
    assert (kd._features(nudged, x_clean=x[32:64])[:, 0] < own - 10).all()
    with pytest.raises(DataError, match="pass x_clean"):
        kd.detect(x[32:64])
    default = make_detector("kd", model, bandwidth=1e-3)  # leak-free: x_clean is never a reference
    default.fit(torch.cat([clean[:16], 0.5 * clean[:16]]), labels, x_ref=x[64:], y_ref=y[64:], x_clean=clean[:16])
    assert np.array_equal(default._features(x[32:64], x_clean=x[32:64]), default._features(x[32:64]))


def test_kd_standardize_scales_features_by_the_references(tiny):
    model, x, y = tiny
    kd = make_detector("kd", model, bandwidth=2.0, standardize=True)
    kd.fit(torch.cat([x[:16], 0.5 * x[:16]]), np.r_[np.zeros(16), np.ones(16)], x_ref=x[32:], y_ref=y[32:])
    acts, logits = activations(model, x[:8], ["dfeat"])
    scaler = StandardScaler().fit(activations(model, x[32:], ["dfeat"])[0]["dfeat"].double().numpy())
    z_ref = torch.from_numpy(scaler.transform(activations(model, x[32:], ["dfeat"])[0]["dfeat"].double().numpy()))
    z = torch.from_numpy(scaler.transform(acts["dfeat"].double().numpy()))
    predicted = logits.argmax(1).numpy()
    expected = [log_kernel_density(z[i : i + 1], z_ref[torch.from_numpy(y[32:] == predicted[i])], 2.0).item() for i in range(8)]
    assert kd._features(x[:8])[:, 0] == pytest.approx(expected, rel=1e-9)
    with pytest.raises(ConfigError, match="KD reference must be"):
        make_detector("kd", model, reference="test").fit(x[:8], np.r_[np.zeros(4), np.ones(4)], x_ref=x, y_ref=y)


def test_kd_regression_follows_the_density_rank_not_its_tail():
    """KD's log densities from the main job's ResNet-50 (PGD 8/255, the detect stage's 147/36 pairs;
    ``tests/data/kd_main_job_densities.npz``). A few clean images far from every reference make a
    long lower tail that sets the class means a regression fits: min–max scaled, it takes the wrong
    sign at σ auto (AUC 40.97 % where the density itself ranks at 59.03 %) and at σ = 3.7 the means
    meet, lbfgs stops at its start and the coefficient is exactly 0 — one score for every input,
    once printed as "AUC 50.00". KD's ranks follow the density."""
    from pathlib import Path

    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import Pipeline

    from medart.detectors.base import FeatureDetector
    from medart.detectors.fit_check import classifier_check, detection_auc

    data = np.load(Path(__file__).parent / "data" / "kd_main_job_densities.npz")
    y_fit, y_test = data["y_fit"], data["y_test"]
    kd = make_detector("kd", None)
    got = {}
    for sigma in ("auto", "3.7"):
        fit, test = data[f"fit_{sigma}"][:, None], data[f"test_{sigma}"][:, None]
        assert len(fit) == 2 * 147 and len(test) == 2 * 36
        for name, scaler in (("min-max", FeatureDetector._scaler(kd, len(fit))), ("kd", kd._scaler(len(fit)))):
            pipeline = Pipeline([("scale", scaler), ("classify", kd._classifier())]).fit(fit, y_fit)
            reason = classifier_check(pipeline[-1], pipeline.decision_function(fit))
            got[sigma, name] = (float(pipeline[-1].coef_[0, 0]), detection_auc(y_test, pipeline.decision_function(test), reason))
        assert got[sigma, "kd"][0] < 0  # a lower density is the adversarial side
        assert got[sigma, "kd"][1] == (roc_auc_score(y_test, -test[:, 0]), "")  # ranks: the density's own AUC
    assert data["sigma_auto"] == pytest.approx(2.1908, abs=1e-4)
    assert got["auto", "min-max"][0] > 0 and got["auto", "min-max"][1][0] == pytest.approx(0.4097, abs=1e-4)
    assert got["auto", "kd"][1][0] == pytest.approx(0.5903, abs=1e-4)
    coef, (auc, reason) = got["3.7", "min-max"]
    assert coef == 0.0 and math.isnan(auc) and reason.startswith("its LogisticRegression's coefficients are all 0")
    assert got["3.7", "kd"][1][0] == pytest.approx(0.6759, abs=1e-4)
