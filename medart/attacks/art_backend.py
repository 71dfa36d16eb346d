"""ART backend: ``PyTorchClassifier`` with ART's FGSM / BIM / PGD (CW-L∞ is ART's PGD on the CW
loss), and AutoAttack's parts from ART's ``AutoProjectedGradientDescent`` and ``SquareAttack``."""

from __future__ import annotations

import numpy as np
import torch
from art.attacks.evasion import (AutoProjectedGradientDescent, BasicIterativeMethod, FastGradientMethod, HopSkipJump,
                                 ProjectedGradientDescent, SquareAttack)
from art.estimators.classification import PyTorchClassifier

from medart.attacks.base import AttackBackend, max_targets
from medart.attacks.losses import CWLoss, DLRLoss, encode_targets
from medart.attacks.specs import declared


class _Float32Queries(PyTorchClassifier):
    """ART's classifier answering a query in float64 (an attack's own arithmetic, e.g. a binary
    search between two images) as the float32 it is given otherwise: a float32 network refuses
    float64 inputs, and ART would pass them on as they are."""

    def predict(self, x: np.ndarray, batch_size: int = 128, training_mode: bool = False, **kwargs) -> np.ndarray:
        return super().predict(x.astype(np.float32, copy=False), batch_size, training_mode, **kwargs)


class ARTBackend(AttackBackend):
    """Adversarial Robustness Toolbox; each attack is a builder below (``@ARTBackend.builds``).

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

    def classifier(self, x: torch.Tensor, loss: torch.nn.Module) -> PyTorchClassifier:
        """ART's view of the model for inputs shaped like ``x``, with ``loss``."""
        return _Float32Queries(
            model=self.model,
            loss=loss,
            input_shape=tuple(x.shape[1:]),
            nb_classes=self.num_classes,
            clip_values=(0.0, 1.0),
            preprocessing=None,
            device_type="gpu" if self.device.type == "cuda" else "cpu",
        )

    def run(self, attack, x: torch.Tensor, labels: np.ndarray | torch.Tensor) -> torch.Tensor:
        """``attack``'s examples for ``x`` with ``labels`` (true classes, targets, or encoded targets)."""
        labels = labels.cpu().numpy() if isinstance(labels, torch.Tensor) else labels
        adv = attack.generate(x=x.cpu().numpy(), y=labels)
        return torch.from_numpy(adv).to(x.device, x.dtype)

    def _draw_random_start(self, shape: torch.Size) -> None:
        # ART's random_sphere(n, m, ε, inf): one np.random.uniform draw of (n, m)
        np.random.uniform(size=(shape[0], int(np.prod(shape[1:]))))


def _gradient_classifier(run: ARTBackend, x: torch.Tensor, loss: torch.nn.Module | None = None) -> PyTorchClassifier:
    """The classifier a paper attack ascends: the caller's loss, else ``loss`` (cross-entropy by default)."""
    chosen = run.loss if run.loss is not None else loss if loss is not None else torch.nn.CrossEntropyLoss()
    return run.classifier(x, chosen)


def _projected(run: ARTBackend, x: torch.Tensor, y: torch.Tensor, loss: torch.nn.Module | None = None) -> torch.Tensor:
    spec = run.spec
    attack = ProjectedGradientDescent(
        _gradient_classifier(run, x, loss), norm=np.inf, eps=spec.eps, eps_step=spec.step_size, max_iter=spec.steps,
        num_random_init=int(spec.random_start), targeted=spec.targeted, batch_size=len(x), verbose=False,
    )
    return run.run(attack, x, y)


