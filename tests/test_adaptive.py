"""Detector-aware attacks (medart.attacks.adaptive) on the small chest X-ray model of test_attacks:
the KD, Mahalanobis, LID and BU heads give the real detector's score, both backends make the same
examples, the attack fools KD where the plain attack does not, inside the ε-ball, and the DFeat
and QFeat surrogates leave the real detectors untouched while the examples made through them
fool those detectors more than the plain attack."""

from __future__ import annotations

import pickle
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from medart.attacks import make_attack, make_spec
from medart.attacks.adaptive import detector_head, lid_mle_torch
from medart.attacks.losses import DetectorAwareLoss
from medart.data import subsample
from medart.detectors import make_detector
from medart.detectors.lid import MAX_LID, lid_mle
from medart.errors import ConfigError
from medart.stages.adaptive import best_of, undetected_success


@pytest.fixture(scope="module")
def trained(chest_resnet18):
    """The session's small chest X-ray ResNet-18 (conftest), the AdvTest images it classifies
    correctly (two halves: fit, score), BIM at ε = 32/255 on them and 200 clean Train references."""
    model, splits = chest_resnet18
    stack = lambda ds: tuple(torch.stack(t) if isinstance(t[0], torch.Tensor) else torch.tensor(t) for t in zip(*ds))  # noqa: E731
    x, y = stack([splits.adv_test[i] for i in range(len(splits.adv_test))])
    with torch.no_grad():
        keep = model(x).argmax(1) == y
    order = torch.randperm(int(keep.sum()), generator=torch.Generator().manual_seed(0))  # AdvTest is sorted by class:
    x, y = x[keep][order], y[keep][order]  # both halves hold both classes (a forest fitted on one class scores the other inverted)
    x_ref, y_ref = stack(subsample(splits.train, 200, 1))
    spec = make_spec("bim", "32/255", steps=20)
    adv = make_attack(model, spec, 2, "art").generate(x, y)
    n = len(x) // 2
    fit_images, fit_labels = torch.cat([x[:n], adv[:n]]), np.r_[np.zeros(n), np.ones(n)]
    return SimpleNamespace(model=model, spec=spec, x=x[n:], y=y[n:], adv=adv[n:], x_ref=x_ref, y_ref=y_ref,
                           fit_images=fit_images, fit_labels=fit_labels)


@pytest.fixture(scope="module")
def fitted_kd(trained):
    """KD fitted on the first half against BIM at ε = 32/255; the second half to score."""
    t = trained
    kd = make_detector("kd", t.model)
    kd.fit(t.fit_images, t.fit_labels, x_ref=t.x_ref, y_ref=t.y_ref.numpy())
    return t.model, kd, t.spec, t.x, t.y, t.adv


@pytest.fixture(scope="module")
def fitted_others(trained):
    """LID (Train references), BU, DFeat (50 trees) and QFeat fitted on the same first half."""
    t = trained
    detectors = {"lid": make_detector("lid", t.model), "bu": make_detector("bu", t.model, passes=20),
                 "dfeat": make_detector("dfeat", t.model, n_estimators=50), "qfeat": make_detector("qfeat", t.model)}
    for detector in detectors.values():
        detector.fit(t.fit_images, t.fit_labels, x_ref=t.x_ref)
    return detectors


def _auc(kd, clean, adv) -> float:
    return kd.score(torch.cat([clean, adv]), np.r_[np.zeros(len(clean)), np.ones(len(adv))])


def test_head_gives_the_detectors_own_score_and_both_backends_the_same_examples(fitted_kd):
    model, kd, _, x, y, _ = fitted_kd
    head = detector_head(model, kd, 2)
    with torch.no_grad():
        out = head(x)
    predicted = out[:, :2].argmax(1)
    own = out[:, 2:].gather(1, predicted[:, None]).squeeze(1).numpy()
    np.testing.assert_allclose(own, kd.detect(x)[0]["scores"], rtol=1e-5, atol=1e-6)
    spec = make_spec("bim", "8/255", steps=10, step_size="1.6/255")  # deterministic: no random start
    made = [make_attack(head, spec, 4, b, loss=DetectorAwareLoss(3.0, 1.0)).generate(x[:16], y[:16]) for b in ("art", "torchattacks")]
    assert torch.equal(made[0], made[1])
    assert not model.training  # the head hands the model back in eval mode
    with pytest.raises(ConfigError, match="reference='train'"):
        detector_head(model, make_detector("kd", model, reference="batch"), 2)


