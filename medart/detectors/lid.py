"""Local intrinsic dimensionality (Ma et al. 2018): adversarial regions have higher LID.

Per layer, the maximum-likelihood estimate from the distances r_1 ≤ … ≤ r_k of a point to its k
nearest neighbours among a mini-batch of clean reference samples:

    LID = −( (1/k) Σ_i log(r_i / r_k) )⁻¹

Edge cases are defined, not left to produce NaN/Inf: the point itself is excluded by index when it
belongs to the reference batch; r_1 = 0 (an exact duplicate) gives LID 0, the limit of the
estimator as r_1 → 0; all k distances equal (a degenerate, "infinite-dimensional" neighbourhood)
gives LID = ``max_lid``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from medart.detectors.base import FeatureDetector
from medart.detectors.activations import INPUT, iter_activations, resolve_layers
from medart.errors import ConfigError, DataError

MAX_LID = 1e6


def lid_mle(query: torch.Tensor, reference: torch.Tensor, k: int, self_index: torch.Tensor | None = None) -> torch.Tensor:
    """LID ``(N,)`` float64 of each row of ``query`` ``(N, D)`` against ``reference`` ``(M, D)``.

    ``self_index[i]`` is the row of ``reference`` that *is* query i (or −1): it is excluded.
    """
    available = reference.shape[0] - (0 if self_index is None else 1)
    if k < 1 or k > available:
        raise ConfigError(f"LID k = {k} needs 1 ≤ k ≤ {available} neighbours; use a reference batch larger than k")
    d = torch.cdist(query.double(), reference.double())
    if self_index is not None:
        rows = torch.nonzero(self_index >= 0).squeeze(1)
        d[rows, self_index[rows]] = float("inf")
    r = d.topk(k, dim=1, largest=False).values  # ascending r_1 … r_k
    lid = torch.full((len(query),), MAX_LID, dtype=torch.float64)
    zero = r[:, 0] == 0
    lid[zero] = 0.0
    ok = ~zero
    mean_log = torch.log(r[ok] / r[ok, -1:]).mean(dim=1)  # ≤ 0; = 0 only if all k distances are equal
    lid[ok] = torch.where(mean_log < 0, -1.0 / mean_log, torch.full_like(mean_log, MAX_LID)).clamp(max=MAX_LID)
    return lid


class LocalIntrinsicDimensionality(FeatureDetector):
    """LID detector: one LID per layer → logistic regression.

    Args:
        layers: layer names (default: the input, every residual stage and the penultimate features).
        k: nearest neighbours (20 as in Ma et al.).
        reference_size: clean samples in the reference mini-batch (100 as in Ma et al.); drawn
            once from the clean inputs given to ``fit``, seeded, and reused by ``detect``.
        noise: standard deviation of Gaussian-noised copies of the clean fit inputs added as extra
            negatives (Ma et al.'s "noisy" samples), or ``None``.
    """

    name = "lid"
    defence_params = ["layers", "k", "reference_size", "noise", "batch_size"]
    DEFAULT_LAYERS = (INPUT, "layer1", "layer2", "layer3", "layer4", "dfeat")

    def __init__(self, model, layers: Sequence[str] = DEFAULT_LAYERS, k: int = 20, reference_size: int = 100,
                 noise: float | None = None, **kwargs) -> None:
        super().__init__(model, **kwargs)
        self.layers, self.k, self.reference_size, self.noise = list(layers), k, reference_size, noise

    def _check_params(self) -> None:
        resolve_layers(self.model, self.layers)
        if self.k < 1:
            raise ConfigError(f"LID k must be >= 1, got {self.k}")
        if self.reference_size <= self.k:
            raise ConfigError(f"LID reference batch ({self.reference_size}) must be larger than k ({self.k})")
        if self.noise is not None and not self.noise > 0:
            raise ConfigError(f"LID noise must be > 0 or None, got {self.noise}")

    def _classifier(self):
        return LogisticRegression(random_state=self.random_state, max_iter=1000)

    def _prepare(self, x, y, **kwargs) -> None:
        clean = torch.from_numpy(np.flatnonzero(y == 0))
        if len(clean) <= self.k:
            raise DataError(f"LID needs more than k = {self.k} clean inputs to fit, got {len(clean)}")
        g = torch.Generator().manual_seed(self.random_state)
        self.reference_rows_ = clean[torch.randperm(len(clean), generator=g)[: self.reference_size]]
        self.reference_ = {layer: [] for layer in self.layers}
        for _, acts, _ in iter_activations(self.model, x[self.reference_rows_], self.layers, self.batch_size, self.device):
            for layer, a in acts.items():
                self.reference_[layer].append(a.flatten(1))
        self.reference_ = {layer: torch.cat(a) for layer, a in self.reference_.items()}

    def _lids(self, x: torch.Tensor, self_index: torch.Tensor | None) -> np.ndarray:
        out = np.empty((len(x), len(self.layers)))
        for rows, acts, _ in iter_activations(self.model, x, self.layers, self.batch_size, self.device):  # streamed
            own = None if self_index is None else self_index[rows]
            for j, layer in enumerate(self.layers):
                out[rows, j] = lid_mle(acts[layer].flatten(1), self.reference_[layer], self.k, own).numpy()
        return out

    def _fit_features(self, x: torch.Tensor, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self_index = torch.full((len(x),), -1, dtype=torch.int64)
        self_index[self.reference_rows_] = torch.arange(len(self.reference_rows_))
        features, labels = self._lids(x, self_index), y
        if self.noise is not None:
            clean = x[torch.from_numpy(y == 0)]
            g = torch.Generator().manual_seed(self.random_state + 1)
            noisy = (clean + self.noise * torch.randn(clean.shape, generator=g)).clamp(0, 1)
            features = np.concatenate([features, self._lids(noisy, None)])
            labels = np.concatenate([labels, np.zeros(len(noisy), dtype=labels.dtype)])
        return features, labels

    def _features(self, x: torch.Tensor) -> np.ndarray:
        return self._lids(x, None)
