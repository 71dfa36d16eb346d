"""Batched augmentation: each image gets its own rotation/shift/flip; zero settings are the identity."""

from __future__ import annotations

import torch

from medart.transforms import RandomAffineBatch


def test_zero_settings_are_identity():
    x = torch.rand(4, 3, 16, 16)
    y = RandomAffineBatch(degrees=0, shift=0, hflip=False)(x)
    assert torch.allclose(x, y, atol=1e-5)


def test_flip_only_mirrors_some_images_each_independently():
    x = torch.rand(64, 3, 8, 8)
    y = RandomAffineBatch(degrees=0, shift=0, hflip=True, generator=torch.Generator().manual_seed(0))(x)
    same = torch.isclose(y, x, atol=1e-5).flatten(1).all(1)
    mirrored = torch.isclose(y, x.flip(-1), atol=1e-5).flatten(1).all(1)
    assert torch.all(same | mirrored)
    assert 10 < mirrored.sum() < 54  # about half, drawn per image


def test_rotation_and_shift_stay_within_bounds_and_are_seeded():
    x = torch.zeros(32, 1, 21, 21)
    x[:, :, 10, 10] = 1.0  # a centred dot moves at most shift × width, whatever the rotation
    aug = RandomAffineBatch(degrees=30, shift=0.2, hflip=True, generator=torch.Generator().manual_seed(1))
    y = aug(x)
    rows, cols = torch.meshgrid(torch.arange(21.0), torch.arange(21.0), indexing="ij")
    mass = y[:, 0].flatten(1).sum(1)
    r = (y[:, 0] * rows).flatten(1).sum(1) / mass
    c = (y[:, 0] * cols).flatten(1).sum(1) / mass
    assert torch.all((r - 10).abs() <= 0.2 * 21 + 1) and torch.all((c - 10).abs() <= 0.2 * 21 + 1)
    assert len({(round(a, 1), round(b, 1)) for a, b in zip(r.tolist(), c.tolist())}) > 16  # per-image draws
    again = RandomAffineBatch(degrees=30, shift=0.2, hflip=True, generator=torch.Generator().manual_seed(1))(x)
    assert torch.equal(y, again)
