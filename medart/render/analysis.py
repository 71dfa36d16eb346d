"""The analysis figures (the paper's Figs. 4 to 11) and the table of the numbers behind them.

Images come as array-likes ``(n, C, H, W)`` in [0, 1] (CPU tensors do), maps as ``(n, h, w)``
arrays; each figure is a :class:`~matplotlib.figure.Figure` made without pyplot.
"""

from __future__ import annotations

import textwrap
from typing import Mapping, Sequence

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from medart.numbers import pct



def grey(image) -> np.ndarray:
    """A ``(C, H, W)`` image in [0, 1] as ``(H, W)`` for display (mean over channels; the datasets
    repeat grey-scale to three channels)."""
    array = np.asarray(image)
    return array.mean(axis=0) if array.ndim == 3 else array


def image_grid(rows: int, cols: int, cell: float = 2.0) -> tuple[Figure, np.ndarray]:
    """A figure of ``rows`` × ``cols`` image axes without ticks."""
    fig = Figure(figsize=(cols * cell, rows * cell + 0.6))
    axes = fig.subplots(rows, cols, squeeze=False)
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


def suptitle(fig: Figure, text: str) -> None:
    """``text`` as the figure's title, wrapped to its width (titles carry the run's summary numbers)."""
    fig.suptitle(textwrap.fill(text, max(40, int(fig.get_figwidth() * 14))), fontsize=9)


def eps_curves_figure(curves: Mapping[str, Sequence], title: str = "accuracy under attack") -> Figure:
    """One panel per attack, one line per curve (a model or dataset): accuracy (%) against ε in
    grey levels (ε × 255), starting at the clean accuracy at ε = 0. ``curves``: label → sweep rows
    (``attack``, ``eps``, ``clean_acc``, ``adv_acc`` attributes, as ``SweepRow`` has)."""
    attacks = list(dict.fromkeys(r.attack for rows in curves.values() for r in rows))
    fig = Figure(figsize=(4.2 * len(attacks), 3.8))
    axes = fig.subplots(1, len(attacks), squeeze=False, sharey=True)
    for ax, attack in zip(axes[0], attacks):
        for label, rows in curves.items():
            mine = sorted((r.eps * 255, r.adv_acc * 100) for r in rows if r.attack == attack)
            if mine:
                ax.plot(*zip(*([(0.0, rows[0].clean_acc * 100)] + mine)), marker="o", label=label)
        ax.set_title(attack.upper())
        ax.set_xlabel("ε (×1/255)")
        ax.set_ylim(-2, 102)
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("accuracy (%)")
    axes[0, -1].legend(fontsize=7)
    suptitle(fig, title)
    fig.tight_layout()
    return fig


def saliency_figure(x, maps: np.ndarray, fractions: np.ndarray, share: float, title: str) -> Figure:
    """Images ``x`` ``(n, C, H, W)`` above their saliency maps ``(n, H, W)``, each titled with its
    high-saliency fraction ``(n,)``."""
    fig, axes = image_grid(2, len(x))
    for k in range(len(x)):
        show_image(axes[0, k], x[k], f"image {k}")
        show_map(axes[1, k], maps[k], f"≥{share:g}·max: {fractions[k] * 100:.1f}% of pixels", cmap="hot", vmin=0)
    axes[0, 0].set_ylabel("input")
    axes[1, 0].set_ylabel("|∂ loss / ∂x|")
    suptitle(fig, title)
    fig.tight_layout()
    return fig


def stages_figure(x, clean: Mapping[str, np.ndarray], adversarial: Mapping[str, np.ndarray],
                  change: Mapping[str, np.ndarray], title: str) -> Figure:
    """Per image (rows): the input, then for each layer the clean and adversarial channel-mean maps
    on one colour scale, titled with that image's relative change. ``clean``/``adversarial``: layer
    → ``(n, h, w)``; ``change``: layer → ``(n,)``."""
    layers = list(clean)
    fig, axes = image_grid(len(x), 1 + 2 * len(layers), cell=2.1)
    for k in range(len(x)):
        show_image(axes[k, 0], x[k], f"image {k}")
        for i, layer in enumerate(layers):
            low = min(clean[layer][k].min(), adversarial[layer][k].min())
            high = max(clean[layer][k].max(), adversarial[layer][k].max())
            show_map(axes[k, 1 + 2 * i], clean[layer][k], f"{layer} clean", "viridis", low, high)
            show_map(axes[k, 2 + 2 * i], adversarial[layer][k], f"{layer} adv (Δ {change[layer][k] * 100:.1f}%)",
                     "viridis", low, high)
    suptitle(fig, title)
    fig.tight_layout()
    return fig


