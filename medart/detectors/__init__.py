"""Adversarial-example detectors in ART's ``EvasionDetector`` vocabulary."""

from __future__ import annotations

from art.defences.detector.evasion import EvasionDetector
from torch import nn

from medart.detectors.art_binary import ARTBinaryActivation
from medart.detectors.base import FeatureDetector
from medart.detectors.features import DeepFeatures, QuantizedFeatures
from medart.detectors.kd import KernelDensity
from medart.detectors.lid import LocalIntrinsicDimensionality
from medart.detectors.mahalanobis import Mahalanobis
from medart.detectors.uncertainty import BayesianUncertainty
from medart.errors import ConfigError

DETECTORS: dict[str, type[EvasionDetector]] = {
    cls.name: cls for cls in (KernelDensity, LocalIntrinsicDimensionality, DeepFeatures, QuantizedFeatures,
                              BayesianUncertainty, Mahalanobis, ARTBinaryActivation)
}
NEEDS_REFERENCES = {"kd", "lid", "mahalanobis"}  # fit(..., x_ref=, y_ref=) with clean training images


def make_detector(name: str, model: nn.Module, **params) -> EvasionDetector:
    """A detector by name (``kd``, ``lid``, ``dfeat``, ``qfeat``, ``bu``, ``mahalanobis``, ``art_binary``)
    with keyword ``params`` for its constructor."""
    try:
        cls = DETECTORS[name]
    except KeyError:
        raise ConfigError(f"unknown detector '{name}'; choose from: {', '.join(DETECTORS)}") from None
    try:
        return cls(model, **params)
    except TypeError as exc:  # an unknown keyword
        raise ConfigError(f"bad parameter for detector '{name}': {exc}") from None


__all__ = ["DETECTORS", "NEEDS_REFERENCES", "ARTBinaryActivation", "BayesianUncertainty", "DeepFeatures", "FeatureDetector", "KernelDensity",
           "LocalIntrinsicDimensionality", "Mahalanobis", "QuantizedFeatures", "make_detector"]
