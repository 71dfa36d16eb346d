"""Attack difficulty: the least ε at which an attack drives accuracy below a threshold.

The paper calls a model easy to attack when BIM, PGD or CW push its accuracy below 1 % at an L∞
budget under 1/255. :func:`least_successful_eps` measures that budget by bisection over ε in
(0, ε_max] (:class:`Bisection`), and reports it as a bracket ``[lo, hi]``: accuracy was still ≥ the threshold at ``lo``
and below it at ``hi``. The bracket holds the threshold ε* exactly when accuracy falls
monotonically with ε — true for FGSM on a linear model and, up to the randomness of random
starts, for the paper's iterative attacks, whose ε-balls are nested.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import torch
from torch import nn
from torch.utils.data import TensorDataset
from tqdm.auto import tqdm

from medart.attacks import ATTACKS, make_attack, make_spec, parse_names
from medart.budget import Eps
from medart.errors import ConfigError
from medart.models.evaluation import predict
from medart.results import EpsBracket


def adversarial_accuracy(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, attack: str, eps: float, backend: str = "art",
    batch_size: int = 128, seed: int = 0, device: str = "auto",
) -> float:
    """Accuracy (in [0, 1]) of ``model`` under ``attack`` (paper settings at ``eps``, seeded) of the
    images ``x`` ``(N, C, H, W)`` in [0, 1] with labels ``y`` ``(N,)``."""
    config = getattr(model, "config", None) or {}
    num_classes = config.get("num_classes") or predict(model, TensorDataset(x[:1], y[:1]), device=device)[0].shape[1]
    adv = make_attack(model, make_spec(attack, eps), num_classes, backend, batch_size, device).generate(x, y, seed=seed)
    probs, labels = predict(model, TensorDataset(adv, y), batch_size, device)
    return float((probs.argmax(1) == labels).mean())


@dataclass(frozen=True)
class Bisection:
    """What :func:`least_successful_eps` searches for: the least ε in (0, ``eps_max``] at which
    ``bisect_attack`` (paper settings, seeded) leaves accuracy below ``threshold``, bisected until
    the bracket is at most ``eps_tolerance`` wide. ε in [0, 1] pixel units, held as
    :class:`~medart.budget.Eps` (given as Eps or floats); ``threshold`` in (0, 1] (0.01: the
    paper's "below 1 %"). Each field is the same-named option of ``medart ablate``."""

    bisect_attack: str = "pgd"
    eps_max: Eps = Eps(32 / 255)
    eps_tolerance: Eps = Eps(0.25 / 255)
    threshold: float = 0.01

    def __post_init__(self) -> None:
        for name in ("eps_max", "eps_tolerance"):
            object.__setattr__(self, name, Eps(getattr(self, name), name))
        parse_names(self.bisect_attack, ATTACKS, "attack")
        if not self.eps_tolerance < self.eps_max:
            raise ConfigError(f"the bisection tolerance `eps_tolerance` must be in (0, `eps_max`), got {self.eps_tolerance} "
                              f"with `eps_max` {self.eps_max}")
        if not 0 < self.threshold <= 1:
            raise ConfigError(f"the accuracy `threshold` must be in (0, 1], got {self.threshold}")


def least_successful_eps(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    bisection: Bisection = Bisection(),
    known: Mapping[float, float] | None = None,
    backend: str = "art",
    batch_size: int = 128,
    seed: int = 0,
    device: str = "auto",
    progress: bool = False,
) -> EpsBracket:
    """Bisect as ``bisection`` says for the least ε at which its attack leaves accuracy below its
    threshold, until the bracket is at most its tolerance wide.

    ``x``: float32 ``(N, C, H, W)`` in [0, 1]; ``y``: int64 ``(N,)``; ε in [0, 1] pixel units.
    ``known``: accuracies already measured with the same attack, images and seed (e.g. a sweep's
    ``{ε: accuracy}``); they narrow the starting bracket and are not recomputed. Costs about
    ``1 + log2(eps_max / eps_tolerance)`` attacks at most.
    """
    attack, eps_max, tolerance, threshold = (bisection.bisect_attack, bisection.eps_max, bisection.eps_tolerance,
                                             bisection.threshold)
    seen = {float(e): float(a) for e, a in (known or {}).items() if 0 < e <= eps_max}

    def accuracy(eps: float) -> float:
        if eps not in seen:
            seen[eps] = adversarial_accuracy(model, x, y, attack, eps, backend, batch_size, seed, device)
            bar.update()
        return seen[eps]

    bar = tqdm(desc=f"bisect {attack} ε", disable=not progress, leave=False)
    try:
        below = [e for e, a in seen.items() if a < threshold]
        hi = min(below) if below else (eps_max if accuracy(eps_max) < threshold else None)
        if hi is None:
            return EpsBracket(attack, threshold, eps_max, eps_max, None, sorted(seen.items()))
        lo = max((e for e, a in seen.items() if a >= threshold and e < hi), default=0.0)
        while hi - lo > tolerance:
            mid = (lo + hi) / 2
            if accuracy(mid) < threshold:
                hi = mid
            else:
                lo = mid
    finally:
        bar.close()
    return EpsBracket(attack, threshold, eps_max, lo, hi, sorted(seen.items()))
