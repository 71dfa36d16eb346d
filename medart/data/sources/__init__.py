"""The public layouts users hold the paper's datasets in, each declared once, and their lazy loaders.

For users who hold the full datasets: they are too large for memory, so only the file list and
labels are read up front and each image is decoded from disk (with PIL) when it is indexed.
Every loader returns ``(train, test)``; ``test`` is ``None`` where the layout has no official
labelled test split, and the caller then makes its own seeded, stratified split. Loaders whose
files name a patient (or lesion) set ``groups`` on the datasets, so that every split keeps each
one on one side.

A :class:`Layout` entry of :data:`LAYOUTS` is the whole declaration of a layout: its ``source``
name, how it lies on disk (what ``medart datasets`` prints), what groups it, how its labels
translate to a task's class names, and its loader (``module:function``). The command line's
``--source`` choices (:data:`SOURCES`), the tasks (:mod:`medart.data.tasks`) and the
loaders themselves read the entries. This module imports no torch — the loaders and
:class:`~medart.data.sources.files.ImageFileDataset` load when first named
(``medart.data.sources.nih_chestxray14``) — so ``medart --help`` reads the entries at once.
tests/test_declarations.py checks that each entry's loader exists and that some task reads it.

=================  ===============  ===================================  ==========================
``source``         loader           files                                grouped by
=================  ===============  ===================================  ==========================
``nih``            nih_chestxray14  ``Data_Entry_2017.csv`` + images/    ``Patient ID``
``chexpert``       chexpert         ``CheXpert-v1.0-small/train.csv``    patient folder in ``Path``
``kaggle-dr``      kaggle_dr        ``trainLabels.csv`` + ``train/``     patient in ``10_left``
``aptos``          aptos            ``train.csv`` + ``train_images/``    none
``isic``           isic             ``metadata.csv`` + ``images/``       ``patient_id``/``lesion_id``
``ham10000``       ham10000         ``HAM10000_metadata.csv`` + parts    ``lesion_id``
``class-folders``  class_folders    ``<class>/<image>``                  none
=================  ===============  ===================================  ==========================
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping


@dataclass(frozen=True)
class Layout:
    """How a public dataset lies on disk, as ``medart datasets`` describes it.

    ``name`` is its ``source`` value; ``grouping`` says what keeps one patient's (or lesion's)
    images on one side of every split, or starts with ``"none:"`` where the files carry no id.
    ``labels`` maps a task's class name to the layout's own label for it (NIH's ``No Finding`` for
    ``no finding``, HAM10000's ``nv`` for ``benign naevus``); a name without an entry matches the
    layout's ignoring case (a class folder ``NORMAL`` is ``normal``). It is the one place a
    layout's labels are translated, so that every source of a task yields the task's class names
    in the task's order (:meth:`~medart.data.base.MedicalImageDataset.as_classes`). ``loader`` is
    the function that reads it, ``module:function``. ``metadata`` names the label file the loader
    reads, relative to the dataset's root folder (where it may lie in more than one place, each, in
    the loader's order; none for class folders): ``medart datasets`` says whether a folder holds it.
    """

    name: str
    title: str
    files: str
    metadata: tuple[str, ...]
    columns: str
    grouping: str
    official_test: str
    loader: str
    labels: Mapping[str, str] = field(default_factory=dict, compare=False)

    def load(self) -> Callable[..., Any]:
        """The loader function (imports its module, and with it torch)."""
        module, _, function = self.loader.partition(":")
        return getattr(importlib.import_module(module), function)


#: ``source`` name → how that layout lies on disk (what ``medart datasets`` prints)
LAYOUTS: dict[str, Layout] = {layout.name: layout for layout in (
    Layout(
        name="nih",
        title="NIH ChestX-ray14",
        files="Data_Entry_2017.csv + images/*.png (+ test_list.txt)",
        metadata=("Data_Entry_2017.csv",),
        columns="Image Index, Finding Labels, Patient ID",
        grouping="Patient ID",
        official_test="test_list.txt if present (NIH's own patient-wise split), else none",
        labels={"no finding": "No Finding", "pneumothorax": "Pneumothorax", "mass": "Mass", "nodule": "Nodule"},
        loader="medart.data.sources.chest:nih_chestxray14",
    ),
    Layout(
        name="chexpert",
        title="CheXpert (v1.0-small)",
        files="CheXpert-v1.0-small/train.csv + CheXpert-v1.0-small/train/patient*/study*/view*.jpg",
        metadata=("train.csv", "CheXpert-v1.0-small/train.csv", "CheXpert-v1.0/train.csv"),
        columns="Path, Frontal/Lateral, No Finding, Pneumothorax",
        grouping="patient folder in Path",
        official_test="none (valid.csv is too small to split and is not read)",
        labels={"no finding": "No Finding", "pneumothorax": "Pneumothorax"},
        loader="medart.data.sources.chest:chexpert",
    ),
    Layout(
        name="kaggle-dr",
        title="Kaggle Diabetic Retinopathy",
        files="trainLabels.csv + train/<image>.jpeg",
        metadata=("trainLabels.csv",),
        columns="image, level",
        grouping="patient number in image (10_left, 10_right -> 10)",
        official_test="none (the competition's test labels were never released with it)",
        loader="medart.data.sources.fundus:kaggle_dr",
    ),
    Layout(
        name="aptos",
        title="APTOS 2019 Blindness Detection",
        files="train.csv + train_images/<id_code>.png",
        metadata=("train.csv",),
        columns="id_code, diagnosis",
        grouping="none: APTOS 2019 carries no patient id",
        official_test="none (test.csv has no labels)",
        loader="medart.data.sources.fundus:aptos",
    ),
    Layout(
        name="isic",
        title="ISIC archive",
        files="metadata.csv + images/<id>.jpg",
        metadata=("metadata.csv",),
        columns="isic_id | image_name | image; benign_malignant | target; patient_id | lesion_id if present",
        grouping="patient_id, else lesion_id, where the CSV has one; else none",
        official_test="none",
        # benign_malignant is broader than dermoscopy's names: "benign" holds other benign lesions
        # than naevi, "malignant" other cancers than melanoma (ISIC 2020's target: melanoma only)
        labels={"benign naevus": "benign", "melanoma": "malignant"},
        loader="medart.data.sources.skin:isic",
    ),
    Layout(
        name="ham10000",
        title="HAM10000",
        files="HAM10000_metadata.csv + HAM10000_images_part_1/, HAM10000_images_part_2/",
        metadata=("HAM10000_metadata.csv",),
        columns="image_id, dx, lesion_id",
        grouping="lesion_id",
        official_test="none (the ISIC 2018 test images are not in this layout)",
        labels={"benign naevus": "nv", "melanoma": "mel"},  # dx codes
        loader="medart.data.sources.skin:ham10000",
    ),
    Layout(
        name="class-folders",
        title="class folders",
        files="<class>/<image> or train/<class>/, test/<class>/",
        metadata=(),
        columns="(folder names are the classes, matched to the task's ignoring case: NORMAL is normal)",
        grouping="none: class folders carry no patient id",
        official_test="train/ + test/ when both exist",
        loader="medart.data.sources.folders:class_folders",
    ),
)}
# MedMNIST files; "original": a task's first public layout; then each layout by name
SOURCES = ("medmnist", "original", *LAYOUTS)
# the names this package gives, each loaded when first asked for
_LAZY = {layout.loader.partition(":")[2]: layout.loader for layout in LAYOUTS.values()} | {
    "ImageFileDataset": "medart.data.sources.files:ImageFileDataset"}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, _, attribute = _LAZY[name].partition(":")
    return getattr(importlib.import_module(module), attribute)


__all__ = ["LAYOUTS", "SOURCES", "ImageFileDataset", "Layout", "aptos", "chexpert", "class_folders", "ham10000", "isic",
           "kaggle_dr", "nih_chestxray14"]
