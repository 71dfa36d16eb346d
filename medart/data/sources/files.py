"""What every original-layout loader shares: images as files under a root, read lazily, and its CSV.

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
from medart.errors import DataError

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


def existing_dir(root: str | os.PathLike, hint: str) -> Path:
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"dataset folder {root} does not exist; {hint}")
    return root


def read_csv(path: Path, required: Sequence[str | Sequence[str]], hint: str) -> tuple[list[str], list[dict[str, str]]]:
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


def images_folder(root: Path) -> Path:
    """``images`` if ``root/images`` exists (the official unpacked layout), else ``.``; relative to ``root``."""
    return Path("images") if (root / "images").is_dir() else Path()


def strip_extension(image_id: str) -> str:
    """``image_id`` without its image extension (``.jpg``, ``.PNG`` …: one of :data:`IMAGE_EXTENSIONS`,
    any case), if it ends in one: ``ISIC_0024306.jpg`` → ``ISIC_0024306``; ``1.2.840`` stays."""
    stem, suffix = os.path.splitext(image_id)
    return stem if suffix.lower() in IMAGE_EXTENSIONS else image_id


def image_names(image_id: str, extensions: Sequence[str]) -> list[str]:
    """The file names the image a metadata file calls ``image_id`` may have, most likely first.

    Metadata name an image with or without its extension (HAM10000's own CSV says
    ``ISIC_0024306``, re-shared copies ``ISIC_0024306.jpg``), so an id that already ends in an
    image extension is tried as written, then its stem with each of the layout's ``extensions``,
    as given and in upper case (``.JPG``): never ``ISIC_0024306.jpg.jpg``.
    """
    stem = strip_extension(image_id)
    names = [image_id] if stem != image_id else []
    names += [stem + e for ext in extensions for e in (ext, ext.upper())]
    return list(dict.fromkeys(names))


def find_image(root: Path, folder: Path, image_id: str, extensions: Sequence[str]) -> Path:
    """``folder / name`` (relative to ``root``) for the first of :func:`image_names` that exists,
    else for the first name, which :class:`ImageFileDataset` then reports as missing."""
    names = image_names(image_id, extensions)
    return folder / next((n for n in names if os.path.exists(root / folder / n)), names[0])
