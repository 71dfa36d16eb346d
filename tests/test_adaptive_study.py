"""The adaptive study's own parts (medart.stages.adaptive): feature matching in both backends, its
guides, restarts that never weaken the detector-aware attack, and the plain-against-adaptive
figure; on a small CNN trained briefly on the real chest X-rays."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
import torch

from medart.attacks import make_attack, make_spec
from medart.attacks.adaptive import detector_head
from medart.attacks.feature_matching import FeatureMatching, FeatureTap, choose_guides
from medart.data import subsample
from medart.intervals import Estimate
from medart.detectors import make_detector
from medart.detectors.pairs import Pairs
from medart.errors import ConfigError, DataError
from medart.models.resnet import build_model
from medart.models.training import TrainConfig, fit
from medart.render.detection import adaptive_figure
from medart.stages.adaptive import AdaptiveBudget, AdaptiveRow, adaptive_examples, undetected_success
from medart.stages.target import DataSpec, RunOptions, Target

pytestmark = pytest.mark.filterwarnings("ignore:.*official MedMNIST MD5")


@pytest.fixture(scope="module")
def study(shared_data):
    """A small CNN trained for 4 epochs on 384 real Train images (one thread: the same model on any
    core count), 24 AdvTest images of each class it classifies correctly with their BIM examples at
    16/255 (AdvTrain: the first half, AdvTest: the second, both classes in each), and KD fitted on
    the AdvTrain half."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        data = DataSpec("pneumonia", shared_data)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            splits = data.load(28)
        torch.manual_seed(0)
        model = build_model(2, "smallcnn", "none", classes=splits.classes, image_size=28)
        fit(model, subsample(splits.train, 384, 0), subsample(splits.val, 64, 0),
            TrainConfig(epochs=4, batch_size=32, lr=0.05, augment=False), progress=False)
        model.eval()
        x, y = _stack(splits.adv_test, len(splits.adv_test))
        with torch.no_grad():
            keep = model(x).argmax(1) == y
        x, y = x[keep], y[keep]
        both = torch.stack([(y == c).nonzero().squeeze(1)[:24] for c in (0, 1)], dim=1).flatten()  # classes alternate
        x, y = x[both], y[both]
        spec = make_spec("bim", "16/255", steps=10)
        adv = make_attack(model, spec, 2, "art").generate(x, y)
        half = len(x) // 2
        train, test = (Pairs(x[s], adv[s], y[s].numpy()) for s in (slice(None, half), slice(half, None)))
        x_ref, y_ref = _stack(subsample(splits.train, 120, 1), 120)
        kd = make_detector("kd", model)
        kd.fit(torch.cat([train.clean, train.adversarial]), np.r_[np.zeros(half), np.ones(half)], x_ref=x_ref,
               y_ref=y_ref.numpy())
        target = Target("untracked", model, data, splits, max_examples=48, reference_size=120)
        yield target, spec, {"adv_train": train, "adv_test": test}, kd
    finally:
        torch.set_num_threads(threads)


def _stack(dataset, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = zip(*(dataset[i] for i in range(n)))
    return torch.stack(images), torch.as_tensor(labels)


def test_feature_matching_moves_features_towards_the_guide_inside_the_eps_ball(study):
    target, spec, pairs, _ = study
    test, train = pairs["adv_test"], pairs["adv_train"]
    guides = train.clean[torch.from_numpy(choose_guides(1 - test.labels, train.labels, seed=0))]
    made = [FeatureMatching(target.model, spec, backend).generate(test.clean, guides, seed=0) for backend in ("art", "torchattacks")]
    tap = FeatureTap(target.model)
    with torch.no_grad():
        before = (tap(test.clean) - tap(guides)).square().sum(1)
        for adv in made:
            assert (adv - test.clean).abs().max() <= spec.eps + 1e-6 and adv.min() >= 0 and adv.max() <= 1
            after = (tap(adv) - tap(guides)).square().sum(1)
            assert (after < before).all() and after.mean() < 0.8 * before.mean(), (before.mean(), after.mean())
    assert torch.allclose(made[0], made[1], atol=1e-6)  # no random start: the same signed steps in both
    assert not target.model.training


def test_guides_are_seeded_and_of_the_target_class():
    pool = np.array([0, 1, 1, 0, 1, 2])
    targets = np.array([1, 1, 0, 2, 1])
    picked = choose_guides(targets, pool, seed=3)
    assert (pool[picked] == targets).all() and (picked == choose_guides(targets, pool, seed=3)).all()
    with pytest.raises(DataError, match="no clean guide image of class 3"):
        choose_guides(np.array([3]), pool)


def test_more_restarts_never_weaken_the_detector_aware_attack(study):
    target, spec, pairs, kd = study
    test, run = pairs["adv_test"], RunOptions(progress=False)
    small = make_spec("bim", spec.eps, steps=3)  # a weak attack leaves room for the restarts to help
    results = {}
    for restarts in (1, 2):
        head = detector_head(target.model, kd, target.num_classes)
        adv, scores = adaptive_examples(target, small, kd, head, test, run, AdaptiveBudget((1.0,), restarts=restarts))
        assert (adv - test.clean).abs().max() <= spec.eps + 1e-6
        with torch.no_grad():
            fooled = (target.model(adv).argmax(1) != torch.from_numpy(test.labels)).numpy()
        n = len(fooled)
        unflagged = fooled & (scores[n:] <= np.quantile(scores[:n], 0.95))
        results[restarts] = (adv, undetected_success(fooled, scores), unflagged)
    assert results[2][1][1] >= results[1][1][1] and results[2][1][0] >= results[1][1][0], results
    assert (results[2][2] | ~results[1][2]).all()  # per image: unflagged success with 1 restart stays with 2
    assert not torch.equal(results[1][0], results[2][0])  # the random restart made other examples somewhere
    assert AdaptiveBudget(steps=7).spec(spec, restart=1) == make_spec("bim", spec.eps, 7, spec.step_size, random_start=True)
    with pytest.raises(ConfigError, match="`adaptive_restarts` must be >= 1"):
        AdaptiveBudget(restarts=0)


def test_the_adaptive_figure_has_a_bar_per_attack_and_detector():
    def e(value: float) -> Estimate:
        return Estimate(value, value - 0.1, value + 0.1, 40)

    rows = [AdaptiveRow(d, "bim", 8 / 255, e(0.9), e(a), e(0.8), e(0.7), e(0.2), e(u), 1.0, "", kind)
            for d, kind, a, u in (("kd", "detector-aware", 0.55, 0.6), ("kd", "feature-match", 0.7, 0.3),
                                  ("dfeat", "feature-match", 0.6, 0.4))]
    fig = adaptive_figure(rows, "pneumonia, ε = 8/255")
    auc, undetected = fig.axes[:2]
    # plain: 2 groups; detector-aware: KD only; feature match: 2
    assert len(auc.patches) == len(undetected.patches) == 5
    assert sorted(p.get_height() for p in undetected.patches) == pytest.approx([20, 20, 30, 40, 60])
    assert "8/255" in fig.legends[0].get_texts()[0].get_text()
    fig.savefig(io.BytesIO(), format="png")
