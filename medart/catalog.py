"""The names medart accepts, in one place and without importing torch.

Families with more to say than a name are declared once, next to their implementation, in
torch-free modules, and this index reads their names from there:

* attacks and backends: the :class:`~medart.attacks.specs.Attack` and
  :class:`~medart.attacks.specs.Backend` entries of :mod:`medart.attacks.specs` (defaults,
  settings, which backends run each; each backend module registers a builder per attack it runs);
* detectors: the :class:`~medart.detectors.Detector` entries of :mod:`medart.detectors` (what
  each is, where its class is, whether it is fitted against clean training images);
* dataset layouts: the :class:`~medart.data.sources.Layout` entries of :mod:`medart.data.sources`.

The families that are only names are declared here, and the modules that implement them import
them from here. The command line lists all of them as choices, so ``medart --help`` answers before
any heavy library loads; tests/test_declarations.py walks every declared name through every
backend and stage that claims it.
"""

from __future__ import annotations

from medart import detectors
from medart.attacks.specs import ATTACKS, AUTOATTACK_PARTS, BACKENDS, PAPER_ATTACKS
from medart.data import sources

DETECTORS = tuple(detectors.DETECTORS)
PAPER_DETECTORS = detectors.PAPER_DETECTORS
# MedMNIST files; "original": a task's first public layout; then each layout by name
SOURCES = ("medmnist", "original", *sources.LAYOUTS)
ARCHS = ("resnet50", "resnet18", "resnet34", "smallcnn")
INITS = ("none", "imagenet")  # from scratch; torchvision's ImageNet weights
SIZES = (28, 64, 128, 224)  # MedMNIST(+) file variants, pixels per side
# validation metric → +1 higher is better, -1 lower
MONITORS = {"val_acc": 1, "val_auc": 1, "val_loss": -1, "val_balanced_acc": 1}
BALANCES = ("weights", "sampler", "none")  # class-weighted loss, class-balanced sampler, neither (the default first)
EXECUTORS = ("in-process", "ray")
FIGURES = ("eps_curves", "saliency", "stages", "landscape", "embedding", "gradcam")
DATASETS = ("pneumonia", "chestxray2", "chestxray3", "chestxray4", "fundoscopy", "dermoscopy", "retinamnist", "dermamnist")

__all__ = ["ARCHS", "ATTACKS", "AUTOATTACK_PARTS", "BACKENDS", "BALANCES", "DATASETS", "DETECTORS", "EXECUTORS", "FIGURES",
           "INITS", "MONITORS", "PAPER_ATTACKS", "PAPER_DETECTORS", "SIZES", "SOURCES"]
