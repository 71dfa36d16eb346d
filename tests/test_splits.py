"""Group-aware splits on generated files in each real layout: no patient (or lesion) on two sides
of any split, class proportions near stratified, the grouping recorded.

Images are empty placeholder files: the loaders are lazy and the splits read only the CSVs, so
nothing here decodes an image. Every layout is written from one cohort of 40 patients, patient
``p`` holding ``1 + p % 4`` images (10 × (1 + 2 + 3 + 4) = 100 images):

- ``p % 5 == 0``: 8 patients (0, 5, …, 35) with 1, 2, 3, 4, 1, 2, 3, 4 images = 20, all positive;
- ``p % 5 == 1``: 8 patients (1, 6, …, 36) with 2, 3, 4, 1, 2, 3, 4, 1 = 20 images, the first of
  each negative, the other 12 positive (a patient seen before and after a finding);
- the other 24 patients: 60 images, all negative.

So 32 positive and 68 negative images (32 %). Whole patients of 1–4 images move a part of 5–20
images in steps of 5–20 %, so on these files every part must hold both classes and Train and the
test split (about 80 and 20 images) a share of positives within ``TOLERANCE`` = 0.1 of the
whole's; each of the four parts is held to 0.02 on a 600-patient cohort at the end.
"""

from __future__ import annotations

import csv
from pathlib import Path

import mlflow
import numpy as np
import pytest
from sklearn.model_selection import train_test_split

from medart.data import load_dataset
from medart.data.base import ArrayDataset
from medart.data.splits import group_split, protocol_splits, stratified_split
from medart.errors import ConfigError, DataError

PATIENTS = 40
COHORT = [(p, k, int(p % 5 == 0 or (p % 5 == 1 and k > 0))) for p in range(PATIENTS) for k in range(1 + p % 4)]
N_POSITIVE, N_NEGATIVE = 32, 68
TOLERANCE = 0.1
SEEDS = (0, 1, 2)
PARTS = ("train", "val", "adv_train", "adv_test")


def test_the_cohort_is_as_counted_by_hand():
    labels = [y for _, _, y in COHORT]
    assert (len(COHORT), sum(labels), len(labels) - sum(labels)) == (100, N_POSITIVE, N_NEGATIVE)


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([header, *rows])
    return path


def touch(root: Path, names) -> None:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).touch()


def assert_grouped(splits, grouping: str, n_images: int) -> None:
    """Every image in exactly one part, no group in two parts, each part's positives near the whole's."""
    assert splits.info["grouping"] == grouping and splits.info["groups_on_several_sides"] == 0
    assert sum(len(getattr(splits, part)) for part in PARTS) == n_images
    groups = {part: set(getattr(splits, part).groups) for part in PARTS}
    for i, a in enumerate(PARTS):
        for b in PARTS[i + 1:]:
            assert not groups[a] & groups[b], f"{a} and {b} share {sorted(groups[a] & groups[b])[:3]}"
    targets = {part: getattr(splits, part).targets for part in PARTS}
    assert all(set(y) == {0, 1} for y in targets.values()), "a part lacks a class"
    whole = np.concatenate(list(targets.values())).mean()
    for part, y in (("train", targets["train"]), ("test", np.concatenate([targets["adv_train"], targets["adv_test"]]))):
        assert abs(y.mean() - whole) <= TOLERANCE, f"{part}: {y.mean():.2f} positive, whole {whole:.2f}"
    assert splits.record()["group_counts"] == {part: len(groups[part]) for part in PARTS}


# ---------------------------------------------------------------------------------------------- NIH

def nih_name(p: int, k: int) -> str:
    return f"{p + 1:08d}_{k:03d}.png"