def test_mahalanobis_head_gives_the_detectors_own_score(fitted_kd):
    model, kd, _, x, _, adv = fitted_kd
    maha = make_detector("mahalanobis", model)
    maha.fit(torch.cat([x, adv]), np.r_[np.zeros(len(x)), np.ones(len(adv))], x_ref=x, y_ref=model(x).argmax(1).detach().numpy())
    with torch.no_grad():
        out = detector_head(model, maha, 2)(adv)
    np.testing.assert_allclose(out[:, 2].numpy(), maha.detect(adv)[0]["scores"], rtol=1e-5, atol=1e-6)
    assert torch.equal(out[:, 2], out[:, 3])
    with pytest.raises(ConfigError, match="support the kd, lid, mahalanobis, bu, dfeat, qfeat detectors"):
        detector_head(model, make_detector("art_binary", model), 2)


def test_adaptive_attack_fools_kd_inside_the_eps_ball(fitted_kd):
    model, kd, spec, x, y, plain = fitted_kd
    adaptive = make_attack(detector_head(model, kd, 2), spec, 4, "art", loss=DetectorAwareLoss(3.0, 1.0)).generate(x, y)
    assert (adaptive - x).abs().max() <= spec.eps + 1e-6 and adaptive.min() >= 0 and adaptive.max() <= 1
    with torch.no_grad():
        fooled = model(adaptive).argmax(1) != y
        plain_fooled = model(plain).argmax(1) != y
    assert fooled.float().mean() >= 0.8 and fooled.float().mean() >= plain_fooled.float().mean() - 0.1
    plain_auc, adaptive_auc = _auc(kd, x, plain), _auc(kd, x, adaptive)
    assert adaptive_auc < plain_auc - 0.15, (plain_auc, adaptive_auc)
    assert _auc(kd, x[fooled], adaptive[fooled]) < plain_auc - 0.15  # the misclassified ones alone pass too


def _own_scores(head, x) -> np.ndarray:
    """The detector column of ``head`` for the class the model predicts."""
    with torch.no_grad():
        out = head(x)
    return out[:, 2:].gather(1, out[:, :2].argmax(1, keepdim=True)).squeeze(1).numpy()


def test_lid_and_bu_heads_give_the_detectors_own_score(trained, fitted_others):
    t = trained
    images = torch.cat([t.x, t.adv])
    for name in ("lid", "bu"):
        detector = fitted_others[name]
        head = detector_head(t.model, detector, 2, fit_images=t.fit_images)  # ignored by the exact logits
        np.testing.assert_allclose(_own_scores(head, images), detector.detect(images)[0]["scores"], rtol=1e-5, atol=1e-6)
    assert head.layers == ["dfeat"] and detector_head(t.model, fitted_others["lid"], 2).layers == fitted_others["lid"].layers
    with pytest.raises(ConfigError, match="reference='train'"):
        detector_head(t.model, make_detector("lid", t.model, reference="batch"), 2)
    mlp = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 28 * 28, 8), torch.nn.Dropout(0.5), torch.nn.Linear(8, 2))
    with pytest.raises(ConfigError, match="whole-network MC dropout"):
        detector_head(mlp, make_detector("bu", mlp), 2)


def test_torch_lid_has_the_detectors_edge_cases_and_finite_gradients():
    reference = torch.cat([torch.eye(6), -torch.eye(6), torch.randn(20, 6, generator=torch.Generator().manual_seed(0))]).double()
    ordinary = torch.randn(5, 6, generator=torch.Generator().manual_seed(1))
    query = torch.cat([torch.zeros(1, 6), reference[12:13].float(), ordinary])
    query = query.double().requires_grad_(True)  # rows: 12 equal distances, a duplicate, ordinary points
    lid = lid_mle_torch(query, torch.cat([torch.eye(6), -torch.eye(6)]).double(), 12)
    assert lid[0] == MAX_LID
    mine = lid_mle_torch(query, reference, 5)
    np.testing.assert_allclose(mine.detach().numpy(), lid_mle(query.detach(), reference, 5).numpy(), rtol=1e-10)
    assert mine[1] == 0
    (lid.sum() + mine.sum()).backward()
    assert torch.isfinite(query.grad).all() and query.grad[2:].abs().sum() > 0


