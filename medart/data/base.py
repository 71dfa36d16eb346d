"""The dataset shape every medart loader returns.

A medart dataset is a map-style :class:`torch.utils.data.Dataset` that yields
``(image, label)`` with ``image`` a float32 tensor ``(3, S, S)`` in [0, 1] (grey-scale repeated
to three channels, resized to the model's input size ``S``) and ``label`` an ``int``. It also
exposes ``targets`` (``(N,)`` int64 array) and ``classes`` (names, index = label), so splits and
class counts never have to read the images, and ``groups``: ``(N,)`` ids of the patient (or lesion)
each image shows, named by ``grouping`` (e.g. ``"Patient ID"``), or ``None`` where the source
carries no such id. Splits keep every group on one side.
"""

from __future__ import annotations

import os
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from medart.data import medmnist
from medart.errors import DataError

Transform = Callable[[torch.Tensor], torch.Tensor]


def to_tensor_image(pixels: np.ndarray, size: int | None = None) -> torch.Tensor:
    """``uint8`` pixels ``(H, W)``, ``(H, W, 1)`` or ``(H, W, 3)`` → float32 ``(3, S, S)`` in [0, 1].

    Resizing (bilinear, antialiased) happens only when ``size`` differs from the image's size;
    non-square images are centre-cropped to a square first, as in the paper's preprocessing.
    """
    x = torch.from_numpy(np.ascontiguousarray(pixels))
    if x.ndim == 2:
        x = x.unsqueeze(-1)
    if x.ndim != 3 or x.shape[-1] not in (1, 3):
        raise DataError(f"image has shape {tuple(pixels.shape)}; expected (H, W), (H, W, 1) or (H, W, 3)")
    x = x.permute(2, 0, 1).to(torch.float32).div_(255.0)
    if x.shape[0] == 1:
        x = x.expand(3, -1, -1)
    h, w = x.shape[1:]
    if h != w:
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        x = x[:, top : top + side, left : left + side]
    if size is not None and size != x.shape[1]:
        x = F.interpolate(x.unsqueeze(0), size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]
        x = x.clamp_(0.0, 1.0)
    return x.contiguous()


def check_labels(labels: np.ndarray, num_classes: int, where: str) -> np.ndarray:
    """Labels as a flat int64 array, refusing values outside ``0 … num_classes-1``."""
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise DataError(f"{where}: labels have shape {labels.shape}; expected (N,) or (N, 1)")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        bad = labels[(labels < 0) | (labels >= num_classes)][0]
        raise DataError(
            f"{where}: label {bad} is out of range for {num_classes} classes (0…{num_classes - 1}); "
            "fix the label file or choose the matching dataset"
        )
    return labels.astype(np.int64)


class MedicalImageDataset(Dataset):
    """Base class: subclasses set ``classes`` and ``targets`` and implement :meth:`load_pixels`."""

    classes: list[str]
    targets: np.ndarray
    groups: np.ndarray | None = None  # (N,) patient/lesion id per image; None: the source has none
    grouping: str | None = None  # what ``groups`` holds, e.g. the CSV column "Patient ID"

    def __init__(self, image_size: int | None = None, transform: Transform | None = None) -> None:
        self.image_size = image_size
        self.transform = transform

    def load_pixels(self, index: int) -> np.ndarray:
        """The raw ``uint8`` pixels of image ``index``, ``(H, W)`` or ``(H, W, C)``."""
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        x = to_tensor_image(self.load_pixels(index), self.image_size)
        if self.transform is not None:
            x = self.transform(x)
        return x, int(self.targets[index])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def class_counts(self) -> dict[str, int]:
        counts = np.bincount(self.targets, minlength=self.num_classes)
        return {name: int(c) for name, c in zip(self.classes, counts)}

    def subset(self, indices: Sequence[int] | np.ndarray) -> "Subset":
        return Subset(self, np.asarray(indices, dtype=np.int64))

    def as_classes(self, classes: Sequence[str], own: Mapping[str, str], where: str) -> "MedicalImageDataset":
        """Relabel to ``classes`` (a task's names, in the task's order); returns self.

        ``own`` maps a task class to this dataset's name for it where the two differ (a layout's
        ``labels``, e.g. ``benign naevus`` → HAM10000's ``nv``); other names match ignoring case
        (Kermany's folder ``NORMAL`` is ``normal``). Every class of the dataset must be one of the
        task's, and every task class found: else a :class:`DataError` naming the class.
        """
        found = []
        for name in classes:
            wanted = own.get(name, name)
            match = [i for i, c in enumerate(self.classes) if c == wanted] or [
                i for i, c in enumerate(self.classes) if c.casefold() == wanted.casefold()]
            if len(match) != 1:
                task_name = "" if wanted == name else f" (the task's {name!r})"
                raise DataError(f"{where}: {len(match) or 'no'} classes named {wanted!r}{task_name} among "
                                f"{', '.join(map(repr, self.classes))}; expected exactly one — check the labels, or "
                                "choose the dataset that matches the files")
            found.append(match[0])
        extra = [c for i, c in enumerate(self.classes) if i not in found]
        if extra:
            raise DataError(f"{where}: class {extra[0]!r} is not one of the task's classes ({', '.join(classes)}); "
                            "remove it or choose the dataset it belongs to")
        remap = np.empty(len(self.classes), dtype=np.int64)
        remap[found] = np.arange(len(found))
        self.targets, self.classes = remap[self.targets], list(classes)
        return self

    def grouped_by(self, grouping: str, groups: Sequence[str] | np.ndarray) -> "MedicalImageDataset":
        """Record that image ``i`` shows patient (or lesion) ``groups[i]``, read from ``grouping``; returns self."""
        groups = np.asarray(groups, dtype=str)
        if groups.shape != self.targets.shape:
            raise DataError(f"{len(groups)} {grouping} values for {len(self.targets)} images")
        self.groups, self.grouping = groups, grouping
        return self


