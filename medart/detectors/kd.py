"""Kernel density (Feinman et al. 2017): adversarial examples lie off the clean data's manifold.

feature(x) = log mean_j exp(−‖z(x) − z_j‖² / σ²) over the clean *reference* samples z_j (the
model's training images) of the class the model predicts for x; z = the 128-d penultimate features.
(The paper prints exp(+d²/σ²); the minus sign is the intended form.) The reference set is given to
``fit`` and is never the data being scored.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from medart.detectors.base import FeatureDetector, as_tensor
from medart.detectors.activations import activations
from medart.detectors.distances import squared_distances
from medart.errors import ConfigError, DataError

CHUNK = 2**21  # distances held at once (16 MiB in float64)


def log_kernel_density(z: torch.Tensor, ref: torch.Tensor, sigma: float, exclude_self: bool = False) -> torch.Tensor:
    """``log mean_j exp(−‖z_i − ref_j‖² / σ²)`` ``(N,)`` for every row of ``z`` ``(N, D)`` against
    ``ref`` ``(M, D)``, in float64 with log-sum-exp. ``exclude_self`` drops j = i (``z`` is ``ref``).
    Rows go in chunks of at most ``CHUNK`` distances, so memory does not grow with N."""
    out = torch.empty(len(z), dtype=torch.float64)
    step = max(1, CHUNK // max(len(ref), 1))
    for start in range(0, len(z), step):
        d2 = squared_distances(z[start : start + step], ref)
        if exclude_self:
            rows = torch.arange(len(d2))
            d2[rows, rows + start] = float("inf")
        out[start : start + step] = torch.logsumexp(d2.mul_(-1.0 / sigma**2), dim=1)
    return out - math.log(ref.shape[0] - int(exclude_self))


def select_bandwidth(ref: torch.Tensor, grid: int = 9, max_points: int = 1000, seed: int = 0) -> float:
    """σ maximising the leave-one-out log-likelihood of the reference features, over a grid
    spanning 1/8 … 8 × their median pairwise distance. (Likelihood, not detection AUC: the
    bandwidth is chosen on clean training data alone.)"""
    g = torch.Generator().manual_seed(seed)
    sample = ref[torch.randperm(len(ref), generator=g)[:max_points]].double()
    median = torch.cdist(sample, sample).median().item() or 1.0
    d = sample.shape[1]
    best, best_ll = median, -math.inf
    for factor in np.geomspace(1 / 8, 8, grid):
        sigma = median * float(factor)
        # normalised Gaussian kernel with variance σ²/2 per dimension
        ll = (log_kernel_density(sample, sample, sigma, exclude_self=True) - d * math.log(sigma * math.sqrt(math.pi))).mean().item()
        if ll > best_ll:
            best, best_ll = sigma, ll
    return best


class KernelDensity(FeatureDetector):
    """KD detector. ``fit(x, y, x_ref=…, y_ref=…)``: ``x_ref`` clean training images ``(M, C, H, W)``
    and their class labels ``y_ref`` ``(M,)``.

    Args:
        bandwidth: σ in feature units, or ``"auto"`` (:func:`select_bandwidth` on the references).
        layer: the feature layer (the paper's penultimate ``dfeat``).
    """

    name = "kd"
    defence_params = ["bandwidth", "layer", "batch_size"]

    def __init__(self, model, bandwidth: float | str = "auto", layer: str = "dfeat", **kwargs) -> None:
        super().__init__(model, **kwargs)
        self.bandwidth, self.layer = bandwidth, layer

    def _check_params(self) -> None:
        if self.bandwidth != "auto" and not (isinstance(self.bandwidth, (int, float)) and self.bandwidth > 0):
            raise ConfigError(f"KD bandwidth must be > 0 or 'auto', got {self.bandwidth!r}")

    def _classifier(self):
        return LogisticRegression(random_state=self.random_state)

    def _prepare(self, x, y, x_ref=None, y_ref=None, **kwargs) -> None:
        if x_ref is None or y_ref is None:
            raise DataError("KD needs clean reference images: fit(x, y, x_ref=train_images, y_ref=train_labels)")
        x_ref = as_tensor(x_ref)
        y_ref = np.asarray(y_ref).reshape(-1)
        if len(y_ref) != len(x_ref):
            raise DataError(f"{len(x_ref)} reference images but {len(y_ref)} reference labels")
        z = activations(self.model, x_ref, [self.layer], self.batch_size, self.device)[0][self.layer]
        self.references_ = {int(c): z[torch.from_numpy(y_ref == c)] for c in np.unique(y_ref)}
        self.sigma_ = select_bandwidth(z, seed=self.random_state) if self.bandwidth == "auto" else float(self.bandwidth)

    def _features(self, x: torch.Tensor, **kwargs) -> np.ndarray:
        acts, logits = activations(self.model, x, [self.layer], self.batch_size, self.device)
        z, predicted = acts[self.layer], logits.argmax(1)
        out = torch.empty(len(x), dtype=torch.float64)
        for c in predicted.unique().tolist():
            rows = predicted == c
            if c not in self.references_:
                raise DataError(f"no reference images of class {c}, which the model predicts; give references of every class")
            out[rows] = log_kernel_density(z[rows], self.references_[c], self.sigma_)
        return out.numpy()[:, None]
