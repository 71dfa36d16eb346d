"""Lazy loaders for the original public layouts of the paper's datasets.

For users who hold the full datasets: they are too large for memory, so only the file list and
labels are read up front and each image is decoded from disk (with PIL) when it is indexed.
Every loader returns ``(train, test)``; ``test`` is ``None`` where the layout has no official
labelled test split, and the caller then makes its own seeded, stratified split.

===================  ======================================  ==========================
loader               layout                                  official split
===================  ======================================  ==========================
nih_chestxray14      ``Data_Entry_2017.csv`` + ``images/``   ``test_list.txt`` if present
kaggle_dr            ``trainLabels.csv`` + ``train/``        none
isic                 ``metadata.csv`` + ``images/``          none
class_folders        ``<class>/<image>``                     ``train/`` + ``test/``
===================  ======================================  ==========================

An image that will not decode raises :class:`~medart.errors.DataError` naming the file when it
is read: a clear error rather than a silent skip, which would change the dataset unnoticed.
"""

from __future__ import annotations

import csv
import os
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from medart.data.base import MedicalImageDataset, Transform, check_labels
from medart.errors import ConfigError, DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")

# Largest value of each grey-scale mode, so 16-bit images are scaled to 8 bits, not clipped.
# Pillow decodes 16-bit PNG/TIFF as "I;16*" (or "I" in older versions), so "I" counts as 16-bit.
_GREY_MAX = {"1": 1, "L": 255, "I": 65535, "I;16": 65535, "I;16L": 65535, "I;16B": 65535, "I;16N": 65535}


