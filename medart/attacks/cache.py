"""Adversarial examples stored as run artifacts and found again by what made them.

Examples are saved as the perturbation ``x_adv − x`` in float16 (half the size of the images, and
the clean images are re-read from the dataset), with the split indices they belong to. A run's
``medart.cache_key`` tag — a hash of the model weights, the data file and indices, the attack spec, the
backend and the seed — lets a later run reuse them instead of recomputing; only FINISHED runs
count, so a failed or interrupted run is never mistaken for a result.
"""

from __future__ import annotations

import hashlib
import io
import json
import tempfile
from pathlib import Path

import mlflow
import numpy as np
import torch

from medart.attacks.specs import AttackSpec

CACHE_TAG = "medart.cache_key"
ARTIFACT_DIR = "adversarial"


def weights_digest(model: torch.nn.Module) -> str:
    """A hash of ``model``'s tensors and, for a network whose logits are one of several outputs,
    of which one (``config["output_key"]``): the same weights read at another output are another model."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    key = getattr(model, "config", {}).get("output_key")
    if key is not None:  # absent otherwise, so that the digests of earlier runs (and their caches) still match
        h.update(f"output_key={key}".encode())
    return h.hexdigest()


def cache_key(model_digest: str, data: dict, indices: dict[str, np.ndarray], spec: AttackSpec, backend: str, seed: int) -> str:
    """``data`` describes the dataset (``ProtocolSplits.info``: name, file MD5, split digest)."""
    payload = {
        "model": model_digest,
        "data": {k: str(v) for k, v in sorted(data.items())},
        "indices": {k: hashlib.sha256(np.asarray(v, np.int64).tobytes()).hexdigest() for k, v in sorted(indices.items())},
        "spec": spec.as_params(),
        "backend": backend,
        "seed": seed,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]


def save(part: str, x: torch.Tensor, x_adv: torch.Tensor, labels: torch.Tensor, indices: np.ndarray) -> None:
    """Log one part's examples (e.g. ``adv_test``) to the active run as ``adversarial/<part>.npz``."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, delta=(x_adv - x).numpy().astype(np.float16), labels=labels.numpy(), indices=indices)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{part}.npz"
        path.write_bytes(buffer.getvalue())
        mlflow.log_artifact(str(path), ARTIFACT_DIR)


def load(run_id: str, part: str, x: torch.Tensor, eps: float) -> torch.Tensor:
    """The examples of ``part`` logged by ``run_id``, rebuilt on the clean images ``x``."""
    with tempfile.TemporaryDirectory() as tmp:
        path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=f"{ARTIFACT_DIR}/{part}.npz", dst_path=tmp)
        with np.load(path, allow_pickle=False) as npz:
            delta = torch.from_numpy(npz["delta"].astype(np.float32))
    # float16 rounding may step a hair past ε: clip back into the ball and the pixel range
    return (x + delta.clamp(-eps, eps)).clamp(0.0, 1.0)


def find(key: str) -> str | None:
    """Run id of a FINISHED run, in any experiment (a pipeline's attack runs live in the
    pipeline's), that logged examples under ``key``, if any."""
    runs = mlflow.search_runs(
        search_all_experiments=True,
        filter_string=f"tags.`{CACHE_TAG}` = '{key}' and attributes.status = 'FINISHED' and tags.`medart.cached` = 'false'",
        max_results=1,
        output_format="list",
    )
    return runs[0].info.run_id if runs else None
