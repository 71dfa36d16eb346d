"""Squared distances as a matrix product: equal to direct differences, exact zeros for duplicates."""

from __future__ import annotations

import numpy as np
import torch

from medart.detectors.distances import squared_distances


def test_squared_distances_match_direct_differences_in_float64():
    g = torch.Generator().manual_seed(0)
    query, reference = torch.rand(37, 500, generator=g), torch.rand(23, 500, generator=g) + 3.0  # a common offset
    direct = ((query.double()[:, None, :] - reference.double()[None, :, :]) ** 2).sum(-1)
    got = squared_distances(query, reference)
    assert got.dtype == torch.float64 and got.shape == (37, 23)
    assert torch.allclose(got, direct, rtol=1e-10, atol=0)


def test_duplicates_are_exactly_zero_and_nothing_is_negative():
    g = torch.Generator().manual_seed(1)
    reference = torch.randn(50, 64, generator=g) * 100
    query = torch.cat([reference[[3, 7]], reference[:5] + 1e-3])
    got = squared_distances(query, reference).numpy()
    assert got[0, 3] == 0 and got[1, 7] == 0
    assert (got >= 0).all()
    direct = ((query[2:].double() - reference[:5].double()) ** 2).sum(1).numpy()  # ~6e-5, at norms ~1e6
    assert np.allclose(got[2:][np.arange(5), np.arange(5)], direct, rtol=1e-4)  # tiny but real distances survive
