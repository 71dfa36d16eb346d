"""The names medart accepts, in one place and without importing torch.

The attacks and backends are declared once, next to their implementation, in the torch-free
:mod:`medart.attacks.specs` (an :class:`~medart.attacks.specs.Attack` entry each: defaults,
settings, which backends run it; each backend module registers a builder per attack it runs), the
detectors in :mod:`medart.detectors` (a :class:`~medart.detectors.Detector` entry each: what it
is, where its class is, whether it is fitted against clean training images), and this index reads
their names from there. The other names are declared here, and the modules that
implement each family import their tuple from here. The command line lists them as choices, so
``medart --help`` answers before any heavy library loads.
"""

from __future__ import annotations

from medart import detectors
from medart.attacks.specs import ATTACKS, AUTOATTACK_PARTS, BACKENDS, PAPER_ATTACKS

DETECTORS = tuple(detectors.DETECTORS)
PAPER_DETECTORS = detectors.PAPER_DETECTORS

ARCHS = ("resnet50", "resnet18", "resnet34", "smallcnn")
INITS = ("none", "imagenet")  # from scratch; torchvision's ImageNet weights
# MedMNIST files; "original": a task's first public layout; then each layout by name (medart.data.sources.LAYOUTS)
SOURCES = ("medmnist", "original", "nih", "chexpert", "kaggle-dr", "aptos", "isic", "ham10000", "class-folders")
SIZES = (28, 64, 128, 224)  # MedMNIST(+) file variants, pixels per side
# validation metric → +1 higher is better, -1 lower
MONITORS = {"val_acc": 1, "val_auc": 1, "val_loss": -1, "val_balanced_acc": 1}
BALANCES = ("weights", "sampler", "none")  # class-weighted loss, class-balanced sampler, neither (the default first)
EXECUTORS = ("in-process", "ray")
FIGURES = ("eps_curves", "saliency", "stages", "landscape", "embedding", "gradcam")
DATASETS = ("pneumonia", "chestxray2", "chestxray3", "chestxray4", "fundoscopy", "dermoscopy", "retinamnist", "dermamnist")

__all__ = ["ARCHS", "ATTACKS", "AUTOATTACK_PARTS", "BACKENDS", "BALANCES", "DATASETS", "DETECTORS", "EXECUTORS", "FIGURES",
           "INITS", "MONITORS", "PAPER_ATTACKS", "PAPER_DETECTORS", "SIZES", "SOURCES"]