def make_nih(root: Path, test_patients: range | None = None) -> Path:
    """The cohort as NIH rows (positive = Pneumothorax), plus 5 rows chestxray2 drops (3 Mass, 2 multi-label)."""
    rows = [[nih_name(p, k), "Pneumothorax" if y else "No Finding", str(k), str(p + 1)] for p, k, y in COHORT]
    rows += [[nih_name(100 + i, 0), f, "0", str(101 + i)] for i, f in enumerate(["Mass"] * 3 + ["Pneumothorax|Mass"] * 2)]
    write_csv(root / "Data_Entry_2017.csv", ["Image Index", "Finding Labels", "Follow-up #", "Patient ID"], rows)
    touch(root / "images", [row[0] for row in rows])
    if test_patients is not None:
        (root / "test_list.txt").write_text("\n".join(nih_name(p, k) for p, k, _ in COHORT if p in test_patients))
    return root


@pytest.mark.parametrize("seed", SEEDS)
def test_nih_without_test_list_keeps_each_patient_on_one_side(tmp_path, seed):
    splits = load_dataset("chestxray2", make_nih(tmp_path), source="nih", seed=seed)
    assert_grouped(splits, "Patient ID", 100)
    assert splits.info["official_test_split"] is False and splits.info["dropped_rows"] == 5
    assert sum(c["pneumothorax"] for c in splits.counts().values()) == N_POSITIVE


def test_nih_test_list_keeps_its_role_and_advtrain_advtest_are_split_by_patient(tmp_path):
    """test_list.txt names patients 30-39: 3+4+1+2+3+4+1+2+3+4 = 27 images, of which positive
    patient 30 (3), 35 (4) and mixed 31 (3 of 4): 10 positive."""
    splits = load_dataset("chestxray2", make_nih(tmp_path, test_patients=range(30, 40)), source="nih", seed=0)
    assert_grouped(splits, "Patient ID", 100)
    test_groups = set(splits.adv_train.groups) | set(splits.adv_test.groups)
    assert test_groups == {str(p + 1) for p in range(30, 40)} and splits.info["official_test_split"] is True
    assert len(splits.adv_train) + len(splits.adv_test) == 27
    assert splits.adv_train.targets.sum() + splits.adv_test.targets.sum() == 10


def test_an_official_test_split_that_shares_patients_is_counted(tmp_path):
    root = make_nih(tmp_path)
    (root / "test_list.txt").write_text("\n".join(nih_name(p, k) for p, k, _ in COHORT if p >= 30 or (p < 10 and k == 0)))
    splits = load_dataset("chestxray2", root, source="nih", seed=0)
    shared = {p for p in range(10) if 1 + p % 4 > 1}  # patients 0-9 with more images left in Train: 1,2,3,5,6,7,9
    assert splits.info["groups_on_several_sides"] == len(shared) == 7


# ----------------------------------------------------------------------------------------- CheXpert

CHEXPERT_HEADER = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", "No Finding", "Pneumothorax", "Support Devices"]


def chexpert_row(p: int, study: int, view: str, no_finding: str, pneumothorax: str) -> list[str]:
    side = "frontal" if view == "Frontal" else "lateral"
    return [f"CheXpert-v1.0-small/train/patient{p + 1:05d}/study{study + 1}/view1_{side}.jpg", "Female", "68", view, "AP",
            no_finding, pneumothorax, "1.0"]


def make_chexpert(root: Path) -> Path:
    """The cohort as frontal views (positive: Pneumothorax 1.0; negative: No Finding 1.0 and
    Pneumothorax blank or 0.0), plus 48 rows U-Ignore and the view rule drop: a lateral view of
    every patient (40), an uncertain -1.0 pneumothorax for patients 0-4 (5), and neither class (3)."""
    rows = [chexpert_row(p, k, "Frontal", "" if y else "1.0", "1.0" if y else ("0.0" if k % 2 else ""))
            for p, k, y in COHORT]
    rows += [chexpert_row(p, 9, "Lateral", "", "1.0") for p in range(PATIENTS)]
    rows += [chexpert_row(p, 8, "Frontal", "", "-1.0") for p in range(5)]
    rows += [chexpert_row(p, 7, "Frontal", "", "0.0") for p in range(3)]
    folder = root / "CheXpert-v1.0-small"
    write_csv(folder / "train.csv", CHEXPERT_HEADER, rows)
    touch(root, [row[0] for row in rows])
    return root


