"""Preprocessing defences declared and read as text, torch-free (the command line parses them before anything loads).

A defence is ``name[:key=value[,key=value]]``; several stack, applied left to right, when given
one by one (``--defence squeeze:bits=4 --defence jpeg:quality=75``) or joined with ``+``
(``squeeze:bits=4+jpeg:quality=75``). A setting left out takes its default, so every defence has
one canonical text (``jpeg`` → ``jpeg:quality=75``), which is what runs record.

========  ===========================================  =========  ==========  ==========
defence   ART preprocessor                             setting    default     range
========  ===========================================  =========  ==========  ==========
jpeg      ``JpegCompression``                          quality    75          1 … 100
squeeze   ``FeatureSqueezing`` (bit depth)             bits       4           1 … 8
smooth    ``SpatialSmoothing`` (median filter)         window     3           2 … the image side
noise     ``GaussianAugmentation`` (noise only)        sigma      0.1         (0, 1] pixels
========  ===========================================  =========  ==========  ==========

``noise`` is randomized: attacks average their gradient over draws (EOT). The others are
deterministic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from medart.errors import ConfigError

EOT_SAMPLES = 8  # noise draws an EOT gradient averages, unless the attack says otherwise
JOIN = "+"


@dataclass(frozen=True)
class Setting:
    """One setting of a defence: its type, default and closed range, and why the range."""

    kind: type
    default: float
    low: float
    high: float | None  # None: bounded by the image side, checked when the defence meets a model
    why: str
    open_low: bool = False

    def read(self, defence: str, key: str, text: str) -> float:
        try:
            value = self.kind(text)
        except ValueError:
            raise ConfigError(f"{defence}:{key} must be {self._range()}, got {text!r}") from None
        if not math.isfinite(value) or (value <= self.low if self.open_low else value < self.low) or (self.high is not None and value > self.high):
            raise ConfigError(f"{defence}:{key} must be {self._range()} ({self.why}), got {text}")
        return value

    def _range(self) -> str:
        what = "an integer" if self.kind is int else "a number"
        high = "the image side" if self.high is None else f"{self.high:g}"
        return f"{what} in ({self.low:g}, {high}]" if self.open_low else f"{what} from {self.low:g} to {high}"


#: defence → setting name → :class:`Setting`, in the order the canonical text lists them
SETTINGS: dict[str, dict[str, Setting]] = {
    "jpeg": {"quality": Setting(int, 75, 1, 100, "PIL's JPEG quality")},
    "squeeze": {"bits": Setting(int, 4, 1, 8, "medart's images have 8 bits per channel")},
    "smooth": {"window": Setting(int, 3, 2, None, "the median filter's side in pixels; 1 leaves the image as it is")},
    "noise": {"sigma": Setting(float, 0.1, 0.0, 1.0, "the noise's standard deviation in [0, 1] pixels", open_low=True)},
}
RANDOMIZED = frozenset({"noise"})
DEFENCES = tuple(SETTINGS)  # the preprocessing defences, declared once (by their settings above)
# how an attack goes through them: BPDA (ART's estimate_gradient; with EOT for randomized ones) or
# plain (the defence's own derivative, which masks)
DEFENCE_GRADIENTS = ("bpda", "plain")


@dataclass(frozen=True)
class DefenceSpec:
    """One preprocessing defence: ``name`` (one of :data:`DEFENCES`) and its
    ``settings`` as ``(key, value)`` pairs, every setting present, in :data:`SETTINGS` order."""

    name: str
    settings: tuple[tuple[str, float], ...]

    def __getitem__(self, key: str) -> float:
        return dict(self.settings)[key]

    @property
    def randomized(self) -> bool:
        """Whether each pass draws anew (then attacks average over draws: EOT)."""
        return self.name in RANDOMIZED

    def __str__(self) -> str:
        return f"{self.name}:" + ",".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in self.settings)


def parse_defence(text: str) -> DefenceSpec:
    """One defence from ``name[:key=value[,key=value]]``; a setting left out takes its default."""
    name, _, rest = text.strip().partition(":")
    name = name.strip().lower()
    if name not in SETTINGS:
        raise ConfigError(f"unknown defence {name!r}; choose from: {', '.join(DEFENCES)} (e.g. jpeg:quality=75)")
    settings = SETTINGS[name]
    given: dict[str, float] = {}
    for item in (i for i in rest.split(",") if i.strip()):
        key, sep, value = (part.strip() for part in item.partition("="))
        if not sep or key not in settings:
            raise ConfigError(f"{name} takes {', '.join(f'{k}=…' for k in settings)}, got {item.strip()!r} "
                              f"(e.g. {name}:{next(iter(settings))}={settings[next(iter(settings))].default:g})")
        if key in given:
            raise ConfigError(f"{name}:{key} is given twice in {text.strip()!r}")
        given[key] = settings[key].read(name, key, value)
    return DefenceSpec(name, tuple((k, given.get(k, s.kind(s.default))) for k, s in settings.items()))


def parse_defences(texts: str | Sequence[str]) -> tuple[DefenceSpec, ...]:
    """Defences in the order given, from one text or several, each of which may join several with
    ``+``; empty text is no defence."""
    items = [texts] if isinstance(texts, str) else list(texts)
    return tuple(parse_defence(part) for text in items for part in str(text).split(JOIN) if part.strip())
