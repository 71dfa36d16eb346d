"""Batched training augmentation, on the device that holds the batch."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class RandomAffineBatch(nn.Module):
    """Per-image random rotation, width/height shift and horizontal flip of a batch, in one resample.

    The paper's augmentation (Keras' ``ImageDataGenerator``). torchvision's ``RandomAffine``
    draws one set of parameters per call, so it would have to run image by image on the CPU
    (about half of a 28 px training epoch on 2 cores); here every image gets its own parameters
    and the whole batch is warped by one ``grid_sample``, on the GPU when the batch is there.

    Args:
        degrees: rotation drawn uniformly from ±``degrees``.
        shift: translation drawn uniformly from ±``shift`` × width (and × height).
        hflip: mirror each image left–right with probability 0.5.

    Input and output: ``(N, C, H, W)`` float; uncovered pixels are 0 (black), as in torchvision.
    """

    def __init__(self, degrees: float = 10.0, shift: float = 0.1, hflip: bool = True, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.degrees, self.shift, self.hflip, self.generator = degrees, shift, hflip, generator

    def _uniform(self, n: int, low: float, high: float) -> torch.Tensor:
        return torch.rand(n, generator=self.generator) * (high - low) + low

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        angle = self._uniform(n, -self.degrees, self.degrees) * (math.pi / 180)
        # grid coordinates span [-1, 1], i.e. 2 units per image width
        tx, ty = (self._uniform(n, -2 * self.shift, 2 * self.shift) for _ in range(2))
        flip = torch.where(torch.rand(n, generator=self.generator) < 0.5, -1.0, 1.0) if self.hflip else torch.ones(n)
        cos, sin = torch.cos(angle), torch.sin(angle)
        theta = torch.stack(
            [torch.stack([cos * flip, -sin, tx], dim=1), torch.stack([sin * flip, cos, ty], dim=1)], dim=1
        ).to(device=x.device, dtype=x.dtype)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