@pytest.mark.parametrize("seed", SEEDS)
def test_chexpert_keeps_each_patient_folder_on_one_side(tmp_path, seed):
    splits = load_dataset("chestxray2", make_chexpert(tmp_path), source="chexpert", seed=seed)
    assert_grouped(splits, "patient folder in Path", 100)
    assert splits.info["dropped_rows"] == 48 and splits.info["official_test_split"] is False
    assert splits.train.groups[0].startswith("patient")


def test_chexpert_root_may_be_the_release_folder_and_bad_labels_are_one_line(tmp_path):
    from medart.data.sources import chexpert

    train, _ = chexpert(make_chexpert(tmp_path) / "CheXpert-v1.0-small")
    assert len(train) == 100 and train.targets.sum() == N_POSITIVE
    write_csv(tmp_path / "bad" / "train.csv", CHEXPERT_HEADER, [chexpert_row(0, 0, "Frontal", "yes", "")])
    with pytest.raises(DataError, match=r"train\.csv line 2: label 'yes' is not 1, 0, -1 or blank"):
        chexpert(tmp_path / "bad")
    row = chexpert_row(0, 0, "Frontal", "1.0", "")
    write_csv(tmp_path / "out" / "train.csv", CHEXPERT_HEADER, [[f"../{row[0]}", *row[1:]]])
    with pytest.raises(DataError, match="outside the dataset folder"):
        chexpert(tmp_path / "out")


# ---------------------------------------------------------------------------------------- Kaggle DR

def make_kaggle_dr(root: Path) -> Path:
    """50 patients, two eyes each (100 images): p % 5 == 0 both eyes grade 3 (20 referable), p % 5
    == 1 left 0 and right 2 (10 referable), the rest grade 0 or 1: 30 referable, 70 not."""
    rows = []
    for p in range(50):
        grades = (3, 3) if p % 5 == 0 else (0, 2) if p % 5 == 1 else (p % 2, 0)
        rows += [[f"{p + 10}_{eye}", str(g)] for eye, g in zip(("left", "right"), grades)]
    write_csv(root / "trainLabels.csv", ["image", "level"], rows)
    touch(root / "train", [f"{name}.jpeg" for name, _ in rows])
    return root


@pytest.mark.parametrize("seed", SEEDS)
def test_kaggle_dr_keeps_both_eyes_of_a_patient_together(tmp_path, seed):
    splits = load_dataset("fundoscopy", make_kaggle_dr(tmp_path), source="kaggle-dr", seed=seed)
    assert_grouped(splits, "patient number in image (10_left, 10_right -> 10)", 100)
    assert sum(c["referable"] for c in splits.counts().values()) == 30
    for part in PARTS:
        assert all(n == 2 for n in np.unique(getattr(splits, part).groups, return_counts=True)[1])


# -------------------------------------------------------------------------------------------- APTOS

def make_aptos(root: Path) -> Path:
    """The cohort's 100 images with no patient named: positive grade 2-4, negative grade 0-1."""
    rows = [[f"{i:012x}", str(2 + i % 3 if y else i % 2)] for i, (_, _, y) in enumerate(COHORT)]
    write_csv(root / "train.csv", ["id_code", "diagnosis"], rows)
    touch(root / "train_images", [f"{code}.png" for code, _ in rows])
    return root


def test_aptos_carries_no_patient_id_and_splits_per_image_as_before(tmp_path):
    splits = load_dataset("fundoscopy", make_aptos(tmp_path), source="aptos", seed=0)
    assert splits.info["grouping"] == "none: APTOS 2019 carries no patient id"
    assert "groups_on_several_sides" not in splits.info and splits.train.groups is None
    assert sum(c["referable"] for c in splits.counts().values()) == N_POSITIVE
    # exactly the per-image call medart always made: train/test, then AdvTrain/AdvTest of the test part
    rest, test = train_test_split(np.arange(100), test_size=0.2, random_state=0,
                                  stratify=[y for _, _, y in COHORT])
    _, adv_test = train_test_split(np.arange(20), test_size=0.2, random_state=0, stratify=np.array(
        [y for _, _, y in COHORT])[np.sort(test)])
    assert splits.adv_test.indices.tolist() == np.sort(adv_test).tolist()


