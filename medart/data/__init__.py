"""Medical image datasets in the paper's Train / AdvTrain / AdvTest protocol.

The names below load with their module when first asked for (``from medart.data import
load_dataset``), so that the layouts' declarations in :mod:`medart.data.sources`, which the
command line reads for its choices, import without torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {"MedicalImageDataset": "base", "resolve_data_dir": "base", "MedMNIST": "medmnist", "ProtocolSplits": "splits",
         "subsample": "splits", "TASKS": "tasks", "load_dataset": "tasks"}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)


__all__ = ["MedMNIST", "MedicalImageDataset", "ProtocolSplits", "TASKS", "load_dataset", "resolve_data_dir", "subsample"]
