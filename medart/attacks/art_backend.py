"""ART backend: ``PyTorchClassifier`` with ART's FGSM / BIM / PGD; CW-L∞ is ART's PGD on the CW loss."""

from __future__ import annotations

import numpy as np
import torch
from art.attacks.evasion import BasicIterativeMethod, FastGradientMethod, ProjectedGradientDescent
from art.estimators.classification import PyTorchClassifier

from medart.attacks.base import AttackBackend
from medart.attacks.losses import CWLoss


class ARTBackend(AttackBackend):
    """Adversarial Robustness Toolbox.

    ART traps handled here: ``clip_values=(0, 1)`` and ``preprocessing=None`` (normalisation is
    inside the model); inputs are float32 (ART raises on float64); ``y`` is always passed (else ART
    spends a prediction pass to make labels); weights are frozen by the caller. BIM never has a
    random start in ART, so a spec with one runs as ART's PGD. ART's ``CarliniLInfMethod`` is a
    different algorithm (no ε, one sample at a time) and is not what medart calls ``cw``.
    """

    name = "art"

    def _classifier(self, x: torch.Tensor) -> PyTorchClassifier:
        spec = self.spec
        loss = CWLoss(spec.kappa, spec.targeted) if spec.name == "cw" else torch.nn.CrossEntropyLoss()
        loss = loss if self.loss is None else self.loss
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
        classifier = self._classifier(x)
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
        adv = attack.generate(x=x.cpu().numpy(), y=y.cpu().numpy())
        return torch.from_numpy(adv).to(x.device, x.dtype)

    def _draw_random_start(self, shape: torch.Size) -> None:
        # ART's random_sphere(n, m, ε, inf): one np.random.uniform draw of (n, m)
        np.random.uniform(size=(shape[0], int(np.prod(shape[1:]))))
