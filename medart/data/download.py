"""Checksummed, atomic downloads."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import urllib.request
from pathlib import Path

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
    something a later run would take for the real file. ``dest``'s folder is created only once the
    server answers, and removed again if the download fails: a mistyped folder is not left behind.
    """
    from tqdm.auto import tqdm  # here, not at the top: `medart datasets` reads this package's names

    try:
        response = urllib.request.urlopen(url, timeout=timeout)
    except (OSError, ValueError) as exc:  # URLError, HTTPError and timeouts are OSErrors
        raise DataError(f"could not download {url}: {exc}") from exc
    made = [folder for folder in (dest.parent, *dest.parent.parents) if not folder.exists()]
    tmp = None
    try:
        with response:
            dest.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
            tmp = Path(tmp_name)
            with os.fdopen(fd, "wb") as out:
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
    except (OSError, ValueError) as exc:
        raise DataError(f"could not download {url}: {exc}") from exc
    finally:
        if tmp is not None and tmp.exists():
            tmp.unlink()
        if not dest.exists():
            for folder in made:  # deepest first; each is empty unless something else wrote there meanwhile
                with contextlib.suppress(OSError):
                    folder.rmdir()
    return dest
