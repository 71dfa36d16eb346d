"""Images sorted into one folder per class, e.g. Kermany's ``chest_xray/{train,test}/{NORMAL,PNEUMONIA}``."""

from __future__ import annotations

import os
from pathlib import Path

from medart.data.sources.files import IMAGE_EXTENSIONS, ImageFileDataset, existing_dir
from medart.errors import DataError


def class_folders(
    root: str | os.PathLike, image_size: int | None = None
) -> tuple[ImageFileDataset, ImageFileDataset | None]:
    """Images sorted into ``root/<class_name>/`` folders; classes in name order.

    If ``root/train`` and ``root/test`` both exist (e.g. Kermany's ``chest_xray``), returns
    ``(train, test)`` built from them (a ``val`` folder is ignored); else ``(all, None)``.
    """
    root = existing_dir(root, "point `data_dir` at the folder holding one sub-folder of images per class")
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
