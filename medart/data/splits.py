"""The paper's protocol: Train fits the model, the test split is divided into AdvTrain / AdvTest.

All splits are stratified by class and seeded, so ``(dataset, seed)`` reproduces them exactly.
Where the images carry patient (or lesion) ids (``dataset.groups``) every split keeps all images
of one patient on one side, stratified as far as whole patients allow; without ids the split is
per image, as MedMNIST's files (which carry none) always were.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass, field

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold, train_test_split

from medart.data.base import MedicalImageDataset
from medart.errors import ConfigError, DataError


def stratified_split(
    dataset: MedicalImageDataset, fraction: float, seed: int, what: str = "split"
) -> tuple[MedicalImageDataset, MedicalImageDataset]:
    """Split into ``(1 - fraction, fraction)`` parts with the class proportions of ``dataset``.

    With ``dataset.groups`` the parts share no group (see :func:`group_split`); without, the split
    is per image.
    """
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"{what} fraction must be in (0, 1), got {fraction}")
    if dataset.groups is not None:
        a, b = group_split(dataset, fraction, seed, what)
        return dataset.subset(a), dataset.subset(b)
    counts = np.bincount(dataset.targets, minlength=dataset.num_classes)
    present = counts[counts > 0]
    if len(dataset) < 2 or present.min() < 2:
        raise DataError(
            f"cannot make a stratified {what} of {len(dataset)} images with class counts "
            f"{dict(zip(dataset.classes, counts.tolist()))}: every class needs at least 2 images"
        )
    index = np.arange(len(dataset))
    try:
        a, b = train_test_split(index, test_size=fraction, random_state=seed, stratify=dataset.targets)
    except ValueError as exc:  # e.g. fewer test slots than classes
        raise DataError(f"cannot make a stratified {what} of {len(dataset)} images: {exc}") from exc
    return dataset.subset(np.sort(a)), dataset.subset(np.sort(b))


def group_split(
    dataset: MedicalImageDataset, fraction: float, seed: int, what: str = "split"
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted indices ``(rest, part)``, ``part`` about ``fraction`` of the images, sharing no group.

    scikit-learn's :class:`~sklearn.model_selection.StratifiedGroupKFold` (shuffled by ``seed``)
    deals whole groups into ``k = round(1 / min(fraction, 1 - fraction))`` folds of about equal
    size, each with class proportions as near the whole's as whole groups allow. The smaller side
    is one fold, about ``1/k`` of the images (``fraction`` itself for 0.1, 0.2, 0.25, 0.5 …): the
    first, in fold order, that leaves every class on both sides.

    Refused with a one-line :class:`DataError` naming the group, its class and its share of that
    class's images, before any dealing, where one group holds more than ``1 - 1/(2k)`` of a
    class's images (all of them, where the class has one group): whichever side it falls on, the
    smaller side would hold more than the larger side's share of that class, or less than half its own.
    """
    targets, name = dataset.targets, dataset.grouping or "group"
    ids, groups = np.unique(dataset.groups, return_inverse=True)
    n_groups, k = len(ids), max(2, round(1 / min(fraction, 1 - fraction)))
    present = np.flatnonzero(np.bincount(targets, minlength=dataset.num_classes))
    largest = {c: _largest_group(targets, groups, c) for c in present}  # class → (group, its images, class's images)
    worst = max(present, key=lambda c: largest[c][1] / largest[c][2], default=None)
    if worst is not None and 2 * k * largest[worst][1] > (2 * k - 1) * largest[worst][2]:  # share > 1 - 1/(2k), exactly
        g, n, total = largest[worst]
        share = 100 * n / total
        held = (f"holds all {total:,} {dataset.classes[worst]!r} images (100.0 %), and a class needs images of at "
                f"least 2 {name} values to sit on both sides" if n == total else
                f"holds {n:,} of the {total:,} {dataset.classes[worst]!r} images ({share:.1f} %), so the smaller "
                f"side, asked for about {100 / k:.0f} % of them, would hold at least {share:.1f} % or at most "
                f"{100 - share:.1f} %")
        raise DataError(f"cannot make a {what} by {name}: {name} {str(ids[g])!r} {held}; remove or correct that "
                        f"{name}'s rows, add {dataset.classes[worst]!r} images of other {name} values, or split per "
                        "image with a source that names none (`source` medmnist)")
    if n_groups < k:
        raise DataError(f"cannot make a {what} by {name} into {k} folds of whole groups: only {n_groups} {name} "
                        f"values in all; use more data or a larger fraction")
    splitter = StratifiedGroupKFold(k, shuffle=True, random_state=seed)
    with warnings.catch_warnings():  # "least populated class has fewer members than n_splits": checked below
        warnings.simplefilter("ignore", UserWarning)
        try:
            folds = [fold for _, fold in splitter.split(targets, targets, groups)]
        except ValueError as exc:  # every class smaller than k
            raise DataError(f"cannot make a {what} by {name} of {len(targets)} images: {exc}") from exc
    for fold in folds:
        in_fold = np.zeros(len(targets), dtype=bool)
        in_fold[fold] = True
        if all(np.isin(present, targets[side]).all() for side in (in_fold, ~in_fold)):
            small, large = np.flatnonzero(in_fold), np.flatnonzero(~in_fold)
            return (large, small) if fraction <= 0.5 else (small, large)
    per_class = {dataset.classes[c]: len(np.unique(groups[targets == c])) for c in present}
    g, n, total = largest[worst]
    raise DataError(f"cannot make a {what} by {name} with every class on both sides ({name} values per class "
                    f"{per_class}; the largest {dataset.classes[worst]!r} one, {str(ids[g])!r}, holds {n:,} of its "
                    f"{total:,} images); use more data or another `seed`")


