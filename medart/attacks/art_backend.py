"""ART backend: ``PyTorchClassifier`` with ART's FGSM / BIM / PGD (CW-L∞ is ART's PGD on the CW
loss), and AutoAttack's parts from ART's ``AutoProjectedGradientDescent`` and ``SquareAttack``."""

from __future__ import annotations

import numpy as np
import torch
from art.attacks.evasion import (AutoProjectedGradientDescent, BasicIterativeMethod, FastGradientMethod,
                                 ProjectedGradientDescent, SquareAttack)
from art.estimators.classification import PyTorchClassifier

from medart.attacks.base import AttackBackend, max_targets
from medart.attacks.losses import CWLoss, DLRLoss, encode_targets
from medart.errors import ConfigError


class ARTBackend(AttackBackend):
    """Adversarial Robustness Toolbox.

    ART traps handled here: ``clip_values=(0, 1)`` and ``preprocessing=None`` (normalisation is
    inside the model); inputs are float32 (ART raises on float64); ``y`` is always passed (else ART
    spends a prediction pass to make labels); weights are frozen by the caller. BIM never has a
    random start in ART, so a spec with one runs as ART's PGD. ART's ``CarliniLInfMethod`` is a
    different algorithm (no ε, one sample at a time) and is not what medart calls ``cw``.

    AutoAttack's parts: ART has no FAB, so ``fab`` is refused and ``autoattack`` runs without it.
    ART's ``AutoAttack`` class is not used: its default list (APGD-CE and APGD-DLR with 5
    restarts, DeepFool, Square with 5 restarts) is not the standard version, and its DLR loss
    fails for two classes; medart's :class:`~medart.attacks.autoattack.AutoAttackSequence` runs
    the same sequence for both backends. APGD's DLR variants use medart's :class:`DLRLoss`, the
    same formula as ART's ``difference_logits_ratio`` for K ≥ 3, also defined for K = 2 and
    targeted (which ART's is not).
    """

    name = "art"
    autoattack_parts = ("apgd-ce", "apgd-dlr", "square")

    def __init__(self, model, spec, num_classes, batch_size=128, device="auto", loss=None) -> None:
        if spec.name == "fab":
            raise ConfigError("ART has no FAB attack; use `backend`='torchattacks' for fab "
                              "(ART's autoattack runs APGD-CE, APGD-DLR and Square)")
        super().__init__(model, spec, num_classes, batch_size, device, loss)

    def _classifier(self, x: torch.Tensor, loss: torch.nn.Module) -> PyTorchClassifier:
        return PyTorchClassifier(
            model=self.model,
            loss=loss,
            input_shape=tuple(x.shape[1:]),
            nb_classes=self.num_classes,
            clip_values=(0.0, 1.0),
            preprocessing=None,
            device_type="gpu" if self.device.type == "cuda" else "cpu",
        )

    def _generate_batch(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        spec = self.spec
        if spec.autoattack_family:
            return self._autoattack_part(x, y)
        loss = CWLoss(spec.kappa, spec.targeted) if spec.name == "cw" else torch.nn.CrossEntropyLoss()
        classifier = self._classifier(x, loss if self.loss is None else self.loss)
        common = dict(eps=spec.eps, targeted=spec.targeted, batch_size=len(x))
        if spec.name == "fgsm":
            attack = FastGradientMethod(classifier, norm=np.inf, num_random_init=int(spec.random_start), **common)
        elif spec.name == "bim" and not spec.random_start:
            attack = BasicIterativeMethod(classifier, eps_step=spec.step_size, max_iter=spec.steps, verbose=False, **common)
        else:  # pgd, cw, and bim with a random start
            attack = ProjectedGradientDescent(
                classifier, norm=np.inf, eps_step=spec.step_size, max_iter=spec.steps,
                num_random_init=int(spec.random_start), verbose=False, **common,
            )
        return self._run(attack, x, y.cpu().numpy())

    def _run(self, attack, x: torch.Tensor, labels: np.ndarray) -> torch.Tensor:
        adv = attack.generate(x=x.cpu().numpy(), y=labels)
        return torch.from_numpy(adv).to(x.device, x.dtype)

    def _apgd(self, x: torch.Tensor, loss_type: str | None) -> AutoProjectedGradientDescent:
        """ART's APGD as the reference runs it: first step 2ε (torchattacks hard-codes it), one
        random start per restart. ``loss_type`` None: medart's DLR loss."""
        return AutoProjectedGradientDescent(
            self._classifier(x, DLRLoss()), norm=np.inf, eps=self.spec.eps, eps_step=2 * self.spec.eps,
            max_iter=self.spec.steps, targeted=False, nb_random_init=self.spec.restarts, batch_size=len(x),
            loss_type=loss_type, verbose=False,
        )

    def _autoattack_part(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        spec = self.spec
        if spec.name == "square":
            attack = SquareAttack(self._classifier(x, torch.nn.CrossEntropyLoss()), norm=np.inf, max_iter=spec.steps,
                                  eps=spec.eps, p_init=0.8, nb_restarts=spec.restarts, batch_size=len(x), verbose=False)
            return self._run(attack, x, y.cpu().numpy())
        if spec.name == "apgd-ce":
            return self._run(self._apgd(x, "cross_entropy"), x, y.cpu().numpy())
        if self.num_classes < 4:  # untargeted DLR (the margin for two classes)
            return self._run(self._apgd(x, None), x, y.cpu().numpy())
        return self._apgd_targeted(x, y)

    def _apgd_targeted(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """APGD-T as torchattacks' ``APGDT`` runs it: for the r-th likeliest class at x (r = 2 …
        min(9, K−1) + 1), APGD on the targeted DLR loss, on the images still correct."""
        attack = self._apgd(x, None)
        with torch.no_grad():
            ranking = self.model(x).argsort(dim=1)
        adv = x.clone()
        for rank in range(2, max_targets(self.num_classes) + 2):
            with torch.no_grad():
                left = (self.model(adv).argmax(dim=1) == y).nonzero().squeeze(1)
            if not left.numel():
                break
            labels = encode_targets(y[left], ranking[left, -rank], self.num_classes)
            out = self._run(attack, x[left], labels.cpu().numpy())
            with torch.no_grad():
                broken = self.model(out).argmax(dim=1) != y[left]
            adv[left[broken]] = out[broken]
        return adv

    def _draw_random_start(self, shape: torch.Size) -> None:
        # ART's random_sphere(n, m, ε, inf): one np.random.uniform draw of (n, m)
        np.random.uniform(size=(shape[0], int(np.prod(shape[1:]))))
