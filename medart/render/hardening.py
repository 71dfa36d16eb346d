"""The curves of one robust-training run."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator


def hardening_figure(before: dict[str, float], history: list[dict[str, float]], best_epoch: int, standard_seconds: float,
                     eps_label: str) -> Figure:
    """Validation accuracy and balanced accuracy, clean and under PGD at the training ε, of the
    model as given (epoch 0, ``before``) and after each epoch (``history``) (left), and each
    epoch's training wall time against one standard epoch's (right); the kept epoch marked."""
    epochs = np.arange(1, len(history) + 1)
    fig = Figure(figsize=(10, 3.8))
    ax_acc, ax_time = fig.subplots(1, 2)
    curves = (("val_acc", "-", "clean"), ("val_balanced_acc", "-.", "clean, balanced"), ("val_pgd_acc", "--", f"PGD {eps_label}"),
              ("val_pgd_balanced_acc", ":", f"PGD {eps_label}, balanced"))
    for key, style, label in curves:
        ax_acc.plot(np.arange(len(history) + 1), [before[key]] + [h[key] for h in history], style, label=label)
    ax_acc.set_ylabel("validation accuracy")
    ax_time.plot(epochs, [h["epoch_seconds"] for h in history], "o-", label="robust epoch")
    ax_time.axhline(standard_seconds, color="black", ls="--", lw=1, label="standard epoch")
    ax_time.set_ylabel("seconds")
    ax_time.set_ylim(bottom=0)
    for ax, title in ((ax_acc, "accuracy"), (ax_time, "wall time per epoch")):
        ax.axvline(best_epoch, color="grey", lw=0.8)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(title)
        ax.legend()
    fig.tight_layout()
    return fig
