"""Matplotlib helpers shared by the analysis figures (headless backend, image panels)."""

from __future__ import annotations

import textwrap

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402


def grey(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """A ``(C, H, W)`` image in [0, 1] as ``(H, W)`` for display (mean over channels; the datasets
    repeat grey-scale to three channels)."""
    array = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    return array.mean(axis=0) if array.ndim == 3 else array


def image_grid(rows: int, cols: int, cell: float = 2.0):
    """A figure of ``rows`` × ``cols`` image axes without ticks."""
    fig, axes = plt.subplots(rows, cols, figsize=(cols * cell, rows * cell + 0.6), squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    return fig, axes


def show_image(ax, image, title: str | None = None) -> None:
    ax.imshow(grey(image), cmap="gray", vmin=0, vmax=1)
    if title:
        ax.set_title(title, fontsize=8)


def show_map(ax, values: np.ndarray, title: str | None = None, cmap: str = "inferno", vmin=None, vmax=None):
    """A 2-D map (saliency, activation) with a colour bar."""
    image = ax.imshow(values, cmap=cmap, vmin=vmin, vmax=vmax)
    # "%.2g" ticks: no shared offset text ("1e-5") drawn over the panel title
    ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.03, format="%.2g").ax.tick_params(labelsize=7)
    if title:
        ax.set_title(title, fontsize=8)
    return image


def suptitle(fig, text: str) -> None:
    """``text`` as the figure's title, wrapped to its width (titles carry the run's summary numbers)."""
    fig.suptitle(textwrap.fill(text, max(40, int(fig.get_figwidth() * 14))), fontsize=9)
