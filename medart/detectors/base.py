"""ART-style detectors: a feature map over a frozen classifier, then a scikit-learn classifier.

Every detector subclasses ART's ``EvasionDetector``, so code written for ART's detectors runs it:
``fit(x, y)`` with ``y`` = 1 for adversarial and 0 for clean inputs, ``detect(x)`` returning
``(report, is_adversarial)`` where ``report["scores"]`` holds the per-example scores (higher =
more likely adversarial). ``score(x, y)`` is the ROC-AUC of those scores. Features are scaled to
[0, 1] by a ``MinMaxScaler`` (KD: a ``QuantileTransformer``, their ranks) fitted inside ``fit``
only, on the data ``fit`` was given. After the fit, ``degenerate_fit_`` says why the classifier
ignores its features ('' when it does not: :mod:`medart.detectors.fit_check`).
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import numpy as np
import torch
from art.defences.detector.evasion import EvasionDetector
from sklearn.base import ClassifierMixin, TransformerMixin
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import MinMaxScaler
from torch import nn

from medart.detectors.fit_check import classifier_check, detection_auc, warn
from medart.errors import ConfigError, DataError


def as_tensor(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Inputs as float32 tensors (ART hands NumPy arrays)."""
    x = torch.as_tensor(x)
    if x.dtype != torch.float32 or x.ndim != 4:
        raise DataError(f"detector inputs must be float32 (N, C, H, W) pixels, got {x.dtype} {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise DataError("detector inputs contain NaN or Inf")
    return x


def check_fit_labels(x: torch.Tensor, y: np.ndarray | torch.Tensor) -> np.ndarray:
    y = np.asarray(y).reshape(-1)
    if len(y) != len(x):
        raise DataError(f"{len(x)} inputs but {len(y)} labels; give one 0/1 (clean/adversarial) label per input")
    if not np.isin(y, (0, 1)).all():
        raise DataError("detector labels must be 0 (clean) or 1 (adversarial)")
    if len(np.unique(y)) < 2:
        raise DataError("detector labels hold a single class; fit needs both clean (0) and adversarial (1) inputs")
    return y.astype(np.int64)


class FeatureDetector(EvasionDetector):
    """Base class. Subclasses define ``defence_params``, :meth:`_classifier` and :meth:`_features`.

    Args:
        model: the frozen classifier, float32 ``(N, C, H, W)`` pixels in [0, 1] → logits.
        batch_size: images per forward pass when extracting features.
        device: ``auto``, ``cpu`` or ``cuda[:N]``.
        random_state: seeds the classifier and any sampling.
    """

    name = "detector"

    def __init__(self, model: nn.Module, batch_size: int = 100, device: str = "auto", random_state: int = 0) -> None:
        super().__init__()
        self.model, self.batch_size, self.device, self.random_state = model, batch_size, device, random_state
        self.pipeline_: Pipeline | None = None
        self.degenerate_fit_ = ""  # why the fitted classifier ignores its features ('' when it does not)

    @abstractmethod
    def _classifier(self) -> ClassifierMixin:
        """A fresh scikit-learn classifier for the scaled features."""

    def _scaler(self, n: int) -> TransformerMixin:
        """A fresh scaler for ``n`` rows of fit features: each feature min–max scaled to [0, 1]."""
        return MinMaxScaler()

    @abstractmethod
    def _features(self, x: torch.Tensor, **kwargs) -> np.ndarray:
        """Detector features ``(N, F)`` of ``x``, using only what ``_prepare`` learnt (and the
        keyword arguments of ``fit``/``detect``, e.g. LID's mini-batch references)."""

    def _prepare(self, x: torch.Tensor, y: np.ndarray, **kwargs) -> None:
        """Learn what the features need (reference sets, thresholds) from fit data only."""

    def _fit_features(self, x: torch.Tensor, y: np.ndarray, **kwargs) -> tuple[np.ndarray, np.ndarray]:
        """Training features and labels; detectors that add negatives (LID's noise) override it."""
        return self._features(x, **kwargs), y

    def fit(self, x: np.ndarray | torch.Tensor, y: np.ndarray, batch_size: int = 128, nb_epochs: int = 20, **kwargs) -> None:
        """Fit on inputs ``x`` with ``y`` = 1 adversarial / 0 clean. ``batch_size`` and ``nb_epochs``
        are ART's signature; the feature batch size is the constructor's. Keyword arguments go to
        the feature preparation (e.g. ``x_ref``/``y_ref`` for KD and Mahalanobis)."""
        self._check_params()
        x = as_tensor(x)
        y = check_fit_labels(x, y)
        self._prepare(x, y, **kwargs)
        features, labels = self._fit_features(x, y, **kwargs)
        features = self._finite(features)
        self.pipeline_ = Pipeline([("scale", self._scaler(len(features))), ("classify", self._classifier())])
        self.pipeline_.fit(features, labels)
        self.degenerate_fit_ = classifier_check(self.pipeline_[-1], self._decision(features))

    def detect(self, x: np.ndarray | torch.Tensor, batch_size: int = 128, **kwargs) -> tuple[dict, np.ndarray]:
        """``({"scores": (N,) float}, is_adversarial (N,) bool)``; keyword arguments go to the
        feature map (LID with ``reference="batch"`` takes ``x_clean``)."""
        if self.pipeline_ is None:
            raise ConfigError(f"{type(self).__name__} is not fitted; call fit first")
        features = self._finite(self._features(as_tensor(x), **kwargs))
        return {"scores": self._decision(features)}, self.pipeline_.predict(features).astype(bool)

    def score(self, x: np.ndarray | torch.Tensor, y_is_adv: np.ndarray, **kwargs) -> float:
        """ROC-AUC of the detection scores against the true 0/1 labels; NaN, with a warning, when
        the fit is degenerate (``degenerate_fit_``) or the scores are constant
        (:func:`medart.detectors.fit_check.detection_auc`)."""
        y = check_fit_labels(as_tensor(x), y_is_adv)
        auc, reason = detection_auc(y, self.detect(x, **kwargs)[0]["scores"], self.degenerate_fit_)
        if reason:
            warn(self.name, f"{len(y)} inputs", reason)
        return auc

    def _decision(self, features: np.ndarray) -> np.ndarray:
        """The fitted classifier's scores ``(N,)`` of ``features`` (higher = more likely adversarial)."""
        classify = self.pipeline_
        scores = classify.decision_function(features) if hasattr(classify[-1], "decision_function") else classify.predict_proba(features)[:, 1]
        return np.asarray(scores, dtype=np.float64)

    def get_params(self) -> dict[str, Any]:
        return {p: getattr(self, p) for p in self.defence_params}

    @staticmethod
    def _finite(features: np.ndarray) -> np.ndarray:
        if not np.isfinite(features).all():  # a bug upstream, never the user's data: fail loudly
            raise FloatingPointError("detector features contain NaN or Inf")
        return features.astype(np.float64)