# ---------------------------------------------------------------------------------- ISIC, HAM10000

def make_ham10000(root: Path) -> Path:
    """The cohort with lesion ``HAM_p`` (positive: mel, negative: nv), images alternately in the
    two part folders, plus 6 bkl images that ``dermoscopy`` drops."""
    rows = [[f"HAM_{p:07d}", f"ISIC_{i:07d}", "mel" if y else "nv", "histo", "45.0", "male", "back"]
            for i, (p, _, y) in enumerate(COHORT)]
    rows += [[f"HAM_{900 + i:07d}", f"ISIC_{900 + i:07d}", "bkl", "histo", "45.0", "male", "back"] for i in range(6)]
    write_csv(root / "HAM10000_metadata.csv", ["lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization"],
              rows)
    for i, row in enumerate(rows):
        touch(root / f"HAM10000_images_part_{1 + i % 2}", [f"{row[1]}.jpg"])
    return root


@pytest.mark.parametrize("seed", SEEDS)
def test_ham10000_keeps_each_lesion_on_one_side(tmp_path, seed):
    splits = load_dataset("dermoscopy", make_ham10000(tmp_path), source="ham10000", seed=seed)
    assert_grouped(splits, "lesion_id", 100)
    assert splits.classes == ["benign naevus", "melanoma"] and splits.info["dropped_rows"] == 6


def test_ham10000_names_a_missing_lesion_column_and_a_path_outside(tmp_path):
    from medart.data.sources import ham10000

    write_csv(tmp_path / "HAM10000_metadata.csv", ["image_id", "dx"], [["ISIC_1", "nv"]])
    with pytest.raises(DataError, match=r"missing column\(s\) lesion_id; found image_id, dx"):
        ham10000(tmp_path)
    write_csv(tmp_path / "HAM10000_metadata.csv", ["lesion_id", "image_id", "dx"],
              [["HAM_1", "../../x", "nv"], ["HAM_2", "ISIC_2", "mel"]])
    with pytest.raises(DataError, match="outside the dataset folder"):
        ham10000(tmp_path)
    with pytest.raises(ConfigError, match="dx codes"):
        ham10000(tmp_path, classes=("nv", "melanoma"))


@pytest.mark.parametrize("column", ["lesion_id", None])
def test_isic_groups_by_lesion_id_when_the_metadata_has_one(tmp_path, column):
    header = ["isic_id", "benign_malignant", *([column] if column else [])]
    rows = [[f"ISIC_{i:07d}", "malignant" if y else "benign", *([f"IL_{p:07d}"] if column else [])]
            for i, (p, _, y) in enumerate(COHORT)]
    write_csv(tmp_path / "metadata.csv", header, rows)
    touch(tmp_path / "images", [f"{row[0]}.jpg" for row in rows])
    splits = load_dataset("dermoscopy", tmp_path, source="isic", seed=0)
    if column:
        assert_grouped(splits, "lesion_id", 100)
    else:
        assert splits.info["grouping"] == "none: this ISIC archive file names no patient"


# ------------------------------------------------------------------------------- the splitter itself

def cohort(n_patients: int, seed: int = 0) -> ArrayDataset:
    """``n_patients`` with 1 + geometric images each (mean 3.6, NIH's), a fifth of them ill with
    each image positive at 0.6: a stand-in with NIH's shape, no files."""
    rng = np.random.default_rng(seed)
    patient = np.repeat(np.arange(n_patients), rng.geometric(1 / 3.6, n_patients))
    y = ((rng.random(n_patients) < 0.2)[patient] & (rng.random(len(patient)) < 0.6)).astype(int)
    return ArrayDataset(np.zeros((len(y), 1, 1), np.uint8), y, ["no", "yes"]).grouped_by("Patient ID", patient.astype(str))


