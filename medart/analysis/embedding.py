"""t-SNE of the penultimate features, clean vs adversarial (the paper's Fig. 9).

Ma et al. see adversarial medical images form their own clusters in the deep features, which is
why simple detectors find them; the map shows whether that holds for a given model and attack.
"""

from __future__ import annotations

from typing import Mapping

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


def embedding_figure(coords: Mapping[str, tuple[np.ndarray, np.ndarray]], labels: np.ndarray, classes: list[str], title: str):
    """One panel per attack: clean points (dots) and adversarial points (crosses) coloured by true
    class. ``coords``: attack → (clean ``(N, 2)``, adversarial ``(N, 2)``); ``labels``: ``(N,)``."""
    from medart.analysis.figures import plt, suptitle

    fig, axes = plt.subplots(1, len(coords), figsize=(4.4 * len(coords), 4.2), squeeze=False)
    colours = plt.get_cmap("tab10")
    for ax, (attack, (clean, adv)) in zip(axes[0], coords.items()):
        for c, name in enumerate(classes):
            rows = labels == c
            ax.scatter(*clean[rows].T, s=14, color=colours(c), alpha=0.7, label=f"clean {name}")
            ax.scatter(*adv[rows].T, s=22, color=colours(c), marker="x", label=f"{attack.upper()} {name}")
        ax.set_title(attack.upper(), fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.legend(fontsize=7, loc="best")
    suptitle(fig, title)
    fig.tight_layout()
    return fig
