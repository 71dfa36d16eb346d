"""Adversarial-example detectors in ART's ``EvasionDetector`` vocabulary."""

from __future__ import annotations

from torch import nn

from medart.detectors.base import FeatureDetector
from medart.detectors.features import DeepFeatures, QuantizedFeatures
from medart.detectors.kd import KernelDensity
from medart.detectors.lid import LocalIntrinsicDimensionality
from medart.detectors.mahalanobis import Mahalanobis
from medart.detectors.uncertainty import BayesianUncertainty
from medart.errors import ConfigError

DETECTORS: dict[str, type[FeatureDetector]] = {
    cls.name: cls for cls in (KernelDensity, LocalIntrinsicDimensionality, DeepFeatures, QuantizedFeatures,
                              BayesianUncertainty, Mahalanobis)
}
NEEDS_REFERENCES = {"kd", "lid", "mahalanobis"}  # fit(..., x_ref=, y_ref=) with clean training images


def make_detector(name: str, model: nn.Module, **params) -> FeatureDetector:
    """A detector by name (``kd``, ``lid``, ``dfeat``, ``qfeat``, ``bu``, ``mahalanobis``)."""
    try:
        cls = DETECTORS[name]
    except KeyError:
        raise ConfigError(f"unknown detector '{name}'; choose from: {', '.join(DETECTORS)}") from None
    return cls(model, **params)


__all__ = ["DETECTORS", "NEEDS_REFERENCES", "BayesianUncertainty", "DeepFeatures", "FeatureDetector", "KernelDensity",
           "LocalIntrinsicDimensionality", "Mahalanobis", "QuantizedFeatures", "make_detector"]