@pytest.mark.parametrize("seed", [0, 1])
def test_on_600_patients_every_part_is_within_two_points_of_stratified(seed):
    data = cohort(600)
    train, test = stratified_split(data, 0.2, seed, what="train/test split")
    splits = protocol_splits("cohort", train, None, test, seed)
    assert splits.info["groups_on_several_sides"] == 0
    for part in PARTS:
        assert abs(getattr(splits, part).targets.mean() - data.targets.mean()) <= 0.02, part
    assert abs(len(test) / len(data) - 0.2) <= 0.02 and abs(len(splits.val) / len(train) - 0.1) <= 0.02


def test_without_groups_the_split_is_the_per_image_one():
    data = cohort(100)
    per_image = data.subset(np.arange(len(data)))
    per_image.groups = None
    a, b = stratified_split(per_image, 0.2, 3)
    x, y = train_test_split(np.arange(len(data)), test_size=0.2, random_state=3, stratify=data.targets)
    assert a.indices.tolist() == np.sort(x).tolist() and b.indices.tolist() == np.sort(y).tolist()
    assert group_split(data, 0.8, 3)[1].size > group_split(data, 0.2, 3)[1].size  # fraction > 0.5: the larger side


def test_too_few_patients_of_a_class_is_one_line():
    data = ArrayDataset(np.zeros((6, 1, 1), np.uint8), [0, 0, 0, 0, 1, 1], ["no", "yes"])
    data.grouped_by("Patient ID", ["a", "b", "c", "d", "e", "e"])  # both positives: one patient
    with pytest.raises(DataError, match=r"^cannot make a validation split by Patient ID: Patient ID 'e' holds all 2 "
                                        r"'yes' images \(100\.0 %\), and a class needs images of at least 2 Patient ID "
                                        r"values .*; remove or correct that Patient ID's rows") as e:
        stratified_split(data, 0.5, 0, what="validation split")
    assert "\n" not in str(e.value)
    ten = ArrayDataset(np.zeros((10, 1, 1), np.uint8), [0] * 5 + [1] * 5, ["no", "yes"])
    ten.grouped_by("Patient ID", [str(i) for i in range(10)])  # ten folds for 10 %, but 5 images a class
    with pytest.raises(DataError, match="cannot make a validation split by Patient ID of 10 images"):
        stratified_split(ten, 0.1, 0, what="validation split")
    six = ArrayDataset(np.zeros((6, 1, 1), np.uint8), [0, 1] * 3, ["no", "yes"]).grouped_by("Patient ID", list("abcdef"))
    with pytest.raises(DataError, match="into 10 folds of whole groups: only 6 Patient ID values in all"):
        stratified_split(six, 0.1, 0, what="validation split")


def lesions(big: int, rest: int, melanomas: int = 300) -> ArrayDataset:
    """``big`` benign naevus images of lesion HAM_0001234, ``rest`` more of one lesion each, and
    ``melanomas`` melanoma images of one lesion each."""
    y = [0] * (big + rest) + [1] * melanomas
    ids = ["HAM_0001234"] * big + [f"HAM_{i:07d}" for i in range(rest + melanomas)]
    return ArrayDataset(np.zeros((len(y), 1, 1), np.uint8), y, ["benign naevus", "melanoma"]).grouped_by("lesion_id", ids)


def test_a_lesion_holding_most_of_a_class_is_named_with_its_share():
    """One lesion with 2,226 of 2,300 naevus images: whichever side it falls on, the 20 % side holds
    at least 96.8 % of the naevi or at most 3.2 %, so the split is refused, naming the lesion."""
    with pytest.raises(DataError) as e:
        stratified_split(lesions(2226, 74), 0.2, 0, what="train/test split")
    assert str(e.value) == (
        "cannot make a train/test split by lesion_id: lesion_id 'HAM_0001234' holds 2,226 of the 2,300 'benign naevus' "
        "images (96.8 %), so the smaller side, asked for about 20 % of them, would hold at least 96.8 % or at most "
        "3.2 %; remove or correct that lesion_id's rows, add 'benign naevus' images of other lesion_id values, or "
        "split per image with a source that names none (`source` medmnist)")
    # The limit: more than 1 - 1/(2k) of the class, below half the smaller side's share on the side without it.
    for fraction, limit in ((0.2, 2070), (0.1, 2185), (0.5, 1725)):  # k = 5: 90 %; k = 10: 95 %; k = 2: 75 %
        with pytest.raises(DataError, match=rf"holds {limit + 1:,} of the 2,300 'benign naevus' images"):
            stratified_split(lesions(limit + 1, 2299 - limit), fraction, 0)
        rest, part = stratified_split(lesions(limit, 2300 - limit), fraction, 0)
        assert not set(rest.groups) & set(part.groups)


