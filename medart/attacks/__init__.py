"""L∞ attacks — the paper's FGSM, BIM, PGD, CW-L∞; AutoAttack and its parts APGD-CE, APGD-DLR, FAB,
Square — through ART or torchattacks, one threat model; each attack is declared once in
:mod:`medart.attacks.specs`.

This package's own names import no torch (the backends load in :func:`make_attack`), so the
command line reads the attacks' declarations without loading a library.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import TYPE_CHECKING

from medart.attacks.specs import (ATTACKS, BACKENDS, AttackSpec, attacks_where, check_backend, declared,
                                  declared_backend, make_spec, parse_names, part_specs)
from medart.errors import ConfigError

if TYPE_CHECKING:
    from torch import nn

    from medart.attacks.base import AttackBackend


def load_backend(name: str) -> ModuleType:
    """The module of backend ``name`` (its entry's ``where``), or a one-line ConfigError naming the
    backend's choices, or saying how to install its library when that is an optional dependency
    not installed (torchattacks)."""
    backend = declared_backend(name)
    try:
        return importlib.import_module(backend.where.partition(":")[0])
    except ModuleNotFoundError as exc:
        if exc.name != backend.package or backend.install is None:
            raise
        raise ConfigError(f"`backend`='{name}' needs the {backend.package} package: {backend.install}") from None


def load_torchattacks_backend() -> ModuleType:
    """:mod:`medart.attacks.torchattacks_backend` (see :func:`load_backend`)."""
    return load_backend("torchattacks")


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

    ``loss`` replaces the spec's loss in either backend (see :mod:`medart.attacks.adaptive`), for
    the attacks with a step size of their own to take (the paper's); an attack of parts
    (``autoattack``) is the sequence of the parts the backend runs (ART has no FAB). A backend
    that does not run ``spec``'s attack is a one-line ConfigError.
    """
    check_backend(spec.name, backend)
    attack = declared(spec.name)
    if loss is not None and attack.defaults.step is None:
        takers = attacks_where(lambda a: a.defaults.step is not None)
        raise ConfigError(f"{spec.name} runs its own loss; give `loss` to an attack with a step size ({', '.join(takers)})")
    module = load_backend(backend)
    cls = getattr(module, declared_backend(backend).where.partition(":")[2])
    if attack.parts:
        from medart.attacks.autoattack import AutoAttackSequence

        return AutoAttackSequence(spec, [cls(model, part, num_classes, batch_size, device) for part in part_specs(spec)
                                         if backend in declared(part.name).backends])
    return cls(model, spec, num_classes, batch_size, device, loss)


__all__ = ["ATTACKS", "AttackSpec", "BACKENDS", "load_backend", "load_torchattacks_backend", "make_attack", "make_spec",
           "parse_names"]
