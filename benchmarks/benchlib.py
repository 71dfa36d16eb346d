"""What every benchmark script shares: the machine record, interleaved timing with medians and
spread, peak memory, the atomic JSON result file and the MLflow run.

Scripts import it as a sibling module (``python benchmarks/<script>.py`` puts this folder first
on ``sys.path``).
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import datetime as dt
import json
import os
import platform
import re
import shlex
import sys
import time
import tracemalloc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import click
import numpy as np

from medart.budget import eps_params, holds_eps
from medart.cli import ReportsUserErrors

HERE = Path(__file__).resolve().parent
REPOSITORY = HERE.parent
RESULTS = HERE / "results"
EXPERIMENT = "medart/benchmarks"


def cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown"
    match = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
    return match[1].strip() if match else platform.processor() or "unknown"


def environment(device) -> dict:
    """The machine, software and command a result was measured with (recorded in every JSON)."""
    import torch

    from medart import tracking

    versions = {}
    for name in ("torch", "torchvision", "numpy", "scipy", "sklearn", "art", "torchattacks", "mlflow"):
        try:
            versions[name] = __import__(name).__version__
        except ImportError:
            versions[name] = None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": portable_command(sys.argv),
        "git_commit": tracking.git_commit(),
        "machine": {
            "cpu": cpu_model(),
            "cores": cores,
            "torch_threads": torch.get_num_threads(),
            "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "device": str(device),
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "load_average_at_start": list(os.getloadavg()),
        },
        "versions": versions,
    }


def _portable_word(word: str, option: str) -> str:
    """One argument without this machine's paths (see :func:`portable_command`)."""
    if option == "--data-dir" and os.path.isabs(word):
        return '"$MEDART_DATA_DIR"'
    uri = re.match(r"^(sqlite|file):///?(/.*)$", word)
    if uri:  # a store at an absolute path: the same store file or folder in the current folder
        return f"sqlite:///{Path(uri[2]).name}" if uri[1] == "sqlite" else Path(uri[2]).name
    if not os.path.isabs(word):
        return shlex.quote(word)
    path = Path(word).resolve()
    if path.is_relative_to(REPOSITORY):
        return shlex.quote(str(path.relative_to(REPOSITORY)))
    if option == "--output":
        return shlex.quote(f"benchmarks/results/{path.name}")
    return shlex.quote(path.name)


def portable_command(argv: list[str]) -> str:
    """The command line ``argv`` (script, then its arguments) as a reader runs it from the repository
    root, without the measuring machine's paths: the script as ``benchmarks/<name>.py``, an absolute
    ``--data-dir`` as ``"$MEDART_DATA_DIR"``, a tracking store at an absolute path as the same file in
    the current folder (``sqlite:///mlflow.db``), other absolute paths relative to the repository
    (``--output``: ``benchmarks/results/<name>`` when outside it), else their last component."""
    script = Path(argv[0]).name if argv and argv[0] else "?"
    words = [f"benchmarks/{script}" if (HERE / script).is_file() else script]
    option = ""
    for arg in argv[1:]:
        flag, eq, value = arg.partition("=")
        if arg.startswith("--") and eq:  # --name=value
            words.append(f"{flag}={_portable_word(value, flag)}")
        else:
            words.append(_portable_word(arg, option))
        option = arg
    return "python " + " ".join(words)


def machine_label(env: dict) -> str:
    """One line for tables, e.g. ``2 cores of Intel Xeon …, CPU``."""
    m = env["machine"]
    where = f"GPU {m['gpu']}" if m["gpu"] else "CPU"
    return f"{m['cores']} cores of {m['cpu']}, {where}"


def sync(device) -> None:
    """Wait for queued GPU work, so a timer measures the work and not its launch."""
    if device.type == "cuda":
        import torch

        torch.cuda.synchronize(device)