class Subset(MedicalImageDataset):
    """A view of some images of another dataset, keeping its classes, targets and groups."""

    def __init__(self, parent: MedicalImageDataset, indices: np.ndarray) -> None:
        super().__init__(parent.image_size, parent.transform)
        self.parent = parent
        self.indices = indices
        self.classes = parent.classes
        self.targets = parent.targets[indices]
        self.grouping = parent.grouping
        self.groups = None if parent.groups is None else parent.groups[indices]

    def load_pixels(self, index: int) -> np.ndarray:
        return self.parent.load_pixels(int(self.indices[index]))


class ArrayDataset(MedicalImageDataset):
    """Images held in memory as one ``uint8`` array ``(N, H, W)`` or ``(N, H, W, C)``."""

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        classes: Sequence[str],
        image_size: int | None = None,
        transform: Transform | None = None,
        where: str = "dataset",
    ) -> None:
        super().__init__(image_size, transform)
        if images.dtype != np.uint8 or images.ndim not in (3, 4):
            raise DataError(f"{where}: images are {images.dtype} {images.shape}; expected uint8 (N, H, W[, C])")
        if len(images) != len(labels):
            raise DataError(f"{where}: {len(images)} images but {len(labels)} labels")
        self.images = images
        self.classes = list(classes)
        self.targets = check_labels(labels, len(self.classes), where)

    def load_pixels(self, index: int) -> np.ndarray:
        return self.images[index]


class MedMNIST(ArrayDataset):
    """One split of a MedMNIST file, as a medart dataset (torchvision ``datasets.PCAM``-like).

    Args:
        flag: ``pneumoniamnist``, ``chestmnist``, ``retinamnist`` or ``dermamnist``.
        split: ``train``, ``val`` or ``test``.
        size: which file variant to read (28, 64, 128 or 224 px).
        image_size: side of the returned tensors; defaults to ``size``.
        data_dir: folder holding the files (default: ``$MEDART_DATA_DIR`` or ``~/.medart/data``).
        download: fetch the file when it is not there.

    ``chestmnist`` labels are 14-way multi-hot and cannot be one class each: use it through the
    paper's derived tasks (``medart.data.tasks``) instead.
    """

    def __init__(
        self,
        flag: str,
        split: str = "train",
        size: int = 28,
        image_size: int | None = None,
        transform: Transform | None = None,
        data_dir: str | os.PathLike | None = None,
        download: bool = True,
    ) -> None:
        if split not in medmnist.SPLITS:
            raise DataError(f"unknown split '{split}'; choose one of {medmnist.SPLITS}")
        if flag in medmnist.MULTI_LABEL:
            raise DataError(f"{flag} is multi-label; use one of the tasks derived from it (e.g. chestxray2)")
        self.path = medmnist.fetch(flag, size, data_dir, download)
        images, labels = medmnist.read_npz(self.path, flag)[split]
        super().__init__(images, labels, medmnist.CLASSES[flag], image_size or size, transform,
                         where=f"{self.path}:{split}")
        self.flag, self.split = flag, split


def stack(dataset: MedicalImageDataset) -> tuple[torch.Tensor, torch.Tensor]:
    """All of ``dataset`` as tensors: images float32 ``(N, 3, S, S)`` and labels int64 ``(N,)``."""
    if len(dataset) == 0:
        raise DataError("the dataset is empty")
    xs, ys = zip(*(dataset[i] for i in range(len(dataset))))
    return torch.stack(xs), torch.tensor(ys, dtype=torch.int64)