def _fitted_state(detector) -> bytes:
    return pickle.dumps((detector.pipeline_, getattr(detector, "thresholds_", None)))


def test_surrogates_leave_the_real_detectors_untouched_and_follow_them(trained, fitted_others):
    t = trained
    images = torch.cat([t.x, t.adv])
    before = {name: _fitted_state(fitted_others[name]) for name in ("dfeat", "qfeat")}
    heads = {name: detector_head(t.model, fitted_others[name], 2, fit_images=t.fit_images) for name in before}
    qfeat = fitted_others["qfeat"]
    np.testing.assert_allclose(_own_scores(heads["qfeat"], images), qfeat.detect(images)[0]["scores"], rtol=1e-5, atol=1e-6)
    assert heads["dfeat"].logit.agreement_ >= 0.95  # measured: 1.0 on the 2 × 37 fit images
    spec = make_spec("bim", "8/255", steps=3)
    for head in heads.values():
        make_attack(head, spec, 4, "art", loss=DetectorAwareLoss(3.0, 1.0)).generate(t.x[:8], t.y[:8])
    assert {name: _fitted_state(fitted_others[name]) for name in before} == before
    with pytest.raises(ConfigError, match="fit_images="):
        detector_head(t.model, qfeat, 2)


@pytest.mark.parametrize("name", ["qfeat", "dfeat"])
def test_adaptive_attack_through_a_surrogate_fools_the_real_detector_more(trained, fitted_others, name):
    """Best of λ ∈ {0.1, 1} per image as the adaptive stage keeps it, scored by the real detector.
    Measured (37 score pairs): QFeat AUC 0.744 → 0.585, undetected success 0.68 → 0.84; DFeat AUC
    0.843 → 0.586, undetected success 0.59 → 0.65."""
    t, detector = trained, fitted_others[name]
    head = detector_head(t.model, detector, 2, fit_images=t.fit_images)
    clean = detector.detect(t.x)[0]["scores"]
    candidates = [make_attack(head, t.spec, 4, "art", loss=DetectorAwareLoss(3.0, lam)).generate(t.x, t.y) for lam in (0.1, 1.0)]
    scores = np.stack([detector.detect(c)[0]["scores"] for c in candidates])
    with torch.no_grad():
        fooled = np.stack([(t.model(c).argmax(1) != t.y).numpy() for c in [*candidates, t.adv]])
    pick = best_of(fooled[:2], scores, np.quantile(clean, 0.95))
    adaptive = scores[pick, np.arange(len(pick))]
    success, undetected = undetected_success(fooled[2], np.r_[clean, detector.detect(t.adv)[0]["scores"]])
    success_a, undetected_a = undetected_success(fooled[pick, np.arange(len(pick))], np.r_[clean, adaptive])
    plain_auc = _auc(detector, t.x, t.adv)
    adaptive_auc = roc_auc_score(np.r_[np.zeros(len(clean)), np.ones(len(clean))], np.r_[clean, adaptive])
    assert success_a >= 0.85 and undetected_a > undetected, (success, undetected, success_a, undetected_a)
    assert adaptive_auc < plain_auc - 0.1, (plain_auc, adaptive_auc)


def test_undetected_success_counts_fooled_examples_below_the_5_percent_threshold():
    clean = np.arange(20.0)  # its 95 % quantile, the threshold: 18.05
    adversarial = np.r_[np.full(10, 200.0), np.full(10, 5.0)]  # 10 flagged, 10 not
    fooled = np.r_[np.ones(15, bool), np.zeros(5, bool)]  # the first 15 fool the model: 5 of them unflagged
    assert undetected_success(fooled, np.r_[clean, adversarial]) == (0.75, 0.25)
    assert undetected_success(fooled, np.r_[clean, np.full(20, -1.0)]) == (0.75, 0.75)


def test_best_of_prefers_unflagged_success_then_success_then_the_lowest_score():
    fooled = np.array([[True, False, True, False], [True, True, False, False]])
    scores = np.array([[5.0, 0.0, 9.0, 3.0], [1.0, 9.0, 8.0, 2.0]])  # threshold 4: ≤ 4 is unflagged
    assert best_of(fooled, scores, 4.0).tolist() == [1, 1, 0, 1]
