#!/usr/bin/env python3
"""Screenshot a medart HTML report in headless Chromium, to check that it renders.

    python benchmarks/report_screenshot.py report.html --output report.png
    python benchmarks/report_screenshot.py --run-id <id> --tracking-uri sqlite:///mlflow.db --output report.png

Needs Debian's ``chromium`` (``apt-get install -y chromium``). Chromium runs with a fresh profile,
no sandbox (containers run as root), no GPU and no network services; the page is self-contained.
Exit status 0 when the PNG was written, 1 otherwise (Chromium's output is printed).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--hide-scrollbars")


def find_chromium(path: str | None = None) -> str | None:
    """``path`` if given, else ``chromium`` or ``chromium-browser`` on PATH, else ``None``."""
    return path or shutil.which("chromium") or shutil.which("chromium-browser")


def screenshot(html: Path, png: Path, chromium: str, width: int = 1280, height: int = 2000, timeout: float = 120) -> None:
    """Render ``html`` into ``png`` (``width`` × ``height`` CSS pixels). Raises ``RuntimeError``
    with Chromium's output when no valid PNG comes out."""
    png.parent.mkdir(parents=True, exist_ok=True)
    png.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="medart-chromium-") as profile:
        done = subprocess.run(
            [chromium, *FLAGS, f"--user-data-dir={profile}", f"--screenshot={png.resolve()}", f"--window-size={width},{height}",
             html.resolve().as_uri()],
            capture_output=True, text=True, timeout=timeout,
        )
    if not png.is_file() or png.read_bytes()[:8] != PNG_SIGNATURE:
        raise RuntimeError(f"chromium exited {done.returncode} without a PNG:\n{done.stdout}\n{done.stderr}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    parser.add_argument("html", nargs="?", type=Path, help="The report file (or use --run-id).")
    parser.add_argument("--run-id", help="Render this MLflow run's report first (medart report --run-id).")
    parser.add_argument("--tracking-uri", help="MLflow store of --run-id (default $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db).")
    parser.add_argument("--output", "-o", type=Path, default=Path("report.png"), help="PNG to write (default report.png).")
    parser.add_argument("--chromium", help="Chromium binary (default: chromium on PATH).")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=2000)
    args = parser.parse_args(argv)
    if (args.html is None) == (args.run_id is None):
        parser.error("give a report file or --run-id, not both")
    chromium = find_chromium(args.chromium)
    if chromium is None:
        print("chromium not found: apt-get install -y chromium, or pass --chromium PATH", file=sys.stderr)
        return 1
    html = args.html
    if args.run_id:
        from medart import tracking
        from medart.stages.report import report_run

        tracking.configure(args.tracking_uri)
        html = report_run(args.run_id, args.output.with_suffix(".html"), log=False)
    try:
        screenshot(html, args.output, chromium, args.width, args.height)
    except (RuntimeError, subprocess.TimeoutExpired, OSError) as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"{args.output} ({args.output.stat().st_size} bytes) from {html}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
