"""L∞ attacks — the paper's FGSM, BIM, PGD, CW-L∞; AutoAttack and its parts APGD-CE, APGD-DLR, FAB,
Square — through ART or torchattacks, one threat model."""

from __future__ import annotations

from torch import nn

from medart.attacks.base import AttackBackend
from medart.attacks.specs import ATTACKS, AttackSpec, make_spec, parse_eps, parse_eps_list, parse_names, part_specs
from medart.errors import ConfigError

BACKENDS = ("art", "torchattacks")


def load_torchattacks_backend():
    """:mod:`medart.attacks.torchattacks_backend`, or a one-line ConfigError saying how to install
    torchattacks (an optional, separately installed dependency)."""
    try:
        from medart.attacks import torchattacks_backend as module
    except ModuleNotFoundError as exc:
        if exc.name != "torchattacks":
            raise
        raise ConfigError("`backend`='torchattacks' needs the torchattacks package: "
                          "pip install --no-deps torchattacks==3.5.1 (see README)") from None
    return module


def make_attack(
    model: nn.Module,
    spec: AttackSpec,
    num_classes: int,
    backend: str = "art",
    batch_size: int = 128,
    device: str = "auto",
    loss: nn.Module | None = None,
) -> AttackBackend:
    """The backend object that runs ``spec`` against ``model``; call ``.generate(x, y, seed)``.
    ``loss`` replaces the spec's loss in either backend (see :mod:`medart.attacks.adaptive`);
    ``autoattack`` is the sequence of the parts the backend has (ART has no FAB)."""
    if backend == "art":
        from medart.attacks.art_backend import ARTBackend as cls
    elif backend == "torchattacks":
        cls = load_torchattacks_backend().TorchattacksBackend
    else:
        raise ConfigError(f"unknown backend '{backend}'; choose from: {', '.join(BACKENDS)}")
    if spec.name == "autoattack":
        if loss is not None:
            raise ConfigError("autoattack runs its parts' own losses; give `loss` to a PGD-style attack (bim, pgd)")
        from medart.attacks.autoattack import AutoAttackSequence

        return AutoAttackSequence(spec, [cls(model, part, num_classes, batch_size, device) for part in part_specs(spec)
                                   if part.name in cls.autoattack_parts])
    return cls(model, spec, num_classes, batch_size, device, loss)


__all__ = ["ATTACKS", "AttackBackend", "AttackSpec", "BACKENDS", "load_torchattacks_backend", "make_attack", "make_spec", "parse_eps",
           "parse_eps_list", "parse_names"]
