"""Mahalanobis confidence (Lee et al. 2018): distance to the nearest class-conditional Gaussian."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.covariance import LedoitWolf
from sklearn.linear_model import LogisticRegression

from medart.detectors.activations import activations, resolve_layers
from medart.detectors.base import FeatureDetector, as_tensor
from medart.errors import DataError


class Mahalanobis(FeatureDetector):
    """log min_c (z − μ_c)ᵀ Σ⁻¹ (z − μ_c) with class means μ_c and one shared covariance Σ (Ledoit–Wolf
    shrinkage) of the clean reference features → logistic regression.

    ``fit(x, y, x_ref=…, y_ref=…)``: clean training images and their class labels.
    """

    name = "mahalanobis"
    defence_params = ["layer", "batch_size"]

    def __init__(self, model, layer: str = "dfeat", **kwargs) -> None:
        super().__init__(model, **kwargs)
        self.layer = layer

    def _check_params(self) -> None:
        resolve_layers(self.model, [self.layer])

    def _classifier(self):
        return LogisticRegression(random_state=self.random_state)

    def _prepare(self, x, y, x_ref=None, y_ref=None, **kwargs) -> None:
        if x_ref is None or y_ref is None:
            raise DataError("Mahalanobis needs clean reference images: fit(x, y, x_ref=train_images, y_ref=train_labels)")
        z = activations(self.model, as_tensor(x_ref), [self.layer], self.batch_size, self.device)[0][self.layer].double().numpy()
        y_ref = np.asarray(y_ref).reshape(-1)
        if len(y_ref) != len(z):
            raise DataError(f"{len(z)} reference images but {len(y_ref)} reference labels")
        classes = np.unique(y_ref)
        self.means_ = np.stack([z[y_ref == c].mean(0) for c in classes])
        centred = z - self.means_[np.searchsorted(classes, y_ref)]
        self.precision_ = LedoitWolf().fit(centred).precision_

    def _features(self, x: torch.Tensor, **kwargs) -> np.ndarray:
        z = activations(self.model, x, [self.layer], self.batch_size, self.device)[0][self.layer].double().numpy()
        diff = z[:, None, :] - self.means_[None, :, :]  # (N, C, D)
        d2 = np.einsum("ncd,de,nce->nc", diff, self.precision_, diff)
        return np.log(d2.min(axis=1) + 1e-12)[:, None]  # heavy-tailed; the log keeps the ranking (see BU)
