"""The paper's tasks as named datasets, from MedMNIST files or from the original public layouts.

| name        | classes                                   | MedMNIST source | original layout |
|-------------|-------------------------------------------|-----------------|-----------------|
| pneumonia   | normal, pneumonia                         | pneumoniamnist  | class folders (Kermany ``chest_xray/``) |
| chestxray2  | no finding, pneumothorax                  | chestmnist      | NIH ChestX-ray14 |
| chestxray3  | + mass                                    | chestmnist      | NIH ChestX-ray14 |
| chestxray4  | + nodule                                  | chestmnist      | NIH ChestX-ray14 |
| fundoscopy  | non-referable, referable (DR grade ≥ 2)   | retinamnist     | Kaggle DR |
| dermoscopy  | benign naevus, melanoma                   | dermamnist      | ISIC |
| retinamnist, dermamnist | the files' own 5 / 7 classes  | itself          | — |

ChestX-ray tasks keep only single-label images ("no finding" = all 14 labels zero), as the paper did.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

import numpy as np

from medart.data import medmnist, sources
from medart.data.base import ArrayDataset, MedicalImageDataset, check_labels, resolve_data_dir
from medart.data.splits import ProtocolSplits, protocol_splits, stratified_split
from medart.errors import ConfigError, DataError

# label array (N,) or (N, 14) → (rows to keep, new labels of those rows)
Relabel = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def _identity(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels = labels.reshape(len(labels))
    return np.ones(len(labels), dtype=bool), labels


def _chest_single_label(findings: tuple[str, ...]) -> Relabel:
    columns = [medmnist.CLASSES["chestmnist"].index(f) for f in findings]

    def relabel(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n_pos = labels.sum(axis=1)
        new = np.full(len(labels), -1, dtype=np.int64)
        new[n_pos == 0] = 0  # "no finding"
        for k, col in enumerate(columns, start=1):
            new[(n_pos == 1) & (labels[:, col] == 1)] = k
        keep = new >= 0
        return keep, new[keep]

    return relabel


def _referable_dr(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    grade = labels.reshape(len(labels))
    return np.ones(len(grade), dtype=bool), (grade >= 2).astype(np.int64)


def _melanoma_vs_naevus(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    names = medmnist.CLASSES["dermamnist"]
    y = labels.reshape(len(labels))
    melanoma, naevus = names.index("melanoma"), names.index("melanocytic nevi")
    keep = (y == melanoma) | (y == naevus)
    return keep, (y[keep] == melanoma).astype(np.int64)


@dataclass(frozen=True)
class Task:
    name: str
    classes: tuple[str, ...]
    flag: str
    relabel: Relabel
    original: Callable[..., tuple[MedicalImageDataset, MedicalImageDataset | None]] | None
    description: str


_CXR = ("no finding", "pneumothorax", "mass", "nodule")
_NIH = ("No Finding", "Pneumothorax", "Mass", "Nodule")


def _nih(k: int) -> Callable[..., tuple[MedicalImageDataset, MedicalImageDataset | None]]:
    return lambda root, image_size: sources.nih_chestxray14(root, classes=_NIH[:k], image_size=image_size)


TASKS: dict[str, Task] = {
    t.name: t
    for t in [
        Task("pneumonia", ("normal", "pneumonia"), "pneumoniamnist", _identity,
             lambda root, image_size: sources.class_folders(root, image_size=image_size),
             "paediatric chest X-ray, normal vs pneumonia"),
        *[
            Task(f"chestxray{k}", _CXR[:k], "chestmnist", _chest_single_label(_CXR[1:k]), _nih(k),
                 f"NIH chest X-ray, single-label images only: {', '.join(_CXR[:k])}")
            for k in (2, 3, 4)
        ],
        Task("fundoscopy", ("non-referable", "referable"), "retinamnist", _referable_dr,
             lambda root, image_size: sources.kaggle_dr(root, image_size=image_size),
             "fundus photographs, referable diabetic retinopathy (grade >= 2) vs rest"),
        Task("dermoscopy", ("benign naevus", "melanoma"), "dermamnist", _melanoma_vs_naevus,
             lambda root, image_size: sources.isic(root, image_size=image_size),
             "dermoscopy, melanoma vs benign naevus"),
        Task("retinamnist", tuple(medmnist.CLASSES["retinamnist"]), "retinamnist", _identity, None,
             "RetinaMNIST's own 5 DR grades"),
        Task("dermamnist", tuple(medmnist.CLASSES["dermamnist"]), "dermamnist", _identity, None,
             "DermaMNIST's own 7 classes"),
    ]
}
SOURCES = ("medmnist", "original")


def get_task(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise ConfigError(f"unknown dataset '{name}'; choose one of: {', '.join(TASKS)}") from None


def load_dataset(
    name: str,
    data_dir: str | os.PathLike | None = None,
    *,
    source: str = "medmnist",
    size: int = 28,
    image_size: int | None = None,
    seed: int = 0,
    adv_test_fraction: float = 0.2,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    download: bool = True,
) -> ProtocolSplits:
    """Load a named task and divide it by the paper's protocol.

    Args:
        name: a key of :data:`TASKS`.
        data_dir: for ``medmnist``, the folder of ``.npz`` files (default ``$MEDART_DATA_DIR``);
            for ``original``, the dataset's own root folder.
        source: ``medmnist`` (the ``.npz`` files) or ``original`` (the public layouts).
        size: which MedMNIST file variant to read (28, 64, 128, 224).
        image_size: side of the tensors given to the model (default: ``size``, or 224 for
            ``original``).
        seed: seeds every split.
        adv_test_fraction: share of the test split that becomes AdvTest (the rest AdvTrain).
        val_fraction: share of Train held out for checkpoint selection when the source has no
            validation split.
        test_fraction: share held out as the test split when the source has no official one.
        download: fetch missing MedMNIST files.

    Returns:
        :class:`ProtocolSplits` whose datasets yield float32 ``(3, S, S)`` images in [0, 1].
    """
    task = get_task(name)
    if source not in SOURCES:
        raise ConfigError(f"unknown source '{source}'; choose one of: {', '.join(SOURCES)}")
    if source == "original":
        return _load_original(task, data_dir, image_size or 224, seed, adv_test_fraction, val_fraction, test_fraction)

    path = medmnist.fetch(task.flag, size, data_dir, download)
    parts = {}
    for split, (images, labels) in medmnist.read_npz(path, task.flag).items():
        if task.flag not in medmnist.MULTI_LABEL:  # range-check before relabelling hides bad values
            check_labels(labels, len(medmnist.CLASSES[task.flag]), f"{path}:{split}")
        keep, y = task.relabel(labels)
        parts[split] = ArrayDataset(images[keep], y, task.classes, image_size or size, where=f"{path}:{split}")
    info = {
        "dataset": name,
        "source": "medmnist",
        "file": str(path),
        "file_md5": medmnist.file_md5(path),
        "official_md5": medmnist.MD5[task.flag][size],
        "size": size,
    }
    return protocol_splits(name, parts["train"], parts["val"], parts["test"], seed, adv_test_fraction, val_fraction, info)


def _load_original(
    task: Task,
    data_dir: str | os.PathLike | None,
    image_size: int,
    seed: int,
    adv_test_fraction: float,
    val_fraction: float,
    test_fraction: float,
) -> ProtocolSplits:
    if task.original is None:
        raise ConfigError(f"dataset '{task.name}' exists only as a MedMNIST file; use `source`='medmnist'")
    root = resolve_data_dir(data_dir)
    if not root.is_dir():
        raise DataError(f"{root} is not a folder; point `data_dir` at the {task.name} dataset's root folder")
    train, test = task.original(root, image_size)
    official_test = test is not None
    if test is None:
        train, test = stratified_split(train, test_fraction, seed, what="train/test split")
    info = {"dataset": task.name, "source": "original", "root": str(root), "official_test_split": official_test}
    return protocol_splits(task.name, train, None, test, seed, adv_test_fraction, val_fraction, info)
