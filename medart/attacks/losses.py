"""Losses medart supplies to both backends, so an attack means the same thing in each: the
Carlini–Wagner margin (CW-L∞), the detector-aware loss of the adaptive attacks, DLR and the
feature-matching loss."""

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


class DetectorAwareLoss(nn.Module):
    """Misclassify *and* look clean to a detector: the loss an untargeted attack ASCENDS on the
    ``(N, 2K)`` outputs of :class:`~medart.attacks.adaptive.DetectorHead` (K logits, then the
    detector's logit for each class the input could be assigned to):

        −( max(z_y − max_{j≠y} z_j, −κ) + λ · d_t ),   t = argmax_{j≠y} z_j

    summed over the batch. The CW margin (not cross-entropy) stops pulling once the input is
    misclassified by κ, so the detector term then has the gradient to itself; cross-entropy would
    keep pushing the features away from every clean image, which is what a density detector
    sees. ``d_t`` is the detector's logit for the class the attack moves towards, the class the
    detector will compare the input with once it is misclassified.
    """

    def __init__(self, kappa: float = 0.0, lam: float = 1.0) -> None:
        super().__init__()
        self.kappa, self.lam = kappa, lam

    def forward(self, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if labels.ndim == 2:  # one-hot (ART passes labels this way to custom losses)
            labels = labels.argmax(dim=1)
        k = outputs.shape[1] // 2
        logits, detector = outputs[:, :k], outputs[:, k:]
        towards = logits.masked_fill(nn.functional.one_hot(labels, k).bool(), float("-inf")).argmax(dim=1)
        objective = cw_objective(logits, labels, self.kappa) + self.lam * detector.gather(1, towards[:, None]).squeeze(1)
        return -objective.sum()


def dlr_objective(logits: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
    """Per-example Difference-of-Logits-Ratio loss the attacker ASCENDS, shape ``(N,)`` (Croce &
    Hein 2020, eqs. 6–7; z sorted z_π1 ≥ z_π2 ≥ …):

    - untargeted, K ≥ 3: ``−(z_y − max_{j≠y} z_j) / (z_π1 − z_π3)``;
    - targeted at ``targets`` t, K ≥ 4: ``−(z_y − z_t) / (z_π1 − (z_π3 + z_π4) / 2)``;
    - K = 2: ``−(z_y − z_other)``, the margin alone. DLR's denominator needs a third logit and is
      undefined for two classes (fra31/auto-attack and both libraries fail with an index error).
      It only makes the loss scale-invariant, and an L∞ step follows sign(∇), so the margin keeps
      DLR's point: unlike cross-entropy it does not saturate when the softmax is near one-hot.

    The 1e-12 in the denominators is the reference implementation's.
    """
    ranked = logits.sort(dim=1).values
    own = logits.gather(1, labels[:, None]).squeeze(1)
    if targets is not None:
        if logits.shape[1] < 4:
            raise ValueError(f"the targeted DLR loss needs >= 4 classes, got {logits.shape[1]}")
        other = logits.gather(1, targets[:, None]).squeeze(1)
        return -(own - other) / (ranked[:, -1] - 0.5 * (ranked[:, -3] + ranked[:, -4]) + 1e-12)
    rival = logits.masked_fill(nn.functional.one_hot(labels, logits.shape[1]).bool(), float("-inf")).amax(dim=1)
    if logits.shape[1] == 2:
        return -(own - rival)
    return -(own - rival) / (ranked[:, -1] - ranked[:, -3] + 1e-12)


class DLRLoss(nn.Module):
    """:func:`dlr_objective` as an ART estimator loss (ART sets ``reduction`` to ``"none"`` for the
    per-image losses that steer APGD's step size).

    ``labels`` are class indices ``(N,)``, or ``(N, K)`` rows: one-hot true classes, plus 0.5 at
    the target class for the targeted loss — the one way to hand ART's APGD a target per image
    while its own sample selection (argmax of the labels) still sees the true class.
    """

    def __init__(self, reduction: str = "sum") -> None:
        super().__init__()
        self.reduction = reduction

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        targets = None
        if labels.ndim == 2:
            true = labels.argmax(dim=1)
            rest = labels.masked_fill(nn.functional.one_hot(true, labels.shape[1]).bool(), 0.0)
            targets = rest.argmax(dim=1) if bool((rest > 0).any()) else None
            labels = true
        loss = dlr_objective(logits, labels.long(), targets)
        return {"none": loss, "mean": loss.mean(), "sum": loss.sum()}[self.reduction]


def encode_targets(labels: torch.Tensor, targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``(N, K)`` float rows for :class:`DLRLoss`: 1 at the true class, 0.5 at the target."""
    return nn.functional.one_hot(labels, num_classes).float() + 0.5 * nn.functional.one_hot(targets, num_classes).float()


class FeatureMatchingLoss(nn.Module):
    """The feature-matching loss (Sabour et al. 2016) as a loss an attack ASCENDS:
    ``−Σ_i ‖f(x_i) − g_i‖²`` over the batch, from features ``(N, D)`` and the guide images'
    features ``g`` ``(N, D)`` (passed where the other losses take labels)."""

    def forward(self, features: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        return -(features - guide).square().sum()