class ImageFileDataset(MedicalImageDataset):
    """Images stored as files under ``root``, decoded on demand.

    ``paths`` are relative to ``root`` (or absolute) and must stay inside it; every file must exist.
    ``dropped`` counts the rows of the source list the loader left out (e.g. unlabelled ones).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        paths: Sequence[str | os.PathLike],
        labels: Sequence[int] | np.ndarray,
        classes: Sequence[str],
        image_size: int | None = None,
        transform: Transform | None = None,
        where: str | None = None,
        dropped: int = 0,
    ) -> None:
        super().__init__(image_size, transform)
        self.root = Path(root).resolve()
        where = where or str(self.root)
        if len(paths) != len(labels):
            raise DataError(f"{where}: {len(paths)} image paths but {len(labels)} labels")
        self.paths = [self._inside_root(p, where) for p in paths]
        missing = [p for p in self.paths if not os.path.exists(p)]
        if missing:
            raise DataError(
                f"{where}: {len(missing)} of {len(self.paths)} listed images are missing, first {missing[0]}; "
                "complete the download or remove their rows"
            )
        self.classes = list(classes)
        self.targets = check_labels(np.asarray(labels, dtype=np.int64), len(self.classes), where)
        self.dropped = dropped

    def _inside_root(self, path: str | os.PathLike, where: str) -> Path:
        # Lexical normalisation (not resolve()) catches "../" and absolute paths from a CSV while
        # still allowing symlinks inside root, e.g. an images/ folder linked to another disk.
        full = Path(os.path.normpath(self.root / path))
        if not full.is_relative_to(self.root):
            raise DataError(f"{where}: image path {str(path)!r} points outside the dataset folder {self.root}")
        return full

    def load_pixels(self, index: int) -> np.ndarray:
        """``uint8`` pixels ``(H, W)`` for grey-scale files, ``(H, W, 3)`` for all others."""
        path = self.paths[index]
        try:
            with warnings.catch_warnings():
                # Pillow only warns between MAX_IMAGE_PIXELS and twice that (and checks on open); medart refuses both.
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(path) as im:
                    im.load()
                    if im.mode in _GREY_MAX:
                        grey = np.asarray(im, dtype=np.float64) * (255.0 / _GREY_MAX[im.mode])
                        return np.clip(np.rint(grey), 0, 255).astype(np.uint8)  # clip: true 32-bit "I" data
                    return np.array(im.convert("RGB"))  # a writable copy, as torch.from_numpy wants
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise DataError(f"image {path} declares more than {Image.MAX_IMAGE_PIXELS} pixels, a possible "
                            "decompression bomb; refused (raise PIL.Image.MAX_IMAGE_PIXELS if it is genuine)") from e
        except (OSError, SyntaxError, ValueError) as e:  # PIL reports corrupt files with any of these
            reason = " ".join(str(e).split())  # keep the message on one line
            raise DataError(f"cannot decode image {path} ({reason}); remove or replace the file") from e


def _printable(columns: list[str]) -> str:
    """Column names for a one-line message: control characters (a stray quote makes the csv
    module read a newline into a name) shown escaped."""
    return ", ".join("".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in c) for c in columns) or "none"


def nih_chestxray14(
    root: str | os.PathLike,
    classes: Sequence[str] = ("No Finding", "Pneumothorax"),
    image_size: int | None = None,
) -> tuple[ImageFileDataset, ImageFileDataset | None]:
    """NIH ChestX-ray14: ``root/Data_Entry_2017.csv`` and images in ``root/images/`` (else ``root/``).

    Keeps the single-label images whose ``Finding Labels`` is exactly one of ``classes``
    ("Pneumothorax|Mass" is dropped); label = position in ``classes``. Split by the official
    ``root/test_list.txt`` when present (everything else is train), else returns ``(all, None)``.
    """
    classes = list(classes)
    if len(classes) < 2 or len(set(classes)) != len(classes):
        raise ConfigError(f"NIH classes must be at least two distinct labels, got {classes}")
    root = _existing_dir(
        root, "download the NIH ChestX-ray14 set and point `data_dir` at the folder holding Data_Entry_2017.csv"
    )
    csv_path = root / "Data_Entry_2017.csv"
    hint = "download Data_Entry_2017.csv from the NIH ChestX-ray14 page into that folder"
    _, rows = _read_csv(csv_path, ["Image Index", "Finding Labels"], hint)
    image_dir = _image_dir(root)
    index = {name: i for i, name in enumerate(classes)}
    names, labels = [], []
    for row in rows:
        label = index.get(row["Finding Labels"].strip())
        if label is not None:
            names.append(row["Image Index"].strip())
            labels.append(label)
    # A class matching nothing is almost always a misspelt label, not a genuinely empty class.
    found = set(labels)
    unmatched = [name for i, name in enumerate(classes) if i not in found]
    if unmatched:
        raise DataError(
            f"{csv_path}: no single-label image has Finding Labels {unmatched[0]!r}; "
            "check the spelling against the CSV (e.g. 'No Finding', 'Pneumothorax')"
        )
    test_list = root / "test_list.txt"
    if not test_list.is_file():
        paths = [image_dir / n for n in names]
        return ImageFileDataset(root, paths, labels, classes, image_size, where=str(csv_path)), None
    test_names = set(test_list.read_text().split())

    def part(in_test: bool, where: Path) -> ImageFileDataset:
        keep = [i for i, n in enumerate(names) if (n in test_names) == in_test]
        paths = [image_dir / names[i] for i in keep]
        return ImageFileDataset(root, paths, [labels[i] for i in keep], classes, image_size, where=str(where))

    return part(False, csv_path), part(True, test_list)


def kaggle_dr(root: str | os.PathLike, image_size: int | None = None) -> tuple[ImageFileDataset, None]:
    """Kaggle Diabetic Retinopathy: ``root/trainLabels.csv`` (``image,level``), ``root/train/<image>.jpeg``.

    Label = referable DR (``level >= 2``). The competition's test labels were never part of the
    download, so there is no official split: returns ``(all, None)``.
    """
    root = _existing_dir(
        root, "download the Kaggle Diabetic Retinopathy set and point `data_dir` at the folder holding trainLabels.csv"
    )
    csv_path = root / "trainLabels.csv"
    hint = "unzip trainLabels.csv.zip from the Kaggle competition into that folder"
    _, rows = _read_csv(csv_path, ["image", "level"], hint)
    paths, labels = [], []
    for line, row in enumerate(rows, start=2):
        level = row["level"].strip()
        if level not in ("0", "1", "2", "3", "4"):
            raise DataError(f"{csv_path} line {line}: level {level!r} is not a DR grade 0-4; fix that row")
        paths.append(_find_image(root, Path("train") / row["image"].strip(), (".jpeg", ".jpg", ".png")))
        labels.append(int(int(level) >= 2))
    return ImageFileDataset(root, paths, labels, ["non-referable", "referable"], image_size, where=str(csv_path)), None


def isic(
    root: str | os.PathLike,
    csv: str = "metadata.csv",
    image_size: int | None = None,
    label_column: str | None = None,
) -> tuple[ImageFileDataset, None]:
    """ISIC archive: a metadata CSV and images ``<id>.jpg`` in ``root/images/`` (else ``root/``).

    Id column: the first of ``isic_id``, ``image_name``, ``image``. Label column: ``label_column``,
    else ``benign_malignant`` (benign/malignant, any case), else ``target`` (0/1, ISIC 2020). Rows
    with any other value (e.g. empty, "indeterminate") are dropped and counted in ``dropped``.
    No official split: returns ``(all, None)``.
    """
    root = _existing_dir(root, "download the ISIC images and metadata and point `data_dir` at the folder holding them")
    csv_path = root / csv
    id_columns = ("isic_id", "image_name", "image")
    label_columns = (label_column,) if label_column else ("benign_malignant", "target")
    columns, rows = _read_csv(csv_path, [id_columns, label_columns],
                              "download the metadata CSV from the ISIC archive into that folder")
    id_column = next(c for c in id_columns if c in columns)
    label_column = next(c for c in label_columns if c in columns)
    values = {"benign": 0, "malignant": 1, "0": 0, "1": 1}
    image_dir = _image_dir(root)
    paths, labels = [], []
    for row in rows:
        label = values.get(row[label_column].strip().lower())
        if label is not None:
            paths.append(image_dir / f"{row[id_column].strip()}.jpg")
            labels.append(label)
    dropped = len(rows) - len(labels)
    classes = ["benign", "malignant"]
    return ImageFileDataset(root, paths, labels, classes, image_size, where=str(csv_path), dropped=dropped), None


def class_folders(
    root: str | os.PathLike, image_size: int | None = None
) -> tuple[ImageFileDataset, ImageFileDataset | None]:
    """Images sorted into ``root/<class_name>/`` folders; classes in name order.

    If ``root/train`` and ``root/test`` both exist (e.g. Kermany's ``chest_xray``), returns
    ``(train, test)`` built from them (a ``val`` folder is ignored); else ``(all, None)``.
    """
    root = _existing_dir(root, "point `data_dir` at the folder holding one sub-folder of images per class")
    if (root / "train").is_dir() and (root / "test").is_dir():
        train = _scan_class_folders(root / "train", image_size)
        test = _scan_class_folders(root / "test", image_size)
        if train.classes != test.classes:
            raise DataError(
                f"{root}: train classes {train.classes} differ from test classes {test.classes}; "
                "make the class folders match"
            )
        return train, test
    return _scan_class_folders(root, image_size), None


def _scan_class_folders(root: Path, image_size: int | None) -> ImageFileDataset:
    # Names starting with "." or "__" are OS debris (".DS_Store", "__MACOSX", macOS "._x.jpeg"
    # resource forks that carry an image extension but are not images), never data.
    def visible(p: Path) -> bool:
        return not p.name.startswith((".", "__"))

    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and visible(p))
    if not classes:
        raise DataError(f"{root}: no class folders found; expected {root}/<class_name>/<image files>")
    paths, labels = [], []
    for label, name in enumerate(classes):
        files = sorted(
            p.relative_to(root)
            for p in (root / name).iterdir()
            if p.is_file() and visible(p) and p.suffix.lower() in IMAGE_EXTENSIONS
        )
        if not files:
            raise DataError(
                f"{root / name}: class folder holds no {'/'.join(IMAGE_EXTENSIONS)} images; add images or remove it"
            )
        paths += files
        labels += [label] * len(files)
    return ImageFileDataset(root, paths, labels, classes, image_size, where=str(root))


def _existing_dir(root: str | os.PathLike, hint: str) -> Path:
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"dataset folder {root} does not exist; {hint}")
    return root


def _read_csv(path: Path, required: Sequence[str | Sequence[str]], hint: str) -> tuple[list[str], list[dict[str, str]]]:
    """The header and all rows (as dicts) of ``path``, after checking it has the ``required`` columns
    (an entry that is a sequence of names: any one of them)."""
    if not path.is_file():
        raise DataError(f"label file {path} does not exist; {hint}")
    # utf-8-sig: CSVs saved by spreadsheet programs often start with a byte-order mark.
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            columns = reader.fieldnames or []
            groups = [(c,) if isinstance(c, str) else tuple(c) for c in required]
            missing = [" or ".join(names) for names in groups if not any(n in columns for n in names)]
            if missing:
                raise DataError(f"{path}: missing column(s) {', '.join(missing)}; found {_printable(columns)}")
            # Short rows get None for their missing fields, long rows a list under the key None; "" keeps .strip() safe.
            return list(columns), [{k: v or "" for k, v in row.items() if k is not None} for row in reader]
    except (UnicodeDecodeError, csv.Error) as exc:
        reason = " ".join(str(exc).split())
        raise DataError(f"{path} is not a readable UTF-8 CSV file ({reason}); {hint}") from None


def _image_dir(root: Path) -> Path:
    """``images`` if ``root/images`` exists (the official unpacked layout), else ``.``; relative to ``root``."""
    return Path("images") if (root / "images").is_dir() else Path()


def _find_image(root: Path, stem: Path, extensions: Sequence[str]) -> Path:
    """``<stem><ext>`` (relative to ``root``) for the first extension that exists, else the first one."""
    for ext in extensions:
        if os.path.exists(root / f"{stem}{ext}"):
            return Path(f"{stem}{ext}")
    return Path(f"{stem}{extensions[0]}")  # reported as missing by ImageFileDataset
