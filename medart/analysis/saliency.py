"""Saliency maps (the paper's Fig. 6): how strongly each pixel moves the model's loss.

Medical images have large regions of high input gradient, which Ma et al. give as one reason
they are easy to attack; :func:`high_saliency_fraction` turns "large" into a number.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from medart.errors import ConfigError
from medart.models.evaluation import resolve_device

TARGETS = ("loss", "logit")


def input_gradient(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    target: str = "loss",
    batch_size: int = 128,
    device: str = "auto",
) -> torch.Tensor:
    """Gradient of each image's own objective with respect to its pixels, float32 ``(N, C, H, W)``.

    ``x``: float32 ``(N, C, H, W)`` in [0, 1]; ``y``: int64 ``(N,)`` class labels. ``target``:
    ``"loss"`` — the cross-entropy of class ``y`` (nats; the quantity an attack ascends) — or
    ``"logit"`` — the logit of class ``y`` (Simonyan et al. 2014). The model runs in eval mode
    (dropout off, frozen batch norm), so each image's gradient does not depend on its batch.
    """
    if target not in TARGETS:
        raise ConfigError(f"unknown saliency target '{target}'; choose from: {', '.join(TARGETS)}")
    dev = resolve_device(device)
    was_training = model.training
    model.eval().to(dev)
    grads = []
    try:
        for start in range(0, len(x), batch_size):
            xb = x[start : start + batch_size].to(dev).requires_grad_(True)
            yb = y[start : start + batch_size].to(dev)
            logits = model(xb)
            if target == "loss":
                objective = F.cross_entropy(logits, yb, reduction="sum")
            else:
                objective = logits.gather(1, yb[:, None]).sum()
            grads.append(torch.autograd.grad(objective, xb)[0].detach().float().cpu())
    finally:
        model.train(was_training)
    return torch.cat(grads)


def saliency_maps(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, target: str = "loss", batch_size: int = 128, device: str = "auto"
) -> np.ndarray:
    """Per-pixel saliency ``max_c |∂ objective / ∂x_c|`` (Simonyan et al. 2014), float32 ``(N, H, W)``,
    in objective units per unit of [0, 1] pixel; arguments as in :func:`input_gradient`."""
    return input_gradient(model, x, y, target, batch_size, device).abs().amax(dim=1).numpy()


def high_saliency_fraction(maps: np.ndarray, share: float = 0.5) -> np.ndarray:
    """Per image, the fraction of pixels whose saliency is at least ``share`` × that image's maximum,
    ``(N,)`` in [0, 1]; an all-zero map counts every pixel (no pixel stands out).

    ``maps``: ``(N, H, W)``. A model that reacts to a few pixels scores near 1/(H·W); one that
    reacts to large regions scores high.
    """
    if not 0.0 < share <= 1.0:
        raise ConfigError(f"saliency share must be in (0, 1], got {share}")
    flat = np.asarray(maps, dtype=np.float64).reshape(len(maps), -1)
    peak = flat.max(axis=1, keepdims=True)
    return (flat >= share * peak).mean(axis=1)
