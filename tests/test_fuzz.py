"""Property-based tests: whatever a user or a stranger's file throws at medart's parsers and loaders,
the answer is a valid result or medart's own one-line error — never another exception or a hang.

The example counts (``max_examples``) are the numbers reported in the README's reliability table.
The inputs are derandomised, so CI is a fixed gate; ``MEDART_FUZZ_EXPLORE=N`` draws fresh random
inputs, N times as many, to look for new failures (add what it finds as a regression test).
"""

from __future__ import annotations

import io
import math
import os
import string
import tempfile
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medart.attacks import ATTACKS, make_spec, parse_names
from medart.budget import Eps
from medart.cli import options
from medart.data import load_dataset
from medart.data.medmnist import read_npz
from medart.data.sources import isic, kaggle_dr, nih_chestxray14
from medart.errors import ConfigError, DataError, MedartError
from medart.mlproject import ENTRY_POINTS
from medart.stages.detect import parse_detector_params

pytestmark = pytest.mark.filterwarnings("ignore:.*official MedMNIST MD5")
PARSER_EXAMPLES, FILE_EXAMPLES = 400, 150
EXPLORE = int(os.environ.get("MEDART_FUZZ_EXPLORE", "0"))
FAST = settings(max_examples=PARSER_EXAMPLES * max(EXPLORE, 1), deadline=1000, derandomize=not EXPLORE)
FILES = settings(max_examples=FILE_EXAMPLES * max(EXPLORE, 1), deadline=5000, derandomize=not EXPLORE,
                 suppress_health_check=[HealthCheck.function_scoped_fixture])

# Text that looks like what users type: numbers, fractions, names, separators, and noise.
eps_like = st.one_of(
    st.text(alphabet=string.digits + "./-+eE, ", max_size=12),
    st.builds(lambda a, b: f"{a}/{b}", st.floats(allow_nan=True, allow_infinity=True), st.integers(-300, 300)),
    st.text(max_size=20),
)


@FAST
@given(eps_like)
def test_eps_is_a_number_in_range_or_a_config_error(text):
    try:
        eps = Eps(text)
    except ConfigError as exc:
        assert "\n" not in str(exc)
    else:
        assert isinstance(eps, float) and 0 < eps <= 1 and math.isfinite(eps)
        assert str(eps).endswith("/255") and (eps < 1e-300 or Eps(str(eps)) == pytest.approx(eps, rel=5e-3))  # k to 3 digits


@FAST
@given(eps_like)
def test_eps_lists(text):
    try:
        values = options.EpsList().parse(text)  # the command line's reader of ε lists
    except ConfigError:
        pass
    else:
        assert values and all(isinstance(v, Eps) and 0 < v <= 1 for v in values)


@FAST
@given(st.one_of(st.text(max_size=30), st.lists(st.sampled_from([*ATTACKS, "FGSM", " pgd ", "", "cw2", "x"])).map(",".join)))
def test_attack_names(text):
    try:
        names = parse_names(text)
    except ConfigError:
        pass
    else:
        assert names and set(names) <= set(ATTACKS)


@FAST
@given(st.text(max_size=8), eps_like, st.one_of(st.none(), st.integers(-5, 100)), st.one_of(st.none(), eps_like),
       st.one_of(st.none(), st.booleans()), st.floats(allow_nan=True, allow_infinity=True, width=32))
def test_attack_specs(name, eps, steps, step_size, random_start, kappa):
    try:
        spec = make_spec(name, eps, steps, step_size, random_start, kappa)
    except ConfigError:
        pass
    else:
        assert spec.name in ATTACKS and spec.steps >= 1
        assert (spec.step_size is None) == spec.sets_own_step and (spec.sets_own_step or 0 < spec.step_size <= spec.eps * (1 + 1e-9))


@FAST
@given(st.lists(st.text(alphabet=string.ascii_lowercase + string.digits + ".=,_- ", max_size=25), max_size=4))
def test_detector_parameters(items):
    try:
        params = parse_detector_params(items, ["kd", "lid", "dfeat"])
    except ConfigError:
        pass
    else:
        assert set(params) <= {"kd", "lid", "dfeat"}


