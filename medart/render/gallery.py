"""What an attack does to an image, for people: a gallery of clean images, their perturbations
(amplified) and their adversarial versions, each with the model's answer and its confidence.

Images come as array-likes ``(k, C, H, W)`` in [0, 1] (CPU tensors do); the figure is a
:class:`~matplotlib.figure.Figure` made without pyplot.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from matplotlib.figure import Figure

from medart.numbers import eps_label

CELL = 2.2  # inches per image, its two title lines included
TITLE = 1.0  # inches above the images for the figure's title


def _picture(image: np.ndarray) -> np.ndarray:
    """``(C, H, W)`` as imshow takes it: ``(H, W)`` for one channel, ``(H, W, 3)`` for three (so a
    perturbation that differs between the channels shows, in colour)."""
    return image[0] if image.shape[0] == 1 else np.moveaxis(image, 0, -1)


def amplification(delta: np.ndarray) -> tuple[float, float]:
    """``(scale, span)`` to show perturbations ``delta`` (any shape, pixels): ``span`` their largest
    |value| (the pixel change that reaches black or white), ``scale`` the whole factor that maps
    ±span onto ±0.5 around mid-grey. No perturbation at all: span 0, scale 1."""
    span = float(np.abs(delta).max()) if delta.size else 0.0
    return (max(1.0, float(round(0.5 / span))) if span > 0 else 1.0), span


def _answer(classes: Sequence[str], probs: np.ndarray) -> str:
    return f"{classes[int(probs.argmax())]} {probs.max() * 100:.1f} %"


def gallery_figure(x, x_adv, labels: np.ndarray, probs_clean: np.ndarray, probs_adv: np.ndarray,
                   classes: Sequence[str], title: str, names: Sequence[str] = ()) -> Figure:
    """One row per image, three columns: the clean image titled with its true class and the model's
    answer (predicted class, its probability in %), the perturbation ``x_adv − x`` amplified around
    mid-grey with the factor and the span written on it (``×64, ±2/255``: one scale for every row),
    and the adversarial image with the model's answer on it.

    ``x``, ``x_adv``: ``(k, C, H, W)``; ``labels``: ``(k,)`` class indices into ``classes``;
    ``probs_clean``, ``probs_adv``: ``(k, K)`` the model's probabilities; ``names``: a label per
    row (e.g. the image's index in its split)."""
    x, x_adv = np.asarray(x, dtype=np.float32), np.asarray(x_adv, dtype=np.float32)
    delta = x_adv - x
    scale, span = amplification(delta)
    fig = Figure(figsize=(3 * CELL, len(x) * CELL + TITLE))
    axes = fig.subplots(len(x), 3, squeeze=False)
    for k in range(len(x)):
        truth, before, after = classes[int(labels[k])], probs_clean[k], probs_adv[k]
        fooled = before.argmax() == labels[k] != after.argmax()
        axes[k, 0].imshow(_picture(x[k]), cmap="gray", vmin=0, vmax=1)
        axes[k, 0].set_title(f"clean, true: {truth}\npredicted: {_answer(classes, before)}", fontsize=8)
        axes[k, 1].imshow(_picture(np.clip(0.5 + scale * delta[k], 0, 1)), cmap="gray", vmin=0, vmax=1)
        axes[k, 1].set_title(f"perturbation ×{scale:.0f}, ±{eps_label(span)}\nthis image's L∞: "
                             f"{eps_label(float(np.abs(delta[k]).max()))}", fontsize=8)
        axes[k, 2].imshow(_picture(x_adv[k]), cmap="gray", vmin=0, vmax=1)
        axes[k, 2].set_title(f"adversarial{' (fooled)' if fooled else ''}\npredicted: {_answer(classes, after)}",
                             fontsize=8, color="firebrick" if fooled else "black")
        if names:
            axes[k, 0].set_ylabel(names[k], fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title, fontsize=9, y=1 - 0.1 / fig.get_figheight())
    _place(fig, len(x))
    return fig


def _place(fig: Figure, rows: int, gap: float = 0.5, side: float = 0.3) -> None:
    """Fixed margins in inches (``gap`` between rows for the titles, ``side`` on the left for the
    row labels): tight_layout would draw the figure once more only to measure it."""
    width, height = fig.get_size_inches()
    top, bottom = 1 - TITLE / height, 0.05 / height
    row = (height * (top - bottom) - (rows - 1) * gap) / rows
    col = (width - side - 0.05 - 2 * 0.1) / 3
    fig.subplots_adjust(left=side / width, right=1 - 0.05 / width, top=top, bottom=bottom, hspace=gap / row,
                        wspace=0.1 / col)
