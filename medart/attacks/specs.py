"""The attacks, each declared once, and the :class:`AttackSpec` one run of one of them is.

An :class:`Attack` entry of :data:`ATTACK_ENTRIES` is the whole declaration of an attack: its
name, what it is, its default budget, which settings it takes, the backends that run it and the
library settings medart fixes for it. Everything else reads the entry: :func:`make_spec` and the
checks of :class:`AttackSpec`, :func:`medart.attacks.make_attack`, :mod:`medart.catalog`, the
command line's choices and help, and so the MLproject generated from them. A backend
(:data:`BACKEND_ENTRIES`: its library and where its class is) registers one builder per attack it
runs, in its own module, with ``@<its class>.builds(name)``
(:meth:`medart.attacks.base.AttackBackend.builds`). Asking a backend for an attack its entry does
not list is a one-line error, never another attack; tests/test_declarations.py checks that each
backend's builders are exactly the attacks that list it. This module imports no torch, so
``medart --help`` reads it at once.

Adding an attack is one entry here, one builder in each backend module that runs it, and a test.

A spec is backend-neutral: the same :class:`AttackSpec` run through ART or torchattacks means the
same threat model — ε-ball, number of steps, step size, start point and loss. The entries' defaults
are the paper's for its four attacks (FGSM one step of ε; BIM 40 of ε/40; PGD and CW-L∞ 20 of
ε/10 from a random start) and AutoAttack's standard version for it and its parts (Croce & Hein
2020: 100 steps, Square 5000 queries, one restart); docs/models-and-attacks.md tabulates them with
what each backend runs.

ε is in [0, 1] pixel units: ``1/255`` is one grey level of an 8-bit image; a spec holds it (and
its step size) as an :class:`~medart.budget.Eps`, read from text once by the command line.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable, Mapping

from medart.budget import Eps, eps_params
from medart.models.defence_specs import DEFENCE_GRADIENTS
from medart.errors import ConfigError


@dataclass(frozen=True)
class Backend:
    """A library that runs attacks: ``where`` its :class:`~medart.attacks.base.AttackBackend`
    subclass is (``module:Class``); ``package`` the module it needs and ``install`` how to get it
    when that is an optional extra."""

    name: str
    title: str
    where: str
    package: str
    install: str | None = None


@dataclass(frozen=True)
class Defaults:
    """What a run of an attack does unless told otherwise.

    Attributes:
        steps: steps (``unit`` says what one is).
        step: step size as a fraction of ε; ``None``: the attack sets its own, so it takes no
            ``step_size`` and no replacement loss and is reseeded every batch.
        random_start: start from a random point of the ε-ball, or from x.
        restarts: restarts; ``None``: it takes no ``restarts``.
        unit: what ``steps`` counts.
    """

    steps: int
    step: float | None = None
    random_start: bool = False
    restarts: int | None = None
    unit: str = "steps"


@dataclass(frozen=True)
class Attack:
    """One attack medart offers, declared once.

    Attributes:
        name: what the command line, the specs and the runs call it.
        title: what its paper or library calls it (``FGSM``, ``FAB``), for messages.
        about: one phrase saying what it is (the command line's help).
        backends: the backends that run it; each registers a builder under ``name``.
        defaults: its default budget (:class:`Defaults`).
        takes: which of ``steps``, ``random_start``, ``targeted`` and ``kappa`` a caller may set;
            the others stay at their defaults (``targeted`` off, ``kappa`` 0). ``step_size`` and
            ``restarts`` it takes where its defaults have them.
        paper: one of Ma et al.'s attacks, the default wherever attacks are listed.
        budget_in_name: a result off the default ``steps`` or ``restarts`` is reported under the
            name with its budget (:func:`reported_name`).
        parts: attacks it runs in turn, each on the images the earlier ones left correct.
        settings: library settings medart fixes for it, which its builders pass.
    """

    name: str
    title: str
    about: str
    backends: tuple[str, ...]
    defaults: Defaults
    takes: frozenset[str] = frozenset()
    paper: bool = False
    budget_in_name: bool = False
    parts: tuple[str, ...] = ()
    settings: Mapping[str, float] = field(default_factory=dict)


BACKEND_ENTRIES: dict[str, Backend] = {b.name: b for b in (
    Backend("art", "ART", "medart.attacks.art_backend:ARTBackend", "art"),
    Backend("torchattacks", "torchattacks", "medart.attacks.torchattacks_backend:TorchattacksBackend", "torchattacks",
            "pip install --no-deps torchattacks==3.5.1 (see README)"),
)}
_BOTH = tuple(BACKEND_ENTRIES)
_PAPER = dict(backends=_BOTH, takes=frozenset({"steps", "random_start", "targeted"}), paper=True)
# AutoAttack's standard version: 100 steps and one restart each, each part its own start
_AUTOATTACK = dict(backends=_BOTH, defaults=Defaults(100, random_start=True, restarts=1), takes=frozenset({"steps"}),
                   budget_in_name=True)

ATTACK_ENTRIES: dict[str, Attack] = {a.name: a for a in (
    Attack("fgsm", "FGSM", "one step of ε", defaults=Defaults(1, 1.0),
           **_PAPER | dict(takes=frozenset({"random_start", "targeted"}))),
    Attack("bim", "BIM", "40 steps of ε/40 from x", defaults=Defaults(40, 1 / 40), **_PAPER),
    Attack("pgd", "PGD", "20 steps of ε/10 from a random start", defaults=Defaults(20, 1 / 10, True), **_PAPER),
    Attack("cw", "CW-L∞", "CW-L∞, PGD on the CW margin loss", defaults=Defaults(20, 1 / 10, True),
           **_PAPER | dict(takes=frozenset({"steps", "random_start", "targeted", "kappa"}))),
    Attack("apgd-ce", "APGD-CE", "AutoAttack's APGD on cross-entropy", **_AUTOATTACK),
    Attack("apgd-dlr", "APGD-DLR", "AutoAttack's APGD on the DLR loss (targeted for 4 or more classes)", **_AUTOATTACK),
    Attack("fab", "FAB", "AutoAttack's FAB-T",
           **_AUTOATTACK | dict(backends=("torchattacks",), defaults=Defaults(100, restarts=1))),
    Attack("square", "Square", "AutoAttack's Square, a black box", settings={"p_init": 0.8},
           **_AUTOATTACK | dict(defaults=Defaults(5000, random_start=True, restarts=1, unit="queries"))),
    Attack("autoattack", "AutoAttack", "AutoAttack's standard version, its four parts in turn", **_AUTOATTACK,
           parts=("apgd-ce", "apgd-dlr", "fab", "square")),
    # Label-only (Chen et al. 2020): ART's HopSkipJump at L∞, untargeted, on the model's answers
    # alone — the threat model of a deployed model. Query-hungry, so a CPU-sized budget: each
    # iteration estimates the gradient from init_eval·√(iteration) queries, at most max_eval, about
    # 6,000 queries an image over 20 iterations (8 chest X-rays through the small CNN: 12–30 s on one
    # shared CPU thread, 8 → 5 right at 8/255); raise `steps` for a stronger attack.
    Attack("hopskipjump", "HopSkipJump", "HopSkipJump, a label-only black box: the model's answers alone", ("art",),
           Defaults(20, random_start=True, unit="iterations"), takes=frozenset({"steps"}), budget_in_name=True,
           settings={"max_eval": 500, "init_eval": 100, "init_size": 100}),
)}
ATTACKS = tuple(ATTACK_ENTRIES)
BACKENDS = tuple(BACKEND_ENTRIES)
PAPER_ATTACKS = tuple(a.name for a in ATTACK_ENTRIES.values() if a.paper)
AUTOATTACK_PARTS = ATTACK_ENTRIES["autoattack"].parts  # AutoAttack's standard version, in its order
SQUARE_QUERIES_PER_STEP = 50  # autoattack: 5000 Square queries at its 100 APGD/FAB steps, as in the standard version


def declared(name: str) -> Attack:
    """The entry of attack ``name``; a one-line ConfigError naming the choices for any other name."""
    try:
        return ATTACK_ENTRIES[name]
    except KeyError:
        raise ConfigError(f"unknown attack '{name}'; choose from: {', '.join(ATTACKS)}") from None


def declared_backend(name: str) -> Backend:
    """The entry of backend ``name``; a one-line ConfigError naming the choices for any other name."""
    try:
        return BACKEND_ENTRIES[name]
    except KeyError:
        raise ConfigError(f"unknown backend '{name}'; choose from: {', '.join(BACKENDS)}") from None


def check_backend(name: str, backend: str) -> None:
    """A one-line ConfigError unless ``backend`` runs attack ``name``."""
    attack, library = declared(name), declared_backend(backend)
    if backend not in attack.backends:
        others = " or ".join(f"`backend`='{b}'" for b in attack.backends)
        raise ConfigError(f"{library.title} has no {attack.title} attack; use {others} for {name}")


def attacks_where(test: Callable[[Attack], bool]) -> list[str]:
    """The names of the declared attacks whose entry passes ``test``, in their order."""
    return [a.name for a in ATTACK_ENTRIES.values() if test(a)]


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
        eps: L∞ radius in [0, 1] pixel units (a float is held as an :class:`~medart.budget.Eps`).
        steps: steps of the attack (its entry's ``unit``: ``square``'s are queries;
            ``autoattack``: APGD and FAB steps).
        step_size: per-step size in pixel units (held as an :class:`~medart.budget.Eps`); ``None``
            for the attacks that set their own (APGD starts at 2ε and adapts it).
        random_start: start from a random point in the ε-ball instead of from x.
        kappa: CW confidence κ ≥ 0 (``cw`` only).
        targeted: move towards the labels given as targets instead of away from the true ones
            (the attacks whose entry says ``targeted``).
        restarts: runs from new random starts, each on the images the earlier ones left correct
            (the attacks whose entry has ``restarts``; ``None`` for the others).
        defence_gradient: for a model behind a preprocessing defence (:mod:`medart.defences`), the
            gradient taken through it: ``bpda`` (ART's estimate, the default there) or ``plain``
            (the defence's own derivative, which masks); ``None`` for other models.
        eot_samples: under ``bpda``, the draws of a randomized defence each gradient averages
            (EOT); ``None`` otherwise. :func:`medart.models.defended.attack_spec` fills
            both for the model attacked.
    """

    name: str
    eps: Eps
    steps: int
    step_size: Eps | None
    random_start: bool
    kappa: float = 0.0
    targeted: bool = False
    restarts: int | None = None
    defence_gradient: str | None = None
    eot_samples: int | None = None

    @property
    def sets_own_step(self) -> bool:
        """An attack that sets its own step size (its entry's defaults have no ``step``): nothing
        to tune, no replacement loss, seeded by the library per batch."""
        return declared(self.name).defaults.step is None

    def __post_init__(self) -> None:
        attack = declared(self.name)
        default, takes = attack.defaults, attack.takes
        if not 0.0 < self.eps <= 1.0:
            raise ConfigError(f"`eps` must be in (0, 1], got {self.eps}")
        if self.steps < 1:
            raise ConfigError(f"`steps` must be >= 1, got {self.steps}")
        if "steps" not in takes and self.steps != default.steps:
            several = " or ".join(attacks_where(lambda a: a.paper and {"steps"} <= a.takes and "kappa" not in a.takes))
            raise ConfigError(f"{attack.title} is a single step (`steps`=1); use {several} for several steps"
                              if default.steps == 1 else f"{attack.title} runs {default.steps} {default.unit}; leave `steps` unset")
        if self.kappa < 0:
            raise ConfigError(f"`kappa` must be >= 0, got {self.kappa}")
        if self.kappa and "kappa" not in takes:
            raise ConfigError(f"`kappa` applies to the {', '.join(attacks_where(lambda a: 'kappa' in a.takes))} attack only, "
                              f"not {self.name}")
        self._check_step(default)
        if default.restarts is None and self.restarts is not None:
            restarting = attacks_where(lambda a: a.defaults.restarts is not None)
            raise ConfigError(f"`restarts` applies to {', '.join(restarting)}, not {self.name}")
        if default.restarts is not None and (self.restarts is None or self.restarts < 1):
            raise ConfigError(f"`restarts` must be >= 1, got {self.restarts}")
        if self.targeted and "targeted" not in takes:
            targetable = attacks_where(lambda a: "targeted" in a.takes)
            raise ConfigError(f"`targeted` applies to {', '.join(targetable)}; {self.name} is untargeted")
        if "random_start" not in takes and self.random_start != default.random_start:
            raise ConfigError(f"{self.name} always starts {'at random' if default.random_start else 'from x'}; "
                              "leave `random_start` unset")
        self._check_defence()
        # checked above with this class's own messages; held typed from here on (the same floats)
        object.__setattr__(self, "eps", Eps(self.eps))
        if self.step_size is not None:
            object.__setattr__(self, "step_size", Eps(self.step_size))

    def _check_step(self, default: Defaults) -> None:
        if default.step is None:
            if self.step_size is not None:
                raise ConfigError(f"{self.name} sets its own step size; leave `step_size` unset")
            return
        if self.step_size is None or not self.step_size > 0:
            raise ConfigError(f"`step_size` must be > 0, got {self.step_size}")
        if self.step_size > self.eps * (1 + 1e-9):
            raise ConfigError(
                f"`step_size` {self.step_size:.6g} exceeds `eps` {self.eps:.6g}: every step would be clipped back to the ε-ball; "
                "use a `step_size` <= `eps`"
            )

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
        """MLflow params: ``attack.<field>`` → value, without the fields that do not apply
        (``None``); ``attack.eps`` and ``attack.step_size`` as ``k/255``, their floats under
        ``attack.eps_value`` and ``attack.step_size_value`` (:func:`medart.budget.eps_params`).
        The cache keys on :meth:`identity`, not on these."""
        params = {}
        for key, value in self.identity().items():
            params |= eps_params(key, value) if key in ("attack.eps", "attack.step_size") else {key: value}
        return params

    def identity(self) -> dict:
        """``attack.<field>`` → value (floats for ε and the step size), without the fields that do
        not apply (``None``): what makes two specs the same attack, and so the attack cache's key
        (:func:`medart.attacks.cache.cache_key`) — the paper attacks' as before AutoAttack was added."""
        return {f"attack.{k}": float(v) if isinstance(v, Eps) else v for k, v in asdict(self).items() if v is not None}

    def label(self) -> str:
        """Short name for run names and plots, e.g. ``bim-eps1/255``."""
        return f"{self.variant}-eps{self.eps}"


def make_spec(
    name: str,
    eps: Eps | float,
    steps: int | None = None,
    step_size: Eps | float | None = None,
    random_start: bool | None = None,
    kappa: float = 0.0,
    targeted: bool = False,
    restarts: int | None = None,
    defence_gradient: str | None = None,
    eot_samples: int | None = None,
) -> AttackSpec:
    """A spec with the defaults of ``name``'s entry (the paper's, AutoAttack's standard version),
    any of which can be overridden. ``eps`` and ``step_size`` in [0, 1] pixel units;
    ``defence_gradient`` and ``eot_samples`` for a defended model."""
    name = name.strip().lower()
    default = declared(name).defaults
    eps = Eps(eps)
    size = None if step_size is None else Eps(step_size, "step_size")
    if size is None and default.step is not None:
        size = eps * default.step
    return AttackSpec(name, eps, default.steps if steps is None else steps, size,
                      default.random_start if random_start is None else random_start, kappa, targeted,
                      default.restarts if restarts is None else restarts, defence_gradient, eot_samples)


def reported_name(name: str, steps: int, restarts: int | None = None) -> str:
    """The name a result is reported under: ``name``, or for an attack whose entry says
    ``budget_in_name`` (AutoAttack and its parts) run off its default budget (AutoAttack's
    standard: 100 steps, 5000 Square queries, one restart) the name with that budget, e.g.
    ``autoattack (10 steps)``, so that a leaderboard's AutoAttack number only ever comes from the
    standard version and two budgets never share a name. A name no entry declares (a run of an
    older medart) is reported as it is."""
    attack = ATTACK_ENTRIES.get(name)
    if attack is None or not attack.budget_in_name:
        return name
    default = attack.defaults
    budget = [f"{steps} {default.unit}"] if steps != default.steps else []
    budget += [f"{restarts} restarts"] if restarts not in (None, default.restarts) else []
    return f"{name} ({', '.join(budget)})" if budget else name


def part_specs(spec: AttackSpec) -> list[AttackSpec]:
    """The parts of a spec whose attack runs parts (``autoattack``), in order, at its ε, steps
    restarts and defence gradient (a part counting queries gets :data:`SQUARE_QUERIES_PER_STEP` per step)."""
    return [make_spec(name, spec.eps, spec.steps * (SQUARE_QUERIES_PER_STEP if declared(name).defaults.unit == "queries" else 1),
                      restarts=spec.restarts, defence_gradient=spec.defence_gradient, eot_samples=spec.eot_samples)
            for name in declared(spec.name).parts]


__all__ = ["ATTACKS", "ATTACK_ENTRIES", "AUTOATTACK_PARTS", "Attack", "AttackSpec", "BACKENDS", "BACKEND_ENTRIES",
           "Backend", "Defaults", "PAPER_ATTACKS", "attacks_where", "check_backend", "declared", "declared_backend",
           "make_spec", "parse_names", "part_specs", "reported_name"]
