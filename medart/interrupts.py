"""Ctrl-C, SIGTERM and SIGHUP as one interrupt, held back while an MLflow run is being created.

Kept apart from :mod:`medart.tracking` (which imports MLflow) because the command line installs the
handler before every command, ``--help`` included, and must answer that at once.
"""

from __future__ import annotations

import contextlib
import signal
from typing import Iterator

# Signals that arrive while a run is being created are held back until it can be ended properly.
_DEFER = {"depth": 0, "pending": []}


@contextlib.contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Hold back the interrupts :func:`stop_on_signals` turns signals into until the block is left;
    :func:`raise_pending_interrupt` then raises the one held back."""
    _DEFER["depth"] += 1
    try:
        yield
    finally:
        _DEFER["depth"] -= 1


def raise_pending_interrupt() -> None:
    """Raise :class:`KeyboardInterrupt` (named after the signal) for a signal held back, if any,
    outside every :func:`deferred_interrupts` block."""
    if _DEFER["pending"] and not _DEFER["depth"]:
        name = _DEFER["pending"].pop()
        _DEFER["pending"].clear()
        raise KeyboardInterrupt(name)


def stop_on_signals() -> None:
    """Make SIGINT, SIGTERM and SIGHUP interrupt like Ctrl-C, except while a run is being created
    (then the interrupt waits until the run can be ended). Python's default for SIGTERM would end
    the process at once, skipping the ``finally`` blocks that end runs as KILLED and remove
    temporary files."""

    def interrupt(signum, frame):
        name = signal.Signals(signum).name
        if _DEFER["depth"]:
            _DEFER["pending"].append(name)
        else:
            raise KeyboardInterrupt(name)

    for name in ("SIGINT", "SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), interrupt)
