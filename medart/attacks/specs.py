"""Attack specifications: the paper's white-box L∞ attacks, AutoAttack and its parts, their
defaults, and validation.

A spec is backend-neutral: the same :class:`AttackSpec` run through ART or torchattacks means the
same threat model — ε-ball, number of steps, step size, start point and loss.

| attack | steps | step size | start   | loss |
|--------|-------|-----------|---------|------|
| fgsm   | 1     | ε         | x       | cross-entropy |
| bim    | 40    | ε/40      | x       | cross-entropy |
| pgd    | 20    | ε/10      | uniform in the ε-ball | cross-entropy |
| cw     | 20    | ε/10      | uniform in the ε-ball | CW margin max(z_y − max_{j≠y} z_j, −κ) |

AutoAttack's parts (Croce & Hein 2020, standard version) have no step size to tune; ``steps``
and ``restarts`` are their budget:

| attack     | steps | restarts | what |
|------------|-------|----------|------|
| apgd-ce    | 100   | 1 | APGD on cross-entropy; the step starts at 2ε and halves when the loss stalls |
| apgd-dlr   | 100   | 1 | APGD on the DLR loss: targeted (APGD-T, top min(9, K−1) classes) for K ≥ 4 classes, untargeted for K = 3, the logit margin for K = 2 (see :mod:`medart.attacks.losses`) |
| fab        | 100   | 1 | FAB-T, targeted at the top min(9, K−1) classes (K = 2: the other class, i.e. FAB) |
| square     | 5000  | 1 | Square, black-box: ``steps`` are queries, p_init 0.8 |
| autoattack | 100   | 1 | the four above in order, each on the images the earlier ones left correct; Square gets 50 queries per step |

ε is in [0, 1] pixel units: ``1/255`` is one grey level of an 8-bit image.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from medart.catalog import ATTACKS, AUTOATTACK_PARTS, DEFENCE_GRADIENTS, PAPER_ATTACKS
from medart.errors import ConfigError

# paper attack → (steps, step size as a fraction of ε, random start)
DEFAULTS = {"fgsm": (1, 1.0, False), "bim": (40, 1 / 40, False), "pgd": (20, 1 / 10, True), "cw": (20, 1 / 10, True)}
# AutoAttack's standard version: attack → (steps, random start); one restart each
AUTOATTACK_DEFAULTS = {"apgd-ce": (100, True), "apgd-dlr": (100, True), "fab": (100, False), "square": (5000, True),
                       "autoattack": (100, True)}
SQUARE_QUERIES_PER_STEP = 50  # autoattack: 5000 Square queries at its 100 APGD/FAB steps, as in the standard version

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
    """One L∞ attack, fully specified.

    Attributes:
        name: one of :data:`ATTACKS` (``cw`` is CW-L∞: PGD on the CW margin loss).
        eps: L∞ radius in [0, 1] pixel units.
        steps: gradient steps (``square``: queries; ``autoattack``: APGD and FAB steps).
        step_size: per-step size in pixel units; ``None`` for AutoAttack and its parts, which set
            their own (APGD starts at 2ε and adapts it).
        random_start: start from a random point in the ε-ball instead of from x.
        kappa: CW confidence κ ≥ 0 (``cw`` only).
        targeted: move towards the labels given as targets instead of away from the true ones
            (the paper's attacks only).
        restarts: runs from new random starts, each on the images the earlier ones left correct
            (AutoAttack and its parts only; ``None`` for the paper's attacks).
        defence_gradient: for a model behind a preprocessing defence (:mod:`medart.defences`), the
            gradient taken through it: ``bpda`` (ART's estimate, the default there) or ``plain``
            (the defence's own derivative, which masks); ``None`` for other models.
        eot_samples: under ``bpda``, the draws of a randomized defence each gradient averages
            (EOT); ``None`` otherwise. :func:`medart.defences.preprocessing.attack_spec` fills
            both for the model attacked.
    """

    name: str
    eps: float
    steps: int
    step_size: float | None
    random_start: bool
    kappa: float = 0.0
    targeted: bool = False
    restarts: int | None = None
    defence_gradient: str | None = None
    eot_samples: int | None = None

    @property
    def adaptive(self) -> bool:
        """AutoAttack or one of its parts: no step size to tune, seeded by the library per batch."""
        return self.name not in PAPER_ATTACKS

    def __post_init__(self) -> None:
        if self.name not in ATTACKS:
            raise ConfigError(f"unknown attack '{self.name}'; choose from: {', '.join(ATTACKS)}")
        if not 0.0 < self.eps <= 1.0:
            raise ConfigError(f"`eps` must be in (0, 1], got {self.eps}")
        if self.steps < 1:
            raise ConfigError(f"`steps` must be >= 1, got {self.steps}")
        if self.kappa < 0:
            raise ConfigError(f"`kappa` must be >= 0, got {self.kappa}")
        if self.kappa and self.name != "cw":
            raise ConfigError(f"`kappa` applies to the cw attack only, not {self.name}")
        if self.adaptive:
            self._check_adaptive()
        else:
            self._check_paper()
        self._check_defence()

    def _check_paper(self) -> None:
        if self.name == "fgsm" and self.steps != 1:
            raise ConfigError("FGSM is a single step (`steps`=1); use bim or pgd for several steps")
        if self.step_size is None or not self.step_size > 0:
            raise ConfigError(f"`step_size` must be > 0, got {self.step_size}")
        if self.step_size > self.eps * (1 + 1e-9):
            raise ConfigError(
                f"`step_size` {self.step_size:.6g} exceeds `eps` {self.eps:.6g}: every step would be clipped back to the ε-ball; "
                "use a `step_size` <= `eps`"
            )
        if self.restarts is not None:
            raise ConfigError(f"`restarts` applies to {', '.join(AUTOATTACK_PARTS)} and autoattack, not {self.name}")

    def _check_adaptive(self) -> None:
        if self.step_size is not None:
            raise ConfigError(f"{self.name} sets its own step size (APGD starts at 2ε and halves it when the loss "
                              "stalls); leave `step_size` unset")
        if self.targeted:
            raise ConfigError(f"`targeted` applies to {', '.join(PAPER_ATTACKS)}; {self.name} is untargeted "
                              "(apgd-dlr and fab aim at the likeliest wrong classes themselves)")
        if self.restarts is None or self.restarts < 1:
            raise ConfigError(f"`restarts` must be >= 1, got {self.restarts}")
        if self.random_start != AUTOATTACK_DEFAULTS[self.name][1]:
            raise ConfigError(f"{self.name} always starts {'at random' if AUTOATTACK_DEFAULTS[self.name][1] else 'from x'}; "
                              "leave `random_start` unset")

    def _check_defence(self) -> None:
        if self.defence_gradient is not None and self.defence_gradient not in DEFENCE_GRADIENTS:
            raise ConfigError(f"unknown `defence_gradient` {self.defence_gradient!r}; choose from: {', '.join(DEFENCE_GRADIENTS)}")
        if self.eot_samples is not None and self.eot_samples < 1:
            raise ConfigError(f"`eot_samples` must be >= 1, got {self.eot_samples}")

    @property
    def defence_tag(self) -> str:
        """How the attack goes through a defence: ``bpda``, ``bpda-eot8`` (EOT over 8 draws),
        ``plain``; empty for a model without one."""
        if self.defence_gradient is None:
            return ""
        return self.defence_gradient + (f"-eot{self.eot_samples}" if self.eot_samples else "")

    @property
    def variant(self) -> str:
        """The attack's name with its defence tag (``pgd-bpda``), the name for rows and metrics."""
        return f"{self.name}-{self.defence_tag}" if self.defence_tag else self.name

    def as_params(self) -> dict:
        """``attack.<field>`` → value, without the fields that do not apply (``None``), so the paper
        attacks' parameters (and cache keys) are what they were before AutoAttack was added."""
        return {f"attack.{k}": v for k, v in asdict(self).items() if v is not None}

    def label(self) -> str:
        """Short name for run names and plots, e.g. ``bim-eps1/255``."""
        return f"{self.variant}-eps{self.eps * 255:.3g}/255"


def make_spec(
    name: str,
    eps: str | float,
    steps: int | None = None,
    step_size: str | float | None = None,
    random_start: bool | None = None,
    kappa: float = 0.0,
    targeted: bool = False,
    restarts: int | None = None,
    defence_gradient: str | None = None,
    eot_samples: int | None = None,
) -> AttackSpec:
    """A spec with the defaults for ``name`` (the paper's, or AutoAttack's standard version), any
    of which can be overridden; ``defence_gradient`` and ``eot_samples`` for a defended model."""
    name = name.strip().lower()
    if name not in ATTACKS:
        raise ConfigError(f"unknown attack '{name}'; choose from: {', '.join(ATTACKS)}")
    eps = parse_eps(eps)
    size = None if step_size is None else parse_eps(step_size)
    if name in AUTOATTACK_DEFAULTS:
        d_steps, d_start = AUTOATTACK_DEFAULTS[name]
        return AttackSpec(name, eps, d_steps if steps is None else steps, size,
                          d_start if random_start is None else random_start, kappa, targeted, 1 if restarts is None else restarts,
                          defence_gradient, eot_samples)
    d_steps, d_fraction, d_start = DEFAULTS[name]
    return AttackSpec(name, eps, d_steps if steps is None else steps, eps * d_fraction if size is None else size,
                      d_start if random_start is None else random_start, kappa, targeted, restarts, defence_gradient, eot_samples)


def reported_name(name: str, steps: int, restarts: int | None = None) -> str:
    """The name a result is reported under: ``name``, or for AutoAttack and its parts run off
    their standard budget (100 steps, 5000 Square queries, one restart) the name with that
    budget, e.g. ``autoattack (10 steps)``, so that a leaderboard's AutoAttack number only ever
    comes from the standard version and two budgets never share a name."""
    if name not in AUTOATTACK_DEFAULTS:
        return name
    budget = [f"{steps} {'queries' if name == 'square' else 'steps'}"] if steps != AUTOATTACK_DEFAULTS[name][0] else []
    budget += [f"{restarts} restarts"] if restarts not in (None, 1) else []
    return f"{name} ({', '.join(budget)})" if budget else name


def part_specs(spec: AttackSpec) -> list[AttackSpec]:
    """The parts of an ``autoattack`` spec, in order, at its ε, steps, restarts and defence gradient."""
    return [make_spec(name, spec.eps, spec.steps * (SQUARE_QUERIES_PER_STEP if name == "square" else 1), restarts=spec.restarts,
                      defence_gradient=spec.defence_gradient, eot_samples=spec.eot_samples)
            for name in AUTOATTACK_PARTS]


__all__ = ["ATTACKS", "AttackSpec", "make_spec", "parse_eps", "parse_eps_list", "parse_names", "part_specs", "reported_name"]
