"""Adversarial-example detectors in ART's ``EvasionDetector`` vocabulary, each declared once.

A :class:`Detector` entry of :data:`DETECTORS` is the whole declaration of a detector: its name,
what it is, where its class is (``module:Class``, loaded by :func:`make_detector` only), whether
it is one of the paper's and whether it is fitted against clean training images. The command
line's choices and help (through :mod:`medart.catalog`) and the detection stage read the entries;
this module imports no torch or ART, so ``medart --help`` reads it at once.
tests/test_declarations.py checks that each entry's class exists and carries the entry's name,
and that every detector class of this package has an entry.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from medart.errors import ConfigError

if TYPE_CHECKING:
    from art.defences.detector.evasion import EvasionDetector
    from torch import nn


@dataclass(frozen=True)
class Detector:
    """One detector medart offers.

    Attributes:
        name: what the command line, the runs and the class's own ``name`` call it.
        about: one phrase saying what it is (the command line's help).
        where: its class, ``module:Class``.
        paper: one of Ma et al.'s four, the default wherever detectors are listed.
        references: ``fit(..., x_ref=, y_ref=)`` takes clean training images and their labels.
    """

    name: str
    about: str
    where: str
    paper: bool = False
    references: bool = False

    def load(self) -> type[EvasionDetector]:
        """The detector's class (imports its module, and with it torch and ART)."""
        module, _, cls = self.where.partition(":")
        return getattr(importlib.import_module(module), cls)


DETECTORS: dict[str, Detector] = {d.name: d for d in (
    Detector("kd", "kernel density of the penultimate features", "medart.detectors.kd:KernelDensity", paper=True,
             references=True),
    Detector("lid", "local intrinsic dimensionality", "medart.detectors.lid:LocalIntrinsicDimensionality", paper=True,
             references=True),
    Detector("dfeat", "deep features, random forest", "medart.detectors.features:DeepFeatures", paper=True),
    Detector("qfeat", "quantised features, RBF SVM", "medart.detectors.features:QuantizedFeatures", paper=True),
    Detector("bu", "Bayesian uncertainty from dropout", "medart.detectors.uncertainty:BayesianUncertainty"),
    Detector("mahalanobis", "Mahalanobis distance to the class means", "medart.detectors.mahalanobis:Mahalanobis",
             references=True),
    Detector("art_binary", "ART's binary activation detector", "medart.detectors.art_binary:ARTBinaryActivation"),
)}
PAPER_DETECTORS = tuple(d.name for d in DETECTORS.values() if d.paper)
NEEDS_REFERENCES = frozenset(d.name for d in DETECTORS.values() if d.references)  # fit(..., x_ref=, y_ref=)


def make_detector(name: str, model: nn.Module, **params) -> EvasionDetector:
    """The detector called ``name`` (a key of :data:`DETECTORS`) on ``model``, with keyword
    ``params`` for its constructor; a one-line ConfigError for any other name or parameter."""
    entry = DETECTORS.get(name)
    if entry is None:
        raise ConfigError(f"unknown detector '{name}'; choose from: {', '.join(DETECTORS)}")
    cls = entry.load()
    try:
        return cls(model, **params)
    except TypeError as exc:  # an unknown keyword
        raise ConfigError(f"bad parameter for detector '{name}': {exc}") from None


__all__ = ["DETECTORS", "Detector", "NEEDS_REFERENCES", "PAPER_DETECTORS", "make_detector"]
