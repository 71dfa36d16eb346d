"""Grad-CAM attention maps, clean vs adversarial (the paper's Fig. 11), and their overlap.

Grad-CAM (Selvaraju et al. 2017): weight each channel of a convolutional layer's output by the
spatial mean of the class score's gradient, sum, ReLU, upsample to the input. The overlap of the
clean and adversarial maps (IoU of their top regions) measures whether the attack moved the
model's attention or only its decision.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from medart.detectors.activations import layer_for
from medart.errors import ConfigError
from medart.models.adapter import unknown_tap
from medart.models.evaluation import resolve_device


def _module(model: nn.Module, layer: str) -> nn.Module:
    try:
        return layer_for(model, layer)[0]
    except ConfigError:
        names = model.tap_names() if hasattr(model, "tap_names") else [n for n, _ in model.named_modules() if n]
        raise unknown_tap(layer, [n for n in names if n not in ("input", "dfeat", "logits")], "Grad-CAM layer") from None


def grad_cam(
    model: nn.Module,
    x: torch.Tensor,
    classes: torch.Tensor | None = None,
    layer: str = "layer4",
    batch_size: int = 64,
    device: str = "auto",
) -> np.ndarray:
    """Grad-CAM maps of ``classes`` (default: each image's predicted class) at ``layer``, upsampled
    bilinearly to the input and scaled to a maximum of 1 per image, float32 ``(N, H, W)`` in [0, 1]
    (an all-zero map stays zero: no positive evidence). ``x``: float32 ``(N, C, H, W)`` in [0, 1].

    The layer's output is caught by a forward hook that is removed before returning; the model
    runs in eval mode and its parameters' gradients are not touched.
    """
    module = _module(model, layer)
    dev = resolve_device(device)
    was_training = model.training
    model.eval().to(dev)
    caught: list[torch.Tensor] = []
    handle = module.register_forward_hook(lambda _m, _i, out: caught.append(out))
    maps = []
    try:
        for start in range(0, len(x), batch_size):
            xb = x[start : start + batch_size].to(dev).requires_grad_(True)  # a graph even when weights are frozen
            caught.clear()
            with torch.enable_grad():
                logits = model(xb)
                target = logits.argmax(1) if classes is None else classes[start : start + batch_size].to(dev)
                feature = caught[-1]
                grad = torch.autograd.grad(logits.gather(1, target[:, None]).sum(), feature)[0]
            weights = grad.mean(dim=(2, 3), keepdim=True)
            cam = F.relu((weights * feature.detach()).sum(dim=1, keepdim=True))
            cam = F.interpolate(cam, size=xb.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
            peak = cam.flatten(1).amax(dim=1).view(-1, 1, 1)
            maps.append(torch.where(peak > 0, cam / peak.clamp_min(1e-30), torch.zeros_like(cam)).cpu())
            if feature.shape[-2:] == (1, 1) and start == 0:
                warnings.warn(f"Grad-CAM at {layer} sees a 1×1 map for {tuple(xb.shape[-2:])}-pixel inputs, so every map is "
                              "uniform; use an earlier layer (e.g. layer3) or a model trained at a larger `image_size`")
    finally:
        handle.remove()
        model.train(was_training)
    return torch.cat(maps).float().numpy()


def top_region(maps: np.ndarray, top: float = 0.2) -> np.ndarray:
    """Per image, its most-attended ``top`` share: the pixels at or above its ``1 − top`` quantile
    that are also above 0 (more than ``top`` where values tie, e.g. every pixel of a uniform map;
    none for an all-zero map, which attends nowhere). Boolean ``(N, H, W)``."""
    if not 0.0 < top <= 1.0:
        raise ConfigError(f"top share must be in (0, 1], got {top}")
    flat = maps.reshape(len(maps), -1)
    cut = np.quantile(flat, 1.0 - top, axis=1, keepdims=True)
    return ((flat >= cut) & (flat > 0)).reshape(maps.shape)


def cam_overlap(clean: np.ndarray, adversarial: np.ndarray, top: float = 0.2) -> np.ndarray:
    """IoU of the top-``top`` regions (:func:`top_region`) of two sets of maps ``(N, H, W)``,
    float64 ``(N,)`` in [0, 1]: 1 = the attack left the model looking at the same place, 0 = at
    disjoint places (two top-20 % regions placed at random overlap about 0.11); NaN where both
    maps are all zero."""
    a, b = top_region(clean, top), top_region(adversarial, top)
    inter = (a & b).reshape(len(a), -1).sum(axis=1)
    union = (a | b).reshape(len(a), -1).sum(axis=1)
    return np.where(union > 0, inter / np.maximum(union, 1), np.nan)
