"""Loaders for the original dataset layouts, on tiny real-format fixtures (real PNG/JPEG, real CSV headers)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from medart.data.sources import ImageFileDataset, aptos, class_folders, ham10000, isic, kaggle_dr, nih_chestxray14
from medart.data.sources.fundus import patient_of
from medart.errors import ConfigError, DataError

W, H = 8, 6  # tiny, non-square: every loaded image is centre-cropped to 6×6


def write_image(path: Path, mode: str = "L", value: int = 100) -> Path:
    """A ``W×H`` image file in ``mode``, format from the suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "RGB":
        pixels = np.zeros((H, W, 3), np.uint8)
        pixels[..., 0] = value
        Image.fromarray(pixels).save(path)
    else:
        Image.new(mode, (W, H), value).save(path)
    return path


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


# ---------------------------------------------------------------------------------------------- NIH

NIH_HEADER = [
    "Image Index", "Finding Labels", "Follow-up #", "Patient ID", "Patient Age", "Patient Gender",
    "View Position", "OriginalImage[Width", "Height]", "OriginalImagePixelSpacing[x", "y]", "",
]
NIH_FINDINGS = [
    "No Finding", "No Finding", "No Finding", "Pneumothorax", "Pneumothorax",
    "Mass", "Mass", "Pneumothorax|Mass", "Nodule", "Mass|Nodule",
]  # fmt: skip


def nih_name(i: int) -> str:
    return f"{i + 1:08d}_000.png"


def make_nih(root: Path, findings: list[str] = NIH_FINDINGS, image_dir: str = "images") -> Path:
    rows = [
        [nih_name(i), f, "0", str(i + 1), "58", "M", "PA", "2682", "2749", "0.143", "0.143", ""]
        for i, f in enumerate(findings)
    ]
    write_csv(root / "Data_Entry_2017.csv", NIH_HEADER, rows)
    for i in range(len(findings)):
        write_image(root / image_dir / nih_name(i))
    return root


@pytest.mark.parametrize(
    "classes, counts",
    [
        # Single-label rows only; rows 8 ("Pneumothorax|Mass") and 10 ("Mass|Nodule") never count.
        # No Finding: rows 1-3 → 3; Pneumothorax: rows 4-5 → 2.
        (("No Finding", "Pneumothorax"), [3, 2]),
        # + Mass: rows 6-7 → 2.
        (("No Finding", "Pneumothorax", "Mass"), [3, 2, 2]),
        # + Nodule: row 9 → 1.
        (("No Finding", "Pneumothorax", "Mass", "Nodule"), [3, 2, 2, 1]),
    ],
)
def test_nih_keeps_single_label_images_of_the_chosen_classes(tmp_path, classes, counts):
    train, test = nih_chestxray14(make_nih(tmp_path), classes=classes)
    assert test is None
    assert train.classes == list(classes)
    assert list(train.class_counts().values()) == counts
    assert len(train) == sum(counts)


def test_nih_label_is_position_in_classes(tmp_path):
    train, _ = nih_chestxray14(make_nih(tmp_path), classes=("Pneumothorax", "No Finding"))
    assert train.targets.tolist() == [1, 1, 1, 0, 0]


def test_nih_official_test_list_split(tmp_path):
    make_nih(tmp_path)
    # Rows 2 (No Finding), 5 (Pneumothorax) and 8 (multi-label, dropped anyway) are official test images.
    (tmp_path / "test_list.txt").write_text(f"{nih_name(1)}\n{nih_name(4)}\n{nih_name(7)}\n")
    train, test = nih_chestxray14(tmp_path)
    assert train.class_counts() == {"No Finding": 2, "Pneumothorax": 1}
    assert test.class_counts() == {"No Finding": 1, "Pneumothorax": 1}
    assert [p.name for p in test.paths] == [nih_name(1), nih_name(4)]


def test_nih_images_directly_in_root(tmp_path):
    train, _ = nih_chestxray14(make_nih(tmp_path, image_dir="."))
    assert len(train) == 5
    assert train[0][0].shape == (3, H, H)


