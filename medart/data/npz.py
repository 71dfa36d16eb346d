"""Reading ``.npz`` archives from strangers: no pickles, and decompression with a bound.

``np.load`` allocates whatever an array's header declares before reading it, and a zip member
can declare gigabytes that a few kilobytes inflate to (a "decompression bomb"). Here every
member's header is read first and checked — its declared size against ``MEDART_MAX_ARRAY_BYTES``
(default 16 GiB, above the largest official MedMNIST file, ChestMNIST at 224 px), against the
bytes the archive says it holds, and, for large members, against its compression ratio — so a bad
file costs a header read, not the machine's memory.
"""

from __future__ import annotations

import math
import os
import zipfile
import zlib
from pathlib import Path
from typing import Sequence

import numpy as np

from medart.errors import ConfigError, DataError

MAX_BYTES_ENV = "MEDART_MAX_ARRAY_BYTES"
DEFAULT_MAX_BYTES = 16 * 2**30
# Image arrays compress a few times at most; 200× is what arrays of (nearly) one value do. Small
# arrays (labels) may compress that well legitimately, so the ratio is checked above 64 MiB only.
MAX_RATIO, RATIO_FLOOR = 200, 64 * 2**20


def max_bytes() -> int:
    """The largest uncompressed total ``load_npz`` accepts, from ``$MEDART_MAX_ARRAY_BYTES``."""
    text = os.environ.get(MAX_BYTES_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_BYTES
    try:
        value = int(float(text))
    except ValueError:
        raise ConfigError(f"{MAX_BYTES_ENV}={text!r} is not a number of bytes, e.g. 17179869184 (16 GiB)") from None
    if value < 1:
        raise ConfigError(f"{MAX_BYTES_ENV} must be positive, got {text!r}")
    return value


def _header(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> tuple[tuple[int, ...], np.dtype]:
    with archive.open(info) as f:
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read(f)
    return shape, dtype


def load_npz(path: str | os.PathLike, keys: Sequence[str]) -> dict[str, np.ndarray]:
    """The arrays ``keys`` of the ``.npz`` file ``path``, after checking that each exists, holds no
    Python objects, and inflates to no more than its declared, bounded size. Any fault is a
    :class:`DataError` naming the file."""
    path = Path(path)
    limit = max_bytes()
    hint = "delete it and re-download, or supply a valid file"
    try:
        with zipfile.ZipFile(path) as archive:
            names = {Path(name).stem: name for name in archive.namelist() if name.endswith(".npy")}
            missing = [k for k in keys if k not in names]
            if missing:
                raise DataError(f"{path} lacks arrays {missing}; {hint}")
            infos = {k: archive.getinfo(names[k]) for k in keys}
            total = 0
            for key, info in infos.items():
                shape, dtype = _header(archive, info)
                if dtype.hasobject:
                    raise DataError(f"{path}: {key} holds Python objects, which medart never unpickles; {hint}")
                declared = math.prod(shape) * dtype.itemsize
                total += declared
                if total > limit:
                    raise DataError(f"{path}: its arrays declare {total / 2**30:.2f} GiB, more than the "
                                    f"{limit / 2**30:.2f} GiB limit; raise {MAX_BYTES_ENV} if the file is genuine")
                if declared > info.file_size:
                    raise DataError(f"{path}: {key} declares {declared} bytes but holds {info.file_size}; it is truncated — {hint}")
                if declared > RATIO_FLOOR and declared > MAX_RATIO * max(info.compress_size, 1):
                    raise DataError(f"{path}: {key} inflates {declared / max(info.compress_size, 1):.0f}-fold "
                                    f"({info.compress_size} → {declared} bytes), a decompression bomb; refused")
            arrays = {}
            for key, info in infos.items():
                with archive.open(info) as f:
                    arrays[key] = np.lib.format.read_array(f, allow_pickle=False)
            return arrays
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"{path} not found") from None
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, TypeError, KeyError, NotImplementedError,
            RuntimeError) as exc:  # what zipfile, zlib and numpy's format reader raise on malformed bytes
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise DataError(f"{path} is truncated or corrupt ({reason}); {hint}") from None
