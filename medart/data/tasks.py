"""The paper's tasks as named datasets, from MedMNIST files or from the public layouts users hold.

| name        | classes                                   | MedMNIST source | layouts (first = ``original``) |
|-------------|-------------------------------------------|-----------------|-----------------|
| pneumonia   | normal, pneumonia                         | pneumoniamnist  | class-folders (Kermany ``chest_xray/``) |
| chestxray2  | no finding, pneumothorax                  | chestmnist      | nih, chexpert |
| chestxray3  | + mass                                    | chestmnist      | nih |
| chestxray4  | + nodule                                  | chestmnist      | nih |
| fundoscopy  | non-referable, referable (DR grade ≥ 2)   | retinamnist     | kaggle-dr, aptos |
| dermoscopy  | benign naevus, melanoma                   | dermamnist      | isic, ham10000 |
| retinamnist, dermamnist | the files' own 5 / 7 classes  | itself          | — |

ChestX-ray tasks keep only single-label images ("no finding" = all 14 labels zero), as the paper did.
Whatever the source, the splits' classes are the task's names in the task's order (a layout's own
labels, e.g. NIH's ``No Finding`` or HAM10000's ``nv``, are translated by its ``Layout.labels``),
so a model trained on one source is measured on another under the same class and metric names.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

import numpy as np

from medart.data import medmnist, resolve_data_dir, sources
from medart.errors import ConfigError, DataError

if TYPE_CHECKING:  # the declarations import no torch (`medart datasets` prints them); loading does
    from medart.data.base import MedicalImageDataset
    from medart.data.splits import ProtocolSplits

# a layout's loader, bound to one task: (root, image size) → (train, official test or None)
Loader = Callable[..., tuple["MedicalImageDataset", "MedicalImageDataset | None"]]

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
    """A named task: its classes, its MedMNIST file (``flag``, relabelled by ``relabel``) and the
    layouts (``source`` name → loader) it can also be read from; the first is ``original``."""

    name: str
    classes: tuple[str, ...]
    flag: str
    relabel: Relabel
    layouts: dict[str, Loader] = field(compare=False)  # a dict: left out of == and hash
    description: str

    @property
    def sources(self) -> tuple[str, ...]:
        """The ``source`` values this task accepts."""
        return ("medmnist", *(("original", *self.layouts) if self.layouts else ()))


_CXR = ("no finding", "pneumothorax", "mass", "nodule")
_DERM = ("benign naevus", "melanoma")


def _own(layout: str, classes: tuple[str, ...]) -> list[str]:
    """The layout's own labels of a task's ``classes``, for the loaders that select rows by them."""
    return [sources.LAYOUTS[layout].labels.get(name, name) for name in classes]


def _nih(k: int) -> Loader:
    return lambda root, image_size: sources.nih_chestxray14(root, _own("nih", _CXR[:k]), image_size)


def _as_is(layout: str) -> Loader:
    """The layout's loader with its own defaults, imported (with torch) when first called."""
    return lambda root, image_size: sources.LAYOUTS[layout].load()(root, image_size=image_size)


