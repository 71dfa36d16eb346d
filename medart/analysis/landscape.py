"""Loss landscape around an image (the paper's Fig. 7) and a sharpness number per image.

The surface is the cross-entropy over ``x + ε1·g + ε2·g⊥`` with ``g`` the sign of the model's own
input gradient and ``g⊥`` the sign of separately trained surrogate models' gradients (Tramèr et
al. 2018's view, which Ma et al. follow), ε1, ε2 ∈ [0, 8/255]. A sharp rise along ``g`` within a
grey level or two is what makes an input easy to attack.

``g⊥`` is made orthogonal to ``g`` (Gram–Schmidt, then rescaled to an L∞ norm of 1), so the second
axis shows only what the surrogates see *beyond* the model's own direction and both axes stay in
L∞ pixel units; the two raw sign vectors are rarely orthogonal (their cosine is logged as
``surrogate_cosine``), and without this step a surrogate aligned with the model would show the
model's own slope twice. Every point is clipped to the valid [0, 1] image range, as attacks do.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from medart.analysis.saliency import input_gradient
from medart.errors import ConfigError
from medart.models.evaluation import resolve_device

MAX_EPS = 8 / 255


@torch.no_grad()
def per_image_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 128, device: str = "auto") -> np.ndarray:
    """Cross-entropy of class ``y`` for each image (nats), float64 ``(N,)``; model in eval mode."""
    dev = resolve_device(device)
    was_training = model.training
    model.eval().to(dev)
    try:
        losses = [F.cross_entropy(model(x[s : s + batch_size].to(dev)), y[s : s + batch_size].to(dev), reduction="none").cpu()
                  for s in range(0, len(x), batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(losses).double().numpy()


def gradient_direction(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 128, device: str = "auto") -> torch.Tensor:
    """``g = sign(∂ loss / ∂x)``, float32 ``(N, C, H, W)`` with entries in {−1, 0, 1}: the FGSM direction."""
    return input_gradient(model, x, y, "loss", batch_size, device).sign()


def surrogate_direction(
    surrogates: Sequence[nn.Module],
    x: torch.Tensor,
    y: torch.Tensor,
    g: torch.Tensor,
    orthogonalize: bool = True,
    batch_size: int = 128,
    device: str = "auto",
) -> tuple[torch.Tensor, np.ndarray]:
    """``g⊥`` from one or more surrogate models, and the cosine between ``g`` and the raw surrogate
    sign vector per image ``(N,)``.

    Each surrogate's input gradient is scaled to unit L1 norm per image (so no surrogate dominates
    by its loss scale), they are summed, and the sign is taken. With ``orthogonalize`` the result
    loses its component along ``g`` and is rescaled to L∞ norm 1 (see the module docstring); an
    image whose surrogate sign equals ±``g`` gets a zero second axis. Returns float32
    ``(N, C, H, W)``.
    """
    if not surrogates:
        raise ConfigError("the loss landscape needs at least one surrogate model for g⊥: pass `surrogate_uris` or `surrogates`")
    total = torch.zeros_like(x)
    for surrogate in surrogates:
        grad = input_gradient(surrogate, x, y, "loss", batch_size, device)
        total += grad / grad.flatten(1).abs().sum(dim=1).clamp_min(1e-30).view(-1, 1, 1, 1)
    raw = total.sign()
    flat_raw, flat_g = raw.flatten(1).double(), g.flatten(1).double()
    dot = (flat_raw * flat_g).sum(dim=1)
    cosine = (dot / (flat_raw.norm(dim=1) * flat_g.norm(dim=1)).clamp_min(1e-30)).numpy()
    if not orthogonalize:
        return raw, cosine
    v = flat_raw - (dot / (flat_g * flat_g).sum(dim=1).clamp_min(1e-30))[:, None] * flat_g
    peak = v.abs().amax(dim=1, keepdim=True)
    v = torch.where(peak > 1e-9, v / peak.clamp_min(1e-30), torch.zeros_like(v))
    return v.float().view_as(x), cosine


def eps_axis(points: int = 9, max_eps: float = MAX_EPS) -> np.ndarray:
    """``points`` evenly spaced ε from 0 to ``max_eps`` (default 0, 1/255, …, 8/255), in [0, 1] pixels."""
    if points < 2:
        raise ConfigError(f"a landscape axis needs at least 2 points, got {points}")
    if not 0 < max_eps <= 1:
        raise ConfigError(f"landscape range must be in (0, 1] pixel units, got {max_eps}")
    return np.linspace(0.0, max_eps, points)


@torch.no_grad()
def loss_grid(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    g: torch.Tensor,
    g_perp: torch.Tensor,
    eps: np.ndarray,
    batch_size: int = 128,
    device: str = "auto",
) -> np.ndarray:
    """Cross-entropy (nats) at ``clip(x + ε1·g + ε2·g⊥, 0, 1)`` for every point of the square grid
    ``ε1, ε2 ∈ eps`` (:func:`eps_axis`), float64 ``(N, len(eps), len(eps))``; entry ``[n, i, j]`` is
    image n at ``(eps[i], eps[j])``, so ``[:, 0, 0]`` is the clean loss. ``g``, ``g_perp``:
    ``(N, C, H, W)`` directions."""
    grid = np.empty((len(x), len(eps), len(eps)))
    for i, e1 in enumerate(eps):
        for j, e2 in enumerate(eps):
            points = (x + float(e1) * g + float(e2) * g_perp).clamp_(0.0, 1.0)
            grid[:, i, j] = per_image_loss(model, points, y, batch_size, device)
    return grid


def sharpness(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, radius: float, batch_size: int = 128, device: str = "auto"
) -> np.ndarray:
    """Loss increase (nats) of each image after one signed-gradient step of L∞ size ``radius``:
    ``ℓ(clip(x + radius·sign ∇ℓ(x))) − ℓ(x)``, float64 ``(N,)``.

    The first step of the landscape's ε1 axis, and the FGSM loss gain: a flat landscape (or a
    robust model) scores near 0, a sharp one high. ``x``: float32 ``(N, C, H, W)`` in [0, 1];
    ``y``: int64 ``(N,)``; ``radius`` in [0, 1] pixel units (e.g. 1/255). Comparable across
    models and datasets at the same radius and image size.
    """
    if not 0 < radius <= 1:
        raise ConfigError(f"sharpness radius must be in (0, 1] pixel units (1/255 = one grey level), got {radius}")
    g = gradient_direction(model, x, y, batch_size, device)
    stepped = (x + radius * g).clamp(0.0, 1.0)
    return per_image_loss(model, stepped, y, batch_size, device) - per_image_loss(model, x, y, batch_size, device)