def test_nih_missing_column_names_it(tmp_path):
    write_csv(tmp_path / "Data_Entry_2017.csv", ["Image Index", "Labels", "Patient ID"], [[nih_name(0), "Mass", "1"]])
    expected = r"missing column\(s\) Finding Labels; found Image Index, Labels, Patient ID"
    with pytest.raises(DataError, match=expected) as e:
        nih_chestxray14(tmp_path)
    assert "Data_Entry_2017.csv" in str(e.value)


@pytest.mark.parametrize("loader, name", [(nih_chestxray14, "Data_Entry_2017.csv"), (isic, "metadata.csv")])
def test_a_stray_quote_in_the_header_still_gives_one_line(tmp_path, loader, name):
    (tmp_path / name).write_text('"\n')  # csv reads the newline into the one column name (found by hypothesis)
    with pytest.raises(DataError, match=r"missing column.*found \\n") as e:
        loader(tmp_path)
    assert "\n" not in str(e.value)


def test_nih_misspelt_class_is_refused(tmp_path):
    with pytest.raises(DataError, match="'Pneumothrax'"):
        nih_chestxray14(make_nih(tmp_path), classes=("No Finding", "Pneumothrax"))


def test_nih_duplicate_classes_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="distinct"):
        nih_chestxray14(make_nih(tmp_path), classes=("Mass", "Mass"))


def test_listed_but_missing_files_are_counted(tmp_path):
    make_nih(tmp_path)
    (tmp_path / "images" / nih_name(1)).unlink()  # No Finding
    (tmp_path / "images" / nih_name(3)).unlink()  # Pneumothorax
    (tmp_path / "images" / nih_name(7)).unlink()  # multi-label: not listed for loading, so not counted
    with pytest.raises(DataError, match=rf"2 of 5 listed images are missing, first \S*{nih_name(1)}"):
        nih_chestxray14(tmp_path)


@pytest.mark.parametrize("name", ["../../outside.png", "x/../../../outside.png"])  # joined to root/images/
def test_relative_path_escaping_root_is_refused(tmp_path, name):
    root = make_nih(tmp_path / "nih", ["No Finding", "Pneumothorax"])
    write_image(tmp_path / "outside.png")  # exists, so only the escape can be the error
    rows = [[nih_name(0), "No Finding", "1"], [name, "Pneumothorax", "2"]]
    write_csv(root / "Data_Entry_2017.csv", ["Image Index", "Finding Labels", "Patient ID"], rows)
    with pytest.raises(DataError, match="outside the dataset folder"):
        nih_chestxray14(root)


def test_absolute_path_outside_root_is_refused(tmp_path):
    root = make_nih(tmp_path / "nih", ["No Finding", "Pneumothorax"])
    outside = write_image(tmp_path / "outside.png")
    rows = [[nih_name(0), "No Finding", "1"], [str(outside), "Pneumothorax", "2"]]
    write_csv(root / "Data_Entry_2017.csv", ["Image Index", "Finding Labels", "Patient ID"], rows)
    with pytest.raises(DataError, match="outside the dataset folder"):
        nih_chestxray14(root)


def test_absolute_path_inside_root_is_accepted(tmp_path):
    inside = write_image(tmp_path / "a" / "x.png")
    ds = ImageFileDataset(tmp_path, [inside, "a/x.png"], [0, 1], ["no", "yes"])
    assert ds.paths[0] == ds.paths[1]


def test_missing_root_and_missing_csv_give_hints(tmp_path):
    with pytest.raises(DataError, match="does not exist; download the NIH ChestX-ray14 set"):
        nih_chestxray14(tmp_path / "nope")
    with pytest.raises(DataError, match=r"Data_Entry_2017\.csv does not exist"):
        nih_chestxray14(tmp_path)


# ---------------------------------------------------------------------------------------- Kaggle DR


def make_kaggle(root: Path, levels: dict[str, str]) -> Path:
    write_csv(root / "trainLabels.csv", ["image", "level"], [[name, level] for name, level in levels.items()])
    for name in levels:
        write_image(root / "train" / f"{name}.jpeg", "RGB")
    return root


