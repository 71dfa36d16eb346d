"""The ablation's request: its grid of cells — input side × initialisation × architecture, trained,
plus models given as they are — and the settings every cell is measured with."""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Sequence

from medart.attacks import parse_names
from medart.attacks.difficulty import Bisection
from medart.attacks.specs import ATTACKS, PAPER_ATTACKS
from medart.budget import Eps, eps_params, holds_eps
from medart.catalog import ARCHS, INITS
from medart.detectors import DETECTORS
from medart.errors import ConfigError
from medart.models.loading import ModelSource
from medart.models.training import TrainConfig
from medart.results import Cell
from medart.stages.target import RunOptions

NO_ARCHS = ("", "none")  # `archs` that train no model: the grid is the given models only

RESOLUTIONS = (8, 1024)  # allowed input sides; a model may refuse some (smallcnn: < 16 px) and fail its cell


def parse_resolutions(value: str | Sequence[int]) -> list[int]:
    """Input sides from ``"28,64,128"`` (or a sequence), each a whole number in 8 … 1024 px."""
    low, high = RESOLUTIONS
    items = [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else list(value)
    if not items:
        raise ConfigError("the resolution list `resolutions` is empty; give e.g. 28,64,128")
    out = []
    for item in items:
        try:
            number = int(item)
        except (TypeError, ValueError):
            raise ConfigError(f"resolution {item!r} is not a whole number of pixels; give `resolutions` as e.g. "
                              "28,64,128") from None
        if not low <= number <= high:
            raise ConfigError(f"resolution {number} px is outside {low}…{high} px; change `resolutions`")
        out.append(number)
    return list(dict.fromkeys(out))


def _names(value: str | Sequence[str], choices: tuple[str, ...], what: str) -> tuple[str, ...]:
    """Checked names, once each, from a comma-separated string or a sequence."""
    text = value if isinstance(value, str) else ",".join(value)
    return tuple(dict.fromkeys(parse_names(text, choices, what)))


def make_grid(resolutions: str | Sequence[int], inits: str | Sequence[str], archs: str | Sequence[str]) -> list[Cell]:
    """Every (resolution, init, arch), ordered by architecture, then initialisation, then resolution.
    Strings are comma-separated lists; each value is checked (one-line :class:`ConfigError`).
    ``archs`` empty or ``none``: no trained cell (the ablation of given models only; the
    resolutions and inits are then not used)."""
    if (archs if isinstance(archs, str) else ",".join(archs)).strip().lower() in NO_ARCHS:
        return []
    sides = parse_resolutions(resolutions)
    init_names, arch_names = _names(inits, INITS, "initialisation"), _names(archs, ARCHS, "architecture")
    return [Cell(side, init, arch) for arch in arch_names for init in init_names for side in sides]


@dataclass(frozen=True)
class DetectionProbe:
    """The detection AUCs of every cell: ``detectors`` fitted and scored on the examples of
    ``detect_attack`` at ``detect_eps`` (an :class:`~medart.budget.Eps` or a float; names as
    comma-separated text or a sequence)."""

    detect_attack: str = "pgd"
    detect_eps: Eps = Eps(1 / 255)
    detectors: tuple[str, ...] = ("kd", "dfeat")

    def __post_init__(self) -> None:
        parse_names(self.detect_attack, ATTACKS, "attack")
        object.__setattr__(self, "detect_eps", Eps(self.detect_eps, "detect_eps"))
        object.__setattr__(self, "detectors", _names(self.detectors, tuple(DETECTORS), "detector"))


@dataclass(frozen=True)
class LandscapeProbe:
    """The loss landscape around every cell's attacked images: the sharpness within L∞ ``radius``
    (an :class:`~medart.budget.Eps` or a float; ``None``: the detection ε) and the share of images
    whose input gradient's largest entry is below ``vanishing`` (gradient masking)."""

    radius: Eps | None = None
    vanishing: float = 1e-8

    def __post_init__(self) -> None:
        object.__setattr__(self, "radius", None if self.radius is None else Eps(self.radius, "radius"))
        if not self.vanishing > 0:
            raise ConfigError(f"the vanishing-gradient floor `vanishing` must be > 0, got {self.vanishing}")


@dataclass(frozen=True)
class AblationSettings:
    """What every cell trains and measures (the cells are the grid). ε values are
    :class:`~medart.budget.Eps` or floats (held as Eps), names comma-separated text or sequences;
    they are stored checked.

    Args:
        train: training settings of every cell's model.
        max_train: train on a stratified subset of this many Train images (``None``: all).
        max_eval: validate and test on stratified subsets of this size (``None``: all).
        attacks: attacks run at every ε of ``eps`` (paper settings).
        eps: the fixed ε list, [0, 1] pixel units (stored sorted, each once).
        bisection: the least successful ε of one of ``attacks``, bisected (its accuracies at
            ``eps`` seed the bisection).
        detection: the detectors (KD and DFeat by default) and the examples they are fitted and
            scored on.
        landscape: the sharpness radius and the vanishing-gradient floor.
        max_examples: test images attacked and measured (AdvTrain + AdvTest, stratified).
        reference_size: clean Train images KD measures against.
        models: models given, not trained, each a cell of its own (URIs, comma-separated text or a
            sequence): loaded once and measured as a trained cell is, on the test images at their
            own input side.
        model_options: how to read every given model where it does not say so itself (its
            ``model_uri`` is not used): input channels, size, normalisation, classes, penultimate
            layer, ``trusted_pickle``.
    """

    train: TrainConfig = field(default_factory=TrainConfig)
    max_train: int | None = None
    max_eval: int | None = None
    attacks: tuple[str, ...] = PAPER_ATTACKS
    eps: tuple[Eps, ...] = (Eps(1 / 255), Eps(4 / 255))
    bisection: Bisection = Bisection()
    detection: DetectionProbe = DetectionProbe()
    landscape: LandscapeProbe = LandscapeProbe()
    max_examples: int | None = 100
    reference_size: int = 200
    models: tuple[str, ...] = ()
    model_options: ModelSource = ModelSource()

    def __post_init__(self) -> None:
        models = self.models.split(",") if isinstance(self.models, str) else self.models or ()
        parsed = {"attacks": _names(self.attacks, ATTACKS, "attack"), "eps": tuple(sorted(set(Eps.many(self.eps)))),
                  "models": tuple(dict.fromkeys(m.strip() for m in models if m.strip()))}
        for name, value in parsed.items():
            object.__setattr__(self, name, value)
        if not self.eps:
            raise ConfigError("the ε list `eps` is empty; give e.g. 1/255,4/255")
        if self.bisection.bisect_attack not in self.attacks:  # its accuracies at `eps` seed the bisection and are plotted
            raise ConfigError(f"`bisect_attack` '{self.bisection.bisect_attack}' is not among `attacks` "
                              f"({','.join(self.attacks)}); add it there")
        if self.max_examples is not None and self.max_examples < 10:
            raise ConfigError(f"`max_examples` must be >= 10 (a fifth of them score the detectors), got {self.max_examples}")
        for name, value in (("max_train", self.max_train), ("max_eval", self.max_eval)):
            if value is not None and value < 2:
                raise ConfigError(f"`{name}` must be >= 2 images, got {value}")
        if self.reference_size < 1:
            raise ConfigError(f"`reference_size` must be >= 1 clean Train image, got {self.reference_size}")

    @property
    def sharpness_radius(self) -> Eps:
        return self.landscape.radius or self.detection.detect_eps

    def sources(self) -> list[ModelSource]:
        """How to load each of ``models``: ``model_options`` with its URI."""
        return [dataclasses.replace(self.model_options, model_uri=uri) for uri in self.models]

    def as_params(self, run: RunOptions) -> dict[str, Any]:
        """MLflow params: every field (each field of ``bisection``, ``detection`` and ``landscape``
        under its own name), the ``backend`` and ``batch_size`` the attacks ran with, ``train.*`` for
        the training settings, ``model.*`` for the ``model_options`` given; ε as ``k/255`` with its
        float under ``<name>_value`` (:func:`medart.budget.eps_params`), tuples comma-joined."""
        params: dict[str, Any] = {}
        for f in fields(self):
            if f.name in ("bisection", "detection", "landscape"):
                group = getattr(self, f.name)
                for g in fields(group):
                    params |= _param(g.name, getattr(group, g.name))
            elif f.name not in ("train", "model_options"):
                params |= _param(f.name, getattr(self, f.name))
        params |= {"backend": run.backend, "batch_size": run.batch_size}
        params |= {f"train.{k}": v for k, v in asdict(self.train).items()}
        params |= {f"model.{k}": v for k, v in asdict(self.model_options).items() if k != "model_uri" and v}
        return params


def _param(name: str, value: Any) -> dict[str, Any]:
    """One setting as MLflow params: an ε (or ε list) by :func:`medart.budget.eps_params`, another tuple comma-joined."""
    if holds_eps(value):
        return eps_params(name, value)
    return {name: ",".join(map(str, value)) if isinstance(value, tuple) else value}
