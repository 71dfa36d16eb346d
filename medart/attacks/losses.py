"""The Carlini–Wagner margin loss, shared by both backends so CW-L∞ means the same thing in each."""

from __future__ import annotations

import torch
from torch import nn


def cw_objective(logits: torch.Tensor, labels: torch.Tensor, kappa: float = 0.0, targeted: bool = False) -> torch.Tensor:
    """Per-example CW objective the attacker MINIMISES, shape ``(N,)``.

    Untargeted (``labels`` = true classes y): ``max(z_y − max_{j≠y} z_j, −κ)``; it falls below 0
    once some other class wins. Targeted (``labels`` = targets t): ``max(max_{j≠t} z_j − z_t, −κ)``.
    Written with a mask rather than torchattacks' ``CW`` margin, which is wrong for negative
    logits (torchattacks issue #184).
    """
    if labels.ndim == 2:  # one-hot (ART passes labels this way to custom losses)
        labels = labels.argmax(dim=1)
    own = logits.gather(1, labels[:, None]).squeeze(1)
    others = logits.masked_fill(nn.functional.one_hot(labels, logits.shape[1]).bool(), float("-inf")).amax(dim=1)
    margin = others - own if targeted else own - others
    return torch.clamp(margin, min=-kappa)


class CWLoss(nn.Module):
    """The CW objective as a loss an attack ASCENDS (untargeted) or DESCENDS (targeted), as ART and
    torchattacks do with cross-entropy: ``−objective`` untargeted, ``+objective`` targeted, summed."""

    def __init__(self, kappa: float = 0.0, targeted: bool = False) -> None:
        super().__init__()
        self.kappa, self.targeted = kappa, targeted

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        objective = cw_objective(logits, labels, self.kappa, self.targeted)
        return (objective if self.targeted else -objective).sum()
