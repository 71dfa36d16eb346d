"""The 95 % intervals: Wilson for proportions, DeLong for AUCs (Newcombe's at 0 and 1)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm
from sklearn.metrics import roc_auc_score

from medart.intervals import Estimate, auc_interval, estimates, interval_metrics, macro_auc_interval, mean_of, proportion, wilson


def test_wilson_is_the_score_interval():
    # Wilson's formula by hand: (p + z²/2n ± z √(p(1−p)/n + z²/4n²)) / (1 + z²/n)
    k, n, z = 7, 10, norm.ppf(0.975)
    p = k / n
    centre, half = (p + z**2 / (2 * n)) / (1 + z**2 / n), z * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / (1 + z**2 / n)
    out = wilson(k, n)
    assert out.value == 0.7 and out.n == 10
    assert (out.low, out.high) == pytest.approx((centre - half, centre + half), abs=1e-9)
    # it keeps a width at the edges, where the normal approximation collapses to a point
    assert wilson(0, 20).high == pytest.approx(0.1611, abs=1e-4) and wilson(20, 20).low == pytest.approx(0.8389, abs=1e-4)
    assert proportion(np.array([True] * 7 + [False] * 3)) == out
    assert math.isnan(wilson(0, 0).value)


def _delong_by_pairs(positive: np.ndarray, negative: np.ndarray) -> tuple[float, float]:
    """DeLong's AUC and variance straight from the definition, pair by pair (ties count half)."""
    psi = (positive[:, None] > negative[None, :]) + 0.5 * (positive[:, None] == negative[None, :])
    v10, v01 = psi.mean(1), psi.mean(0)
    return psi.mean(), v10.var(ddof=1) / len(positive) + v01.var(ddof=1) / len(negative)


def test_delong_matches_its_definition_with_ties():
    rng = np.random.default_rng(0)
    positive, negative = rng.integers(0, 8, 30).astype(float), rng.integers(-2, 6, 45).astype(float)  # many ties
    scores = np.r_[positive, negative]
    labels = np.r_[np.ones(30), np.zeros(45)]
    auc, variance = _delong_by_pairs(positive, negative)
    out = auc_interval(scores, labels)
    assert out.value == pytest.approx(auc) == pytest.approx(roc_auc_score(labels, scores))
    assert (out.high - out.low) / 2 == pytest.approx(norm.ppf(0.975) * math.sqrt(variance))
    assert out.n == 30


def test_delong_interval_covers_the_true_auc_about_95_percent_of_the_time():
    """Binormal scores with a known AUC, Φ(d/√2), 36 pairs as in the main job's detection split."""
    rng, d, n, hits = np.random.default_rng(1), 0.8, 36, 0
    truth = norm.cdf(d / math.sqrt(2))
    labels = np.r_[np.ones(n), np.zeros(n)]
    for _ in range(400):
        out = auc_interval(np.r_[rng.normal(d, 1, n), rng.normal(0, 1, n)], labels)
        hits += out.low <= truth <= out.high
    assert 0.91 <= hits / 400 <= 0.98


def test_a_perfect_separation_on_few_pairs_keeps_a_width():
    """DFeat's "100 % from 4 pairs": DeLong's variance is 0 there; Newcombe's score interval is not a point."""
    labels = np.r_[np.ones(4), np.zeros(4)]
    perfect = auc_interval(np.r_[10.0 + np.arange(4), np.arange(4.0)], labels)
    assert perfect.value == 1.0 and perfect.high == 1.0 and 0.5 < perfect.low < 0.65 and perfect.n == 4
    assert not perfect.contains_chance
    reversed_ = auc_interval(np.r_[np.arange(4.0), 10.0 + np.arange(4)], labels)
    assert (reversed_.low, reversed_.high) == pytest.approx((0.0, 1 - perfect.low))
    # more pairs, a narrower interval
    many = auc_interval(np.r_[100.0 + np.arange(60), np.arange(60.0)], np.r_[np.ones(60), np.zeros(60)])
    assert many.low > perfect.low


def test_an_auc_near_chance_says_so_and_an_empty_group_is_nan():
    constant = auc_interval(np.zeros(20), np.r_[np.ones(10), np.zeros(10)])
    assert constant.value == 0.5 and constant.contains_chance
    assert math.isnan(auc_interval(np.arange(5.0), np.ones(5)).value)


def test_logged_names_and_printed_form():
    out = Estimate(0.876, 0.843, 0.903, 468)
    assert out.metrics("clean_acc") == {"clean_acc": 0.876, "clean_acc_ci_low": 0.843, "clean_acc_ci_high": 0.903,
                                        "clean_acc_n": 468.0}
    assert out.percent() == "87.6 [84.3, 90.3] %"
    assert Estimate(math.nan, math.nan, math.nan, 0).percent() == "–"


def test_macro_auc_interval_is_delongs_for_two_classes_and_sklearns_value_for_three():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 60)
    scores = rng.random(60) + 0.4 * labels
    probs = np.c_[1 - scores, scores]
    two, one = macro_auc_interval(probs, labels), auc_interval(scores, labels == 1)
    assert (two.value, two.low, two.high) == pytest.approx((one.value, one.low, one.high)) and two.n == one.n
    labels3 = np.repeat([0, 1, 2], 20)
    logits = rng.normal(size=(60, 3)) + 1.5 * np.eye(3)[labels3]
    probs3 = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    e = macro_auc_interval(probs3, labels3)
    assert e.value == pytest.approx(roc_auc_score(labels3, probs3, multi_class="ovr", average="macro"))
    assert e.low < e.value < e.high and e.n == 20
    assert math.isnan(macro_auc_interval(probs3[:40], labels3[:40]).value)  # a class with no image: nothing measured


def test_mean_of_recalls_keeps_a_width_at_the_edges_and_skips_nan():
    balanced = mean_of([wilson(20, 20), wilson(0, 20)])  # a model answering one class: 50 %, not certain
    assert balanced.value == 0.5 and balanced.n == 40 and balanced.low < 0.5 < balanced.high
    perfect = mean_of([wilson(20, 20), wilson(10, 10)])
    assert perfect.value == 1.0 and perfect.high == 1.0 and perfect.low < 0.9
    assert mean_of([wilson(5, 10), wilson(0, 0)]).value == 0.5  # the empty class left out, as np.nanmean does


def test_interval_metrics_and_estimates_round_trip():
    logged = {"acc": 0.75} | interval_metrics({"acc": wilson(3, 4)}) | {"loss": 0.3}
    assert set(logged) == {"acc", "acc_ci_low", "acc_ci_high", "acc_n", "loss"}
    assert estimates(logged) == {"acc": wilson(3, 4)}
    assert Estimate.read({"acc": 0.75}, "acc").n == 0 and math.isnan(Estimate.read({"acc": 0.75}, "acc").low)
