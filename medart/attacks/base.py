"""What every attack backend shares: input checks, batching, a frozen model, seeded randomness."""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from typing import Callable, ClassVar, Iterator

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from medart.attacks.specs import AttackSpec, check_backend
from medart.errors import ConfigError, DataError
from medart.models.defended import attacking
from medart.models.evaluation import resolve_device


def check_inputs(x: torch.Tensor, y: torch.Tensor, num_classes: int) -> None:
    """Refuse what a backend would silently alter: torchattacks clamps inputs to [0, 1] and ART
    raises on float64, so medart checks dtype, shape, range, finiteness and labels first."""
    if not isinstance(x, torch.Tensor) or x.dtype != torch.float32 or x.ndim != 4:
        raise DataError(f"attack inputs must be a float32 tensor (N, C, H, W), got {getattr(x, 'dtype', type(x))} {tuple(getattr(x, 'shape', ()))}")
    if not torch.isfinite(x).all():
        raise DataError("attack inputs contain NaN or Inf; clean the data before attacking")
    if x.numel() and (x.min() < 0 or x.max() > 1):
        raise DataError(f"attack inputs must be pixels in [0, 1], got range [{x.min():.4g}, {x.max():.4g}]; do not normalise them (the model does)")
    if y.ndim != 1 or len(y) != len(x):
        raise DataError(f"labels must be shape ({len(x)},), got {tuple(y.shape)}")
    if len(y) and (y.min() < 0 or y.max() >= num_classes):
        raise DataError(f"labels must be in 0…{num_classes - 1} for this {num_classes}-class model, got {int(y.min())}…{int(y.max())}")


def project(adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """``adv`` clipped into the L∞ ε-ball around ``x`` and into [0, 1]."""
    return torch.min(torch.max(adv, x - eps), x + eps).clamp_(0.0, 1.0)


def max_targets(num_classes: int) -> int:
    """Target classes of APGD-T and FAB-T: AutoAttack's standard 9, at most the K − 1 wrong classes."""
    return min(9, num_classes - 1)


@contextlib.contextmanager
def frozen(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode and no weight gradients while attacking (the paper freezes the trained network;
    weight gradients would also make ART's ``loss_gradient`` ~1.5× slower), restored afterwards."""
    was_training = model.training
    flags = [p.requires_grad for p in model.parameters()]
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, flag in zip(model.parameters(), flags):
            p.requires_grad_(flag)
        model.train(was_training)


@contextlib.contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch (torchattacks' random start) and NumPy (ART's) without disturbing the caller's RNGs."""
    np_state = np.random.get_state()
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        try:
            yield
        finally:
            np.random.set_state(np_state)


# how a backend runs one attack on one batch already on its device: (backend, x, y) → x_adv
Builder = Callable[["AttackBackend", torch.Tensor, torch.Tensor], torch.Tensor]


class AttackBackend(ABC):
    """Runs one :class:`AttackSpec` against a frozen classifier.

    A library's subclass runs each attack with the builder its module registers under the
    attack's name (``@ARTBackend.builds("fgsm")``, :meth:`builds`); every subclass has its own
    :attr:`builders`, which are exactly the attacks whose entry (:mod:`medart.attacks.specs`)
    lists its backend.

    Args:
        model: maps float32 ``(N, C, H, W)`` pixels in [0, 1] to logits ``(N, K)``.
        spec: the attack.
        num_classes: K.
        batch_size: images per attack batch.
        device: ``auto`` (CUDA when present), ``cpu`` or ``cuda[:N]``.
        loss: replaces the spec's loss (ascended untargeted, as cross-entropy is), e.g. the
            detector-aware loss of :mod:`medart.attacks.adaptive`; ``None``: the spec's.
    """

    name: str
    builders: ClassVar[dict[str, Builder]] = {}  # attack name → how this library runs it (each subclass its own)

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        cls.builders = {}

    @classmethod
    def builds(cls, name: str) -> Callable[[Builder], Builder]:
        """Decorator: the function runs attack ``name`` on one batch in this library."""

        def register(builder: Builder) -> Builder:
            cls.builders[name] = builder
            return builder

        return register

    def __init__(self, model: nn.Module, spec: AttackSpec, num_classes: int, batch_size: int = 128, device: str = "auto",
                 loss: nn.Module | None = None) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch size must be >= 1, got {batch_size}")
        self.model, self.spec, self.num_classes, self.batch_size, self.loss = model, spec, num_classes, batch_size, loss
        self.device = resolve_device(device)

    def _generate_batch(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Adversarial examples for one batch already on ``self.device``: the builder of the spec's attack."""
        builder = self.builders.get(self.spec.name)
        if builder is None:
            check_backend(self.spec.name, self.name)  # the entry does not list this backend: its own line
            raise ConfigError(f"the {self.name} backend has no builder for {self.spec.name}; its entry in "
                              "medart.attacks.specs and the backend module disagree")
        return builder(self, x, y)

    @abstractmethod
    def _draw_random_start(self, shape: torch.Size) -> None:
        """Draw, and drop, what ``_generate_batch`` draws for the random start of a batch of ``shape``."""

    def metrics(self) -> dict[str, float]:
        """What this attack measured about its own work across its :meth:`generate` calls, as
        run metrics (AutoAttack: which part broke each image); none by default."""
        return {}

    def generate(
        self, x: torch.Tensor, y: torch.Tensor, seed: int = 0, progress: bool = False, start: int = 0
    ) -> torch.Tensor:
        """Adversarial examples ``(N, C, H, W)`` for inputs ``x`` and labels ``y`` (true classes, or
        targets when the spec is targeted); same dtype, on the CPU.

        ``start`` > 0 says ``x`` is a shard that begins at image ``start`` of a longer input (a
        multiple of the batch size, so the batches are the long input's batches): the random
        starts of the ``start`` images before it are drawn first, batch by batch, so the shard's
        examples are the ones one call on the whole input makes with the same ``seed``. AutoAttack
        and its parts instead reseed every batch with ``seed`` (torchattacks' do so themselves),
        so a shard needs no replay. A model behind a preprocessing defence is attacked through it
        as the spec says (:func:`medart.models.defended.attacking`: BPDA by default).
        """
        check_inputs(x, y, self.num_classes)
        if start < 0 or start % self.batch_size:
            raise ConfigError(f"a shard must start at a multiple of the batch size {self.batch_size}, got {start}")
        self.model.to(self.device)
        out = []
        with frozen(self.model), seeded(seed, self.device), attacking(self.model, self.spec):
            for _ in range(start // self.batch_size if self.spec.random_start and not self.spec.sets_own_step else 0):
                self._draw_random_start(torch.Size((self.batch_size, *x.shape[1:])))
            batches = range(0, len(x), self.batch_size)
            for first in tqdm(batches, desc=f"{self.name} {self.spec.label()}", disable=not progress, leave=False):
                if self.spec.sets_own_step:
                    torch.manual_seed(seed)
                    np.random.seed(seed % 2**32)
                xb = x[first : first + self.batch_size].to(self.device)
                yb = y[first : first + self.batch_size].to(self.device)
                adv = self._generate_batch(xb, yb)
                # Backends clip to the ε-ball themselves; this guards against their float rounding.
                adv = project(adv, xb, self.spec.eps)
                out.append(adv.detach().cpu())
        return torch.cat(out) if out else x.clone()
