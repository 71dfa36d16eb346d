"""MedMNIST files: local use, checksummed atomic download, corrupt files, the paper's task mappings."""

from __future__ import annotations

import hashlib
import warnings

import numpy as np
import pytest
import torch

from medart.data import load_dataset, medmnist
from medart.data.base import to_tensor_image
from medart.errors import ConfigError, DataError


def md5(path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def binary_labels(n_train=20, n_val=10, n_test=20):
    return {s: np.arange(n) % 2 for s, n in (("train", n_train), ("val", n_val), ("test", n_test))}


def test_file_names_follow_medmnist():
    assert medmnist.filename("pneumoniamnist") == "pneumoniamnist.npz"
    assert medmnist.filename("chestmnist", 224) == "chestmnist_224.npz"
    with pytest.raises(DataError, match="no 100px files"):
        medmnist.filename("dermamnist", 100)


def test_real_file_loads_with_checksum_warning(shared_data):
    # The shared copy is a balanced subset, not byte-identical to the official file: warn, don't refuse.
    with pytest.warns(UserWarning, match="does not match the official MedMNIST MD5"):
        splits = load_dataset("pneumonia", shared_data, seed=0)
    assert len(splits.train) == 2428 and len(splits.val) == 270
    assert len(splits.adv_train) + len(splits.adv_test) == 468
    assert len(splits.adv_test) == round(0.2 * 468)  # 94
    assert splits.counts()["train"] == {"normal": 1214, "pneumonia": 1214}
    assert splits.counts()["adv_test"] == {"normal": 47, "pneumonia": 47}  # stratified
    x, y = splits.adv_test[0]
    assert x.dtype == torch.float32 and x.shape == (3, 28, 28) and 0 <= x.min() and x.max() <= 1
    assert torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])  # grey → 3 equal channels
    assert splits.info["file_md5"] == "3062d8c693378b506564f35a50301b11"


def test_splits_reproducible_from_dataset_and_seed(shared_data):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a, b, c = (load_dataset("pneumonia", shared_data, seed=s) for s in (0, 0, 1))
    assert np.array_equal(a.adv_test.indices, b.adv_test.indices)
    assert a.info["split_digest"] == b.info["split_digest"] != c.info["split_digest"]
    assert not np.array_equal(a.adv_test.indices, c.adv_test.indices)
    # AdvTrain and AdvTest partition the test split
    both = np.concatenate([a.adv_train.indices, a.adv_test.indices])
    assert sorted(both.tolist()) == list(range(468))


def test_image_size_resizes(shared_data):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        splits = load_dataset("pneumonia", shared_data, image_size=64)
    assert splits.train[0][0].shape == (3, 64, 64)


def test_to_tensor_image_crops_and_scales():
    pixels = np.zeros((4, 6, 3), np.uint8)
    pixels[:, 1:5] = 255  # the centre 4×4 square is white
    x = to_tensor_image(pixels)
    assert x.shape == (3, 4, 4) and torch.all(x == 1.0)
    with pytest.raises(DataError, match="expected"):
        to_tensor_image(np.zeros((4, 4, 2), np.uint8))


def test_chest_xray_tasks_keep_single_label_images(write_npz, tmp_path):
    # ChestMNIST columns: 4 mass, 5 nodule, 7 pneumothorax, 2 effusion.
    rows = []
    for cols, times in (([], 3), ([7], 2), ([4], 2), ([5], 1), ([7, 4], 1), ([2], 1)):
        for _ in range(times):
            row = np.zeros(14, np.uint8)
            row[cols] = 1
            rows.append(row)
    pattern = np.stack(rows)  # 10 rows
    labels = {s: np.tile(pattern, (5, 1)) for s in ("train", "val", "test")}
    write_npz("chestmnist.npz", labels)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        two = load_dataset("chestxray2", tmp_path / "data", download=False)
        three = load_dataset("chestxray3", tmp_path / "data", download=False)
        four = load_dataset("chestxray4", tmp_path / "data", download=False)
    # per split, ×5: no finding 3, pneumothorax 2, mass 2, nodule 1; the two mixed/other rows dropped
    assert two.counts()["train"] == {"no finding": 15, "pneumothorax": 10}
    assert three.counts()["val"] == {"no finding": 15, "pneumothorax": 10, "mass": 10}
    assert four.counts()["train"] == {"no finding": 15, "pneumothorax": 10, "mass": 10, "nodule": 5}
    test_total = {k: four.counts()["adv_train"][k] + four.counts()["adv_test"][k] for k in four.classes}
    assert test_total == {"no finding": 15, "pneumothorax": 10, "mass": 10, "nodule": 5}


