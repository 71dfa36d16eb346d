"""Fundus photograph layouts: Kaggle Diabetic Retinopathy Detection (EyePACS, 2015) and APTOS 2019.

Both grade diabetic retinopathy 0-4; ``fundoscopy`` is referable DR, grade >= 2.
"""

from __future__ import annotations

import os
from pathlib import Path

from medart.data.sources import LAYOUTS
from medart.data.sources.files import ImageFileDataset, existing_dir, find_image, read_csv, strip_extension
from medart.errors import DataError

# ------------------------------------------------------------------------------------------ Kaggle DR

REFERABLE = ["non-referable", "referable"]


def patient_of(image: str) -> str:
    """``"10_left"`` (or ``"10_left.jpeg"``) → ``"10"``: both eyes of a patient share a number; other
    names stand alone, without their extension."""
    image = strip_extension(image)
    stem, _, eye = image.rpartition("_")
    return stem if stem and eye.lower() in ("left", "right") else image


def kaggle_dr(root: str | os.PathLike, image_size: int | None = None) -> tuple[ImageFileDataset, None]:
    """Kaggle Diabetic Retinopathy: ``root/trainLabels.csv`` (``image,level``), ``root/train/<image>.jpeg``
    (``image`` with or without its extension; ``.jpg`` and ``.png`` files are found too).

    Label = referable DR (``level >= 2``); the two eyes of one patient are one group. The
    competition's test labels were never part of the download, so there is no official split:
    returns ``(all, None)``.
    """
    root = existing_dir(
        root, "download the Kaggle Diabetic Retinopathy set and point `data_dir` at the folder holding trainLabels.csv"
    )
    csv_path = root / "trainLabels.csv"
    hint = "unzip trainLabels.csv.zip from the Kaggle competition into that folder"
    _, rows = read_csv(csv_path, ["image", "level"], hint)
    paths, labels, patients = [], [], []
    for line, row in enumerate(rows, start=2):
        level, image = row["level"].strip(), row["image"].strip()
        if level not in ("0", "1", "2", "3", "4"):
            raise DataError(f"{csv_path} line {line}: level {level!r} is not a DR grade 0-4; fix that row")
        paths.append(find_image(root, Path("train"), image, (".jpeg", ".jpg", ".png")))
        labels.append(int(int(level) >= 2))
        patients.append(patient_of(image))
    dataset = ImageFileDataset(root, paths, labels, REFERABLE, image_size, where=str(csv_path))
    return dataset.grouped_by(LAYOUTS["kaggle-dr"].grouping, patients), None


# ------------------------------------------------------------------------------------------ APTOS 2019

def aptos(root: str | os.PathLike, image_size: int | None = None) -> tuple[ImageFileDataset, None]:
    """APTOS 2019: ``root/train.csv`` (``id_code,diagnosis``), images ``root/train_images/<id_code>.png``
    (``id_code`` with or without its extension; ``.jpg`` files are found too).

    Label = referable DR (``diagnosis >= 2``), as for Kaggle DR. The file names no patient, so
    splits are per image. The competition's ``test.csv`` has no labels: returns ``(all, None)``.
    """
    root = existing_dir(root, "download the APTOS 2019 set and point `data_dir` at the folder holding train.csv")
    csv_path = root / "train.csv"
    _, rows = read_csv(csv_path, ["id_code", "diagnosis"], "unzip the APTOS 2019 competition files into that folder")
    paths, labels = [], []
    for line, row in enumerate(rows, start=2):
        grade = row["diagnosis"].strip()
        if grade not in ("0", "1", "2", "3", "4"):
            raise DataError(f"{csv_path} line {line}: diagnosis {grade!r} is not a DR grade 0-4; fix that row")
        paths.append(find_image(root, Path("train_images"), row["id_code"].strip(), (".png", ".jpg", ".jpeg")))
        labels.append(int(int(grade) >= 2))
    return ImageFileDataset(root, paths, labels, REFERABLE, image_size, where=str(csv_path)), None
