"""Fitting the classifier: SGD with the paper's augmentations, a counter to class imbalance and
best-on-validation checkpointing.

Tracking-agnostic: per-epoch metrics go to a callback, which ``medart.stages.train`` points at MLflow.
"""

from __future__ import annotations

import copy
import random
import time
from dataclasses import dataclass, field
from typing import Callable, ClassVar

import numpy as np
import torch
from sklearn.utils.class_weight import compute_class_weight
from torch import nn
from torch.utils.data import DataLoader, WeightedRandomSampler
from tqdm.auto import tqdm

from medart.catalog import BALANCES, MONITORS
from medart.data.base import MedicalImageDataset
from medart.errors import ConfigError, DataError
from medart.models.evaluation import classification_metrics, predict, resolve_device
from medart.transforms import RandomAffineBatch


@dataclass
class TrainConfig:
    """Training settings: the main job's defaults (10 epochs of SGD at lr 0.01, enough for a ResNet-50
    from scratch on 28-px images; the paper trained 300 epochs from ImageNet weights)."""

    epochs: int = 10
    batch_size: int = 64
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 0.0
    augment: bool = True
    rotation: float = 10.0  # degrees, ± uniform
    shift: float = 0.1  # fraction of width/height, ± uniform
    hflip: bool = True
    monitor: str = "val_acc"
    balance: str = "weights"  # weights: class-weighted loss; sampler: class-balanced batches; none
    patience: int | None = None  # epochs without improvement before stopping early
    seed: int = 0
    device: str = "auto"
    monitors: ClassVar[dict[str, int]] = MONITORS  # the names ``monitor`` may take → +1 higher is better, -1 lower

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ConfigError(f"`epochs` must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ConfigError(f"`batch_size` must be >= 1, got {self.batch_size}")
        if not self.lr > 0:
            raise ConfigError(f"`lr` must be > 0, got {self.lr}")
        if not 0 <= self.momentum < 1:
            raise ConfigError(f"`momentum` must be in [0, 1), got {self.momentum}")
        if self.monitor not in self.monitors:
            raise ConfigError(f"unknown monitor '{self.monitor}'; choose one of: {', '.join(self.monitors)}")
        if self.balance not in BALANCES:
            raise ConfigError(f"unknown balance '{self.balance}'; choose one of: {', '.join(BALANCES)}")
        if self.patience is not None and self.patience < 1:
            raise ConfigError(f"`patience` must be >= 1 epoch, got {self.patience}")


@dataclass
class TrainResult:
    best_epoch: int
    best: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)
    seconds_per_epoch: float = 0.0


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def class_counts(train: MedicalImageDataset) -> np.ndarray:
    """Training images per class ``(K,)``; refuses a class with none, which no weighting can balance."""
    counts = np.bincount(train.targets, minlength=train.num_classes)
    if (counts == 0).any():
        missing = train.classes[int(np.flatnonzero(counts == 0)[0])]
        raise DataError(f"class '{missing}' has no training image, so it cannot be balanced: give it images "
                        "(raise `max_train`) or train with `balance` none")
    return counts


def training_batches(train: MedicalImageDataset, config: TrainConfig, generator: torch.Generator) -> tuple[DataLoader, nn.Module]:
    """The loader of training batches and the loss, as ``config.balance`` says.

    ``none`` shuffles and weighs every image alike. ``weights`` weighs each image's loss by
    scikit-learn's "balanced" class weight ``N / (K · n_k)``, so every class carries the same total
    weight in an epoch. ``sampler`` draws each batch with replacement, each class as often as any
    other (an epoch is still ``len(train)`` images: the rare class's repeat, some common ones are
    not drawn).
    """
    drop_last = len(train) > config.batch_size
    if config.balance == "sampler":
        per_image = (1.0 / class_counts(train))[train.targets]
        sampler = WeightedRandomSampler(torch.as_tensor(per_image, dtype=torch.double), len(train), generator=generator)
        return DataLoader(train, batch_size=config.batch_size, sampler=sampler, drop_last=drop_last), nn.CrossEntropyLoss()
    loader = DataLoader(train, batch_size=config.batch_size, shuffle=True, generator=generator, drop_last=drop_last)
    if config.balance == "weights":
        class_counts(train)  # refuses an empty class before scikit-learn does, in one line
        weights = compute_class_weight("balanced", classes=np.arange(train.num_classes), y=train.targets)
        return loader, nn.CrossEntropyLoss(weight=torch.as_tensor(weights, dtype=torch.float32))
    return loader, nn.CrossEntropyLoss()


def fit(
    model: nn.Module,
    train: MedicalImageDataset,
    val: MedicalImageDataset,
    config: TrainConfig,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train ``model`` in place; on return it holds the weights of the best validation epoch.

    ``on_epoch(epoch, metrics)`` receives ``train_loss`` (class-weighted with ``balance``
    weights), ``train_acc``, the validation metrics of :func:`classification_metrics` prefixed
    ``val_`` (``val_acc``, ``val_balanced_acc``, ``val_recall_<class>`` …) and ``epoch_seconds``
    after each epoch (epochs count from 1).
    """
    device = resolve_device(config.device)
    generator = seed_everything(config.seed)
    augment = RandomAffineBatch(config.rotation, config.shift, config.hflip, generator) if config.augment else None
    loader, loss_fn = training_batches(train, config, generator)
    loss_fn.to(device)
    model.to(device)
    optimiser = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    sign = MONITORS[config.monitor]
    best_state, result, stale = None, None, 0
    history = []
    for epoch in range(1, config.epochs + 1):
        start = time.perf_counter()
        model.train()
        seen, loss_sum, correct = 0, 0.0, 0
        bar = tqdm(loader, desc=f"epoch {epoch}/{config.epochs}", disable=not progress, leave=False)
        for x, y in bar:
            x, y = x.to(device), y.to(device)
            if augment is not None:
                x = augment(x)
            logits = model(x)
            loss = loss_fn(logits, y)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            seen += len(y)
            loss_sum += loss.item() * len(y)
            correct += (logits.argmax(1) == y).sum().item()
            bar.set_postfix(loss=f"{loss_sum / seen:.4f}")
        probs, labels = predict(model, val, device=device)
        val_m = classification_metrics(probs, labels, getattr(val, "classes", None))
        metrics = {
            "train_loss": loss_sum / max(seen, 1),
            "train_acc": correct / max(seen, 1),
            **{f"val_{k}": v for k, v in val_m.items()},
            "epoch_seconds": time.perf_counter() - start,
        }
        history.append(metrics)
        if on_epoch is not None:
            on_epoch(epoch, metrics)
        score = metrics[config.monitor]
        if result is None or sign * score > sign * result.best[config.monitor]:
            best_state = copy.deepcopy(model.state_dict())
            result = TrainResult(epoch, metrics)
            stale = 0
        else:
            stale += 1
            if config.patience is not None and stale >= config.patience:
                break
    model.load_state_dict(best_state)
    model.eval()
    result.history = history
    result.seconds_per_epoch = float(np.mean([h["epoch_seconds"] for h in history]))
    return result