# ----------------------------------------------------------------------- class names, whatever the source

def make_class_folders(root: Path) -> Path:
    """The cohort as Kermany-style folders in other spellings: ``Pneumonia/`` sorts before ``normal/``."""
    touch(root, [f"{'Pneumonia' if y else 'normal'}/{i}.jpeg" for i, (_, _, y) in enumerate(COHORT)])
    return root


def make_isic(root: Path) -> Path:
    rows = [[f"ISIC_{i:07d}", "malignant" if y else "benign", f"IL_{p:07d}"] for i, (p, _, y) in enumerate(COHORT)]
    write_csv(root / "metadata.csv", ["isic_id", "benign_malignant", "lesion_id"], rows)
    touch(root / "images", [f"{row[0]}.jpg" for row in rows])
    return root


@pytest.mark.parametrize("dataset, source, make", [
    ("chestxray2", "nih", make_nih), ("chestxray2", "chexpert", make_chexpert),
    ("fundoscopy", "kaggle-dr", make_kaggle_dr), ("fundoscopy", "aptos", make_aptos),
    ("dermoscopy", "isic", make_isic), ("dermoscopy", "ham10000", make_ham10000),
    ("pneumonia", "class-folders", make_class_folders),
])
def test_every_source_names_the_classes_as_the_task_does(tmp_path, dataset, source, make):
    """Each layout's own labels (NIH's ``No Finding``, HAM10000's ``nv``, a folder ``Pneumonia``
    that sorts first) become the task's names in the task's order, the positives still label 1."""
    from medart.data import TASKS

    splits = load_dataset(dataset, make(tmp_path), source=source, seed=0)
    assert splits.classes == list(TASKS[dataset].classes)
    assert all(getattr(splits, part).classes == splits.classes for part in PARTS)
    positives = sum(int(getattr(splits, part).targets.sum()) for part in PARTS)
    assert positives == sum(c[splits.classes[1]] for c in splits.counts().values()) == (30 if source == "kaggle-dr"
                                                                                         else N_POSITIVE)


def test_a_class_the_task_does_not_know_is_named(tmp_path):
    make_class_folders(tmp_path)
    touch(tmp_path, ["COVID-19/x.png", "COVID-19/y.png"])
    with pytest.raises(DataError, match=r"class 'COVID-19' is not one of the task's classes \(normal, pneumonia\); "
                                        "remove it or choose the dataset it belongs to"):
        load_dataset("pneumonia", tmp_path, source="class-folders")
    (tmp_path / "COVID-19").rename(tmp_path / "NORMAL")  # "normal" itself matches exactly: NORMAL is the extra one
    with pytest.raises(DataError, match="class 'NORMAL' is not one of the task's classes"):
        load_dataset("pneumonia", tmp_path, source="class-folders")
    (tmp_path / "normal").rename(tmp_path / "Normal")  # no exact match, two ignoring case
    with pytest.raises(DataError, match=r"2 classes named 'normal' among 'NORMAL', 'Normal', 'Pneumonia'; expected "
                                        "exactly one"):
        load_dataset("pneumonia", tmp_path, source="class-folders")


def test_the_cli_names_the_lesion_that_makes_a_split_impossible(tracking_store, tmp_path):
    from click.testing import CliRunner

    from medart.cli import main

    root = make_ham10000(tmp_path / "ham")
    rows = list(csv.reader(open(root / "HAM10000_metadata.csv")))
    for row in rows[1:]:
        if row[2] == "mel":
            row[0] = "HAM_0001234"  # every melanoma image now shows one lesion
    write_csv(root / "HAM10000_metadata.csv", rows[0], rows[1:])
    result = CliRunner().invoke(main, ["train", "--dataset", "dermoscopy", "--source", "ham10000", "--data-dir",
                                       str(root), "--arch", "smallcnn", "--pretrained", "none", "--no-progress"])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and result.output.count("\n") == 1
    assert result.output.startswith(
        "Error: cannot make a train/test split by lesion_id: lesion_id 'HAM_0001234' holds all 32 'melanoma' images "
        "(100.0 %)")
    assert result.output.rstrip().endswith("or split per image with a source that names none (--source medmnist)")


