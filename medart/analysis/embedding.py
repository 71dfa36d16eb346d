"""t-SNE of the penultimate features, clean vs adversarial (the paper's Fig. 9).

Ma et al. see adversarial medical images form their own clusters in the deep features, which is
why simple detectors find them; the map shows whether that holds for a given model and attack.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.manifold import TSNE
from torch import nn

from medart.detectors.activations import activations


def penultimate_features(model: nn.Module, x: torch.Tensor, layer: str = "dfeat", batch_size: int = 100,
                         device: str = "auto") -> np.ndarray:
    """The ``layer`` features (default the 128-d penultimate ``dfeat``), float32 ``(N, D)``."""
    return activations(model, x, [layer], batch_size, device)[0][layer].numpy()


def tsne_embedding(clean: np.ndarray, adversarial: np.ndarray, seed: int = 0, perplexity: float = 30.0) -> tuple[np.ndarray, np.ndarray]:
    """A joint 2-D t-SNE (scikit-learn) of clean ``(N, D)`` and adversarial ``(M, D)`` features;
    returns their coordinates ``(N, 2)`` and ``(M, 2)`` (arbitrary units). Perplexity is lowered to
    (N + M − 1) / 3 for small sets, which t-SNE needs. Up to 1000 points use exact t-SNE: the
    Barnes–Hut approximation pays off only for larger sets (and is several times slower below)."""
    points = np.concatenate([clean, adversarial]).astype(np.float64)
    perplexity = min(perplexity, max(1.0, (len(points) - 1) / 3))
    method = "exact" if len(points) <= 1000 else "barnes_hut"
    xy = TSNE(n_components=2, perplexity=perplexity, init="pca", method=method, random_state=seed).fit_transform(points)
    return xy[: len(clean)], xy[len(clean):]
