"""Attack specifications: the paper's white-box L∞ attacks, their defaults, and validation.

A spec is backend-neutral: the same :class:`AttackSpec` run through ART or torchattacks means the
same threat model — ε-ball, number of steps, step size, start point and loss.

| attack | steps | step size | start   | loss |
|--------|-------|-----------|---------|------|
| fgsm   | 1     | ε         | x       | cross-entropy |
| bim    | 40    | ε/40      | x       | cross-entropy |
| pgd    | 20    | ε/10      | uniform in the ε-ball | cross-entropy |
| cw     | 20    | ε/10      | uniform in the ε-ball | CW margin max(z_y − max_{j≠y} z_j, −κ) |

ε is in [0, 1] pixel units: ``1/255`` is one grey level of an 8-bit image.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from medart.errors import ConfigError

ATTACKS = ("fgsm", "bim", "pgd", "cw")
# name → (steps, step size as a fraction of ε, random start)
DEFAULTS = {"fgsm": (1, 1.0, False), "bim": (40, 1 / 40, False), "pgd": (20, 1 / 10, True), "cw": (20, 1 / 10, True)}

_FRACTION = re.compile(r"^\s*([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*/\s*([0-9]*\.?[0-9]+)\s*$")


def parse_eps(value: str | float) -> float:
    """ε from a float or a string such as ``"0.3/255"``, ``"1/255"`` or ``"0.0039"``; must be in (0, 1]."""
    if isinstance(value, str):
        match = _FRACTION.match(value)
        try:
            eps = float(match[1]) / float(match[2]) if match else float(value)
        except (ValueError, ZeroDivisionError):
            raise ConfigError(f"cannot read ε from {value!r}; write it as a number (0.0039) or a fraction (1/255)") from None
    else:
        eps = float(value)
    if not 0.0 < eps <= 1.0:
        raise ConfigError(f"ε must be in (0, 1] in [0,1] pixel units (1/255 = one grey level), got {value!r}")
    return eps


def parse_eps_list(value: str) -> list[float]:
    """A comma-separated list of ε values, e.g. ``"0.2/255,0.5/255,1/255"``."""
    items = [v for v in value.split(",") if v.strip()]
    if not items:
        raise ConfigError("the ε list is empty; give e.g. 0.5/255,1/255,2/255")
    return [parse_eps(v) for v in items]


def parse_names(value: str, choices: tuple[str, ...] = ATTACKS, what: str = "attack") -> list[str]:
    """A comma-separated list of names, each checked against ``choices``."""
    names = [v.strip().lower() for v in value.split(",") if v.strip()]
    if not names:
        raise ConfigError(f"the {what} list is empty; choose from: {', '.join(choices)}")
    for name in names:
        if name not in choices:
            raise ConfigError(f"unknown {what} '{name}'; choose from: {', '.join(choices)}")
    return names


@dataclass(frozen=True)
class AttackSpec:
    """One white-box L∞ attack, fully specified.

    Attributes:
        name: ``fgsm``, ``bim``, ``pgd`` or ``cw`` (CW-L∞: PGD on the CW margin loss).
        eps: L∞ radius in [0, 1] pixel units.
        steps: gradient steps.
        step_size: per-step size in pixel units.
        random_start: start from a uniform draw in the ε-ball instead of from x.
        kappa: CW confidence κ ≥ 0 (``cw`` only).
        targeted: move towards the labels given as targets instead of away from the true ones.
    """

    name: str
    eps: float
    steps: int
    step_size: float
    random_start: bool
    kappa: float = 0.0
    targeted: bool = False

    def __post_init__(self) -> None:
        if self.name not in ATTACKS:
            raise ConfigError(f"unknown attack '{self.name}'; choose from: {', '.join(ATTACKS)}")
        if not 0.0 < self.eps <= 1.0:
            raise ConfigError(f"`eps` must be in (0, 1], got {self.eps}")
        if self.steps < 1:
            raise ConfigError(f"`steps` must be >= 1, got {self.steps}")
        if self.name == "fgsm" and self.steps != 1:
            raise ConfigError("FGSM is a single step (`steps`=1); use bim or pgd for several steps")
        if not self.step_size > 0:
            raise ConfigError(f"`step_size` must be > 0, got {self.step_size}")
        if self.step_size > self.eps * (1 + 1e-9):
            raise ConfigError(
                f"`step_size` {self.step_size:.6g} exceeds `eps` {self.eps:.6g}: every step would be clipped back to the ε-ball; "
                "use a `step_size` <= `eps`"
            )
        if self.kappa < 0:
            raise ConfigError(f"`kappa` must be >= 0, got {self.kappa}")
        if self.kappa and self.name != "cw":
            raise ConfigError(f"`kappa` applies to the cw attack only, not {self.name}")

    def as_params(self) -> dict:
        return {f"attack.{k}": v for k, v in asdict(self).items()}

    def label(self) -> str:
        """Short name for run names and plots, e.g. ``bim-eps1/255``."""
        return f"{self.name}-eps{self.eps * 255:.3g}/255"


def make_spec(
    name: str,
    eps: str | float,
    steps: int | None = None,
    step_size: str | float | None = None,
    random_start: bool | None = None,
    kappa: float = 0.0,
    targeted: bool = False,
) -> AttackSpec:
    """A spec with the paper's defaults for ``name``, any of which can be overridden."""
    name = name.strip().lower()
    if name not in DEFAULTS:
        raise ConfigError(f"unknown attack '{name}'; choose from: {', '.join(ATTACKS)}")
    eps = parse_eps(eps)
    d_steps, d_fraction, d_start = DEFAULTS[name]
    size = eps * d_fraction if step_size is None else parse_eps(step_size)
    return AttackSpec(name, eps, d_steps if steps is None else steps, size, d_start if random_start is None else random_start,
                      kappa, targeted)


__all__ = ["ATTACKS", "AttackSpec", "make_spec", "parse_eps", "parse_eps_list", "parse_names"]
