"""torchattacks backend: its FGSM / BIM / PGD (CW-L∞ is a PGD whose loss is medart's CW loss), and
AutoAttack's parts from its APGD, APGDT, FAB and Square."""

from __future__ import annotations

import torch
import torchattacks

from medart.attacks.base import AttackBackend, max_targets
from medart.attacks.losses import CWLoss, dlr_objective
from medart.attacks.specs import declared


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
    """torchattacks; each attack is a builder below (``@TorchattacksBackend.builds``). Its attacks
    clamp inputs to [0, 1] silently and need labels: medart's input checks run first. A spec with
    a random start for fgsm/bim runs as torchattacks' PGD.

    torchattacks' own ``AutoAttack(version="standard")`` is not used: it runs APGD and FAB with 10
    steps (the reference: 100), Square with a rescaled schedule, APGD-T even for fewer than four
    classes (an index error), and a time-based seed unless given one; medart's
    :class:`~medart.attacks.autoattack.AutoAttackSequence` runs the standard version from the
    parts below, the same sequence as for ART.
    """

    name = "torchattacks"

    def run(self, attack: torchattacks.attack.Attack, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``attack``'s examples for ``x``, aimed at ``y`` as targets when the spec is targeted."""
        if self.spec.targeted:
            attack.set_mode_targeted_by_label(quiet=True)
        return attack(x, y)

    def _draw_random_start(self, shape: torch.Size) -> None:
        # torchattacks' PGD (and _LossPGD): torch.empty_like(images).uniform_(-ε, ε) on the device
        torch.empty(shape, device=self.device).uniform_()


def _projected(run: TorchattacksBackend, x: torch.Tensor, y: torch.Tensor, loss: torch.nn.Module | None = None) -> torch.Tensor:
    """torchattacks' PGD at the spec's budget; on the caller's loss, else on ``loss``, medart's
    :class:`_LossPGD`."""
    spec, loss = run.spec, run.loss if run.loss is not None else loss
    if loss is not None:
        attack = _LossPGD(run.model, loss, eps=spec.eps, alpha=spec.step_size, steps=spec.steps,
                          random_start=spec.random_start)
    else:
        attack = torchattacks.PGD(run.model, eps=spec.eps, alpha=spec.step_size, steps=spec.steps,
                                  random_start=spec.random_start)
    return run.run(attack, x, y)


@TorchattacksBackend.builds("fgsm")
def _fgsm(run: TorchattacksBackend, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if run.spec.random_start or run.loss is not None:
        return _projected(run, x, y)
    return run.run(torchattacks.FGSM(run.model, eps=run.spec.eps), x, y)


@TorchattacksBackend.builds("bim")
def _bim(run: TorchattacksBackend, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    spec = run.spec
    if spec.random_start or run.loss is not None:
        return _projected(run, x, y)
    return run.run(torchattacks.BIM(run.model, eps=spec.eps, alpha=spec.step_size, steps=spec.steps), x, y)


@TorchattacksBackend.builds("pgd")
def _pgd(run: TorchattacksBackend, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return _projected(run, x, y)


@TorchattacksBackend.builds("cw")
def _cw(run: TorchattacksBackend, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return _projected(run, x, y, CWLoss(run.spec.kappa, run.spec.targeted))


def _part_settings(run: TorchattacksBackend) -> dict:
    """What AutoAttack's parts share: L∞ at ε, the spec's restarts, seeded with the seed
    :meth:`~medart.attacks.base.AttackBackend.generate` gave this batch (each reseeds torch itself)."""
    return dict(norm="Linf", eps=run.spec.eps, n_restarts=run.spec.restarts, seed=torch.initial_seed())


@TorchattacksBackend.builds("apgd-ce")
def _apgd_ce(run: TorchattacksBackend, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return run.run(torchattacks.APGD(run.model, steps=run.spec.steps, loss="ce", **_part_settings(run)), x, y)


@TorchattacksBackend.builds("apgd-dlr")
def _apgd_dlr(run: TorchattacksBackend, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """APGD-T (``APGDT``) for K ≥ 4 classes; else APGD on medart's DLR objective."""
    classes = run.num_classes
    if classes < 4:
        return run.run(_DLRAPGD(run.model, steps=run.spec.steps, loss="dlr", **_part_settings(run)), x, y)
    attack = torchattacks.APGDT(run.model, steps=run.spec.steps, n_classes=classes, **_part_settings(run))
    attack.n_target_classes = max_targets(classes)
    return run.run(attack, x, y)


@TorchattacksBackend.builds("fab")
def _fab(run: TorchattacksBackend, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """FAB-T at the min(9, K−1) likeliest wrong classes."""
    classes = run.num_classes
    attack = torchattacks.FAB(run.model, steps=run.spec.steps, multi_targeted=True, n_classes=classes, **_part_settings(run))
    attack.n_target_classes = max_targets(classes)
    return run.run(attack, x, y)


@TorchattacksBackend.builds("square")
def _square(run: TorchattacksBackend, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Square on the margin, its p schedule rescaled to the query budget (as ART's always is)."""
    spec = run.spec
    attack = torchattacks.Square(run.model, n_queries=spec.steps, p_init=declared(spec.name).settings["p_init"],
                                 loss="margin", resc_schedule=True, **_part_settings(run))
    return run.run(attack, x, y)
