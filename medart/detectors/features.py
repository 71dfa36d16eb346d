"""Deep-feature detectors: the penultimate features themselves (DFeat) and quantised (QFeat)."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.ensemble import RandomForestClassifier
from sklearn.svm import SVC

from medart.detectors.activations import activations, resolve_layers
from medart.detectors.base import FeatureDetector
from medart.errors import ConfigError


class DeepFeatures(FeatureDetector):
    """DFeat: the ``layer`` features (penultimate 128-d by default) → random forest.

    Args:
        n_estimators: trees in the forest.
    """

    name = "dfeat"
    defence_params = ["layer", "n_estimators", "batch_size"]

    def __init__(self, model, layer: str = "dfeat", n_estimators: int = 100, **kwargs) -> None:
        super().__init__(model, **kwargs)
        self.layer, self.n_estimators = layer, n_estimators

    def _check_params(self) -> None:
        resolve_layers(self.model, [self.layer])
        if self.n_estimators < 1:
            raise ConfigError(f"n_estimators must be >= 1, got {self.n_estimators}")

    def _classifier(self):
        return RandomForestClassifier(n_estimators=self.n_estimators, random_state=self.random_state, n_jobs=1)

    def _features(self, x: torch.Tensor, **kwargs) -> np.ndarray:
        return activations(self.model, x, [self.layer], self.batch_size, self.device)[0][self.layer].numpy()


class QuantizedFeatures(DeepFeatures):
    """QFeat (SafetyNet, Lu et al. 2017): the features quantised per dimension, → RBF SVM.

    ``levels=2`` codes each unit as above/below its median; ``levels=3`` as below the 1/3 quantile,
    between, or above the 2/3 quantile. The thresholds are quantiles of the clean inputs given to
    ``fit`` — never of data being scored.
    """

    name = "qfeat"
    defence_params = ["layer", "levels", "C", "batch_size"]

    def __init__(self, model, layer: str = "dfeat", levels: int = 2, C: float = 1.0, **kwargs) -> None:
        super().__init__(model, layer=layer, **kwargs)
        self.levels, self.C = levels, C

    def _check_params(self) -> None:
        resolve_layers(self.model, [self.layer])
        if self.levels not in (2, 3):
            raise ConfigError(f"QFeat levels must be 2 (binary) or 3 (ternary), got {self.levels}")
        if not self.C > 0:
            raise ConfigError(f"SVM C must be > 0, got {self.C}")

    def _classifier(self):
        return SVC(kernel="rbf", C=self.C, random_state=self.random_state)

    def _prepare(self, x, y, **kwargs) -> None:
        clean = super()._features(x[torch.from_numpy(y == 0)])
        quantiles = np.linspace(0, 1, self.levels + 1)[1:-1]
        self.thresholds_ = np.quantile(clean, quantiles, axis=0)  # (levels − 1, D)

    def _features(self, x: torch.Tensor, **kwargs) -> np.ndarray:
        z = super()._features(x)
        return (z[None, :, :] > self.thresholds_[:, None, :]).sum(axis=0).astype(np.float64)