@ARTBackend.builds("fgsm")
def _fgsm(run: ARTBackend, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    spec = run.spec
    attack = FastGradientMethod(_gradient_classifier(run, x), norm=np.inf, num_random_init=int(spec.random_start),
                                eps=spec.eps, targeted=spec.targeted, batch_size=len(x))
    return run.run(attack, x, y)


@ARTBackend.builds("bim")
def _bim(run: ARTBackend, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    spec = run.spec
    if spec.random_start:  # ART's BIM always starts from x; its PGD is BIM with a random start
        return _projected(run, x, y)
    attack = BasicIterativeMethod(_gradient_classifier(run, x), eps_step=spec.step_size, max_iter=spec.steps, verbose=False,
                                  eps=spec.eps, targeted=spec.targeted, batch_size=len(x))
    return run.run(attack, x, y)


@ARTBackend.builds("pgd")
def _pgd(run: ARTBackend, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return _projected(run, x, y)


@ARTBackend.builds("cw")
def _cw(run: ARTBackend, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return _projected(run, x, y, CWLoss(run.spec.kappa, run.spec.targeted))


def _apgd(run: ARTBackend, x: torch.Tensor, loss_type: str | None) -> AutoProjectedGradientDescent:
    """ART's APGD as the reference runs it: first step 2ε (torchattacks hard-codes it), one
    random start per restart. ``loss_type`` None: medart's DLR loss."""
    spec = run.spec
    return AutoProjectedGradientDescent(
        run.classifier(x, DLRLoss()), norm=np.inf, eps=spec.eps, eps_step=2 * spec.eps, max_iter=spec.steps,
        targeted=False, nb_random_init=spec.restarts, batch_size=len(x), loss_type=loss_type, verbose=False,
    )


@ARTBackend.builds("apgd-ce")
def _apgd_ce(run: ARTBackend, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return run.run(_apgd(run, x, "cross_entropy"), x, y)


@ARTBackend.builds("apgd-dlr")
def _apgd_dlr(run: ARTBackend, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Untargeted DLR (the margin for two classes) for K < 4; else APGD-T as torchattacks' ``APGDT``
    runs it: for the r-th likeliest class at x (r = 2 … min(9, K−1) + 1), APGD on the targeted DLR
    loss, on the images still correct."""
    attack = _apgd(run, x, None)
    if run.num_classes < 4:
        return run.run(attack, x, y)
    with torch.no_grad():
        ranking = run.model(x).argsort(dim=1)
    adv = x.clone()
    for rank in range(2, max_targets(run.num_classes) + 2):
        with torch.no_grad():
            left = (run.model(adv).argmax(dim=1) == y).nonzero().squeeze(1)
        if not left.numel():
            break
        labels = encode_targets(y[left], ranking[left, -rank], run.num_classes)
        out = run.run(attack, x[left], labels)
        with torch.no_grad():
            broken = run.model(out).argmax(dim=1) != y[left]
        adv[left[broken]] = out[broken]
    return adv


@ARTBackend.builds("square")
def _square(run: ARTBackend, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    spec = run.spec
    attack = SquareAttack(run.classifier(x, torch.nn.CrossEntropyLoss()), norm=np.inf, max_iter=spec.steps, eps=spec.eps,
                          p_init=declared(spec.name).settings["p_init"], nb_restarts=spec.restarts, batch_size=len(x),
                          verbose=False)
    return run.run(attack, x, y)


@ARTBackend.builds("hopskipjump")
def _hopskipjump(run: ARTBackend, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """ART's HopSkipJump at L∞, untargeted, on the model's answers alone, on the images the model
    gets right: it moves an image away from the class the model answers, so an image it gets wrong
    is left as it is rather than moved towards its true class. It returns the closest adversarial
    point it found at any distance; the ε-ball projection after every batch keeps it within ε,
    where it may no longer be adversarial.

    Its starting points are drawn here, as ART draws them (uniform noise the model answers
    otherwise, at most ``init_size`` tries), but from the run's seeded NumPy generator: ART's own
    draw uses an unseeded ``RandomState``, which would make every run differ. An image no draw
    starts from is left as it is (ART's attack fails on it too)."""
    spec, settings = run.spec, declared(run.spec.name).settings
    with torch.no_grad():
        left = (run.model(x).argmax(dim=1) == y).nonzero().squeeze(1)
    start = torch.empty_like(x)
    found = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    for _ in range(int(settings["init_size"])):
        if not left.numel():
            break
        noise = torch.from_numpy(np.random.uniform(size=(len(left), *x.shape[1:])).astype(np.float32)).to(x.device)
        with torch.no_grad():
            other = run.model(noise).argmax(dim=1) != y[left]
        start[left[other]], found[left[other]] = noise[other], True
        left = left[~other]
    adv, rows = x.clone(), found.nonzero().squeeze(1)
    if rows.numel():
        attack = HopSkipJump(run.classifier(x, torch.nn.CrossEntropyLoss()), batch_size=int(settings["max_eval"]),
                             targeted=False, norm=np.inf, max_iter=spec.steps, max_eval=int(settings["max_eval"]),
                             init_eval=int(settings["init_eval"]), init_size=int(settings["init_size"]), verbose=False)
        out = attack.generate(x=x[rows].cpu().numpy(), y=y[rows].cpu().numpy(), x_adv_init=start[rows].cpu().numpy())
        adv[rows] = torch.from_numpy(out).to(x.device, x.dtype)
    return adv
