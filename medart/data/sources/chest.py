"""Chest X-ray layouts: NIH ChestX-ray14 (Wang et al. 2017) and CheXpert (Irvin et al. 2019).

CheXpert's CSV labels are 1 (positive), 0 (negative), -1 (uncertain: the report hedges) or blank
(not mentioned). For ``chestxray2`` medart follows the **U-Ignore** rule of the CheXpert paper:
an image whose ``Pneumothorax`` is uncertain is dropped, not guessed. Only frontal views are
kept, as NIH ChestX-ray14 holds only frontal views. ``valid.csv`` is not read as an official test
split: it is the paper's small 200-study validation set, labelled by radiologists rather than by
train's report labeller, and AdvTrain / AdvTest cut from it would hold few images of each class;
the test split is made from ``train.csv``, by patient.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from typing import Sequence

from medart.data.sources import LAYOUTS
from medart.data.sources.files import (ImageFileDataset, existing_dir, find_image, images_folder, read_csv,
                                       strip_extension)
from medart.errors import ConfigError, DataError

# ------------------------------------------------------------------------------------------ NIH

def nih_chestxray14(
    root: str | os.PathLike,
    classes: Sequence[str] = ("No Finding", "Pneumothorax"),
    image_size: int | None = None,
) -> tuple[ImageFileDataset, ImageFileDataset | None]:
    """NIH ChestX-ray14: ``root/Data_Entry_2017.csv`` and images in ``root/images/`` (else ``root/``).

    Keeps the single-label images whose ``Finding Labels`` is exactly one of ``classes``
    ("Pneumothorax|Mass" is dropped, counted in train's ``dropped``); label = position in
    ``classes``; grouped by ``Patient ID``.
    Split by the official ``root/test_list.txt`` when present (everything else is train), else
    returns ``(all, None)``.

    ``Image Index`` names a PNG with or without its ``.png`` (``.PNG`` files are found too), as
    may ``test_list.txt``, independently of the CSV.
    """
    classes = list(classes)
    if len(classes) < 2 or len(set(classes)) != len(classes):
        raise ConfigError(f"NIH classes must be at least two distinct labels, got {classes}")
    root = existing_dir(
        root, "download the NIH ChestX-ray14 set and point `data_dir` at the folder holding Data_Entry_2017.csv"
    )
    csv_path = root / "Data_Entry_2017.csv"
    hint = "download Data_Entry_2017.csv from the NIH ChestX-ray14 page into that folder"
    _, rows = read_csv(csv_path, ["Image Index", "Finding Labels", LAYOUTS["nih"].grouping], hint)
    image_dir = images_folder(root)
    index = {name: i for i, name in enumerate(classes)}
    names, labels, patients = [], [], []
    for line, row in enumerate(rows, start=2):
        label = index.get(row["Finding Labels"].strip())
        if label is not None:
            names.append(row["Image Index"].strip())
            labels.append(label)
            patients.append(row[LAYOUTS["nih"].grouping].strip())
            if not patients[-1]:
                raise DataError(f"{csv_path} line {line}: empty Patient ID; fill it in or remove that row")
    # A class matching nothing is almost always a misspelt label, not a genuinely empty class.
    found = set(labels)
    unmatched = [name for i, name in enumerate(classes) if i not in found]
    if unmatched:
        raise DataError(
            f"{csv_path}: no single-label image has Finding Labels {unmatched[0]!r}; "
            "check the spelling against the CSV (e.g. 'No Finding', 'Pneumothorax')"
        )
    test_list = root / "test_list.txt"
    test_names = {strip_extension(n) for n in test_list.read_text().split()} if test_list.is_file() else None

    def part(keep: list[int], where: Path, dropped: int = 0) -> ImageFileDataset:
        paths = [find_image(root, image_dir, names[i], (".png",)) for i in keep]
        dataset = ImageFileDataset(root, paths, [labels[i] for i in keep], classes, image_size, where=str(where),
                                   dropped=dropped)
        return dataset.grouped_by(LAYOUTS["nih"].grouping, [patients[i] for i in keep])

    dropped = len(rows) - len(names)  # multi-label rows and other findings, counted with train
    if test_names is None:
        return part(list(range(len(names))), csv_path, dropped), None
    in_test = [strip_extension(n) in test_names for n in names]
    return (part([i for i, t in enumerate(in_test) if not t], csv_path, dropped),
            part([i for i, t in enumerate(in_test) if t], test_list))


# ------------------------------------------------------------------------------------------ CheXpert

CHEXPERT_FOLDERS = ("CheXpert-v1.0-small", "CheXpert-v1.0")  # the downsampled and the full-size release
CHEXPERT_CLASSES = ["No Finding", "Pneumothorax"]  # the CSV's columns, and the loader's class names
CHEXPERT_VALUES = {"1": 1, "1.0": 1, "0": 0, "0.0": 0, "-1": -1, "-1.0": -1, "": 0}  # blank: not mentioned


def _chexpert_folder(root: Path) -> Path:
    """The folder holding ``train.csv``: ``root`` itself, or its ``CheXpert-v1.0-small`` (or full-size) folder."""
    for folder in (root, *(root / name for name in CHEXPERT_FOLDERS)):
        if (folder / "train.csv").is_file():
            return folder
    return root / CHEXPERT_FOLDERS[0]  # read_csv names the missing file


def _chexpert_label(row: dict[str, str], where: str) -> int | None:
    """1 pneumothorax, 0 no finding, None dropped: uncertain (-1) pneumothorax, or neither class."""
    try:
        pneumothorax = CHEXPERT_VALUES[row["Pneumothorax"].strip()]
        no_finding = CHEXPERT_VALUES[row["No Finding"].strip()]
    except KeyError as exc:
        raise DataError(f"{where}: label {exc.args[0]!r} is not 1, 0, -1 or blank; fix that row") from None
    if pneumothorax == 1:
        return 1
    if pneumothorax == 0 and no_finding == 1:
        return 0
    return None


def chexpert(root: str | os.PathLike, image_size: int | None = None) -> tuple[ImageFileDataset, None]:
    """CheXpert ``train.csv``, frontal views, ``No Finding`` (0) vs ``Pneumothorax`` (1).

    ``root`` is the folder holding ``CheXpert-v1.0-small/`` or that folder itself. Pneumothorax
    = its column is 1 (other findings may be present too); no finding = ``No Finding`` is 1 and
    ``Pneumothorax`` is 0 or blank; every other image, an uncertain (-1) pneumothorax included
    (U-Ignore), is counted in ``dropped``. Grouped by the ``patientNNNNN`` folder in ``Path``.
    No official test split (``valid.csv``: see the module notes): returns ``(all, None)``.
    """
    root = existing_dir(root, "download CheXpert-v1.0-small and point `data_dir` at the folder holding it")
    folder = _chexpert_folder(root)
    csv_path = folder / "train.csv"
    hint = "unzip CheXpert-v1.0-small into that folder"
    _, rows = read_csv(csv_path, ["Path", "Frontal/Lateral", *CHEXPERT_CLASSES], hint)
    paths, labels, patients = [], [], []
    for line, row in enumerate(rows, start=2):
        if row["Frontal/Lateral"].strip() != "Frontal":
            continue
        label = _chexpert_label(row, f"{csv_path} line {line}")
        if label is None:
            continue
        parts = PurePosixPath(row["Path"].strip()).parts
        if parts and parts[0].startswith("CheXpert-v1.0"):  # Path starts at the release folder, which is `folder`
            parts = parts[1:]
        patient = next((p for p in parts if p.startswith("patient")), None)
        if patient is None:
            raise DataError(f"{csv_path} line {line}: Path {row['Path']!r} names no patient folder; fix that row")
        paths.append(Path(*parts))
        labels.append(label)
        patients.append(patient)
    dataset = ImageFileDataset(folder, paths, labels, CHEXPERT_CLASSES, image_size, where=str(csv_path),
                               dropped=len(rows) - len(labels))
    return dataset.grouped_by(LAYOUTS["chexpert"].grouping, patients), None