def test_kaggle_referable_mapping(tmp_path):
    # level >= 2 is referable: 13_left (2), 13_right (3), 15_left (4) → 3; levels 0, 1, 0 → 3 non-referable.
    levels = {"10_left": "0", "10_right": "1", "13_left": "2", "13_right": "3", "15_left": "4", "15_right": "0"}
    make_kaggle(tmp_path, levels)
    # A .png stands in for a missing .jpeg (the extension list is tried in order).
    (tmp_path / "train" / "15_right.jpeg").rename(tmp_path / "train" / "15_right.png")
    train, test = kaggle_dr(tmp_path)
    assert test is None
    assert train.classes == ["non-referable", "referable"]
    assert train.targets.tolist() == [0, 0, 1, 1, 1, 0]
    assert train.class_counts() == {"non-referable": 3, "referable": 3}
    assert train.paths[-1].name == "15_right.png"


def test_kaggle_level_out_of_range(tmp_path):
    make_kaggle(tmp_path, {"10_left": "0", "10_right": "7"})
    with pytest.raises(DataError, match=r"line 3: level '7' is not a DR grade 0-4"):
        kaggle_dr(tmp_path)


# --------------------------------------------------------------------------------------------- ISIC


def test_isic_archive_benign_malignant_column(tmp_path):
    header = ["isic_id", "attribution", "copyright_license", "age_approx", "benign_malignant", "diagnosis"]
    values = ["benign", "MALIGNANT", "Benign", "indeterminate", ""]
    rows = [[f"ISIC_{i:07d}", "Anonymous", "CC-0", "50", v, "nevus"] for i, v in enumerate(values)]
    write_csv(tmp_path / "metadata.csv", header, rows)
    for i in (0, 1, 2):
        write_image(tmp_path / "images" / f"ISIC_{i:07d}.jpg", "RGB")
    train, test = isic(tmp_path)
    assert test is None
    # Kept: benign, MALIGNANT, Benign → [0, 1, 0]; dropped: "indeterminate" and empty → 2.
    assert train.targets.tolist() == [0, 1, 0]
    assert train.dropped == 2
    assert train.classes == ["benign", "malignant"]


def test_isic_2020_target_column(tmp_path):
    header = ["image_name", "patient_id", "sex", "age_approx", "anatom_site_general_challenge", "target"]
    rows = [[f"ISIC_{i:07d}", "IP_1", "male", "45", "torso", t] for i, t in enumerate(["0", "1", "1", "0", ""])]
    write_csv(tmp_path / "train.csv", header, rows)
    for i in range(4):
        write_image(tmp_path / f"ISIC_{i:07d}.jpg", "RGB")  # images directly in root
    train, _ = isic(tmp_path, csv="train.csv")
    assert train.targets.tolist() == [0, 1, 1, 0]
    assert train.dropped == 1


def test_isic_label_column_choice(tmp_path):
    # The real ISIC 2020 train.csv has both columns; label_column picks one.
    header = ["image_name", "benign_malignant", "target"]
    write_csv(tmp_path / "train.csv", header, [["a", "benign", "1"], ["b", "malignant", "0"]])
    for name in "ab":
        write_image(tmp_path / f"{name}.jpg", "RGB")
    assert isic(tmp_path, csv="train.csv")[0].targets.tolist() == [0, 1]
    assert isic(tmp_path, csv="train.csv", label_column="target")[0].targets.tolist() == [1, 0]


def test_isic_missing_label_column(tmp_path):
    write_csv(tmp_path / "metadata.csv", ["isic_id", "diagnosis"], [["ISIC_0000000", "nevus"]])
    with pytest.raises(DataError, match="missing column.*benign_malignant or target; found isic_id, diagnosis"):
        isic(tmp_path)


# ------------------------------------------------------------------- image ids with or without extension