def _mlproject_values(command: str) -> st.SearchStrategy[dict[str, str]]:
    """``-P`` values for an entry point's command: its parameters (and one it lacks) with any text,
    or with the text of another parameter's default, as `mlflow run` passes them."""
    from medart.cli import main
    from medart.mlproject import parameters

    defaults = parameters(main.commands[command])
    text = st.one_of(st.text(max_size=15), st.sampled_from(["none", "", "true", "false", *defaults.values()]), eps_like)
    return st.dictionaries(st.sampled_from([*defaults, "no_such_parameter"]), text, max_size=6)


@FAST
@given(st.sampled_from(sorted(set(ENTRY_POINTS.values()))).flatmap(lambda c: st.tuples(st.just(c), _mlproject_values(c))))
def test_mlproject_parameters(drawn):
    """Whatever -P values reach an entry point, click parses them into the command's options or the
    run ends with one line naming a ``-P`` parameter, never a command-line flag (parsed only: no run)."""
    import click

    from medart.cli import main
    from medart.mlproject import _spell, arguments

    command_name, values = drawn
    command = main.commands[command_name]
    flags = [opt for p in command.params if isinstance(p, click.Option) for opt in p.opts + p.secondary_opts]
    try:
        command.make_context(command_name, arguments(command, values))
    except click.UsageError as exc:
        message = _spell(exc.format_message(), command)
        assert "-P " in message and not any(flag in message for flag in flags), message
        assert "\n" not in message, message


