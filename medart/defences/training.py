"""Robust training through ART's trainers (``art.defences.trainer``), on medart's batches.

=========  ==========================================================  ==============================================
trainer    ART trainer                                                 what a batch is trained on
=========  ==========================================================  ==============================================
pgd-at     ``AdversarialTrainer(ratio=1)`` + ``ProjectedGradientDescent``  PGD examples only (Madry et al. 2018; ART's
                                                                       ``AdversarialTrainerMadryPGD`` is this pair)
trades     ``AdversarialTrainerTRADESPyTorch`` + the same PGD          clean loss + β · KL(clean ‖ PGD) (Zhang et al.
                                                                       2019; ART's inner maximisation is the PGD's
                                                                       cross-entropy, not the paper's KL)
fbf        ``AdversarialTrainerFBFPyTorch``                            one FGSM step of 1.25 ε from a random start
                                                                       (Wong et al. 2020), ART's cyclic learning rate
awp        ``AdversarialTrainerAWPPyTorch`` (mode PGD) + the same PGD  PGD examples, the weights first pushed γ·‖w‖
                                                                       uphill by a proxy copy's step (Wu et al. 2020)
=========  ==========================================================  ==============================================

The trainers run over an ``art.estimators.classification.PyTorchClassifier`` with
``clip_values=(0, 1)`` and no preprocessing: the model's own normalisation is inside it, so ε is
in [0, 1] pixels as everywhere in medart. They are fed through their ``fit_generator`` by
:class:`EpochBatches`, an ART ``DataGenerator`` over medart's training batches (shuffled or
class-balanced, the paper's augmentation, the class-weighted loss of ``balance``), which is also
how medart sees an epoch end: before the first batch of the next epoch (or when the trainer
returns) the model is measured on the validation split, clean and under PGD at the training ε,
the best epoch's weights are kept, and ``patience`` can stop the trainer. One call of
``fit_generator`` for all epochs keeps each trainer's own schedule (FBF's learning rate runs
once over all of them) and optimiser state.

Tracking-agnostic, like :mod:`medart.models.training`: per-epoch metrics go to a callback.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, ClassVar

import numpy as np
import torch
from art.data_generators import DataGenerator
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from medart.budget import Eps
from medart.catalog import ROBUST_MONITORS, TRAINERS
from medart.data.base import MedicalImageDataset, stack
from medart.errors import ConfigError
from medart.models.evaluation import classification_metrics, predict, resolve_device
from medart.models.training import TrainConfig, TrainResult, seed_everything, training_batches
from medart.transforms import RandomAffineBatch

FBF_PEAK_LR = 0.21  # ART's FBF hard-codes its cyclic schedule: 0 → 0.21 at 2/5 of the epochs → 0
DEFAULT_STEPS = 7  # Madry et al.'s CIFAR-10 recipe: 7 steps of ε/4
DEFAULT_STEP_FRACTION = 1 / 4
DEFAULT_BETA = 6.0  # TRADES' 1/λ in Zhang et al.'s experiments
DEFAULT_GAMMA = 5e-3  # AWP's relative weight perturbation for PGD-AT in Wu et al.'s experiments


@dataclass
class HardenConfig(TrainConfig):
    """Robust fine-tuning: the trainer and its budget, and the optimisation settings of
    :class:`~medart.models.training.TrainConfig` (SGD, augmentation, ``balance``, ``patience``).

    ``trainer``: ``pgd-at``, ``trades``, ``fbf`` or ``awp`` (see the module). ``eps``: the L∞ budget
    trained against, in [0, 1] pixels (a number or ``k/255``). ``steps``/``step_size``: the training
    PGD of pgd-at, trades and awp (default 7 steps of ε/4, one random start); fbf takes one step of
    1.25 ε and refuses them. ``beta``: TRADES' weight of the KL term (default 6; trades only).
    ``gamma``: AWP's weight perturbation relative to each layer's weight norm (default 5e-3; awp
    only; its proxy copy steps with ``lr``, without momentum). ``monitor``
    picks the epoch kept, by default ``val_pgd_balanced_acc``: the balanced accuracy under PGD
    at ``eps`` on the validation split, which a model that answers one class cannot win (its PGD
    accuracy equals the majority class's share). fbf ignores ``lr``: ART's FBF sets the learning
    rate itself (0 → 0.21 → 0 over the epochs, gradients clipped to norm 0.5).
    """

    epochs: int = 5
    monitor: str = "val_pgd_balanced_acc"
    trainer: str = "pgd-at"
    eps: Eps | float | str = 2 / 255
    steps: int | None = None
    step_size: float | str | None = None
    beta: float | None = None
    gamma: float | None = None
    monitors: ClassVar[dict[str, int]] = ROBUST_MONITORS

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.trainer not in TRAINERS:
            raise ConfigError(f"unknown trainer '{self.trainer}'; choose one of: {', '.join(TRAINERS)}")
        if self.batch_size < 2:  # batch norm in training mode needs two images a batch
            raise ConfigError(f"`batch_size` must be >= 2 for robust training, got {self.batch_size}")
        self.eps = Eps(self.eps)
        if self.step_size is not None:
            self.step_size = Eps(self.step_size, "step_size")
        if self.trainer == "fbf":
            given = [f"`{name}`" for name in ("steps", "step_size", "beta", "gamma") if getattr(self, name) is not None]
            if given:
                raise ConfigError(f"fbf takes one FGSM step of 1.25 ε from a random start, no KL term and no weight "
                                  f"perturbation; drop {', '.join(given)}")
            return
        if self.beta is not None and self.trainer != "trades":
            raise ConfigError(f"`beta` weighs TRADES' KL term; {self.trainer} has none: drop `beta` or use the trades trainer")
        if self.gamma is not None and self.trainer != "awp":
            raise ConfigError(f"`gamma` sizes AWP's weight perturbation; {self.trainer} has none: drop `gamma` or use the "
                              "awp trainer")
        for name in ("beta", "gamma"):
            if getattr(self, name) is not None and not getattr(self, name) > 0:
                raise ConfigError(f"`{name}` must be > 0, got {getattr(self, name)}")
        if self.steps is not None and self.steps < 1:
            raise ConfigError(f"`steps` must be >= 1, got {self.steps}")
        if self.attack_step_size > self.eps * (1 + 1e-9):
            raise ConfigError(f"`step_size` {self.attack_step_size:.6g} exceeds `eps` {self.eps:.6g}: every step would be "
                              "clipped back to the ε-ball; use a `step_size` <= `eps`")

    @property
    def attack_steps(self) -> int:
        """Steps of the training PGD (pgd-at, trades, awp)."""
        return DEFAULT_STEPS if self.steps is None else self.steps

    @property
    def attack_step_size(self) -> float:
        """Step of the training PGD in [0, 1] pixels (pgd-at, trades, awp)."""
        return self.eps * DEFAULT_STEP_FRACTION if self.step_size is None else self.step_size

    @property
    def kl_weight(self) -> float:
        """TRADES' β."""
        return DEFAULT_BETA if self.beta is None else self.beta

    @property
    def weight_perturbation(self) -> float:
        """AWP's γ."""
        return DEFAULT_GAMMA if self.gamma is None else self.gamma

    def settings(self) -> dict[str, object]:
        """What the trainer ran with, as logged (``harden.<key>``): the optimisation settings, the
        ART class and its own settings, without those that do not apply to the trainer."""
        out = {k: v for k, v in asdict(self).items() if k not in ("steps", "step_size", "beta", "gamma")}
        if self.trainer == "fbf":
            del out["lr"]
            return out | {"art_trainer": "AdversarialTrainerFBFPyTorch", "fbf_step": 1.25 * self.eps,
                          "lr_schedule": f"ART's cyclic 0 → {FBF_PEAK_LR} → 0", "grad_clip_norm": 0.5}
        out |= {"steps": self.attack_steps, "step_size": self.attack_step_size, "random_starts": 1}
        if self.trainer == "trades":
            return out | {"art_trainer": "AdversarialTrainerTRADESPyTorch", "beta": self.kl_weight}
        if self.trainer == "awp":
            return out | {"art_trainer": "AdversarialTrainerAWPPyTorch", "awp_mode": "PGD", "warmup": 0,
                          "gamma": self.weight_perturbation}
        return out | {"art_trainer": "AdversarialTrainer + ProjectedGradientDescent", "ratio": 1.0}


@dataclass
class HardenResult(TrainResult):
    """:class:`~medart.models.training.TrainResult` with the wall time of one standard (not
    adversarial) training epoch on the same batches, through ART too, for comparison (seconds),
    the number of validation images, and the validation metrics of the model before training."""

    standard_seconds_per_epoch: float = math.nan
    n_val: int = 0  # the validation images each epoch's metrics are on
    before: dict[str, float] = field(default_factory=dict)  # the validation metrics of the model as given


class _Stop(Exception):
    """Raised into the ART trainer's loop by :class:`EpochBatches` when ``patience`` has run out."""


class EpochBatches(DataGenerator):
    """ART's ``DataGenerator`` over medart's training batches: float32 images ``(B, 3, S, S)`` in
    [0, 1], augmented when ``augment`` is given, and one-hot labels ``(B, K)``.

    ``on_epoch_end(epoch, seconds)`` is called when a whole epoch of batches has been trained:
    when the trainer asks for the first batch of the next epoch, or at :meth:`finish`; ``seconds``
    is the wall time from the epoch's first batch to then (what the trainer spent on it).
    """

    def __init__(self, loader: DataLoader, num_classes: int, augment: nn.Module | None = None,
                 on_epoch_end: Callable[[int, float], None] | None = None) -> None:
        super().__init__(size=len(loader) * loader.batch_size, batch_size=loader.batch_size)
        self._iterator = loader
        self.num_classes, self.augment, self.on_epoch_end = num_classes, augment, on_epoch_end
        self.epoch, self._served, self._batches, self._start = 0, 0, None, 0.0

    def get_batch(self) -> tuple[np.ndarray, np.ndarray]:
        if self._served == len(self.iterator):
            self._end_epoch()
        if self._served == 0:
            self._batches, self._start = iter(self.iterator), time.perf_counter()
        x, y = next(self._batches)
        self._served += 1
        if self.augment is not None:
            x = self.augment(x)
        return x.numpy(), np.eye(self.num_classes, dtype=np.float32)[y.numpy()]

    def finish(self) -> None:
        """End the last epoch (its batches have all been trained)."""
        if self._served:
            self._end_epoch()

    def _end_epoch(self) -> None:
        seconds = time.perf_counter() - self._start
        self.epoch, self._served = self.epoch + 1, 0
        if self.on_epoch_end is not None:
            self.on_epoch_end(self.epoch, seconds)


def art_classifier(model: nn.Module, loss: nn.Module, optimiser: torch.optim.Optimizer, side: int, num_classes: int,
                   device: str = "auto"):
    """An ART ``PyTorchClassifier`` training ``model`` (``(N, 3, side, side)`` pixels in [0, 1] →
    ``num_classes`` logits) with ``optimiser``: ``clip_values`` (0, 1), no preprocessing (the model
    normalises inside)."""
    from art.estimators.classification import PyTorchClassifier

    return PyTorchClassifier(model=model, loss=loss, optimizer=optimiser, input_shape=(3, side, side), nb_classes=num_classes,
                             clip_values=(0.0, 1.0), preprocessing=None,
                             device_type="gpu" if resolve_device(device).type == "cuda" else "cpu")


def sgd(model: nn.Module, config: TrainConfig) -> torch.optim.SGD:
    """The optimiser of ``config``'s settings (``lr``, ``momentum``, ``weight_decay``) for ``model``."""
    return torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)