# layout → (loader, metadata file, header, row of (id, label 0/1), image folder, the files' extension)
ID_LAYOUTS = {
    "nih": (nih_chestxray14, "Data_Entry_2017.csv", ["Image Index", "Finding Labels", "Patient ID"],
            lambda i, y: [i, ("No Finding", "Pneumothorax")[y], i[:1]], "images", ".png"),
    "kaggle-dr": (kaggle_dr, "trainLabels.csv", ["image", "level"], lambda i, y: [i, "03"[y]], "train", ".jpeg"),
    "aptos": (aptos, "train.csv", ["id_code", "diagnosis"], lambda i, y: [i, "13"[y]], "train_images", ".png"),
    "isic": (isic, "metadata.csv", ["isic_id", "benign_malignant"], lambda i, y: [i, ("benign", "malignant")[y]],
             "images", ".jpg"),
    "ham10000": (ham10000, "HAM10000_metadata.csv", ["lesion_id", "image_id", "dx"],
                 lambda i, y: [f"HAM_{i[:1]}", i, ("nv", "mel")[y]], "HAM10000_images_part_2", ".jpg"),
}


@pytest.mark.parametrize("layout", ID_LAYOUTS)
def test_metadata_ids_are_found_with_or_without_their_extension_never_doubled(tmp_path, layout):
    loader, csv_name, header, row, folder, ext = ID_LAYOUTS[layout]
    # id as listed → file on disk: bare id; id with the extension; an upper-case extension in the
    # metadata only; an upper-case extension on disk only
    files = {"a": f"a{ext}", f"b{ext}": f"b{ext}", f"c{ext.upper()}": f"c{ext}", "d": f"d{ext.upper()}"}
    write_csv(tmp_path / csv_name, header, [row(i, k % 2) for k, i in enumerate(files)])
    for name in files.values():
        write_image(tmp_path / folder / name, "RGB")
    train, _ = loader(tmp_path)
    assert [p.relative_to(tmp_path.resolve()).as_posix() for p in train.paths] == [f"{folder}/{f}" for f in files.values()]
    assert train.targets.tolist() == [0, 1, 0, 1]
    assert train[3][0].shape == (3, H, H)  # the upper-case file decodes as any other

    write_csv(tmp_path / csv_name, header, [row(i, k % 2) for k, i in enumerate([*files, f"e{ext}"])])
    with pytest.raises(DataError, match=rf"1 of 5 listed images are missing, first \S*/e\{ext}; complete") as e:
        loader(tmp_path)
    assert f"{ext}{ext}" not in str(e.value)


def test_kaggle_patient_is_the_same_with_or_without_the_extension():
    assert patient_of("10_left.jpeg") == patient_of("10_right") == patient_of("10_LEFT.JPEG") == "10"
    assert patient_of("scan.7.png") == "scan.7" and patient_of("1.2.840") == "1.2.840"  # only image extensions go


def test_nih_test_list_matches_ids_with_or_without_the_extension(tmp_path):
    make_nih(tmp_path)
    rows = [[nih_name(i).removesuffix(".png") if i % 2 else nih_name(i), f, str(i + 1)]
            for i, f in enumerate(NIH_FINDINGS)]  # every other Image Index without .png
    write_csv(tmp_path / "Data_Entry_2017.csv", ["Image Index", "Finding Labels", "Patient ID"], rows)
    # the test list spells row 2 with .png (its CSV id has none) and row 5 without (its CSV id has one)
    (tmp_path / "test_list.txt").write_text(f"{nih_name(1)}\n{nih_name(4).removesuffix('.png')}\n")
    train, test = nih_chestxray14(tmp_path)
    assert [p.name for p in test.paths] == [nih_name(1), nih_name(4)]
    assert len(train) == 3 and test.class_counts() == {"No Finding": 1, "Pneumothorax": 1}


# ------------------------------------------------------------------------------------ class folders


def test_class_folders_single_layout(tmp_path):
    write_image(tmp_path / "PNEUMONIA" / "p1.jpeg")
    write_image(tmp_path / "PNEUMONIA" / "p2.JPEG")  # extensions are case-insensitive
    write_image(tmp_path / "NORMAL" / "n1.png")
    (tmp_path / "NORMAL" / "notes.txt").write_text("not an image")
    (tmp_path / "NORMAL" / "._n1.png").write_bytes(b"macOS resource fork")
    (tmp_path / "__MACOSX").mkdir()
    train, test = class_folders(tmp_path)
    assert test is None
    assert train.classes == ["NORMAL", "PNEUMONIA"]
    assert train.class_counts() == {"NORMAL": 1, "PNEUMONIA": 2}