def _largest_group(targets: np.ndarray, groups: np.ndarray, c: int) -> tuple[int, int, int]:
    """The group (index into the sorted ids) holding most images of class ``c``, how many, and the class's count."""
    counts = np.bincount(groups[targets == c])
    g = int(counts.argmax())
    return g, int(counts[g]), int(counts.sum())


def subsample(dataset: MedicalImageDataset, n: int | None, seed: int) -> MedicalImageDataset:
    """At most ``n`` images, stratified and seeded (``None`` or ``n >= len`` keeps all).

    Per image even where ``dataset.groups`` is set: it draws from one side of a split, so it
    cannot put a patient on both sides; it only keeps fewer of some patients' images.
    """
    if n is None or n >= len(dataset):
        return dataset
    return dataset.subset(stratified_choice(dataset.targets, n, seed))


def stratified_choice(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Sorted indices of ``n`` of the items with class ``labels`` ``(N,)`` (all of them when
    ``n >= N``), drawn with ``seed`` and stratified by class where the kept ``n`` and the ``N − n``
    left out can each hold every class (else drawn without regard to class)."""
    labels = np.asarray(labels)
    if n >= len(labels):
        return np.arange(len(labels))
    if n < 1:
        raise ConfigError(f"a subset needs at least 1 image, got {n}")
    counts = np.bincount(labels)
    classes = np.count_nonzero(counts)
    # stratifying needs every class on both sides: the kept n and the len - n left out
    stratify = labels if (counts[counts > 0].min() >= 2 and min(n, len(labels) - n) >= classes) else None
    keep, _ = train_test_split(np.arange(len(labels)), train_size=n, random_state=seed, stratify=stratify)
    return np.sort(keep)


def indices_digest(*index_arrays: np.ndarray) -> str:
    """A short fingerprint of split indices, logged so two runs can be seen to share a split."""
    h = hashlib.sha256()
    for idx in index_arrays:
        h.update(np.asarray(idx, dtype=np.int64).tobytes())
        h.update(b"|")
    return h.hexdigest()[:16]


@dataclass
class ProtocolSplits:
    """Train (model fitting), Val (checkpoint selection), AdvTrain (detector fitting), AdvTest (scoring)."""

    name: str
    classes: list[str]
    train: MedicalImageDataset
    val: MedicalImageDataset
    adv_train: MedicalImageDataset
    adv_test: MedicalImageDataset
    info: dict = field(default_factory=dict)

    @property
    def test(self) -> list[MedicalImageDataset]:
        """The whole test split, as the two parts it was divided into."""
        return [self.adv_train, self.adv_test]

    def counts(self) -> dict[str, dict[str, int]]:
        return {
            part: getattr(self, part).class_counts() for part in ("train", "val", "adv_train", "adv_test")
        }

    def record(self) -> dict:
        """What ``splits.json`` holds: class (and, with groups, patient) counts per part, the test
        split's AdvTrain / AdvTest indices, and :attr:`info` (seed, digest, ``grouping`` …)."""
        parts = ("train", "val", "adv_train", "adv_test")
        grouped = all(getattr(self, part).groups is not None for part in parts)
        groups = {part: len(np.unique(getattr(self, part).groups)) for part in parts} if grouped else {}
        return {
            "counts": self.counts(),
            **({"group_counts": groups} if groups else {}),
            "adv_train_indices": self.adv_train.indices.tolist(),
            "adv_test_indices": self.adv_test.indices.tolist(),
            **self.info,
        }


def groups_on_several_sides(*parts: MedicalImageDataset) -> int:
    """How many patient (or lesion) ids have images in more than one of ``parts``: 0 for a clean split."""
    ids, sides = np.unique(np.concatenate([np.unique(p.groups) for p in parts]), return_counts=True)
    return int((sides > 1).sum())


def protocol_splits(
    name: str,
    train: MedicalImageDataset,
    val: MedicalImageDataset | None,
    test: MedicalImageDataset,
    seed: int = 0,
    adv_test_fraction: float = 0.2,
    val_fraction: float = 0.1,
    info: dict | None = None,
) -> ProtocolSplits:
    """Divide ``test`` into AdvTrain / AdvTest; carve Val from Train when the source has none.

    Train and the test split must hold images of every class the task declares: a model cannot
    learn a class it never sees, and accuracy and AUC on a test split without it mean little.
    ``info`` gains the seed, the split digest and ``grouping``: what kept patients on one side
    (e.g. ``"Patient ID"``, with ``groups_on_several_sides``, which is 0 unless an official split
    shares patients), else ``info["grouping"]`` as given, which says why there was none.
    """
    for part, dataset in (("train", train), ("test", test)):
        counts = np.bincount(dataset.targets, minlength=dataset.num_classes)
        absent = [c for c, n in zip(dataset.classes, counts) if n == 0]
        if absent:
            raise DataError(f"{name}: the {part} split has no images of class {', '.join(map(repr, absent))} "
                            f"(class counts {dict(zip(dataset.classes, counts.tolist()))}); every declared class "
                            "needs images — check the labels, or choose the dataset that matches the file")
    if val is None:
        train, val = stratified_split(train, val_fraction, seed, what="validation split")
    adv_train, adv_test = stratified_split(test, adv_test_fraction, seed, what="AdvTrain/AdvTest split")
    info = dict(info or {})
    info.update(
        seed=seed,
        adv_test_fraction=adv_test_fraction,
        split_digest=indices_digest(adv_train.indices, adv_test.indices),
    )
    parts = (train, val, adv_train, adv_test)
    if all(part.groups is not None for part in parts):
        info.update(grouping=train.grouping, groups_on_several_sides=groups_on_several_sides(*parts))
    else:
        info.setdefault("grouping", "none: the source carries no patient id")
    return ProtocolSplits(name, list(train.classes), train, val, adv_train, adv_test, info)
