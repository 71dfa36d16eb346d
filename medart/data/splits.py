"""The paper's protocol: Train fits the model, the test split is divided into AdvTrain / AdvTest.

All splits are stratified by class and seeded, so ``(dataset, seed)`` reproduces them exactly.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
from sklearn.model_selection import train_test_split

from medart.data.base import MedicalImageDataset
from medart.errors import ConfigError, DataError


def stratified_split(
    dataset: MedicalImageDataset, fraction: float, seed: int, what: str = "split"
) -> tuple[MedicalImageDataset, MedicalImageDataset]:
    """Split into ``(1 - fraction, fraction)`` parts with the class proportions of ``dataset``."""
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"{what} fraction must be in (0, 1), got {fraction}")
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


def subsample(dataset: MedicalImageDataset, n: int | None, seed: int) -> MedicalImageDataset:
    """At most ``n`` images, stratified and seeded (``None`` or ``n >= len`` keeps all)."""
    if n is None or n >= len(dataset):
        return dataset
    if n < 1:
        raise ConfigError(f"a subset needs at least 1 image, got {n}")
    index = np.arange(len(dataset))
    counts = np.bincount(dataset.targets, minlength=dataset.num_classes)
    classes = np.count_nonzero(counts)
    # stratifying needs every class on both sides: the kept n and the len - n left out
    stratify = dataset.targets if (counts[counts > 0].min() >= 2 and min(n, len(dataset) - n) >= classes) else None
    keep, _ = train_test_split(index, train_size=n, random_state=seed, stratify=stratify)
    return dataset.subset(np.sort(keep))


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
    return ProtocolSplits(name, list(train.classes), train, val, adv_train, adv_test, info)
