"""Dermoscopy layouts: the ISIC archive (and ISIC challenge sets) and HAM10000 (Tschandl et al. 2018)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from medart.data.sources import LAYOUTS
from medart.data.sources.files import (ImageFileDataset, existing_dir, find_image, image_names, images_folder,
                                       read_csv, strip_extension)
from medart.errors import ConfigError, DataError

# ------------------------------------------------------------------------------------------ ISIC

ISIC_GROUP_COLUMNS = ("patient_id", "lesion_id")  # a patient holds several lesions: the wider group first
ISIC_EXTENSIONS = (".jpg", ".jpeg", ".png")  # the archive's JPEGs; .png: resized copies shared on Kaggle


def isic(
    root: str | os.PathLike,
    csv: str = "metadata.csv",
    image_size: int | None = None,
    label_column: str | None = None,
) -> tuple[ImageFileDataset, None]:
    """ISIC archive: a metadata CSV and images ``<id>.jpg`` in ``root/images/`` (else ``root/``); the id
    may carry its extension, and ``.JPG``, ``.jpeg`` and ``.png`` files are found too.

    Id column: the first of ``isic_id``, ``image_name``, ``image``. Label column: ``label_column``,
    else ``benign_malignant`` (benign/malignant, any case), else ``target`` (0/1, ISIC 2020). Rows
    with any other value (e.g. empty, "indeterminate") are dropped and counted in ``dropped``.
    Grouped by ``patient_id`` (ISIC 2020), else ``lesion_id``, when the CSV has either; an image
    whose id cell is empty is a group of its own. No official split: returns ``(all, None)``.
    """
    root = existing_dir(root, "download the ISIC images and metadata and point `data_dir` at the folder holding them")
    csv_path = root / csv
    id_columns = ("isic_id", "image_name", "image")
    label_columns = (label_column,) if label_column else ("benign_malignant", "target")
    columns, rows = read_csv(csv_path, [id_columns, label_columns],
                             "download the metadata CSV from the ISIC archive into that folder")
    id_column = next(c for c in id_columns if c in columns)
    label_column = next(c for c in label_columns if c in columns)
    group_column = next((c for c in ISIC_GROUP_COLUMNS if c in columns), None)
    values = {"benign": 0, "malignant": 1, "0": 0, "1": 1}
    image_dir = images_folder(root)
    paths, labels, groups = [], [], []
    for row in rows:
        label = values.get(row[label_column].strip().lower())
        if label is not None:
            image = row[id_column].strip()
            paths.append(find_image(root, image_dir, image, ISIC_EXTENSIONS))
            labels.append(label)
            groups.append((group_column and row[group_column].strip()) or f"image {strip_extension(image)}")
    dropped = len(rows) - len(labels)
    classes = ["benign", "malignant"]
    dataset = ImageFileDataset(root, paths, labels, classes, image_size, where=str(csv_path), dropped=dropped)
    return (dataset.grouped_by(group_column, groups) if group_column else dataset), None


# ------------------------------------------------------------------------------------------ HAM10000

DX = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")  # the seven diagnoses in `dx`
# The official archive unpacks to the two part folders; Kaggle's copy adds lower-case duplicates.
HAM10000_FOLDERS = ("HAM10000_images_part_1", "HAM10000_images_part_2", "ham10000_images_part_1",
                    "ham10000_images_part_2", "images", ".")


def _ham10000_images(root: Path) -> dict[str, Path]:
    """File name → its folder (relative to ``root``), the first of :data:`HAM10000_FOLDERS` holding it.
    One listing per folder rather than a look-up per image: HAM10000 has 10,015 of them."""
    index: dict[str, Path] = {}
    for folder in HAM10000_FOLDERS:
        if (root / folder).is_dir():
            for entry in os.scandir(root / folder):
                index.setdefault(entry.name, Path(folder))
    return index


def ham10000(
    root: str | os.PathLike, classes: Sequence[str] = ("nv", "mel"), image_size: int | None = None
) -> tuple[ImageFileDataset, None]:
    """HAM10000: ``root/HAM10000_metadata.csv`` and ``<image_id>.jpg`` in the two part folders
    (``image_id`` with or without ``.jpg``; ``.JPG`` files are found too).

    Keeps the images whose ``dx`` is one of ``classes`` (codes from :data:`DX`; default naevus
    ``nv`` vs melanoma ``mel``, DermaMNIST's pair for ``dermoscopy``), label = position in
    ``classes``; the rest are counted in ``dropped``. Grouped by ``lesion_id``: HAM10000 holds
    several images of many lesions, and the file names no patient. No official split:
    returns ``(all, None)``.
    """
    classes = list(classes)
    if len(classes) < 2 or len(set(classes)) != len(classes) or not set(classes) <= set(DX):
        raise ConfigError(f"HAM10000 classes must be at least two distinct dx codes of {', '.join(DX)}; got {classes}")
    root = existing_dir(root, "download HAM10000 and point `data_dir` at the folder holding HAM10000_metadata.csv")
    csv_path = root / "HAM10000_metadata.csv"
    hint = "unpack HAM10000_metadata.csv from the HAM10000 download (Harvard Dataverse) into that folder"
    _, rows = read_csv(csv_path, ["image_id", "dx", LAYOUTS["ham10000"].grouping], hint)
    folders, index = _ham10000_images(root), {name: i for i, name in enumerate(classes)}
    paths, labels, lesions = [], [], []
    for line, row in enumerate(rows, start=2):
        label = index.get(row["dx"].strip())
        if label is None:
            continue
        names, lesion = image_names(row["image_id"].strip(), (".jpg",)), row[LAYOUTS["ham10000"].grouping].strip()
        if not lesion:
            raise DataError(f"{csv_path} line {line}: empty lesion_id; fill it in or remove that row")
        name = next((n for n in names if n in folders), names[0])  # a missing image is reported by the dataset
        paths.append(folders.get(name, Path(HAM10000_FOLDERS[0])) / name)
        labels.append(label)
        lesions.append(lesion)
    found = set(labels)
    unmatched = [name for i, name in enumerate(classes) if i not in found]
    if unmatched:
        raise DataError(f"{csv_path}: no image has dx {unmatched[0]!r}; check the file is HAM10000's metadata")
    dataset = ImageFileDataset(root, paths, labels, classes, image_size, where=str(csv_path),
                               dropped=len(rows) - len(labels))
    return dataset.grouped_by(LAYOUTS["ham10000"].grouping, lesions), None
