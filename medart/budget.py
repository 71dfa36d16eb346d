"""The L∞ budget ε as one typed value: :class:`Eps`, read from text once, at the face.

ε is in [0, 1] pixel units: ``1/255`` is one grey level of an 8-bit image. The command line's
``--eps``-like options (and so the MLproject's ``-P`` values) are read into an :class:`Eps` by
their click types (:mod:`medart.cli.options`); a Python caller gives an :class:`Eps` or a float.
Every request, spec and stage then holds that value and never reads text again.

It prints as people write it, ``k/255``; MLflow params hold that text under the key people read
and the float beside it under ``<key>_value`` (:func:`eps_params`, read back by :func:`logged_eps`).

On the bottom floor: the attacks, the stages and the command line all take it from here.
"""

from __future__ import annotations

import re
from typing import Mapping, Sequence

from medart.errors import ConfigError
from medart.numbers import eps_label

_FRACTION = re.compile(r"^\s*([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*/\s*([0-9]*\.?[0-9]+)\s*$")
VALUE_SUFFIX = "_value"  # the key of the float beside a logged k/255


def parse_eps(text: str) -> float:
    """The number ``text`` writes: ``"1/255"``, ``"0.5/255"``, ``"0.0039"``; the one reader of ε
    text, which only :class:`Eps` calls (``Eps(text)``). Not range-checked here."""
    match = _FRACTION.match(text)
    try:
        return float(match[1]) / float(match[2]) if match else float(text)
    except (ValueError, ZeroDivisionError):
        raise ConfigError(f"cannot read ε from {text!r}; write it as a number (0.0039) or a fraction (1/255)") from None


class Eps(float):
    """An L∞ budget in (0, 1] pixel units, immutable.

    ``Eps("1/255")``, ``Eps("0.0039")``, ``Eps(1 / 255)`` or an :class:`Eps`; ``what`` names the
    setting in the one-line :class:`~medart.errors.ConfigError` an out-of-range value gets.

    A ``float`` subclass, so that it goes wherever ε went as a float — arithmetic, comparisons,
    dict keys, torch, numpy, ART, torchattacks, JSON (written as the float, so the attack cache's
    keys are the ones made before it existed) — with no ``.value`` at every use site; equality,
    hashing and ordering are the float's (``Eps("1/255") == 1 / 255``). Arithmetic gives plain
    floats. Only printing differs: ``str()`` (and ``f"{eps}"``) is ``k/255`` with k to 3
    significant digits (:func:`medart.numbers.eps_label`), so ``Eps(0.0039)`` prints
    ``0.994/255``; ``repr()`` gives back the exact value.
    """

    __slots__ = ()

    def __new__(cls, value: "Eps | float | str", what: str = "ε") -> "Eps":
        if isinstance(value, Eps):
            return value
        number = parse_eps(value) if isinstance(value, str) else float(value)
        if not 0.0 < number <= 1.0:  # also NaN
            name = what if what == "ε" else f"`{what}`"
            raise ConfigError(f"{name} must be in (0, 1] in [0,1] pixel units (1/255 = one grey level), got {value!r}")
        return super().__new__(cls, number)

    def __str__(self) -> str:
        return eps_label(self)

    def __repr__(self) -> str:
        label = str(self)
        return f"Eps({label!r})" if Eps(label) == self else f"Eps({float.__repr__(self)})"

    @property
    def label(self) -> str:
        """``k/255``, as ``str()``."""
        return str(self)

    @classmethod
    def many(cls, values: Sequence["Eps | float"], what: str = "eps") -> tuple["Eps", ...]:
        """A tuple of :class:`Eps` from a sequence of them (or floats), in order; a string is refused
        (a comma-separated list is read at the face, by the command line's ε-list type)."""
        if isinstance(values, str):
            raise ConfigError(f"`{what}` takes a sequence of ε (Eps or floats), not the text {values!r}; "
                              f"e.g. (Eps('1/255'), Eps('4/255'))")
        return tuple(cls(v, what) for v in values)


def holds_eps(value: object) -> bool:
    """Whether ``value`` is an :class:`Eps` or a non-empty list or tuple of them (what
    :func:`eps_params` logs), so a writer of params can tell ε from its other settings."""
    return isinstance(value, Eps) or (isinstance(value, (list, tuple)) and bool(value) and all(isinstance(v, Eps) for v in value))


def eps_params(key: str, value: "Eps | Sequence[Eps] | None") -> dict[str, str | None]:
    """MLflow params for the ε (or the ε list, comma-joined) ``value`` logged under ``key``: the
    text people read, ``k/255``, under ``key`` and the exact float under ``key`` + ``_value``
    (``attack.eps = 1/255``, ``attack.eps_value = 0.00392156862745098``). ``None`` stays ``None``."""
    if value is None:
        return {key: None}
    values = [value] if isinstance(value, float) else list(value)
    return {key: ",".join(str(Eps(v)) for v in values), key + VALUE_SUFFIX: ",".join(repr(float(v)) for v in values)}


def logged_eps(params: Mapping[str, str], key: str) -> float:
    """The float a run logged for the ε ``key``: ``<key>_value`` (runs since ε was logged as k/255),
    else ``key`` itself (earlier runs logged the float there)."""
    return float(params.get(key + VALUE_SUFFIX, params[key]))


__all__ = ["Eps", "eps_params", "holds_eps", "logged_eps"]
