"""The training curves of one run."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure


def training_figure(history: list[dict[str, float]], best_epoch: int) -> Figure:
    """Loss (left) and accuracy, balanced accuracy and AUC (right) per epoch, train and validation,
    the best epoch marked."""
    epochs = np.arange(1, len(history) + 1)
    fig = Figure(figsize=(10, 3.8))
    ax_loss, ax_acc = fig.subplots(1, 2)
    for key, style in (("train_loss", "-"), ("val_loss", "--")):
        ax_loss.plot(epochs, [h[key] for h in history], style, label=key)
    for key, style in (("train_acc", "-"), ("val_acc", "--"), ("val_balanced_acc", "-."), ("val_auc", ":")):
        ax_acc.plot(epochs, [h[key] for h in history], style, label=key)
    for ax, title in ((ax_loss, "loss"), (ax_acc, "accuracy / AUC")):
        ax.axvline(best_epoch, color="grey", lw=0.8)
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.legend()
    fig.tight_layout()
    return fig