def make_trainer(classifier, config: HardenConfig):
    """The ART trainer ``config.trainer`` names, around ``classifier``."""
    from art.attacks.evasion import ProjectedGradientDescent
    from art.defences.trainer import (AdversarialTrainer, AdversarialTrainerAWPPyTorch, AdversarialTrainerFBFPyTorch,
                                      AdversarialTrainerTRADESPyTorch)

    if config.trainer == "fbf":
        return AdversarialTrainerFBFPyTorch(classifier, eps=config.eps)
    pgd = ProjectedGradientDescent(classifier, norm=np.inf, eps=config.eps, eps_step=config.attack_step_size,
                                   max_iter=config.attack_steps, num_random_init=1, batch_size=config.batch_size, verbose=False)
    if config.trainer == "trades":
        return AdversarialTrainerTRADESPyTorch(classifier, pgd, beta=config.kl_weight)
    if config.trainer == "awp":
        # the proxy: a copy of the model whose one plain SGD step per batch finds where the weights are pushed
        proxy = copy.deepcopy(classifier.model)
        proxy_classifier = art_classifier(proxy, classifier.loss, torch.optim.SGD(proxy.parameters(), lr=config.lr),
                                          classifier.input_shape[-1], classifier.nb_classes, config.device)
        # beta weighs a TRADES mode's KL term, unused in PGD mode
        return AdversarialTrainerAWPPyTorch(classifier, proxy_classifier, pgd, mode="PGD", gamma=config.weight_perturbation,
                                            beta=DEFAULT_BETA, warmup=0)
    return AdversarialTrainer(classifier, pgd, ratio=1.0)


