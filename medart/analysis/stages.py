"""Stage activations clean vs adversarial (the paper's Fig. 6 and Fig. 10).

An adversarial perturbation of one grey level barely changes the early stage ``res3a_relu``
(``layer2.0``) but can change the late stage ``res5b_relu`` (``layer4.1``) a lot: the relative
change of each stage measures where in the network the attack takes hold.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

from medart.detectors.activations import iter_activations

PAPER_STAGES = ("res3a_relu", "res5b_relu")


def _collect(model: nn.Module, x: torch.Tensor, layers: Sequence[str], batch_size: int, device: str) -> dict[str, torch.Tensor]:
    parts: dict[str, list[torch.Tensor]] = {layer: [] for layer in layers}
    for _, out, _ in iter_activations(model, x, layers, batch_size, device):
        for layer, value in out.items():
            parts[layer].append(value)
    return {layer: torch.cat(values) for layer, values in parts.items()}


def stage_maps(
    model: nn.Module, x: torch.Tensor, layers: Sequence[str] = PAPER_STAGES, batch_size: int = 100, device: str = "auto"
) -> dict[str, np.ndarray]:
    """Mean over channels of each layer's output, float32 ``(N, h, w)`` per layer (``h × w``: that
    layer's spatial grid, e.g. 2 × 2 for ``res5b_relu`` of a ResNet-50 at 64 px). ``x``: float32
    ``(N, C, H, W)`` in [0, 1]; ``layers``: the paper's names, ``dfeat`` or module names."""
    return {layer: value.mean(dim=1).numpy() for layer, value in _collect(model, x, layers, batch_size, device).items()}


def relative_change(
    model: nn.Module,
    x: torch.Tensor,
    x_adv: torch.Tensor,
    layers: Sequence[str] = PAPER_STAGES,
    batch_size: int = 100,
    device: str = "auto",
) -> dict[str, np.ndarray]:
    """Per image and layer, ``‖A(x_adv) − A(x)‖₂ / ‖A(x)‖₂`` over the whole activation tensor (all
    channels, not only their mean), float64 ``(N,)`` per layer; NaN where ``A(x)`` is all zero.
    0 means the attack left the layer unchanged, 1 a change as large as the activation itself."""
    clean = _collect(model, x, layers, batch_size, device)
    adv = _collect(model, x_adv, layers, batch_size, device)
    out = {}
    for layer in layers:
        a, b = clean[layer].flatten(1).double(), adv[layer].flatten(1).double()
        norm = a.norm(dim=1)
        change = (b - a).norm(dim=1) / norm
        out[layer] = torch.where(norm > 0, change, torch.full_like(change, float("nan"))).numpy()
    return out