def test_class_folders_train_test_layout(tmp_path):
    for split, n in (("train", 3), ("test", 2), ("val", 1)):
        for cls in ("NORMAL", "PNEUMONIA"):
            for i in range(n):
                write_image(tmp_path / split / cls / f"{cls}_{i}.jpeg")
    train, test = class_folders(tmp_path)
    assert train.classes == test.classes == ["NORMAL", "PNEUMONIA"]
    assert train.class_counts() == {"NORMAL": 3, "PNEUMONIA": 3}
    assert test.class_counts() == {"NORMAL": 2, "PNEUMONIA": 2}


def test_class_folders_train_test_class_mismatch(tmp_path):
    write_image(tmp_path / "train" / "NORMAL" / "a.png")
    write_image(tmp_path / "train" / "PNEUMONIA" / "b.png")
    write_image(tmp_path / "test" / "NORMAL" / "c.png")
    with pytest.raises(DataError, match="differ"):
        class_folders(tmp_path)


def test_class_folders_without_classes(tmp_path):
    (tmp_path / "loose.png").write_bytes(b"")
    with pytest.raises(DataError, match="no class folders"):
        class_folders(tmp_path)


def test_corrupt_image_fails_at_read_time_naming_the_file(tmp_path):
    write_image(tmp_path / "a" / "good.png")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "bad.png").write_bytes(b"\x89PNG garbage, not a picture")
    ds, _ = class_folders(tmp_path)  # construction does not decode
    ds[0]
    with pytest.raises(DataError, match=r"bad\.png.*remove or replace the file") as e:
        ds[1]
    assert "\n" not in str(e.value)


# ------------------------------------------------------------------------------------------ pixels


def one_image(tmp_path: Path, name: str, mode: str, image_size: int | None = None, **kw) -> ImageFileDataset:
    write_image(tmp_path / name, mode, **kw)
    return ImageFileDataset(tmp_path, [name], [0], ["x"], image_size=image_size)


@pytest.mark.parametrize(
    "name, mode", [("g.png", "L"), ("c.png", "RGB"), ("c.jpg", "RGB"), ("b.png", "1"), ("a.png", "RGBA")]
)
@pytest.mark.parametrize("size", [None, 4, 16])
def test_tensor_shape_dtype_range(tmp_path, name, mode, size):
    x, y = one_image(tmp_path, name, mode, image_size=size, value=200 if mode != "1" else 1)[0]
    side = size or H
    assert x.dtype == torch.float32 and x.shape == (3, side, side)
    assert 0.0 <= x.min() and x.max() <= 1.0
    assert y == 0


def test_grey_is_centre_cropped(tmp_path):
    pixels = np.full((H, W), 100, np.uint8)
    pixels[:, 0] = pixels[:, -1] = 255  # the one column cropped away on each side
    Image.fromarray(pixels).save(tmp_path / "g.png")
    ds = ImageFileDataset(tmp_path, ["g.png"], [0], ["x"])
    assert ds.load_pixels(0).shape == (H, W)
    x, _ = ds[0]
    assert torch.equal(x, torch.full((3, H, H), 100 / 255))


def test_16_bit_png_is_scaled_not_clipped(tmp_path):
    pixels = np.array([[0, 1000, 32768, 65535]] * 4, np.uint16)
    Image.fromarray(pixels).save(tmp_path / "d.png")
    ds = ImageFileDataset(tmp_path, ["d.png"], [0], ["x"], image_size=4)
    # 1000·255/65535 = 3.89 → 4 (clipping would give 255); 32768 → 127.5 → 128.
    assert ds.load_pixels(0)[0].tolist() == [0, 4, 128, 255]
    assert ds.load_pixels(0).dtype == np.uint8
    x, _ = ds[0]
    assert x.shape == (3, 4, 4) and x.dtype == torch.float32 and x.max() == 1.0


def test_rgb_pixels_keep_three_channels(tmp_path):
    pixels = one_image(tmp_path, "c.png", "RGB", value=200).load_pixels(0)
    assert pixels.shape == (H, W, 3) and pixels.dtype == np.uint8
    assert pixels[0, 0].tolist() == [200, 0, 0]
