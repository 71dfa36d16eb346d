"""torchattacks backend: its FGSM / BIM / PGD (CW-L∞ is a PGD whose loss is medart's CW loss), and
AutoAttack's parts from its APGD, APGDT, FAB and Square."""

from __future__ import annotations

import torch
import torchattacks

from medart.attacks.base import AttackBackend, max_targets
from medart.attacks.losses import CWLoss, dlr_objective


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


class _DLRAPGD(torchattacks.APGD):
    """torchattacks' APGD on medart's DLR objective: torchattacks' own formula for K ≥ 3, and the
    margin for K = 2, where torchattacks' (like the reference code) indexes a third logit that
    does not exist."""

    def dlr_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return dlr_objective(x, y)


class TorchattacksBackend(AttackBackend):
    """torchattacks. Its attacks clamp inputs to [0, 1] silently and need labels: medart's input
    checks run first. A spec with a random start for fgsm/bim runs as torchattacks' PGD.

    torchattacks' own ``AutoAttack(version="standard")`` is not used: it runs APGD and FAB with 10
    steps (the reference: 100), Square with a rescaled schedule, APGD-T even for fewer than four
    classes (an index error), and a time-based seed unless given one; medart's
    :class:`~medart.attacks.autoattack.AutoAttackSequence` runs the standard version from the
    parts below, the same sequence as for ART.
    """

    name = "torchattacks"
    autoattack_parts = ("apgd-ce", "apgd-dlr", "fab", "square")

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

    def _autoattack_part(self) -> torchattacks.attack.Attack:
        """APGD-CE, APGD-DLR (APGD-T for K ≥ 4), FAB-T or Square at the spec's steps and restarts,
        seeded with the seed :meth:`generate` gave this batch (each reseeds torch itself)."""
        spec, classes = self.spec, self.num_classes
        common = dict(norm="Linf", eps=spec.eps, n_restarts=spec.restarts, seed=torch.initial_seed())
        if spec.name == "apgd-ce":
            return torchattacks.APGD(self.model, steps=spec.steps, loss="ce", **common)
        if spec.name == "square":  # p schedule rescaled to the query budget, as ART's always is
            return torchattacks.Square(self.model, n_queries=spec.steps, p_init=0.8, loss="margin", resc_schedule=True,
                                       **common)
        if spec.name == "apgd-dlr" and classes < 4:
            return _DLRAPGD(self.model, steps=spec.steps, loss="dlr", **common)
        if spec.name == "apgd-dlr":
            attack = torchattacks.APGDT(self.model, steps=spec.steps, n_classes=classes, **common)
        else:
            attack = torchattacks.FAB(self.model, steps=spec.steps, multi_targeted=True, n_classes=classes, **common)
        attack.n_target_classes = max_targets(classes)
        return attack

    def _generate_batch(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (self._autoattack_part() if self.spec.autoattack_family else self._attack())(x, y)

    def _draw_random_start(self, shape: torch.Size) -> None:
        # torchattacks' PGD (and _LossPGD): torch.empty_like(images).uniform_(-ε, ε) on the device
        torch.empty(shape, device=self.device).uniform_()
