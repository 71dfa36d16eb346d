"""Kernel density (Feinman et al. 2017): adversarial examples lie off the clean data's manifold.

feature(x) = log mean_j exp(−‖z(x) − z_j‖² / σ²) over the clean *reference* samples z_j (the
model's training images) of the class the model predicts for x; z = the 128-d penultimate features.
(The paper prints exp(+d²/σ²); the minus sign is the intended form.) By default the reference set is
given to ``fit`` and is never the data being scored; ``reference="batch"`` reproduces the paper
code, which fits the density on the clean images it then scores (see :class:`KernelDensity`).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import QuantileTransformer

from medart.detectors.base import FeatureDetector, as_tensor
from medart.detectors.activations import activations, resolve_layers
from medart.detectors.distances import squared_distances
from medart.errors import ConfigError, DataError

CHUNK = 2**21  # distances held at once (16 MiB in float64)
REFERENCES = ("train", "batch")


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
    """KD detector. Two reference sets, chosen by ``reference``:

    - ``"train"`` (default): ``fit(x, y, x_ref=…, y_ref=…)`` with clean training images ``(M, C, H, W)``
      and their class labels ``(M,)``; every input is scored against them, as a deployed detector is.
    - ``"batch"`` (the paper's code, ``get_kd(model, X_test, Y_test, X_test, X_test_adv)``): the
      density of each class is fitted on the clean images being scored, ``x_clean`` given to ``fit``
      and ``detect`` (grouped by the model's prediction on them), each clean image included in its
      own density, as scikit-learn's ``KernelDensity.fit(X_test)`` then ``score_samples(X_test)``
      does. A clean image then always has a neighbour at distance 0 (itself), which its
      adversarial version, scored against the other class, does not.

    Args:
        bandwidth: σ in feature units (after ``standardize``), or ``"auto"`` (:func:`select_bandwidth`
            on the reference features; with ``reference="batch"``, on the clean images given to ``fit``).
        layer: the feature layer (the paper's penultimate ``dfeat``).
        reference: ``"train"`` or ``"batch"``, see above.
        standardize: scale every feature unit to zero mean and unit variance over the reference
            features first (one σ then fits every unit); ``False`` as in Feinman et al.
    """

    name = "kd"
    defence_params = ["bandwidth", "layer", "reference", "standardize", "batch_size"]

    def __init__(self, model, bandwidth: float | str = "auto", layer: str = "dfeat", reference: str = "train",
                 standardize: bool = False, **kwargs) -> None:
        super().__init__(model, **kwargs)
        self.bandwidth, self.layer, self.reference, self.standardize = bandwidth, layer, reference, standardize

    def _check_params(self) -> None:
        resolve_layers(self.model, [self.layer])
        if self.bandwidth != "auto" and not (isinstance(self.bandwidth, (int, float)) and self.bandwidth > 0):
            raise ConfigError(f"KD bandwidth must be > 0 or 'auto', got {self.bandwidth!r}")
        if self.reference not in REFERENCES:
            raise ConfigError(f"KD reference must be 'train' (clean Train images) or 'batch' (the paper code: the clean "
                              f"images being scored), got {self.reference!r}")
        if self.standardize not in (True, False, 0, 1):
            raise ConfigError(f"KD standardize must be 1 (true) or 0 (false), got {self.standardize!r}")

    def _classifier(self):
        return LogisticRegression(random_state=self.random_state)

    def _scaler(self, n: int) -> QuantileTransformer:
        """The log densities' ranks among the fit inputs', in [0, 1]. The log density falls with the
        squared distance to the references, so a few far-off inputs make a long lower tail: the
        regression fits the class means, which that tail sets — on the main job's model it gave the
        density the wrong sign, or a coefficient of exactly 0 when the means met (lbfgs stops at its
        start, w = 0): one score for every input. Ranks give the tail no more weight than the bulk,
        and the sign is the one that orders the fit inputs best (docs/detection-protocol.md)."""
        return QuantileTransformer(n_quantiles=min(n, 1000), random_state=self.random_state)

    def _prepare(self, x, y, x_ref=None, y_ref=None, x_clean=None, **kwargs) -> None:
        if self.reference == "batch":
            z, _ = self._class_features(self._clean(x_clean), fitted=False)
        else:
            if x_ref is None or y_ref is None:
                raise DataError("KD needs clean reference images: fit(x, y, x_ref=train_images, y_ref=train_labels)")
            x_ref, y_ref = as_tensor(x_ref), np.asarray(y_ref).reshape(-1)
            if len(y_ref) != len(x_ref):
                raise DataError(f"{len(x_ref)} reference images but {len(y_ref)} reference labels")
            z, _ = self._class_features(x_ref, fitted=False)
            self.references_ = {int(c): z[torch.from_numpy(y_ref == c)] for c in np.unique(y_ref)}
        self.sigma_ = select_bandwidth(z, seed=self.random_state) if self.bandwidth == "auto" else float(self.bandwidth)

    def _class_features(self, x: torch.Tensor, fitted: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Features ``(N, D)`` (standardised when asked; ``fitted=False`` learns the scaling from
        these very features, the reference set) and the predicted classes ``(N,)``."""
        acts, logits = activations(self.model, x, [self.layer], self.batch_size, self.device)
        z = acts[self.layer].double()
        if self.standardize:
            if not fitted:
                # as scikit-learn's StandardScaler: population std, and a unit constant over the
                # references (a dead ReLU) keeps scale 1 rather than dividing by 0
                std = z.std(0, correction=0)
                self.mean_, self.scale_ = z.mean(0), torch.where(std > 0, std, torch.ones_like(std))
            z = (z - self.mean_) / self.scale_
        return z, logits.argmax(1)

    def _clean(self, x_clean) -> torch.Tensor:
        if x_clean is None:
            raise DataError("KD with reference='batch' fits the density on the clean images being scored: "
                            "pass x_clean=<clean images> to fit and detect")
        return as_tensor(x_clean)

    def _features(self, x: torch.Tensor, x_clean=None, **kwargs) -> np.ndarray:
        references = self.references_ if self.reference == "train" else self._batch_references(self._clean(x_clean))
        z, predicted = self._class_features(x)
        out = torch.empty(len(x), dtype=torch.float64)
        for c in predicted.unique().tolist():
            rows = predicted == c
            if c not in references:
                raise DataError(f"no reference images of class {c}, which the model predicts; give references of every class")
            out[rows] = log_kernel_density(z[rows], references[c], self.sigma_)
        return out.numpy()[:, None]

    def _batch_references(self, x_clean: torch.Tensor) -> dict[int, torch.Tensor]:
        z, predicted = self._class_features(x_clean)
        return {int(c): z[predicted == c] for c in predicted.unique().tolist()}
