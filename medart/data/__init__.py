"""Medical image datasets in the paper's Train / AdvTrain / AdvTest protocol.

The names below load with their module when first asked for (``from medart.data import
load_dataset``), so that the declarations the command line reads for its choices and for
``medart datasets`` — the layouts (:mod:`medart.data.sources`), the tasks (:mod:`medart.data.tasks`),
MedMNIST's files (:mod:`medart.data.medmnist`) and the data folder (:func:`resolve_data_dir`) —
import without torch, scikit-learn or pandas.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

DATA_DIR_ENV = "MEDART_DATA_DIR"

_LAZY = {"MedicalImageDataset": "base", "MedMNIST": "base", "ProtocolSplits": "splits", "subsample": "splits",
         "TASKS": "tasks", "load_dataset": "tasks"}


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The data directory: ``data_dir`` if given, else ``$MEDART_DATA_DIR``, else ``~/.medart/data``.

    Only a path: nothing is created (a download creates it when it has a file to put there).
    """
    if data_dir:
        return Path(data_dir).expanduser()
    if os.environ.get(DATA_DIR_ENV):
        return Path(os.environ[DATA_DIR_ENV]).expanduser()
    return Path.home() / ".medart" / "data"


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)


__all__ = ["DATA_DIR_ENV", "MedMNIST", "MedicalImageDataset", "ProtocolSplits", "TASKS", "load_dataset", "resolve_data_dir", "subsample"]
