"""Checksummed, atomic downloads."""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.request
from pathlib import Path

from tqdm.auto import tqdm

from medart.errors import DataError


def md5sum(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def download_file(url: str, dest: Path, md5: str | None, timeout: float = 60.0) -> Path:
    """Fetch ``url`` to ``dest``; verify ``md5``; only a complete, verified file ever appears at ``dest``.

    The bytes go to a temporary file in ``dest``'s folder, which is renamed into place after the
    checksum passes and deleted on any failure, so an interrupted or corrupt download never leaves
    something a later run would take for the real file.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=f"download {dest.name}") as bar:
                while block := response.read(1 << 20):
                    out.write(block)
                    bar.update(len(block))
        if md5 is not None and (got := md5sum(tmp)) != md5:
            raise DataError(f"download of {url} is corrupt (MD5 {got}, expected {md5}); try again later")
        os.replace(tmp, dest)
    except DataError:
        raise
    except (OSError, ValueError) as exc:  # URLError, HTTPError and timeouts are OSErrors
        raise DataError(f"could not download {url}: {exc}") from exc
    finally:
        if tmp.exists():
            tmp.unlink()
    return dest


