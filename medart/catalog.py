"""The names medart accepts that are only names, in one place and without importing torch.

The families with more to say than a name are declared once, next to their implementation, in
torch-free modules that the command line reads for its choices and help:

* attacks and backends: the :class:`~medart.attacks.specs.Attack` and
  :class:`~medart.attacks.specs.Backend` entries of :mod:`medart.attacks.specs` (defaults,
  settings, which backends run each; each backend module registers a builder per attack it runs);
* detectors: the :class:`~medart.detectors.Detector` entries of :mod:`medart.detectors`;
* dataset layouts: the :class:`~medart.data.sources.Layout` entries of :mod:`medart.data.sources`;
* model formats: the :class:`~medart.models.ModelFormat` entries of :mod:`medart.models`.

The names below are declared here, and the modules that implement each family import them from
here (this module stands on the bottom floor: it imports nothing). tests/test_declarations.py
walks every declared name through every backend and stage that claims it.
"""

from __future__ import annotations

ARCHS = ("resnet50", "resnet18", "resnet34", "smallcnn")
INITS = ("none", "imagenet")  # from scratch; torchvision's ImageNet weights
SIZES = (28, 64, 128, 224)  # MedMNIST(+) file variants, pixels per side
# validation metric → +1 higher is better, -1 lower
MONITORS = {"val_acc": 1, "val_auc": 1, "val_loss": -1, "val_balanced_acc": 1}
BALANCES = ("weights", "sampler", "none")  # class-weighted loss, class-balanced sampler, neither (the default first)
EXECUTORS = ("in-process", "ray")
FIGURES = ("eps_curves", "saliency", "stages", "landscape", "embedding", "gradcam")
DATASETS = ("pneumonia", "chestxray2", "chestxray3", "chestxray4", "fundoscopy", "dermoscopy", "retinamnist", "dermamnist")
# robust training (medart harden): ART's trainers, Madry's PGD, TRADES, fast-is-better-than-free, PGD with AWP;
# besides the validation metrics of MONITORS it measures PGD at its ε on the validation split each epoch
TRAINERS = ("pgd-at", "trades", "fbf", "awp")
ROBUST_MONITORS = MONITORS | {"val_pgd_acc": 1, "val_pgd_balanced_acc": 1}

__all__ = ["ARCHS", "BALANCES", "DATASETS", "EXECUTORS", "FIGURES", "INITS", "MONITORS", "ROBUST_MONITORS", "SIZES", "TRAINERS"]
