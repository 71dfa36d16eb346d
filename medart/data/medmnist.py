"""MedMNIST v2 / MedMNIST+ ``.npz`` files: the small public stand-ins of the paper's datasets.

Each file holds ``{train,val,test}_images`` (uint8 ``(N, S, S)`` or ``(N, S, S, 3)``) and
``{train,val,test}_labels`` (uint8 ``(N, 1)``, or ``(N, 14)`` multi-hot for ChestMNIST), at
S = 28 (``<flag>.npz``) or 64/128/224 (``<flag>_<S>.npz``). Files are read from the data directory
and, when absent, downloaded from the official Zenodo record with MD5 verification.

This module reads the files as arrays and imports no torch (``medart datasets`` reads its names);
:class:`medart.data.MedMNIST` is one split of a file as a dataset.
"""

from __future__ import annotations

import functools
import os
import warnings
from pathlib import Path

import numpy as np

from medart.data import resolve_data_dir
from medart.data.download import download_file, md5sum
from medart.data.npz import load_npz
from medart.errors import DataError

SIZES = (28, 64, 128, 224)
SPLITS = ("train", "val", "test")
URL_ENV = "MEDART_MEDMNIST_URL"  # a mirror holding the same file names
DEFAULT_URL = "https://zenodo.org/records/10519652/files"

# Official MD5s (MedMNIST+ record 10519652), by flag and image size.
MD5 = {
    "pneumoniamnist": {
        28: "28209eda62fecd6e6a2d98b1501bb15f",
        64: "8f4eceb4ccffa70c672198ea285246c6",
        128: "05b46931834c231683c68f40c47b2971",
        224: "d6a3c71de1b945ea11211b03746c1fe1",
    },
    "chestmnist": {
        28: "02c8a6516a18b556561a56cbdd36c4a8",
        64: "9de6cd0b934ebb5b7426cfba5efbae16",
        128: "db107e5590b27930b62dbaf558aebee3",
        224: "45bd33e6f06c3e8cdb481c74a89152aa",
    },
    "retinamnist": {
        28: "bd4c0672f1bba3e3a89f0e4e876791e4",
        64: "afda852cc34dcda56f86ad2b2457dbcc",
        128: "e48e916a24454daf90583d4e6efb1a18",
        224: "eae7e3b6f3fcbda4ae613ebdcbe35348",
    },
    "dermamnist": {
        28: "0744692d530f8e62ec473284d019b0c7",
        64: "b70a2f5635c6199aeaa28c31d7202e1f",
        128: "2defd784463fa5243564e855ed717de1",
        224: "8974907d8e169bef5f5b96bc506ae45d",
    },
}

CLASSES = {
    "pneumoniamnist": ["normal", "pneumonia"],
    "chestmnist": [
        "atelectasis", "cardiomegaly", "effusion", "infiltration", "mass", "nodule", "pneumonia",
        "pneumothorax", "consolidation", "edema", "emphysema", "fibrosis", "pleural", "hernia",
    ],
    "retinamnist": ["0", "1", "2", "3", "4"],
    "dermamnist": [
        "actinic keratoses and intraepithelial carcinoma", "basal cell carcinoma",
        "benign keratosis-like lesions", "dermatofibroma", "melanoma", "melanocytic nevi",
        "vascular lesions",
    ],
}
MULTI_LABEL = {"chestmnist"}


def filename(flag: str, size: int = 28) -> str:
    """MedMNIST's file name: ``pneumoniamnist.npz`` at 28 px, ``pneumoniamnist_64.npz`` at 64 px."""
    if flag not in MD5:
        raise DataError(f"unknown MedMNIST file '{flag}'; choose one of: {', '.join(MD5)}")
    if size not in SIZES:
        raise DataError(f"MedMNIST has no {size}px files; choose `size` from {SIZES}")
    return f"{flag}.npz" if size == 28 else f"{flag}_{size}.npz"


def fetch(flag: str, size: int = 28, data_dir: str | os.PathLike | None = None, download: bool = True) -> Path:
    """Path of the verified ``.npz`` file, downloading it if it is not in ``data_dir``.

    A local file whose MD5 differs from the official one is used with a warning (users may hold
    a curated subset); a downloaded one must match or it is discarded.
    """
    name = filename(flag, size)
    root = resolve_data_dir(data_dir)
    path = root / name
    expected = MD5[flag][size]
    if path.is_file():
        if file_md5(path) != expected:
            warnings.warn(
                f"{path} does not match the official MedMNIST MD5 {expected}; using it as a user-supplied file",
                stacklevel=2,
            )
        return path
    # the folder itself missing is most often a mistyped `data_dir`: say so (the download creates it only
    # once the server answers)
    missing = "" if root.is_dir() else f" (there is no folder {root})"
    if not download:
        raise DataError(
            f"{path} not found{missing}; put {name} there, point MEDART_DATA_DIR or `data_dir` at the folder "
            "holding it, or allow downloading with `download`=True"
        )
    base = os.environ.get(URL_ENV, DEFAULT_URL).rstrip("/")
    url = f"{base}/{name}" + ("?download=1" if base.startswith("http") else "")
    try:
        return download_file(url, path, expected)
    except DataError as exc:
        raise DataError(
            f"{path} not found{missing} and {exc}; put {name} there or point MEDART_DATA_DIR / `data_dir` at the "
            "folder holding it"
        ) from exc


@functools.lru_cache(maxsize=32)
def _file_md5(path: Path, mtime_ns: int, size: int) -> str:
    """MD5 of a file, computed once per process for each version (mtime, size) of it."""
    return md5sum(path)


def file_md5(path: Path) -> str:
    return _file_md5(path, path.stat().st_mtime_ns, path.stat().st_size)


def read_npz(path: Path, flag: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{split: (images, labels)}`` from a MedMNIST file, checked for the keys, dtypes and shapes it must have."""
    keys = [f"{s}_{k}" for s in SPLITS for k in ("images", "labels")]
    loaded = load_npz(path, keys)
    arrays = {s: (loaded[f"{s}_images"], loaded[f"{s}_labels"]) for s in SPLITS}
    n_labels = len(CLASSES[flag]) if flag in MULTI_LABEL else 1
    for split, (images, labels) in arrays.items():
        if images.dtype != np.uint8 or images.ndim not in (3, 4) or images.shape[1] != images.shape[2]:
            raise DataError(f"{path}: {split}_images is {images.dtype} {images.shape}; expected uint8 (N, S, S[, 3])")
        if labels.shape != (len(images), n_labels):
            raise DataError(f"{path}: {split}_labels has shape {labels.shape}; expected ({len(images)}, {n_labels})")
    return arrays
