"""Local intrinsic dimensionality (Ma et al. 2018): adversarial regions have higher LID.

Per layer, the maximum-likelihood estimate from the distances r_1 ≤ … ≤ r_k of a point to its k
nearest neighbours among a mini-batch of clean reference samples:

    LID = −( (1/k) Σ_i log(r_i / r_k) )⁻¹

Edge cases are defined, not left to produce NaN/Inf: a point that belongs to the reference batch
is excluded by index (``self_index``); r_1 = 0 (an exact duplicate) gives LID 0, the limit of the
estimator as r_1 → 0; all k distances equal (a degenerate, "infinite-dimensional" neighbourhood)
gives LID = ``max_lid``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from medart.detectors.base import FeatureDetector, as_tensor
from medart.detectors.activations import INPUT, iter_activations, resolve_layers
from medart.detectors.distances import squared_distances
from medart.errors import ConfigError, DataError

MAX_LID = 1e6
REFERENCES = ("train", "batch", "batch_excluding_source")


def lid_mle(query: torch.Tensor, reference: torch.Tensor, k: int, self_index: torch.Tensor | None = None) -> torch.Tensor:
    """LID ``(N,)`` float64 of each row of ``query`` ``(N, D)`` against ``reference`` ``(M, D)``.

    ``self_index[i]`` is the row of ``reference`` that *is* query i (or −1): it is excluded.
    """
    available = reference.shape[0] - (0 if self_index is None else 1)
    if k < 1 or k > available:
        raise ConfigError(f"LID k = {k} needs 1 ≤ k ≤ {available} neighbours; use a reference batch larger than k")
    d2 = squared_distances(query, reference)
    if self_index is not None:
        rows = torch.nonzero(self_index >= 0).squeeze(1)
        d2[rows, self_index[rows]] = float("inf")
    r2 = d2.topk(k, dim=1, largest=False).values  # ascending r_1² … r_k²
    lid = torch.full((len(query),), MAX_LID, dtype=torch.float64)
    zero = r2[:, 0] == 0
    lid[zero] = 0.0
    ok = ~zero
    mean_log = 0.5 * torch.log(r2[ok] / r2[ok, -1:]).mean(dim=1)  # mean log(r_i / r_k) ≤ 0; = 0 only if all are equal
    lid[ok] = torch.where(mean_log < 0, -1.0 / mean_log, torch.full_like(mean_log, MAX_LID)).clamp(max=MAX_LID)
    return lid


def minibatches(n: int, size: int, k: int) -> list[slice]:
    """Rows ``0…n`` in mini-batches of ``size``; a short last batch (≤ k images, too few for k
    neighbours once the point itself is excluded) joins the batch before it."""
    bounds = list(range(0, n, size)) + [n]
    if len(bounds) > 2 and bounds[-1] - bounds[-2] <= k:
        del bounds[-2]
    return [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]


class LocalIntrinsicDimensionality(FeatureDetector):
    """LID detector: one LID per layer → logistic regression.

    Three reference sets, chosen by ``reference``:

    - ``"train"`` (default): ``fit(x, y, x_ref=…)`` with clean training images, of which
      ``reference_size`` are drawn once (seeded) to form the clean mini-batch every input's LID is
      measured against, in ``fit`` and ``detect`` alike. The input's own clean source is never
      among its neighbours, as for a deployed detector.
    - ``"batch"`` (Ma et al. 2018 as published): each input is measured against the clean images
      of *its own* mini-batch of ``reference_size``: ``fit(x, y, x_clean=c)`` and
      ``detect(x, x_clean=c)``, where ``x`` stacks blocks aligned row by row with the clean
      images ``c`` (e.g. ``[c, adversarial(c)]``). A block equal to ``c`` excludes each point
      itself by index; the adversarial example of a clean image has that image among its
      neighbours at distance ~ε, which is what the published numbers measure.
    - ``"batch_excluding_source"``: as ``"batch"``, but every block excludes the clean image of its
      own row, so an adversarial input never has its source among its neighbours: the control
      that shows how much of ``"batch"``'s separation that one neighbour makes.

    Args:
        layers: layer names (default: the input, the network's top-level stages — a ResNet's
            ``layer1`` … ``layer4`` — and the penultimate features ``dfeat``).
        k: nearest neighbours (20 as in Ma et al.).
        reference: ``"train"``, ``"batch"`` or ``"batch_excluding_source"``, see above.
        reference_size: clean images in the reference mini-batch (100 as in Ma et al.).
        noise: standard deviation of Gaussian-noised copies of the clean fit inputs added as extra
            negatives (Ma et al.'s "noisy" samples), or ``None``.
    """

    name = "lid"
    defence_params = ["layers", "k", "reference", "reference_size", "noise", "batch_size"]
    DEFAULT_LAYERS = (INPUT, "layer1", "layer2", "layer3", "layer4", "dfeat")

    def __init__(self, model, layers: Sequence[str] | None = None, k: int = 20, reference: str = "train",
                 reference_size: int = 100, noise: float | None = None, **kwargs) -> None:
        super().__init__(model, **kwargs)
        if layers is None:
            layers = (INPUT, *model.stage_taps(), "dfeat") if hasattr(model, "stage_taps") else self.DEFAULT_LAYERS
        self.layers, self.k, self.reference, self.reference_size, self.noise = list(layers), k, reference, reference_size, noise

    def _check_params(self) -> None:
        resolve_layers(self.model, self.layers)
        if self.k < 1:
            raise ConfigError(f"LID k must be >= 1, got {self.k}")
        if self.reference not in REFERENCES:
            raise ConfigError(f"LID reference must be 'train' (a fixed clean Train batch), 'batch' (Ma et al.) or "
                              f"'batch_excluding_source' (Ma et al. without each input's own clean source), got {self.reference!r}")
        if self.reference_size <= self.k:
            raise ConfigError(f"LID reference batch ({self.reference_size}) must be larger than k ({self.k})")
        if self.noise is not None and not self.noise > 0:
            raise ConfigError(f"LID noise must be > 0 or None, got {self.noise}")

    def _classifier(self):
        return LogisticRegression(random_state=self.random_state, max_iter=1000)

    def _prepare(self, x, y, x_ref=None, y_ref=None, **kwargs) -> None:
        if self.reference != "train":
            return
        if x_ref is None:
            raise DataError("LID needs clean reference images: fit(x, y, x_ref=train_images)")
        x_ref = as_tensor(x_ref)
        if len(x_ref) < self.reference_size:
            raise DataError(f"LID needs {self.reference_size} clean reference images (reference_size), got {len(x_ref)}")
        g = torch.Generator().manual_seed(self.random_state)
        batch = x_ref[torch.randperm(len(x_ref), generator=g)[: self.reference_size]]
        self.reference_ = self._activations(batch)

    def _activations(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        parts: dict[str, list[torch.Tensor]] = {layer: [] for layer in self.layers}
        for _, acts, _ in iter_activations(self.model, x, self.layers, self.batch_size, self.device):
            for layer, a in acts.items():
                parts[layer].append(a.flatten(1))
        return {layer: torch.cat(a) for layer, a in parts.items()}

    def _fit_features(self, x: torch.Tensor, y: np.ndarray, x_clean=None, **kwargs) -> tuple[np.ndarray, np.ndarray]:
        features, labels = self._features(x, x_clean=x_clean), y
        if self.noise is not None:
            clean = x[torch.from_numpy(y == 0)] if self.reference == "train" else self._clean(x, x_clean)
            g = torch.Generator().manual_seed(self.random_state + 1)
            noisy = (clean + self.noise * torch.randn(clean.shape, generator=g)).clamp(0, 1)
            features = np.concatenate([features, self._features(noisy, x_clean=x_clean)])
            labels = np.concatenate([labels, np.zeros(len(noisy), dtype=labels.dtype)])
        return features, labels

    def _features(self, x: torch.Tensor, x_clean=None, **kwargs) -> np.ndarray:
        if self.reference != "train":
            return self._batch_features(x, self._clean(x, x_clean))
        out = np.empty((len(x), len(self.layers)))
        for rows, acts, _ in iter_activations(self.model, x, self.layers, self.batch_size, self.device):  # streamed
            for j, layer in enumerate(self.layers):
                out[rows, j] = lid_mle(acts[layer].flatten(1), self.reference_[layer], self.k).numpy()
        return out

    def _clean(self, x: torch.Tensor, x_clean) -> torch.Tensor:
        if x_clean is None:
            raise DataError("LID with reference='batch' measures each input against the clean images of its mini-batch: "
                            "pass x_clean=<clean images> to fit and detect")
        x_clean = as_tensor(x_clean)
        if len(x_clean) <= self.k:
            raise ConfigError(f"LID k = {self.k} needs more than {self.k} clean images per mini-batch, got {len(x_clean)} in all")
        if len(x) % len(x_clean) or x.shape[1:] != x_clean.shape[1:]:
            raise DataError(f"LID with reference='batch': the {len(x)} inputs must be blocks aligned row by row with the "
                            f"{len(x_clean)} clean images x_clean (e.g. clean then adversarial)")
        return x_clean

    def _batch_features(self, x: torch.Tensor, x_clean: torch.Tensor) -> np.ndarray:
        """Ma et al. (2018): per mini-batch, the clean images' activations are the reference; the
        block that *is* the clean images excludes each point itself, by index, and with
        ``batch_excluding_source`` every block excludes the clean image of its own row (its source)."""
        m = len(x_clean)
        blocks = [x[b * m : (b + 1) * m] for b in range(len(x) // m)]
        own = [torch.equal(block, x_clean) for block in blocks]
        out = np.empty((len(x), len(self.layers)))
        for rows in minibatches(m, self.reference_size, self.k):
            reference = self._activations(x_clean[rows])
            acts = [reference if own[b] else self._activations(block[rows]) for b, block in enumerate(blocks)]
            size = rows.stop - rows.start
            # all blocks in one distance product against the reference; the clean block excludes itself
            exclude = [own[b] or self.reference == "batch_excluding_source" for b in range(len(blocks))]
            self_index = torch.cat([torch.arange(size) if exclude[b] else torch.full((size,), -1) for b in range(len(blocks))])
            for j, layer in enumerate(self.layers):
                lid = lid_mle(torch.cat([a[layer] for a in acts]), reference[layer], self.k, self_index).numpy()
                for b in range(len(blocks)):
                    out[b * m + rows.start : b * m + rows.stop, j] = lid[b * size : (b + 1) * size]
        return out