# ------------------------------------------------------------------------------------ medart datasets

def test_medart_datasets_lists_each_layout_with_its_columns_and_grouping():
    from click.testing import CliRunner

    from medart.cli import main
    from medart.data.sources import LAYOUTS, SOURCES

    result = CliRunner().invoke(main, ["datasets"])
    assert result.exit_code == 0, result.output
    assert SOURCES == ("medmnist", "original", *LAYOUTS)  # every layout is a --source choice
    for name, columns, grouping in [
        ("nih", "Image Index, Finding Labels, Patient ID", "Patient ID"),
        ("chexpert", "Path, Frontal/Lateral, No Finding, Pneumothorax", "patient folder in Path"),
        ("kaggle-dr", "image, level", "patient number in image (10_left, 10_right -> 10)"),
        ("aptos", "id_code, diagnosis", "none: APTOS 2019 carries no patient id"),
        ("ham10000", "image_id, dx, lesion_id", "lesion_id"),
    ]:
        block = result.output.split(f"\n  {name} ", 1)[1].split("\n  ", 4)
        assert f"columns: {columns}" in block[1] and f"grouping: {grouping}" in block[2], block
    assert "sources: medmnist (chestmnist), nih, chexpert" in result.output
    assert "sources: medmnist (dermamnist), isic, ham10000" in result.output
    assert "classes: benign naevus = nv, melanoma = mel" in result.output.split("\n  ham10000 ", 1)[1]


@pytest.mark.slow
def test_a_model_trained_on_ham10000_is_measured_on_dermamnist_under_the_same_names(tracking_store, tmp_path, write_npz):
    """Trained from a HAM10000 tree (``dx`` codes nv/mel), evaluated on a DermaMNIST file: the model's
    classes fit the file's task, and both runs log recall under the task's class names."""
    from click.testing import CliRunner
    from PIL import Image

    from medart.cli import main
    from medart.models.loading import ModelSource, load_model

    root = make_ham10000(tmp_path / "ham")
    rng = np.random.default_rng(0)
    for path in root.glob("HAM10000_images_part_*/*.jpg"):  # real pixels this time: training decodes them
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(path)
    common = ["--dataset", "dermoscopy", "--max-eval", "16"]
    result = CliRunner().invoke(main, ["train", *common, "--source", "ham10000", "--data-dir", str(root), "--arch",
                                       "smallcnn", "--pretrained", "none", "--image-size", "28", "--max-train", "32",
                                       "--epochs", "1", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "(recall %: benign_naevus " in result.output
    labels = {split: np.array([4, 5, 0] * n) for split, n in (("train", 8), ("val", 4), ("test", 12))}  # 4 mel, 5 nv
    data = write_npz("dermamnist.npz", labels, channels=3).parent
    result = CliRunner().invoke(main, ["evaluate", *common, "--model-uri", "models:/medart-dermoscopy/1", "--data-dir",
                                       str(data)])
    assert result.exit_code == 0, result.output
    runs = {r.info.run_name.split("-")[0]: r for r in mlflow.search_runs(search_all_experiments=True, output_format="list")}
    assert runs["train"].data.params["source"] == "ham10000" and runs["evaluate"].data.params["dataset"] == "dermoscopy"
    for run in (runs["train"], runs["evaluate"]):
        recalls = {k for k in run.data.metrics if k.startswith("test_recall_") and not k.endswith(("_ci_low", "_ci_high", "_n"))}
        assert recalls == {"test_recall_benign_naevus", "test_recall_melanoma"}  # beside each, its interval and n
    assert load_model(ModelSource("models:/medart-dermoscopy/1")).classes == ["benign naevus", "melanoma"]