def test_a_value_outside_the_choices_is_one_line(capsys):
    """`mlflow run -e attack -P attack=zoo`: one line naming the parameter and its choices."""
    from medart.mlproject import run

    assert run("attack", ["attack=zoo"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("Error: Invalid value for -P attack: 'zoo' is not one of") and "fgsm" in line


def _valid_npz(n: int = 4) -> bytes:
    rng = np.random.default_rng(0)
    arrays = {}
    for split in ("train", "val", "test"):
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 2).astype(np.uint8).reshape(n, 1)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


VALID = _valid_npz()


def _mutated(data: st.DataObject) -> bytes:
    """A valid file cut short, with bytes overwritten, or replaced by noise."""
    kind = data.draw(st.sampled_from(["truncate", "flip", "noise", "npy"]))
    if kind == "truncate":
        return VALID[: data.draw(st.integers(0, len(VALID) - 1))]
    if kind == "flip":
        blob = bytearray(VALID)
        for _ in range(data.draw(st.integers(1, 8))):
            blob[data.draw(st.integers(0, len(blob) - 1))] = data.draw(st.integers(0, 255))
        return bytes(blob)
    if kind == "npy":  # a bare .npy where an archive belongs
        buffer = io.BytesIO()
        np.save(buffer, np.zeros(data.draw(st.integers(0, 50)), np.uint8))
        return buffer.getvalue()
    return data.draw(st.binary(max_size=600))


@FILES
@given(st.data())
def test_any_bytes_as_npz_load_or_give_a_data_error(tmp_path, data):
    path = tmp_path / "pneumoniamnist.npz"
    path.write_bytes(_mutated(data))
    try:
        arrays = read_npz(path, "pneumoniamnist")
    except DataError as exc:
        assert "\n" not in str(exc) and str(path) in str(exc)
    else:
        assert set(arrays) == {"train", "val", "test"}


@FILES
@given(st.data())
def test_archives_with_arbitrary_arrays_load_or_give_a_medart_error(tmp_path, data):
    """Well-formed archives whose arrays have the wrong names, dtypes, shapes or labels."""
    arrays = {}
    for split in ("train", "val", "test"):
        n = data.draw(st.integers(0, 6))
        dtype = data.draw(st.sampled_from([np.uint8, np.uint8, np.float32, np.int64]))
        side = data.draw(st.sampled_from([28, 28, 5]))
        shape = data.draw(st.sampled_from([(n, side, side), (n, side, side, 3), (n, side), (n,)]))
        arrays[f"{split}_images"] = np.zeros(shape, dtype)
        label_dtype = data.draw(st.sampled_from([np.uint8, np.int64]))
        values = st.integers(0, 4) if label_dtype is np.uint8 else st.integers(-3, 4)
        labels = data.draw(st.lists(values, min_size=n, max_size=n + data.draw(st.integers(0, 1))))
        arrays[f"{split}_labels"] = np.asarray(labels, dtype=label_dtype).reshape(-1, 1)
    if data.draw(st.booleans()):
        del arrays[data.draw(st.sampled_from(sorted(arrays)))]
    folder = Path(tempfile.mkdtemp(dir=tmp_path))
    np.savez_compressed(folder / "pneumoniamnist.npz", **arrays)
    try:
        splits = load_dataset("pneumonia", folder, download=False)
    except MedartError as exc:
        assert "\n" not in str(exc)
    else:
        assert len(splits.train) > 0


def test_a_decompression_bomb_is_refused_before_it_inflates(tmp_path):
    """A member declaring 4 GiB of zeros in a few kilobytes: refused from its header and ratio."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "|u1", "fortran_order": False, "shape": (2**32,)})
    path = tmp_path / "pneumoniamnist.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("train_images.npy", "w", force_zip64=True) as member:
            member.write(header.getvalue())
            zeros = bytes(2**24)
            for _ in range(2**32 // 2**24):
                member.write(zeros)
        for key in ("train_labels", "val_images", "val_labels", "test_images", "test_labels"):
            with archive.open(f"{key}.npy", "w") as member:
                np.save(member, np.zeros((1, 1), np.uint8))
    assert path.stat().st_size < 8 * 2**20
    with pytest.raises(DataError, match="decompression bomb"):
        read_npz(path, "pneumoniamnist")


def test_an_array_larger_than_the_limit_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "pneumoniamnist.npz"
    path.write_bytes(VALID)
    monkeypatch.setenv("MEDART_MAX_ARRAY_BYTES", "1000")
    with pytest.raises(DataError, match="more than the 0.00 GiB limit; raise MEDART_MAX_ARRAY_BYTES"):
        read_npz(path, "pneumoniamnist")


def test_pickled_objects_in_an_npz_are_refused(tmp_path):
    arrays = {k: v for k, v in np.load(io.BytesIO(VALID)).items()}
    arrays["train_labels"] = np.array([[object()]] * 4, dtype=object)
    path = tmp_path / "pneumoniamnist.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError, match="holds Python objects"):
        read_npz(path, "pneumoniamnist")


CSV_CELLS = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\r"), max_size=12)


@FILES
@given(st.data())
def test_csv_label_files_load_or_give_a_data_error(tmp_path, data):
    """NIH, Kaggle DR and ISIC label files with missing, extra or garbled columns, short and long
    rows, empty files and undecodable bytes."""
    loader, required = data.draw(st.sampled_from([
        (nih_chestxray14, ["Image Index", "Finding Labels", "Patient ID"]), (kaggle_dr, ["image", "level"]),
        (isic, ["isic_id", "benign_malignant", "target"]),
    ]))
    name = {nih_chestxray14: "Data_Entry_2017.csv", kaggle_dr: "trainLabels.csv", isic: "metadata.csv"}[loader]
    columns = data.draw(st.lists(st.one_of(st.sampled_from(required), CSV_CELLS), max_size=5))
    rows = data.draw(st.lists(st.lists(st.one_of(CSV_CELLS, st.sampled_from(["0", "1", "2", "benign", "malignant",
                                                                            "No Finding", "Pneumothorax", "../x"])),
                                       max_size=len(columns) + 2), max_size=6))
    text = "\n".join(",".join(cells) for cells in [columns, *rows])
    root = Path(tempfile.mkdtemp(dir=tmp_path))
    blob = text.encode() if data.draw(st.integers(0, 9)) else data.draw(st.binary(max_size=200))
    (root / name).write_bytes(blob)
    try:
        train, _ = loader(root)
    except MedartError as exc:
        assert "\n" not in str(exc)
    else:
        assert len(train.targets) == len(train.paths)


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares ``width``×``height`` grey pixels but carries a few bytes of data."""
    import struct

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("side", [12_000, 30_000])  # over PIL's limit (warning band), and over twice it (error)
def test_a_png_bomb_is_refused(tmp_path, side):
    from medart.data.sources import class_folders

    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "x.png").write_bytes(_png_header_only(side, side))
    train, _ = class_folders(tmp_path)
    with pytest.raises(DataError, match="decompression bomb; refused"):
        train[0]