def landscape_figure(grid: np.ndarray, eps: np.ndarray, labels: Sequence[str], title: str) -> Figure:
    """A 3-D surface per image (the paper's Fig. 7 view): ``grid`` ``(n, len(eps), len(eps))`` over
    ε1, ε2 ∈ ``eps``, axes in grey levels (ε × 255), one ``labels`` entry per image for the panel titles."""
    fig = Figure(figsize=(4.2 * len(grid), 4.2))
    e1, e2 = np.meshgrid(eps * 255, eps * 255, indexing="ij")
    for k, surface in enumerate(grid):
        ax = fig.add_subplot(1, len(grid), k + 1, projection="3d")
        ax.plot_surface(e1, e2, surface, cmap="coolwarm", linewidth=0, antialiased=True)
        ax.set_xlabel("ε1 along g (/255)", fontsize=8)
        ax.set_ylabel("ε2 along g⊥ (/255)", fontsize=8)
        ax.set_zlabel("loss (nats)", fontsize=8)
        ax.set_title(labels[k], fontsize=8)
        ax.tick_params(labelsize=7)
    suptitle(fig, title)
    fig.subplots_adjust(left=0.02, right=0.95, top=0.85, bottom=0.05, wspace=0.25)
    return fig


def embedding_figure(coords: Mapping[str, tuple[np.ndarray, np.ndarray]], labels: np.ndarray, classes: Sequence[str],
                     title: str) -> Figure:
    """One panel per attack: clean points (dots) and adversarial points (crosses) coloured by true
    class. ``coords``: attack → (clean ``(N, 2)``, adversarial ``(N, 2)``); ``labels``: ``(N,)``."""
    fig = Figure(figsize=(4.4 * len(coords), 4.2))
    axes = fig.subplots(1, len(coords), squeeze=False)
    colours = matplotlib.colormaps["tab10"]
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


def _overlay(ax, image, cam: np.ndarray, title: str) -> None:
    ax.imshow(grey(image), cmap="gray", vmin=0, vmax=1)
    ax.imshow(cam, cmap="jet", alpha=0.45, vmin=0, vmax=1)
    ax.set_title(title, fontsize=8)


def gradcam_figure(x, x_adv, clean: np.ndarray, adversarial: np.ndarray, overlap: np.ndarray,
                   captions: Sequence[tuple[str, str]], title: str) -> Figure:
    """Per image (rows): the clean image and its Grad-CAM overlay, the adversarial image and its
    overlay; ``captions``: (clean, adversarial) prediction labels per image; ``overlap``: ``(n,)``."""
    fig, axes = image_grid(len(x), 4, cell=2.2)
    for k in range(len(x)):
        show_image(axes[k, 0], x[k], f"clean: {captions[k][0]}")
        _overlay(axes[k, 1], x[k], clean[k], "Grad-CAM clean")
        show_image(axes[k, 2], x_adv[k], f"adversarial: {captions[k][1]}")
        _overlay(axes[k, 3], x_adv[k], adversarial[k], f"Grad-CAM adv (IoU {overlap[k]:.2f})")
    suptitle(fig, title)
    fig.tight_layout()
    return fig


def analysis_table(summary: Mapping[str, float], attacks: Sequence[str], share: float, radius: float, top: float) -> str:
    """Markdown: the analysis numbers (``summary``: metric name → value, fractions in [0, 1]) with
    what each means; fractions in %, the unit in each quantity's name."""
    rows = [("clean accuracy", "clean_acc", "%", "on the analysed images"),
            ("clean balanced accuracy", "clean_balanced_acc", "%", "mean recall over classes; near 1/K = degenerate model")]
    rows += [(f"accuracy under {a.upper()}", f"adv_acc.{a}", "%", "") for a in attacks]
    rows.append((f"saliency: pixels ≥ {share:g}·max", "saliency_high_fraction", "%",
                 "mean share of high-gradient pixels per image; large = large high-attention regions"))
    layers = dict.fromkeys(k.removeprefix("stage_change.").rsplit(".", 1)[0] for k in summary if k.startswith("stage_change."))
    for a in attacks:
        rows += [(f"relative change {layer} ({a.upper()})", f"stage_change.{layer}.{a}", "%", "‖A(x_adv) − A(x)‖ / ‖A(x)‖")
                 for layer in layers]
    rows += [
        ("clean loss", "clean_loss", "nats", "cross-entropy at the landscape's origin"),
        (f"sharpness at r = {radius * 255:.3g}/255", "sharpness", "nats", "loss increase of one signed-gradient step of size r"),
        ("surrogate cosine", "surrogate_cosine", "", "cos(sign ∇ model, sign ∇ surrogates) before orthogonalising"),
    ]
    rows += [(f"Grad-CAM IoU top-{top * 100:g}% ({a.upper()})", f"gradcam_iou.{a}", "", "1 = same attention, ~0.11 = random")
             for a in attacks]
    lines = ["| quantity | value | meaning |", "|---|---|---|"]
    for name, key, unit, meaning in rows:
        if key in summary:
            value = pct(summary[key]) if unit == "%" else f"{summary[key]:.2f}"
            lines.append(f"| {name}{f' ({unit})' if unit else ''} | {value} | {meaning} |")
    return "\n".join(lines) + "\n"