def validation_metrics(model: nn.Module, x: torch.Tensor, y: torch.Tensor, config: HardenConfig,
                       classes: list[str] | None) -> dict[str, float]:
    """``val_<metric>`` of :func:`classification_metrics` on the clean images ``x`` ``(N, 3, S, S)``
    and ``val_pgd_acc``, ``val_pgd_balanced_acc`` under medart's PGD (20 steps of ε/10, a random
    start; ``medart attack --attack pgd``) at ``config.eps``, seeded with ``config.seed``."""
    from medart.attacks import make_attack, make_spec

    probs, labels = predict(model, TensorDataset(x, y), config.batch_size, config.device)
    out = {f"val_{k}": v for k, v in classification_metrics(probs, labels, classes).items()}
    num_classes = probs.shape[1]
    adv = make_attack(model, make_spec("pgd", config.eps), num_classes, "art", config.batch_size, config.device).generate(
        x, y, config.seed)
    adv_probs, _ = predict(model, TensorDataset(adv, y), config.batch_size, config.device)
    robust = classification_metrics(adv_probs, labels, classes)
    return out | {"val_pgd_acc": robust["acc"], "val_pgd_balanced_acc": robust["balanced_acc"]}


def robust_fit(model: nn.Module, train: MedicalImageDataset, val: MedicalImageDataset, config: HardenConfig,
               on_epoch: Callable[[int, dict[str, float]], None] | None = None) -> HardenResult:
    """Train ``model`` (float32 ``(N, 3, S, S)`` pixels in [0, 1] → logits ``(N, K)``) in place
    with the ART trainer ``config.trainer`` names; on return it holds the weights of the best epoch
    on ``config.monitor``, in eval mode.

    ``on_epoch(epoch, metrics)`` receives, after each epoch (counted from 1), the validation
    metrics of :func:`validation_metrics` and ``epoch_seconds``, the wall time of the epoch's
    training (not of its validation); first, as epoch 0, the validation metrics of the model as
    given (``before``), on the same images and PGD. Afterwards one standard epoch of a copy of
    the model on the same batches, through ART's ``PyTorchClassifier.fit_generator``, gives
    ``standard_seconds_per_epoch``. (ART's trainers draw their own epoch bar on stderr.)
    """
    side = train[0][0].shape[-1]
    x_val, y_val = stack(val)
    classes = getattr(val, "classes", None)
    num_classes = train.num_classes
    loader, loss, augment = _training_batches(train, config)
    trainer = make_trainer(art_classifier(model, loss, sgd(model, config), side, num_classes, config.device), config)
    sign = config.monitors[config.monitor]
    history: list[dict[str, float]] = []
    best: dict = {}

    def epoch_end(epoch: int, seconds: float) -> None:
        metrics = validation_metrics(model, x_val, y_val, config, classes) | {"epoch_seconds": seconds}
        history.append(metrics)
        if on_epoch is not None:
            on_epoch(epoch, metrics)
        score = metrics[config.monitor]
        if not best or sign * score > sign * best["metrics"][config.monitor]:
            best.update(epoch=epoch, metrics=metrics, state=copy.deepcopy(model.state_dict()))
        elif config.patience is not None and epoch - best["epoch"] >= config.patience:
            raise _Stop

    before = validation_metrics(model, x_val, y_val, config, classes)
    if on_epoch is not None:
        on_epoch(0, before)
    batches = EpochBatches(loader, num_classes, augment, epoch_end)
    try:
        trainer.fit_generator(batches, nb_epochs=config.epochs)
        batches.finish()
    except _Stop:
        pass
    model.load_state_dict(best["state"])
    model.eval()
    standard = _standard_epoch_seconds(model, train, config, side)
    return HardenResult(best["epoch"], best["metrics"], history, float(np.mean([h["epoch_seconds"] for h in history])),
                        standard, len(y_val), before)


def _standard_epoch_seconds(model: nn.Module, train: MedicalImageDataset, config: HardenConfig, side: int) -> float:
    """Wall time of one standard training epoch of a copy of ``model`` on the batches
    :func:`robust_fit` trains on (same loader, augmentation, loss and optimiser, through ART)."""
    twin = copy.deepcopy(model)
    loader, loss, augment = _training_batches(train, config)
    classifier = art_classifier(twin, loss, sgd(twin, config), side, train.num_classes, config.device)
    start = time.perf_counter()
    classifier.fit_generator(EpochBatches(loader, train.num_classes, augment), nb_epochs=1)
    return time.perf_counter() - start


def _training_batches(train: MedicalImageDataset, config: HardenConfig) -> tuple[DataLoader, nn.Module, nn.Module | None]:
    """The loader and loss of :func:`~medart.models.training.training_batches` and the
    augmentation, all drawing from one generator seeded with ``config.seed`` (as ``fit`` does)."""
    generator = seed_everything(config.seed)
    loader, loss = training_batches(train, config, generator)
    augment = RandomAffineBatch(config.rotation, config.shift, config.hflip, generator) if config.augment else None
    return loader, loss, augment