def test_fundoscopy_and_dermoscopy_mappings(write_npz, tmp_path):
    grades = np.array([0, 0, 1, 2, 3, 4, 1, 2, 0, 4])  # referable (>= 2): 5 of 10
    write_npz("retinamnist.npz", {s: np.tile(grades, 3) for s in ("train", "val", "test")}, channels=3)
    derm = np.array([0, 1, 2, 3, 4, 5, 6, 4, 5, 5])  # melanoma (4): 2, naevi (5): 3, others dropped
    write_npz("dermamnist.npz", {s: np.tile(derm, 4) for s in ("train", "val", "test")}, channels=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fundus = load_dataset("fundoscopy", tmp_path / "data", download=False)
        skin = load_dataset("dermoscopy", tmp_path / "data", download=False)
    assert fundus.counts()["train"] == {"non-referable": 15, "referable": 15}
    assert skin.counts()["val"] == {"benign naevus": 12, "melanoma": 8}
    x, _ = skin.train[0]
    assert x.shape == (3, 28, 28)


def test_unknown_dataset():
    with pytest.raises(ConfigError, match="unknown dataset 'mnist'; choose one of: pneumonia"):
        load_dataset("mnist")


def test_missing_file_without_download_names_path_and_fix(tmp_path):
    with pytest.raises(DataError, match=r"pneumoniamnist.npz not found; put pneumoniamnist.npz there, point MEDART_DATA_DIR"):
        load_dataset("pneumonia", tmp_path, download=False)


def test_missing_file_download_failure_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv(medmnist.URL_ENV, (tmp_path / "no-mirror").as_uri())
    data = tmp_path / "data"
    with pytest.raises(DataError, match=r"not found \(there is no folder .*data\) and could not download") as err:
        load_dataset("pneumonia", data)
    assert "\n" not in str(err.value)
    assert not data.exists()  # a download that never started creates no folder


def test_download_verifies_md5_and_is_atomic(write_npz, tmp_path, monkeypatch):
    mirror = write_npz("pneumoniamnist.npz", binary_labels()).parent
    monkeypatch.setenv(medmnist.URL_ENV, mirror.as_uri())
    dest = tmp_path / "dest"
    # wrong checksum: refused, and no partial or temporary file is left behind
    with pytest.raises(DataError, match="is corrupt"):
        medmnist.fetch("pneumoniamnist", 28, dest)
    assert not dest.exists()  # the folder the download made is gone with its temporary file
    # right checksum: downloaded into place
    monkeypatch.setitem(medmnist.MD5["pneumoniamnist"], 28, md5(mirror / "pneumoniamnist.npz"))
    path = medmnist.fetch("pneumoniamnist", 28, dest)
    assert path == dest / "pneumoniamnist.npz" and md5(path) == md5(mirror / "pneumoniamnist.npz")
    assert sorted(p.name for p in dest.iterdir()) == ["pneumoniamnist.npz"]


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_npz_is_a_clear_error(write_npz, tmp_path, damage):
    path = write_npz("pneumoniamnist.npz", binary_labels())
    raw = path.read_bytes()
    path.write_bytes({"truncate": raw[: len(raw) // 2], "garbage": b"\x00not a zip" * 50, "empty": b""}[damage])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(DataError, match="truncated or corrupt.*delete it and re-download"):
            load_dataset("pneumonia", path.parent, download=False)


def test_npz_missing_arrays(tmp_path):
    np.savez(tmp_path / "pneumoniamnist.npz", train_images=np.zeros((2, 28, 28), np.uint8))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(DataError, match="lacks arrays"):
            load_dataset("pneumonia", tmp_path, download=False)


def test_labels_out_of_range(write_npz):
    labels = binary_labels()
    labels["val"][3] = 5
    path = write_npz("pneumoniamnist.npz", labels)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(DataError, match=r"val: label 5 is out of range for 2 classes"):
            load_dataset("pneumonia", path.parent, download=False)


def test_a_subset_that_leaves_too_few_out_to_stratify_is_still_drawn():
    """Keeping all images but one of a 2-class set cannot be stratified (the one left out cannot
    hold both classes); it is drawn unstratified instead of failing."""
    from medart.data import subsample
    from medart.data.base import ArrayDataset

    data = ArrayDataset(np.zeros((24, 28, 28), np.uint8), np.array([0, 1] * 12), ["a", "b"], 28)
    assert len(subsample(data, 23, 0)) == 23
    kept = subsample(data, 10, 0)  # still stratified where it can be
    assert np.bincount(kept.targets).tolist() == [5, 5]
