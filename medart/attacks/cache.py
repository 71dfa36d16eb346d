"""Adversarial examples stored as run artifacts and found again by what made them.

Examples are stored losslessly: ``x_adv`` itself in float32, compressed, with the class labels
and the split indices of the images they were made from (``adversarial/<part>.npz``), so a cached
example is bit for bit the one the attack made, and a later reader can rebuild the clean images
from the dataset and score both again. A run's ``medart.cache_key`` tag — a hash of the network
(:func:`network_digest`), the data file and indices, the attack spec, the backend and the seed —
lets a later run reuse them instead of recomputing; only FINISHED runs count, so a failed or
interrupted run is never mistaken for a result.
"""

from __future__ import annotations

import hashlib
import io
import json
import operator
import tempfile
import types
from pathlib import Path
from typing import Any, Iterator

import mlflow
import numpy as np
import torch
from torch import nn

from medart.attacks.specs import AttackSpec
from medart.errors import DataError
from medart.models.adapter import _Through

CACHE_TAG = "medart.cache_key"
ARTIFACT_DIR = "adversarial"
# 2: x_adv in float32, keyed on the network digest. 1 (float16 perturbations, keyed on the
# state_dict alone) is never a hit again: its examples were up to 1.5e-5 away from fresh ones.
KEY_VERSION = 2
# model.config entries that name or describe a model without changing what it computes
_PROVENANCE = frozenset({"source", "classes", "classes_declared", "pretrained", "penultimate"})
_SIMPLE = (bool, int, float, str, type(None))


def network_digest(model: nn.Module) -> str:
    """SHA-256 of what decides the function ``model`` computes, so that two models share examples
    only when they are the same network:

    * every tensor it computes with — parameters, buffers (non-persistent ones too) and the
      constants a graph program reads — by name, dtype, shape and bytes;
    * its ``config`` but for names and provenance (:data:`_PROVENANCE`): for an adapted model the
      input contract (channels, side, normalisation), the stored ``format`` (``pt2``,
      ``torchscript``, ``pickle``, ``state_dict``, ``module``) and the fixed batch; for a
      MedResNet its architecture, head and input mapping;
    * every module's class, its settings (``extra_repr`` and its public plain attributes: stride,
      eps, p, …), the forward hooks on it, a graph program's graph, and the bytecode of the
      methods of every class outside torch (a pickled network's own code, torchvision's, medart's).

    The format is part of it: a ``pickle`` copy and a ``pt2`` copy of one ``nn.Module`` are
    different networks here (the graph torch.export traced is not provably the Python code it came
    from), while two registered versions of the same file, or two loads of one, are the same.
    What it cannot see: module-level functions a pickled network's methods call, and code
    monkey-patched onto torch itself."""
    h = hashlib.sha256()
    for item in _describe(model):
        h.update(item if isinstance(item, bytes) else str(item).encode())
        h.update(b"\0")
    return h.hexdigest()


def _describe(model: nn.Module) -> Iterator[Any]:
    config = getattr(model, "config", {})
    yield json.dumps({k: v for k, v in config.items() if k not in _PROVENANCE}, sort_keys=True, default=str)
    tensors = dict(model.named_parameters()) | dict(model.named_buffers()) | {
        k: v for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}
    for name, module in model.named_modules():
        yield from _module(name, module)
        graph = getattr(module, "graph", None)
        if isinstance(graph, torch.fx.Graph):  # constants a program reads that are neither parameters nor buffers
            for node in graph.nodes:
                if node.op == "get_attr" and isinstance(value := _attr(module, str(node.target)), torch.Tensor):
                    tensors.setdefault(f"{name}.{node.target}" if name else str(node.target), value)
    for name, tensor in sorted(tensors.items()):
        tensor = tensor.detach().cpu().contiguous()
        yield f"{name} {tensor.dtype} {tuple(tensor.shape)}"
        yield tensor.flatten().view(torch.uint8).numpy().tobytes()  # any dtype, bfloat16 too


def _module(name: str, module: nn.Module) -> Iterator[Any]:
    cls = type(module)
    yield f"{name}: {cls.__module__}.{cls.__qualname__}({module.extra_repr()})"
    yield json.dumps({k: v for k, v in sorted(vars(module).items()) if not k.startswith("_") and k != "training"
                      and (isinstance(v, _SIMPLE) or isinstance(v, (tuple, list)) and all(isinstance(e, _SIMPLE) for e in v))})
    for hooks in (module._forward_pre_hooks, module._forward_hooks):  # but the adapter's identity routing of dfeat
        yield [_qualname(hook) for hook in hooks.values() if not isinstance(hook, _Through)]
    graph = getattr(module, "graph", None)
    if isinstance(graph, torch.fx.Graph):
        yield str(graph)
    for klass in cls.__mro__:
        if klass.__module__.split(".")[0] not in ("torch", "builtins"):
            for attr, value in sorted(vars(klass).items()):
                function = value.fget if isinstance(value, property) else getattr(value, "__func__", value)
                code = getattr(function, "__code__", None)
                if code is not None:
                    yield f"{klass.__qualname__}.{attr}"
                    yield from _code(code)


