"""Class imbalance: balanced accuracy and per-class recall, and training with ``balance``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import balanced_accuracy_score
from torch import nn

from medart.data.base import ArrayDataset
from medart.errors import ConfigError, DataError
from medart.models.evaluation import classification_metrics, predict
from medart.models.training import TrainConfig, fit, training_batches


def test_balanced_accuracy_and_recall_per_class():
    labels = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    predicted = np.array([0, 0, 0, 0, 0, 1, 0, 0])  # the majority class almost everywhere
    probs = np.eye(3)[predicted] * 0.9 + 0.1 / 3
    m = classification_metrics(probs, labels, ["no finding", "mass", "nodule"])
    assert m["acc"] == 5 / 8
    assert m["balanced_acc"] == pytest.approx(balanced_accuracy_score(labels, predicted)) == pytest.approx(0.5)
    assert (m["recall_no_finding"], m["recall_mass"], m["recall_nodule"]) == (1.0, 0.5, 0.0)
    # a class with no image has no recall, and balanced accuracy averages the classes present
    m = classification_metrics(np.array([[0.9, 0.1], [0.2, 0.8]]), np.array([0, 0]))
    assert np.isnan(m["recall_1"]) and m["recall_0"] == m["balanced_acc"] == 0.5
    # names that clean up alike, or to nothing, still give one recall per class
    m = classification_metrics(probs, labels, ["Mass", "mass", "+"])
    assert (m["recall_mass_0"], m["recall_mass_1"], m["recall_2"]) == (1.0, 0.5, 0.0)
    m = classification_metrics(probs, labels, ["Mass", "mass", "mass 1"])  # "mass_1" twice: indices
    assert (m["recall_0"], m["recall_1"], m["recall_2"]) == (1.0, 0.5, 0.0)


def brightness_images(n_rare: int, n_common: int, seed: int) -> ArrayDataset:
    """Flat grey 4×4 images whose brightness tells the class apart, with overlap: rare ~ N(110, 25),
    common ~ N(145, 25) (uint8 levels)."""
    rng = np.random.default_rng(seed)
    y = np.r_[np.zeros(n_rare, np.int64), np.ones(n_common, np.int64)]
    level = np.clip(rng.normal(np.where(y == 0, 110, 145), 25), 0, 255)
    return ArrayDataset(np.broadcast_to(level[:, None, None], (len(y), 4, 4)).astype(np.uint8), y, ["rare", "common"])


class Brightness(nn.Module):
    """Logistic regression on an image's mean brightness."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc((x.mean((1, 2, 3)) - 0.5)[:, None] * 10)


def test_weights_and_sampler_balance_what_training_sees():
    train = brightness_images(10, 100, 0)
    generator = torch.Generator().manual_seed(0)
    loader, loss = training_batches(train, TrainConfig(balance="weights"), generator)
    assert torch.allclose(loss.weight, torch.tensor([110 / (2 * 10), 110 / (2 * 100)]))  # N / (K · n_k)
    loader, loss = training_batches(train, TrainConfig(balance="sampler", batch_size=10), generator)
    drawn = torch.cat([y for _, y in loader])
    assert loss.weight is None and len(drawn) == 110
    assert 35 <= int((drawn == 0).sum()) <= 75  # about half rare, against 10 of 110 in the data
    loader, loss = training_batches(train, TrainConfig(balance="none", batch_size=10), generator)
    assert loss.weight is None and sorted(torch.cat([y for _, y in loader]).tolist()) == sorted(train.targets.tolist())

    with pytest.raises(ConfigError, match="unknown balance 'oversample'"):
        TrainConfig(balance="oversample")
    with pytest.raises(DataError, match="class 'rare' has no training image"):
        training_batches(brightness_images(0, 10, 0), TrainConfig(balance="weights"), generator)


def test_balancing_keeps_the_rare_class_that_plain_training_gives_up():
    """10 : 1 in training, balanced validation: unweighted training moves the decision towards the
    common class and finds few rare images; either balance recovers them."""
    train, val = brightness_images(20, 200, 0), brightness_images(200, 200, 1)
    recall = {}
    for balance in ("none", "weights", "sampler"):
        torch.manual_seed(0)
        model = Brightness()
        config = TrainConfig(epochs=10, batch_size=32, lr=0.1, augment=False, balance=balance, monitor="val_balanced_acc")
        result = fit(model, train, val, config, progress=False)
        assert "val_recall_rare" in result.best and "val_balanced_acc" in result.best
        recall[balance] = classification_metrics(*predict(model, val), val.classes)["recall_rare"]
    assert recall["none"] < 0.5 < min(recall["weights"], recall["sampler"])
    assert min(recall["weights"], recall["sampler"]) - recall["none"] > 0.2
