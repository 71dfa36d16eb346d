"""torchattacks backend: its FGSM / BIM / PGD; CW-L∞ is a PGD whose loss is medart's CW loss."""

from __future__ import annotations

import torch
import torchattacks

from medart.attacks.base import AttackBackend
from medart.attacks.losses import CWLoss


class _LossPGD(torchattacks.PGD):
    """torchattacks' PGD with another loss, used like its cross-entropy: ascended untargeted, its
    negative ascended when targeted (``CWLoss`` follows the same convention).

    Not torchattacks' ``CW`` (L2 only, margin wrong for negative logits — its issue #184) nor
    ``UPGD(loss="margin")`` (same margin, κ fixed at 0, and its gradient normalisation divides by
    zero once the clamped margin has no gradient).
    """

    def __init__(self, model, loss: torch.nn.Module, **kwargs) -> None:
        super().__init__(model, **kwargs)
        self.loss = loss

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        images = images.clone().detach().to(self.device)
        labels = labels.clone().detach().to(self.device)
        target = self.get_target_label(images, labels) if self.targeted else labels
        sign = -1.0 if self.targeted else 1.0
        adv = images.clone().detach()
        if self.random_start:
            adv = torch.clamp(adv + torch.empty_like(adv).uniform_(-self.eps, self.eps), 0, 1).detach()
        for _ in range(self.steps):
            adv.requires_grad_(True)
            grad = torch.autograd.grad(sign * self.loss(self.get_logits(adv), target), adv)[0]
            adv = adv.detach() + self.alpha * grad.sign()
            adv = torch.clamp(images + torch.clamp(adv - images, -self.eps, self.eps), 0, 1).detach()
        return adv


class TorchattacksBackend(AttackBackend):
    """torchattacks. Its attacks clamp inputs to [0, 1] silently and need labels: medart's input
    checks run first. A spec with a random start for fgsm/bim runs as torchattacks' PGD."""

    name = "torchattacks"

    def _attack(self) -> torchattacks.attack.Attack:
        spec = self.spec
        if spec.name == "cw" or self.loss is not None:  # medart's loss, run by torchattacks' PGD
            loss = CWLoss(spec.kappa, spec.targeted) if self.loss is None else self.loss
            attack = _LossPGD(self.model, loss, eps=spec.eps, alpha=spec.step_size,
                              steps=spec.steps, random_start=spec.random_start)
        elif spec.name == "fgsm" and not spec.random_start:
            attack = torchattacks.FGSM(self.model, eps=spec.eps)
        elif spec.name == "bim" and not spec.random_start:
            attack = torchattacks.BIM(self.model, eps=spec.eps, alpha=spec.step_size, steps=spec.steps)
        else:
            attack = torchattacks.PGD(self.model, eps=spec.eps, alpha=spec.step_size, steps=spec.steps,
                                      random_start=spec.random_start)
        if spec.targeted:
            attack.set_mode_targeted_by_label(quiet=True)
        return attack

    def _generate_batch(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self._attack()(x, y)

    def _draw_random_start(self, shape: torch.Size) -> None:
        # torchattacks' PGD (and _LossPGD): torch.empty_like(images).uniform_(-ε, ε) on the device
        torch.empty(shape, device=self.device).uniform_()