def spread(values: list[float]) -> dict[str, float]:
    """Median, quartiles, min and max of repeated measurements."""
    a = np.asarray(values, dtype=np.float64)
    q1, median, q3 = np.percentile(a, [25, 50, 75])
    return {"median": float(median), "q1": float(q1), "q3": float(q3), "min": float(a.min()), "max": float(a.max()), "n": len(a)}


def median_quartiles(s: dict, digits: int = 3) -> str:
    """A :func:`spread` for tables: ``median [q1–q3]`` with ``digits`` decimals."""
    return f"{s['median']:.{digits}f} [{s['q1']:.{digits}f}–{s['q3']:.{digits}f}]"


@dataclass
class Timings:
    """Wall and process-CPU seconds per repeat of each variant."""

    wall: dict[str, list[float]] = field(default_factory=dict)
    cpu: dict[str, list[float]] = field(default_factory=dict)

    def add(self, name: str, wall: float, cpu: float) -> None:
        self.wall.setdefault(name, []).append(wall)
        self.cpu.setdefault(name, []).append(cpu)

    def paired_ratio(self, numerator: str, denominator: str, cpu: bool = False) -> dict[str, float]:
        """``time[denominator] / time[numerator]`` per round (the throughput of ``numerator``
        relative to ``denominator``, both measured in the same round, so slow phases of a shared
        machine hit both), summarised over the rounds; wall-clock or process CPU seconds."""
        times = self.cpu if cpu else self.wall
        return spread([d / n for n, d in zip(times[numerator], times[denominator])])


def interleaved(variants: dict[str, Callable[[], object]], repeats: int, device, warmup: int = 1,
                progress: Callable[[str], None] | None = None) -> Timings:
    """Run every variant ``warmup`` times untimed, then ``repeats`` rounds, each round calling every
    variant once in turn (round-robin, rotating the start), so that load from other jobs spreads
    over all variants instead of hitting one."""
    for _ in range(warmup):
        for fn in variants.values():
            fn()
            sync(device)
    timings = Timings()
    names = list(variants)
    for r in range(repeats):
        for name in names[r % len(names):] + names[: r % len(names)]:
            sync(device)
            wall, cpu = time.perf_counter(), time.process_time()
            variants[name]()
            sync(device)
            timings.add(name, time.perf_counter() - wall, time.process_time() - cpu)
        if progress:
            progress(f"round {r + 1}/{repeats}")
    return timings


def _status_kib(key: str) -> int | None:
    try:
        match = re.search(rf"^{key}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M)
    except OSError:
        return None
    return int(match[1]) if match else None


def _trim_heap() -> None:
    """Give freed heap pages back to the OS, so the next peak is not hidden by reused pages."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


@dataclass
class Peak:
    rss_mib: float | None  # peak resident memory above the resident memory at the start
    tracemalloc_mib: float | None  # peak of Python/NumPy allocations (torch's are not traced)
    method: str


@contextlib.contextmanager
def peak_memory(trace_python: bool = True) -> Iterator[list[Peak]]:
    """Peak memory of the block: resident set (all allocations, torch's included) above its level
    at the start, by resetting the kernel's high-water mark (``/proc/self/clear_refs``), and the
    ``tracemalloc`` peak of Python/NumPy allocations. Yields a list that holds one :class:`Peak`
    after the block. ``tracemalloc`` slows Python code: never time inside this block."""
    out: list[Peak] = []
    _trim_heap()
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS (Linux ≥ 4.0)
        method = "VmHWM after clear_refs"
    except OSError:
        method = "ru_maxrss (includes earlier peaks)"
    start = _status_kib("VmRSS")
    if trace_python:
        tracemalloc.start()
    try:
        yield out
    finally:
        traced = tracemalloc.get_traced_memory()[1] / 2**20 if trace_python else None
        if trace_python:
            tracemalloc.stop()
        if method.startswith("VmHWM"):
            peak = _status_kib("VmHWM")
        else:
            import resource

            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        rss = None if start is None or peak is None else max(peak - start, 0) / 1024
        out.append(Peak(rss, traced, method))


def write_json(path: Path, payload: dict) -> Path:
    """Write ``payload`` to ``path`` atomically: a ``.tmp`` file renamed into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload, indent=1, default=_jsonable) + "\n")
    os.replace(tmp, path)
    return path


