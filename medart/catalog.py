"""The names medart accepts, in one place and without importing torch.

The modules that implement each family import their tuple from here, and the command line lists
them as choices, so ``medart --help`` answers before any heavy library loads.
"""

from __future__ import annotations

PAPER_ATTACKS = ("fgsm", "bim", "pgd", "cw")  # Ma et al.'s; the default wherever attacks are listed
AUTOATTACK_PARTS = ("apgd-ce", "apgd-dlr", "fab", "square")  # AutoAttack's standard version, in its order
ATTACKS = PAPER_ATTACKS + AUTOATTACK_PARTS + ("autoattack",)
BACKENDS = ("art", "torchattacks")
ARCHS = ("resnet50", "resnet18", "resnet34", "smallcnn")
INITS = ("none", "imagenet")  # from scratch; torchvision's ImageNet weights
# MedMNIST files; "original": a task's first public layout; then each layout by name (medart.data.sources.LAYOUTS)
SOURCES = ("medmnist", "original", "nih", "chexpert", "kaggle-dr", "aptos", "isic", "ham10000", "class-folders")
SIZES = (28, 64, 128, 224)  # MedMNIST(+) file variants, pixels per side
# validation metric → +1 higher is better, -1 lower
MONITORS = {"val_acc": 1, "val_auc": 1, "val_loss": -1, "val_balanced_acc": 1}
BALANCES = ("weights", "sampler", "none")  # class-weighted loss, class-balanced sampler, neither (the default first)
# preprocessing defences in front of a model (medart.defences.specs), and the gradients attacks take
# through them: BPDA (ART's estimate_gradient; with EOT for randomized ones) or plain (the defence's own)
DEFENCES = ("jpeg", "squeeze", "smooth", "noise")
DEFENCE_GRADIENTS = ("bpda", "plain")
DETECTORS = ("kd", "lid", "dfeat", "qfeat", "bu", "mahalanobis", "art_binary")
PAPER_DETECTORS = ("kd", "lid", "dfeat", "qfeat")
EXECUTORS = ("in-process", "ray")
FIGURES = ("eps_curves", "saliency", "stages", "landscape", "embedding", "gradcam")
DATASETS = ("pneumonia", "chestxray2", "chestxray3", "chestxray4", "fundoscopy", "dermoscopy", "retinamnist", "dermamnist")
