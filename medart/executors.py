"""Where a sweep's cells and an attack's shards run: in this process, or as tasks and actors on Ray.

Both executors offer the same two calls. :meth:`Executor.map` runs a function on each item (a
sweep cell) and returns the outcomes in item order; :meth:`Executor.generate` makes an attack's
examples in shards of whole batches, gathered in order, equal to one call on all images (random
starts included, see :meth:`medart.attacks.base.AttackBackend.generate`).

In-process, the first failure ends the sweep, as it always has. On Ray each cell is a task with
its own CPUs (and GPUs when the cluster has them); a cell that fails is retried ``retries`` times
by Ray and then reported while the others complete. A user error (:class:`MedartError`: a bad
model URI, a missing file) is not retried: it ends the sweep with its one line, as in-process.
Ray is an optional extra (``pip install 'medart[ray]'``), imported only by :class:`RayExecutor`.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import mlflow
import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from medart.attacks import AttackSpec, make_attack
from medart.attacks.base import AttackBackend
from medart.catalog import EXECUTORS
from medart.errors import ConfigError, MedartError

RAY_EXTRA = "pip install 'medart[ray]'"
# Set by `mlflow run` or mlflow.set_experiment in the driver and inherited by local Ray workers;
# they name the driver's run and experiment, which a worker's runs must not resume or follow.
_DRIVER_MLFLOW_ENV = ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME")
_CANCEL_GRACE_S = 30.0


@dataclass
class Outcome:
    """What one item gave: ``value``, or ``error`` (one line) and ``detail`` (with the traceback)."""

    value: Any = None
    error: str | None = None
    detail: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def shard_bounds(n: int, batch_size: int, shards: int) -> list[tuple[int, int]]:
    """``[start, stop)`` of at most ``shards`` contiguous shards of ``n`` images, each a run of
    whole batches of ``batch_size`` (so sharding keeps the batches, and the results, of one call)."""
    if shards < 1:
        raise ConfigError(f"`shards` must be >= 1, got {shards}")
    batches = np.arange(-(-n // batch_size))
    groups = [g for g in np.array_split(batches, min(shards, max(1, len(batches)))) if len(g)]
    return [(int(g[0]) * batch_size, min(int(g[-1] + 1) * batch_size, n)) for g in groups] or [(0, n)]


class Executor(ABC):
    """Runs sweep cells and attack shards; a context manager that releases what it started."""

    name: str
    remote: bool  # whether items run in other processes (maybe on other machines)

    def params(self) -> dict[str, Any]:
        """What to log about the executor on the run that uses it."""
        return {"executor": self.name}

    @abstractmethod
    def map(self, function: Callable[[Any], Any], items: Sequence[Any], progress: bool = False) -> list[Outcome]:
        """``function(item)`` for every item, as outcomes in item order. ``function`` and the
        items must pickle (a module-level function or a ``functools.partial`` of one)."""

    @abstractmethod
    def generate(self, attack: AttackBackend, x: torch.Tensor, y: torch.Tensor, seed: int = 0, shards: int = 1,
                 progress: bool = False, loader: Callable[[], nn.Module] | None = None) -> torch.Tensor:
        """``attack.generate(x, y, seed)`` in ``shards`` shards: float32 ``(N, C, H, W)`` on the CPU.

        ``loader`` (picklable, no arguments) loads ``attack.model`` again where another process
        needs its own copy and medart cannot rebuild it from a config and weights (a model brought
        from outside medart)."""

    def close(self) -> None:
        """Release what the executor started."""

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class InProcessExecutor(Executor):
    """Everything in this process, one item after another; an exception ends :meth:`map`."""

    name, remote = "in-process", False

    def map(self, function, items, progress=False):
        return [Outcome(function(item)) for item in items]

    def generate(self, attack, x, y, seed=0, shards=1, progress=False, loader=None):
        bounds = shard_bounds(len(x), attack.batch_size, shards)
        return torch.cat([attack.generate(x[a:b], y[a:b], seed, progress, start=a) for a, b in bounds])


def import_ray():
    """The ``ray`` module, or a one-line :class:`ConfigError` naming the extra to install."""
    try:
        import ray
    except ImportError as exc:
        raise ConfigError(f"`executor`='ray' needs Ray, an optional extra: {RAY_EXTRA} ({exc})") from None
    return ray


def _run_in_worker(function: Callable[[Any], Any], item: Any, threads: int) -> tuple[str, Any, list]:
    """A Ray task's body: ``("ok", value, warnings)``, or ``("user_error", error, warnings)`` for a
    :class:`MedartError`, which retrying cannot fix; any other exception goes to Ray, which retries."""
    for name in _DRIVER_MLFLOW_ENV:
        os.environ.pop(name, None)
    torch.set_num_threads(threads)  # a reused worker keeps the thread count of its first task otherwise
    with warnings.catch_warnings(record=True) as caught:
        try:
            status, value = "ok", function(item)
        except MedartError as exc:
            status, value = "user_error", exc
    return status, value, [(w.category, str(w.message)) for w in caught]


class _ShardWorker:
    """A Ray actor holding one copy of the model; attacks the shards it is sent."""

    def __init__(self, threads: int, weights: tuple[dict, dict[str, torch.Tensor]] | None = None,
                 loader: Callable[[], nn.Module] | None = None) -> None:
        from medart.models.resnet import MedResNet

        torch.set_num_threads(threads)
        if weights is not None:  # medart's own model: rebuilt from its config and weights, nothing to download
            config, state_dict = weights
            self.model = MedResNet.from_config(config)
            self.model.load_state_dict(state_dict)
        else:
            self.model = loader()
        self.model.eval()

    def generate(self, spec: AttackSpec, backend: str, batch_size: int, x: torch.Tensor, y: torch.Tensor, seed: int,
                 start: int) -> torch.Tensor:
        # "auto": the GPU Ray assigned to this actor, else the CPU (Ray hides GPUs it did not assign)
        attack = make_attack(self.model, spec, self.model.config["num_classes"], backend, batch_size, "auto")
        return attack.generate(x, y, seed, start=start)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def _is_local_store(uri: str) -> bool:
    return uri.split(":", 1)[0] in ("sqlite", "file") or "://" not in uri


class RayExecutor(Executor):
    """Cells as Ray tasks, shards on Ray actors that each hold the model once.

    Args:
        address: a running cluster (``auto``, ``ray://host:10001``); ``None`` starts a local Ray
            instance with ``workers`` CPUs (default: all), stopped again by :meth:`close`. A Ray
            instance already started in this process (``ray.init``) is used as it is.
        workers: CPUs of the local instance.
        retries: times Ray runs a failed cell again before it is reported as failed.
        cpus_per_task: CPUs each cell or shard worker reserves (also its torch threads).
        gpus_per_task: GPUs each reserves, a fraction to share one; default 1 when the cluster
            has GPUs, else 0. Work runs on the GPU Ray assigns it.
    """

    name, remote = "ray", True

    def __init__(self, address: str | None = None, workers: int | None = None, retries: int = 2,
                 cpus_per_task: float = 1.0, gpus_per_task: float | None = None) -> None:
        if address and workers is not None:
            raise ConfigError("`workers` sizes a local Ray instance; a cluster (`address`) has the CPUs its nodes bring")
        if workers is not None and workers < 1:
            raise ConfigError(f"`workers` must be >= 1, got {workers}")
        if retries < 0:
            raise ConfigError(f"`retries` must be >= 0, got {retries}")
        if not cpus_per_task > 0:
            raise ConfigError(f"`cpus_per_task` must be > 0, got {cpus_per_task}")
        if gpus_per_task is not None and gpus_per_task < 0:
            raise ConfigError(f"`gpus_per_task` must be >= 0, got {gpus_per_task}")
        self._ray = import_ray()
        self.address, self.workers, self.retries = address, workers, retries
        self.cpus_per_task, self.gpus_per_task = cpus_per_task, gpus_per_task
        self._started = self._connected = False
        self._actors: tuple[str, list] | None = None  # (network digest, actors holding that network)

    def _connect(self):
        ray = self._ray
        if self._connected:
            return ray
        if not ray.is_initialized():
            # ray.init makes SIGTERM exit the driver at once; medart's handler (interrupts.stop_on_signals)
            # ends the open runs as KILLED and this executor's Ray instance on the way out instead
            on_sigterm = signal.getsignal(signal.SIGTERM) if threading.current_thread() is threading.main_thread() else None
            try:
                if self.address:
                    ray.init(address=self.address, logging_level=logging.WARNING)
                else:
                    ray.init(address="local", num_cpus=self.workers or os.cpu_count(), include_dashboard=False,
                             logging_level=logging.WARNING)
            except ConnectionError as exc:
                raise ConfigError(f"cannot connect to Ray at {self.address}: {_one_line(exc)}; start a cluster "
                                  "(`ray start --head`) or leave out `address` for a local instance") from None
            finally:
                if callable(on_sigterm):
                    signal.signal(signal.SIGTERM, on_sigterm)
            self._started = True
        resources = ray.cluster_resources()
        if self.gpus_per_task is None:
            self.gpus_per_task = 1.0 if resources.get("GPU", 0) >= 1 else 0.0
        for what, need in (("CPU", self.cpus_per_task), ("GPU", self.gpus_per_task)):
            if need > resources.get(what, 0) and self._started and not self.address:  # tasks would wait forever
                self.close()
                raise ConfigError(f"each task needs {need:g} {what}s but the local Ray instance has "
                                  f"{resources.get(what, 0):g}; lower `{what.lower()}s_per_task`")
        nodes = sum(1 for node in ray.nodes() if node["Alive"])
        if nodes > 1 and _is_local_store(mlflow.get_tracking_uri()):
            warnings.warn(f"the tracking URI {mlflow.get_tracking_uri()} is a local store, which Ray workers on "
                          f"the other {nodes - 1} nodes cannot reach; set `tracking_uri` to an MLflow tracking server (http://…)")
        self._connected = True
        return ray

    def __enter__(self) -> "RayExecutor":
        self._connect()  # a cluster that cannot be reached fails before any run starts
        return self

    def params(self) -> dict[str, Any]:
        ray = self._connect()
        resources = ray.cluster_resources()
        return {"executor": self.name, "ray.address": self.address or "local", "ray.retries": self.retries,
                "ray.cpus_per_task": self.cpus_per_task, "ray.gpus_per_task": self.gpus_per_task,
                "ray.cluster_cpus": resources.get("CPU", 0), "ray.cluster_gpus": resources.get("GPU", 0)}

    @property
    def _threads(self) -> int:
        return max(1, int(self.cpus_per_task))

    def _gather(self, refs: list, progress: bool, desc: str, on_done: Callable[[int, Any], Any]) -> list:
        """``on_done(i, ref)`` for each ref as it finishes; results in ref order. Any exception
        cancels the refs still pending (their runs end KILLED) before it propagates."""
        ray = self._ray
        index = {ref: i for i, ref in enumerate(refs)}
        results, pending = [None] * len(refs), list(refs)
        try:
            with tqdm(total=len(refs), desc=desc, disable=not progress) as bar:
                while pending:
                    done, pending = ray.wait(pending, num_returns=1)
                    for ref in done:
                        results[index[ref]] = on_done(index[ref], ref)
                    bar.update(len(done))
        except BaseException:
            for ref in pending:
                ray.cancel(ref)  # interrupts a running task: its run ends KILLED
            # before the instance may shut down under them, give the tasks time to end their runs
            ray.wait(pending, num_returns=len(pending), timeout=_CANCEL_GRACE_S)
            raise
        return results

    def map(self, function, items, progress=False):
        ray = self._connect()
        task = ray.remote(_run_in_worker).options(
            num_cpus=self.cpus_per_task, num_gpus=self.gpus_per_task, max_retries=self.retries, retry_exceptions=True)
        refs = [task.remote(function, item, self._threads) for item in items]

        def outcome(_, ref) -> Outcome:
            try:
                status, value, caught = ray.get(ref)
            except ray.exceptions.RayError as exc:  # the cell's exception after its retries, or a lost worker
                return Outcome(error=_one_line(getattr(exc, "cause", None) or exc), detail=str(exc))
            for category, message in caught:  # shown by the driver, where the CLI shows each text once
                warnings.warn(message, category)
            if status == "user_error":
                raise value
            return Outcome(value)

        return self._gather(refs, progress, "cells", outcome)

    def _shard_workers(self, model: torch.nn.Module, count: int, loader: Callable[[], nn.Module] | None) -> list:
        from medart.attacks.cache import network_digest
        from medart.models.resnet import MedResNet

        own = isinstance(model, MedResNet)
        if not own and loader is None:
            raise ConfigError(f"an attack on Ray needs a way to load {model.config['arch']} in its workers; attack it "
                              "through `medart attack`, which passes one, or with `executor`='in-process'")
        ray = self._ray
        digest = network_digest(model)
        if self._actors is not None and self._actors[0] == digest and len(self._actors[1]) >= count:
            return self._actors[1][:count]
        self._kill_actors()
        weights = ray.put((model.config, {k: v.detach().cpu() for k, v in model.state_dict().items()})) if own else None
        actor = ray.remote(_ShardWorker).options(num_cpus=self.cpus_per_task, num_gpus=self.gpus_per_task)
        actors = [actor.remote(self._threads, weights, None if own else loader) for _ in range(count)]
        self._actors = (digest, actors)
        return actors

    def generate(self, attack, x, y, seed=0, shards=1, progress=False, loader=None):
        ray = self._connect()
        bounds = shard_bounds(len(x), attack.batch_size, shards)
        resources = ray.cluster_resources()
        fits = resources.get("CPU", 0) // self.cpus_per_task  # more actors than fit would wait forever
        if self.gpus_per_task:
            fits = min(fits, resources.get("GPU", 0) // self.gpus_per_task)
        actors = self._shard_workers(attack.model, max(1, min(len(bounds), int(fits))), loader)
        # clone: a slice would carry its whole parent tensor's storage to every actor
        refs = [actors[i % len(actors)].generate.remote(attack.spec, attack.name, attack.batch_size, x[a:b].clone(),
                                                        y[a:b].clone(), seed, a)
                for i, (a, b) in enumerate(bounds)]
        return torch.cat(self._gather(refs, progress, f"{attack.spec.label()} shards", lambda _, ref: ray.get(ref)))

    def _kill_actors(self) -> None:
        for actor in self._actors[1] if self._actors else []:
            self._ray.kill(actor)
        self._actors = None

    def close(self) -> None:
        if self._ray.is_initialized():
            self._kill_actors()
        if self._started:
            self._ray.shutdown()
        self._started = self._connected = False


def make_executor(name: str = "in-process", **ray_options: Any) -> Executor:
    """The executor called ``name``; ``ray_options`` (``address``, ``workers``, ``retries``,
    ``cpus_per_task``, ``gpus_per_task``; ``None`` = default) apply to ``ray`` only."""
    given = [k for k, v in ray_options.items() if v is not None]
    if name == "in-process":
        if given:
            raise ConfigError(f"`{given[0]}` applies to `executor`='ray' only")
        return InProcessExecutor()
    if name == "ray":
        return RayExecutor(**{k: ray_options[k] for k in given})
    raise ConfigError(f"unknown executor '{name}'; choose from: {', '.join(EXECUTORS)}")