def _jsonable(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if dataclasses.is_dataclass(value):  # an Estimate: value, low, high, n
        return dataclasses.asdict(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def log_run(tracking_uri: str | None, run_name: str, params: dict, metrics: dict[str, float], payload: dict,
            json_name: str, tables: dict[str, str] | None = None) -> str:
    """One MLflow run in ``medart/benchmarks`` with the parameters, the headline metrics, the
    whole result (``json_name``) and markdown tables; returns its id."""
    import mlflow

    from medart import tracking

    tracking.configure(tracking_uri)
    with tracking.start_run(EXPERIMENT, run_name) as run:
        mlflow.log_params(mlflow_params(params))
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if v is not None and np.isfinite(v)})
        mlflow.log_dict(json.loads(json.dumps(payload, default=_jsonable)), json_name)
        for name, text in (tables or {}).items():
            mlflow.log_text(text, name)
    return run.info.run_id


def mlflow_params(params: dict) -> dict:
    """``params`` as MLflow params: an ε (or ε list) as k/255 beside its float (:func:`medart.budget.eps_params`),
    other lists comma-joined."""
    out = {}
    for k, v in params.items():
        out |= eps_params(k, v) if holds_eps(v) else {k: ",".join(map(str, v)) if isinstance(v, (list, tuple)) else v}
    return out


def markdown_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def parse_ints(text: str, what: str) -> list[int]:
    """``"28,64,224"`` → ``[28, 64, 224]``, with a one-line error naming ``what``."""
    from medart.errors import ConfigError

    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"{what} must be comma-separated integers such as 28,64, got {text!r}") from None
    if not values or min(values) < 1:
        raise ConfigError(f"{what} must be positive integers, got {text!r}")
    return values


class BenchmarkCommand(ReportsUserErrors, click.Command):
    """A benchmark script's command: user errors and interrupts end as in medart's own CLI."""

    interrupted = "open runs ended as KILLED"


def benchmark_model(model_uri: str | None, arch: str, device) -> tuple:
    """``(model, label)`` in eval mode on ``device``: the registered model at ``model_uri``, else a
    two-class MedResNet ``arch`` with seeded random weights (timings do not depend on the weights)."""
    import torch

    if model_uri:
        from medart.models.registry import load_model

        model, label = load_model(model_uri), model_uri
    else:
        from medart.models.resnet import build_model

        torch.manual_seed(0)
        model, label = build_model(2, arch, pretrained="none"), f"MedResNet {arch}, random initialisation"
    return model.eval().to(device), label


def chest_xrays(n: int, size: int, data_dir: str | None, seed: int = 0, offset: int = 0):
    """``n`` images ``(n, 3, size, size)`` in [0, 1] and labels ``(n,)``: rows ``offset …
    offset + n`` of a seeded permutation of the real chest X-ray Train split, resized to ``size``;
    uniform random pixels and labels when no data folder is given. Returns ``(x, y, source)``."""
    import torch

    from medart.errors import ConfigError
    from medart.stages.target import DataSpec

    if data_dir is None:
        g = torch.Generator().manual_seed(seed + offset)
        y = torch.randint(0, 2, (n,), generator=g)  # drawn first: the same labels at every size
        return torch.rand(n, 3, size, size, generator=g), y, "uniform random pixels"
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the curated file fails the official MD5 by design
        train = DataSpec("pneumonia", data_dir, seed=seed, download=False).load(size).train
    if offset + n > len(train):
        raise ConfigError(f"asked for {offset + n} chest X-rays but the Train split has {len(train)}; use fewer images")
    rows = np.random.default_rng(seed).permutation(len(train))[offset : offset + n]
    xs, ys = zip(*(train[int(i)] for i in rows))
    return torch.stack(xs), torch.tensor(ys, dtype=torch.int64), f"pneumoniamnist Train ({Path(data_dir).name}), resized to {size}px"