TASKS: dict[str, Task] = {
    t.name: t
    for t in [
        Task("pneumonia", ("normal", "pneumonia"), "pneumoniamnist", _identity,
             {"class-folders": _as_is("class-folders")},
             "paediatric chest X-ray, normal vs pneumonia"),
        *[
            Task(f"chestxray{k}", _CXR[:k], "chestmnist", _chest_single_label(_CXR[1:k]),
                 {"nih": _nih(k), **({"chexpert": _as_is("chexpert")} if k == 2 else {})},
                 f"chest X-ray, {', '.join(_CXR[:k])} (ChestMNIST, NIH: single-label images only)")
            for k in (2, 3, 4)
        ],
        Task("fundoscopy", ("non-referable", "referable"), "retinamnist", _referable_dr,
             {"kaggle-dr": _as_is("kaggle-dr"), "aptos": _as_is("aptos")},
             "fundus photographs, referable diabetic retinopathy (grade >= 2) vs rest"),
        Task("dermoscopy", _DERM, "dermamnist", _melanoma_vs_naevus,
             {"isic": _as_is("isic"),
              "ham10000": lambda root, image_size: sources.ham10000(root, _own("ham10000", _DERM), image_size)},
             "dermoscopy, melanoma vs benign naevus"),
        Task("retinamnist", tuple(medmnist.CLASSES["retinamnist"]), "retinamnist", _identity, {},
             "RetinaMNIST's own 5 DR grades"),
        Task("dermamnist", tuple(medmnist.CLASSES["dermamnist"]), "dermamnist", _identity, {},
             "DermaMNIST's own 7 classes"),
    ]
}
MEDMNIST_GROUPING = "none: MedMNIST files carry no patient id (their official splits are kept)"


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
            for a layout, the dataset's own root folder.
        source: ``medmnist`` (the ``.npz`` files), a layout the task accepts (``Task.sources``,
            e.g. ``nih`` or ``chexpert`` for ``chestxray2``), or ``original``: the task's first layout.
        size: which MedMNIST file variant to read (28, 64, 128, 224).
        image_size: side of the tensors given to the model (default: ``size``, or 224 for a
            layout).
        seed: seeds every split; where the layout names patients (or lesions) each split keeps
            every one of them on one side (``info["grouping"]`` says by what, or why not).
        adv_test_fraction: share of the test split that becomes AdvTest (the rest AdvTrain).
        val_fraction: share of Train held out for checkpoint selection when the source has no
            validation split.
        test_fraction: share held out as the test split when the source has no official one.
        download: fetch missing MedMNIST files.

    Returns:
        :class:`ProtocolSplits` whose datasets yield float32 ``(3, S, S)`` images in [0, 1].
    """
    from medart.data.base import ArrayDataset, check_labels
    from medart.data.splits import protocol_splits

    task = get_task(name)
    if source not in sources.SOURCES:
        raise ConfigError(f"unknown source '{source}'; choose one of: {', '.join(sources.SOURCES)}")
    if source not in task.sources:
        raise ConfigError(f"dataset '{name}' does not come in source '{source}'; "
                          f"choose one of: {', '.join(task.sources)}")
    if source != "medmnist":
        return _load_layout(task, source, data_dir, image_size or 224, seed, adv_test_fraction, val_fraction,
                            test_fraction)

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
        "grouping": MEDMNIST_GROUPING,
    }
    return protocol_splits(name, parts["train"], parts["val"], parts["test"], seed, adv_test_fraction, val_fraction, info)


def _load_layout(
    task: Task,
    source: str,
    data_dir: str | os.PathLike | None,
    image_size: int,
    seed: int,
    adv_test_fraction: float,
    val_fraction: float,
    test_fraction: float,
) -> ProtocolSplits:
    """``task`` read from layout ``source`` (``original``: the first it accepts), its classes
    renamed to the task's. The train/test split, where the layout has no official one, keeps
    each patient on one side as the later splits do."""
    from medart.data.splits import protocol_splits, stratified_split

    layout = next(iter(task.layouts)) if source == "original" else source
    root = resolve_data_dir(data_dir)
    if not root.is_dir():
        raise DataError(f"{root} is not a folder; point `data_dir` at the {task.name} dataset's root folder")
    train, test = task.layouts[layout](root, image_size)
    described = sources.LAYOUTS[layout]
    for part in (train, test):
        if part is not None:
            part.as_classes(task.classes, described.labels, f"{root} ({described.title})")
    official_test, dropped = test is not None, getattr(train, "dropped", 0)
    if test is None:
        train, test = stratified_split(train, test_fraction, seed, what="train/test split")
    # Why there is no grouping, which protocol_splits replaces with the grouping where the loader found ids.
    none = described.grouping
    if not none.startswith("none:"):  # a layout whose files may or may not name patients (ISIC)
        none = f"none: this {described.title} file names no patient"
    info = {"dataset": task.name, "source": source, "layout": layout, "root": str(root),
            "official_test_split": official_test, "dropped_rows": dropped, "grouping": none}
    return protocol_splits(task.name, train, None, test, seed, adv_test_fraction, val_fraction, info)