def _code(code: types.CodeType) -> Iterator[Any]:
    """What a function runs: its bytecode, the names it reads and its constants (nested functions too)."""
    yield code.co_code
    yield code.co_names
    for const in code.co_consts:
        yield from _code(const) if isinstance(const, types.CodeType) else (_constant(const),)


def _constant(value: Any) -> str:
    # a frozenset's order follows the process's string hash seed: sorted, so every process agrees
    if isinstance(value, frozenset):
        return "frozenset(" + ",".join(sorted(map(_constant, value))) + ")"
    if isinstance(value, tuple):
        return "(" + ",".join(map(_constant, value)) + ")"
    return repr(value)


def _qualname(hook: Any) -> str:
    target = getattr(hook, "__func__", hook)
    return f"{getattr(target, '__module__', '')}.{getattr(target, '__qualname__', type(target).__qualname__)}"


def _attr(module: nn.Module, dotted: str) -> Any:
    try:
        return operator.attrgetter(dotted)(module)
    except AttributeError:
        return None


def cache_key(network: str, data: dict, indices: dict[str, np.ndarray], spec: AttackSpec, backend: str, seed: int) -> str:
    """``network``: :func:`network_digest`; ``data`` describes the dataset (``ProtocolSplits.info``:
    name, file MD5, split digest)."""
    payload = {
        "version": KEY_VERSION,
        "network": network,
        "data": {k: str(v) for k, v in sorted(data.items())},
        "indices": {k: hashlib.sha256(np.asarray(v, np.int64).tobytes()).hexdigest() for k, v in sorted(indices.items())},
        "spec": spec.identity(),  # ε as floats: keys made before ε was logged as k/255 still match
        "backend": backend,
        "seed": seed,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]


def save(part: str, x_adv: torch.Tensor, labels: np.ndarray | torch.Tensor, indices: np.ndarray | None,
         **extra: np.ndarray) -> None:
    """Log one part's examples to the active run as ``adversarial/<part>.npz``: ``x_adv`` float32
    ``(N, C, S, S)`` pixels in [0, 1], ``labels`` ``(N,)`` their true classes, ``indices`` ``(N,)``
    the clean images' indices in the split part they come from, and any ``extra`` arrays (e.g. a
    detector's ``scores``)."""
    labels = labels.numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if indices is None:
        raise DataError(f"{part}: examples are stored with the indices of their clean images in the split; none given")
    if not len(x_adv) == len(labels) == len(indices):
        raise DataError(f"{part}: {len(x_adv)} examples, {len(labels)} labels and {len(indices)} indices; they must agree")
    buffer = io.BytesIO()
    np.savez_compressed(buffer, x_adv=x_adv.detach().cpu().numpy().astype(np.float32, copy=False), labels=labels,
                        indices=np.asarray(indices, np.int64), **extra)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{part}.npz"
        path.write_bytes(buffer.getvalue())
        mlflow.log_artifact(str(path), ARTIFACT_DIR)


def read(run_id: str, part: str) -> dict[str, np.ndarray]:
    """Every array ``run_id`` logged in ``adversarial/<part>.npz`` (``x_adv``, ``labels``, ``indices``, …)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=f"{ARTIFACT_DIR}/{part}.npz", dst_path=tmp)
        with np.load(path, allow_pickle=False) as npz:
            return {name: npz[name] for name in npz.files}


def load(run_id: str, part: str, indices: np.ndarray) -> torch.Tensor:
    """The examples ``x_adv`` of ``part`` that ``run_id`` logged, after checking that they were made
    from the images ``indices``."""
    stored = read(run_id, part)
    if "x_adv" not in stored or not np.array_equal(stored["indices"], indices):
        raise DataError(f"run {run_id} holds no {part} examples of these images ({ARTIFACT_DIR}/{part}.npz); "
                        "run again with `cache`=False")
    return torch.from_numpy(stored["x_adv"])


def find(key: str) -> str | None:
    """Run id of a FINISHED run, in any experiment (a pipeline's attack runs live in the
    pipeline's), that made examples under ``key`` itself (not from the cache), if any."""
    runs = mlflow.search_runs(
        search_all_experiments=True,
        filter_string=f"tags.`{CACHE_TAG}` = '{key}' and attributes.status = 'FINISHED' and tags.`medart.cached` = 'false'",
        max_results=1,
        output_format="list",
    )
    return runs[0].info.run_id if runs else None
