"""medart: adversarial attacks on medical image classifiers, and their detection (Ma et al. 2021)."""

from __future__ import annotations

__version__ = "0.1.0"

# Loaded on first use, so that `import medart.cli` (and `medart --help`) does not import torch.
_LAZY = {"load_dataset": "medart.data", "load_model": "medart.models.registry", "MedResNet": "medart.models.resnet",
         "build_model": "medart.models.resnet", "AdaptedClassifier": "medart.models.adapter",
         "InputContract": "medart.models.adapter"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'medart' has no attribute {name!r}")


__all__ = ["AdaptedClassifier", "InputContract", "MedResNet", "__version__", "build_model", "load_dataset", "load_model"]
