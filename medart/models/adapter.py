"""Any PyTorch image classifier as a medart model.

medart feeds every model float32 ``(N, 3, S, S)`` pixels in [0, 1] (grey images repeated to three
channels) and measures ε in those pixel units. :class:`AdaptedClassifier` puts a network's own
input contract (:class:`InputContract`: one or three channels, side, normalisation) *inside* the
model, so attacks, detectors and analyses see the same [0, 1] pixels whatever the network expects,
and gives the network what medart's stages ask of a model (:class:`Classifier`): ``config`` and
``classes``, named feature taps, the penultimate features ``dfeat``, and the top-level stages.

:class:`~medart.models.resnet.MedResNet` has the same interface, so the stages, detectors and
analyses take either.
"""

from __future__ import annotations

import contextlib
import difflib
import operator
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterator, Mapping, Protocol, Sequence

import torch
from torch import nn

from medart.errors import ConfigError, ModelError

INPUT, LOGITS, PENULTIMATE = "input", "logits", "dfeat"
NORMALISATIONS = {"imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))}
PROBE_SIDE = 64  # the probe batch's side when the contract names none


class Classifier(Protocol):
    """What medart's stages, detectors and analyses ask of a model (``MedResNet`` or ``AdaptedClassifier``).

    Input float32 ``(N, 3, S, S)`` pixels in [0, 1], output logits ``(N, K)``; ``config`` holds at
    least ``arch``, ``num_classes``, ``classes`` and ``image_size`` (``None``: any side)."""

    config: dict[str, Any]

    @property
    def classes(self) -> list[str]: ...

    def tap_names(self) -> list[str]: ...

    def layer_for(self, tap: str) -> tuple[nn.Module, str]:
        """The module whose ``"output"`` (or ``"input"``) is the tap: hooks on it see the tap."""

    def stage_taps(self) -> list[str]:
        """The network's top-level stages, early to late (LID's default layers between input and dfeat)."""

    def features(self, x: torch.Tensor, taps: Sequence[str]) -> dict[str, torch.Tensor]: ...


def unknown_tap(tap: str, names: Sequence[str], what: str = "feature tap") -> ConfigError:
    """A one-line error naming the closest of ``names``."""
    near = difflib.get_close_matches(tap, names, n=4, cutoff=0.5) or list(names)[:4]
    return ConfigError(f"unknown {what} '{tap}'; nearest: {', '.join(near)}")


@dataclass(frozen=True)
class InputContract:
    """What a network expects. medart always gives ``(N, 3, S, S)`` pixels in [0, 1]; the adapter
    averages the three (equal) grey channels to one when ``channels`` is 1, and applies
    ``(x − mean) / std`` per channel when ``mean``/``std`` are given (one value, or one per channel).
    ``size``: the side the network takes (``None``: any; the dataset's side is used)."""

    channels: int = 3
    size: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.channels not in (1, 3):
            raise ConfigError(f"a model takes 1 (grey) or 3 input channels, got `input_channels`={self.channels}")
        if self.size is not None and not (isinstance(self.size, int) and self.size >= 1):
            raise ConfigError(f"`input_size` must be a positive number of pixels, got {self.size!r}")
        if (self.mean is None) != (self.std is None):
            raise ConfigError("give the normalisation's mean and std together (`normalize`)")
        if self.mean is None:
            return
        mean, std = tuple(float(v) for v in self.mean), tuple(float(v) for v in self.std)
        for values in (mean, std):
            if len(values) not in (1, self.channels):
                raise ConfigError(f"`normalize` needs 1 or {self.channels} values for mean and for std, got {values}")
        if min(std) <= 0:
            raise ConfigError(f"`normalize` std must be > 0, got {std}")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)

    def as_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "InputContract":
        unknown = set(values) - {"channels", "size", "mean", "std"}
        if unknown:
            raise ConfigError(f"unknown input setting(s) {sorted(unknown)}; a model's input has channels, size, mean, std")
        return cls(**values)


def parse_normalize(text: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``"imagenet"``; ``"MEAN;STD"`` with comma-separated values (one, or one per channel); or
    ``"m,s"`` (one value each) → ``(mean, std)``."""
    text = text.strip()
    if text.lower() in NORMALISATIONS:
        return NORMALISATIONS[text.lower()]
    parts = text.split(";") if ";" in text else text.split(",") if text.count(",") == 1 else None
    try:
        mean, std = (tuple(float(v) for v in part.split(",")) for part in parts)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise ConfigError(f"`normalize` must be 'imagenet', 'MEAN;STD' (comma-separated per channel) or 'm,s', "
                          f"got {text!r}") from None
    return mean, std


@dataclass(frozen=True)
class Layout:
    """How to read a network that is not an ordinary module tree (a reloaded graph program).

    ``taps``: tap name → the module whose output it is (default: the network's named modules);
    ``linears``: names of its linear layers, in the order the program runs them (default: its
    ``nn.Linear`` modules); ``inputs``: linear layer name → a module whose output is that layer's
    input (default: a pre-hook on the ``nn.Linear`` itself); ``fixed_batch``: 1 when the program
    was exported for single images only; ``format``: how the network was stored (``pt2``,
    ``torchscript``, ``pickle``, ``state_dict``; ``module``: handed over in Python), part of what
    makes two models the same network (:func:`medart.attacks.cache.network_digest`)."""

    taps: Mapping[str, nn.Module] | None = None
    linears: tuple[str, ...] | None = None
    inputs: Mapping[str, nn.Module] | None = None
    fixed_batch: int | None = None
    format: str = "module"


class _Through:
    """A hook routing a module's input (pre-hook) or output through the identity ``tap``, so a hook
    on ``tap`` (medart's, or ART's on a top-level child) sees the penultimate features."""

    def __init__(self, tap: nn.Module) -> None:
        self.tap = tap

    def __call__(self, module: nn.Module, args: tuple, output: Any = None) -> Any:
        return self.tap(output) if output is not None else (self.tap(args[0]), *args[1:])


@contextlib.contextmanager
def tap_hooks(model: nn.Module, taps: Sequence[str], store: dict[str, list]) -> Iterator[None]:
    """While open, each forward pass appends the tensor of every tap (``input`` excepted) to
    ``store[tap]`` (a list: a program run image by image adds one entry per image)."""
    handles = []
    try:
        for tap in taps:
            if tap == INPUT:
                continue
            module, where = model.layer_for(tap)
            store.setdefault(tap, [])
            if where == "input":
                handles.append(module.register_forward_pre_hook(lambda _m, args, t=tap: store[t].append(args[0])))
            else:
                handles.append(module.register_forward_hook(lambda _m, _a, out, t=tap: store[t].append(out)))
        yield
    finally:
        for handle in handles:
            handle.remove()


def top_groups(names: Sequence[str]) -> dict[str, list[str]]:
    """Dotted module names grouped by their top-level stage, below any prefix they all share
    (``net.body.0`` → ``net.body`` when every name starts with ``net``), in order."""
    split = [n.split(".") for n in names]
    depth = 0
    while len({tuple(p[: depth + 1]) for p in split if len(p) > depth}) == 1 and any(len(p) > depth + 1 for p in split):
        depth += 1
    groups: dict[str, list[str]] = {}
    for parts in split:
        if len(parts) > depth:
            groups.setdefault(".".join(parts[: depth + 1]), []).append(".".join(parts))
    return groups


_COLLECTIONS = {"immutable_dict": "dict", "immutable_list": "sequence"}  # what a converted TorchScript program returns


def _describe(out: Any) -> tuple[str, dict[str, Any]]:
    """What a network returned, in words (``a dict with keys 'logits', 'aux'``), and its entries by
    the ``output_key`` that picks each: dict keys, sequence indices, tensor attributes."""
    kind = _COLLECTIONS.get(type(out).__name__, type(out).__name__)
    kind = f"{'an' if kind[0].lower() in 'aeiou' else 'a'} {kind}"
    if isinstance(out, Mapping):
        entries = {str(k): v for k, v in out.items()}
        return f"{kind} with keys {', '.join(repr(k) for k in entries)}", entries
    if isinstance(out, (tuple, list)):
        items = ", ".join(f"tensor {tuple(v.shape)}" if isinstance(v, torch.Tensor) else type(v).__name__ for v in out)
        return f"{kind} of {len(out)} items ({items})", {str(i): v for i, v in enumerate(out)}
    entries = {k: v for k, v in vars(out).items() if isinstance(v, torch.Tensor)} if hasattr(out, "__dict__") else {}
    return kind + (f" with tensor attributes {', '.join(entries)}" if entries else ""), entries


def output_picker(out: Any, key: str | None, what: str) -> Callable[[Any], torch.Tensor] | None:
    """How to take the logits from ``out``, what a network returned for a probe batch: ``None`` for
    a tensor (it is the logits); else the item ``key`` of a dict (or a HuggingFace ``ModelOutput``),
    the item at index ``key`` of a tuple or list, or the attribute ``key`` of another object.
    ``what`` starts the one-line :class:`~medart.errors.ModelError` (``"resnet18 returns"``) when
    ``key`` is missing, does not fit ``out`` or picks no tensor; medart never guesses the key."""
    if isinstance(out, torch.Tensor):
        if key is not None:
            raise ModelError(f"{what} a tensor, which needs no `output_key`; drop `output_key`={key}")
        return None
    described, entries = _describe(out)
    tensors = [k for k, v in entries.items() if isinstance(v, torch.Tensor)]
    if key is None:
        if not tensors:
            raise ModelError(f"{what} {described}, not a tensor of (N, K) logits; wrap it to return the logits")
        logits = [k for k in tensors if entries[k].ndim == 2]
        suggest = "logits" if "logits" in tensors else (logits or tensors)[0]
        raise ModelError(f"{what} {described} instead of a logits tensor; pick one with `output_key`={suggest}")
    if key not in entries:
        where = f"an index from 0 to {len(entries) - 1}" if isinstance(out, (tuple, list)) else f"one of {', '.join(entries)}"
        raise ModelError(f"{what} {described}, which has no {key!r}; `output_key` must be {where}")
    if not isinstance(entries[key], torch.Tensor):
        raise ModelError(f"{what} {described}, whose {key!r} is a {type(entries[key]).__name__}, not a tensor of logits; "
                         f"pick another `output_key`")
    if isinstance(out, Mapping):
        return operator.itemgetter(next(k for k in out if str(k) == key))
    if isinstance(out, (tuple, list)):
        return operator.itemgetter(int(key))
    return operator.attrgetter(key)


class AdaptedClassifier(nn.Module):
    """A classifier ``network`` (float32 ``(N, C, S, S)`` in the network's own units → logits
    ``(N, K)``, or a dict, tuple or object holding them) with its input contract inside, so that
    it takes medart's [0, 1] pixels and returns the logits tensor.

    Args:
        network: any ``nn.Module`` (also a reloaded ``torch.export`` program, see :class:`Layout`).
        classes: class names, index = logit; ``None``: the dataset's, if the counts agree.
        contract: the network's input (:class:`InputContract`).
        penultimate: the tap whose output is the penultimate features ``dfeat``; default: the
            input of the last ``nn.Linear`` the network runs (found with the probe batch). A
            network without one is an error only when ``dfeat`` is asked for (the detectors and
            analyses ask; attacks and evaluation never do).
        name: what the network is (``config["arch"]``), e.g. ``resnet18``.
        source: where it came from (a URI or path), for the record.
        layout: how to read a graph program (:class:`Layout`).
        output_key: where the logits are when the network returns a dict (a key), a tuple or
            list (an index, as text: ``"0"``) or another object (an attribute), see
            :func:`output_picker`; ``None`` for a network returning the logits tensor.

    A probe batch of two images checks that the output is ``(N, K)`` logits: a
    :class:`~medart.errors.ModelError` otherwise.
    """

    def __init__(self, network: nn.Module, classes: Sequence[str] | None = None, contract: InputContract = InputContract(),
                 penultimate: str | None = None, name: str = "custom", source: str = "", layout: Layout = Layout(),
                 output_key: str | None = None) -> None:
        super().__init__()
        self.network, self.contract, self._layout = network, contract, layout
        self.dfeat = nn.Identity()  # the penultimate features pass through here (see _Through)
        if contract.mean is not None:
            self.register_buffer("mean", torch.tensor(contract.mean).view(1, -1, 1, 1))
            self.register_buffer("std", torch.tensor(contract.std).view(1, -1, 1, 1))
        self._taps = dict(layout.taps) if layout.taps is not None else {
            n: m for n, m in network.named_modules() if n}
        if penultimate is not None and penultimate not in self._taps:
            raise unknown_tap(penultimate, list(self._taps), "penultimate layer")
        self.config: dict[str, Any] = {
            "arch": name, "source": source, "classes": list(classes) if classes is not None else None,
            "classes_declared": classes is not None, "image_size": contract.size, "input": contract.as_dict(),
            "penultimate": penultimate, "output_key": output_key, "fixed_batch": layout.fixed_batch,
            "format": layout.format}
        side = contract.size or PROBE_SIDE
        probe = torch.full((2, 3, side, side), 0.5)
        raw, linear_outputs, finished = self._probe(probe)
        self._pick: Callable[[Any], torch.Tensor] | None = None
        self._check_output(probe, raw)
        self._probed = _Probed.of(self._logits(raw), linear_outputs, finished, self._weighted(finished))
        self._routed = self._route_penultimate()

    # -- medart's model interface -------------------------------------------------------------

    @property
    def classes(self) -> list[str]:
        return self.config["classes"]

    def name_classes(self, names: Sequence[str]) -> None:
        """Give an undeclared model the dataset's class names (the counts must agree)."""
        if len(names) != self.config["num_classes"]:
            raise ModelError(f"{self.config['arch']} has {self.config['num_classes']} outputs but the dataset has "
                             f"{len(names)} classes {list(names)}")
        self.config["classes"] = list(names)

    def tap_names(self) -> list[str]:
        """``input`` (the pixels medart gives), the network's named modules, ``dfeat``, ``logits``."""
        return [INPUT, *self._taps, PENULTIMATE, LOGITS]

    def layer_for(self, tap: str) -> tuple[nn.Module, str]:
        """The module whose ``"output"`` is ``tap``. Asking for ``dfeat`` finds the penultimate
        features (a one-line :class:`~medart.errors.ModelError` when the network runs no linear
        layer and no `penultimate` layer was named)."""
        if tap == PENULTIMATE:
            if not self._routed:
                raise self._no_penultimate()
            return self.dfeat, "output"
        if tap == LOGITS:
            return self, "output"
        if tap in self._taps:
            return self._taps[tap], "output"
        raise unknown_tap(tap, self.tap_names(), "layer")

    def stage_taps(self) -> list[str]:
        """The network's top-level stages, early to late: its top-level children with weights (below
        a wrapper holding them all, such as ``self.net``), except the one holding the final
        classifier (``dfeat`` stands for it); for a graph program, the last tap of each of them."""
        graph = self._layout.taps is not None
        names = list(self._taps) if graph else [n for n, m in self.network.named_modules() if n and any(True for _ in m.parameters())]
        groups = top_groups(names)
        classifier = self._classifier_layer()
        head = next((g for g in groups if classifier and (classifier == g or classifier.startswith(g + "."))), None)
        return [members[-1] if graph else group for group, members in groups.items() if group != head]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.prepare(x)
        if self._layout.fixed_batch == 1 and len(x) != 1:  # a program exported for single images
            return torch.cat([self._logits(self.network(x[i : i + 1])) for i in range(len(x))])
        return self._logits(self.network(x))

    def _logits(self, out: Any) -> torch.Tensor:
        return out if self._pick is None else self._pick(out)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """medart's pixels ``(N, 3, S, S)`` in [0, 1] → what the network takes (channels, normalisation)."""
        if self.contract.channels == 1:
            x = x.mean(dim=1, keepdim=True)
        if self.contract.mean is not None:
            x = (x - self.mean) / self.std  # as ART's StandardisationMeanStd computes it
        return x

    def features(self, x: torch.Tensor, taps: Sequence[str] = (PENULTIMATE,)) -> dict[str, torch.Tensor]:
        """The named taps of a batch ``x`` (N, 3, S, S) in [0, 1]: ``input`` is ``x`` itself,
        ``dfeat`` the penultimate features ``(N, D)``, ``logits`` ``(N, K)``, any other name a
        module of the network (its output)."""
        names = set(self.tap_names())
        for tap in taps:
            if tap not in names:
                raise unknown_tap(tap, self.tap_names())
        store: dict[str, list] = {}
        with tap_hooks(self, taps, store):
            self(x)
        return {t: x if t == INPUT else torch.cat(store[t]) for t in taps}

    # -- finding the penultimate features and checking the output ------------------------------

    def _route_penultimate(self) -> bool:
        """Hook the penultimate features through ``self.dfeat``: the output of the named
        `penultimate` layer, else the input of the linear layer computing the logits (see
        :class:`_Probed`). ``False`` when there is none: only asking for ``dfeat`` is then an error
        (attacks and evaluation never ask)."""
        named, linear = self.config["penultimate"], self._probed.linear
        if named is not None:
            module, where = self._taps[named], "output"
        elif linear is not None and self._layout.inputs is not None:
            module, where = self._layout.inputs[linear], "output"
        elif linear is not None:
            module, where = dict(self.network.named_modules())[linear], "input"
        else:
            return False
        hook = _Through(self.dfeat)
        module.register_forward_pre_hook(hook) if where == "input" else module.register_forward_hook(hook)
        return True

    def _classifier_layer(self) -> str | None:
        """The name of the layer computing the logits, whose stage is the classifier's (``None``
        when a `penultimate` layer was named: that layer keeps its stage)."""
        if self.config["penultimate"] is not None:
            return None
        return self._probed.linear or self._probed.last_weighted

    def _probe(self, probe: torch.Tensor) -> tuple[Any, dict[str, torch.Tensor], list[str]]:
        """Run ``probe`` through the network once (one image of it for a program exported for
        single images): what the network returned, the output of each linear layer (in the order
        they finished) and the taps in the order they finished."""
        graph = self._layout.taps is not None  # a graph program: a linear layer's output is its tap's
        named = dict(self.network.named_modules())
        linears = self._layout.linears if self._layout.linears is not None else [
            n for n, m in named.items() if isinstance(m, nn.Linear)]
        modules = {n: self._taps[n] if graph else named[n] for n in linears if n in (self._taps if graph else named)}
        outputs: dict[str, torch.Tensor] = {}
        finished: list[str] = []

        def linear_done(name: str, out: torch.Tensor) -> None:
            outputs.pop(name, None)  # a layer run twice counts where it ran last
            outputs[name] = out

        handles = [m.register_forward_hook(lambda _m, _a, out, n=n: linear_done(n, out)) for n, m in modules.items()]
        handles += [m.register_forward_hook(lambda *_a, n=n: finished.append(n)) for n, m in self._taps.items()]
        try:
            with torch.no_grad():
                raw = self.eval().network(self.prepare(probe[:1] if self._layout.fixed_batch == 1 else probe))
        except Exception as exc:  # noqa: BLE001 - whatever the network raises, the user gets one line
            raise self._probe_error(probe, exc) from exc
        finally:
            for handle in handles:
                handle.remove()
        return raw, outputs, finished

    def _weighted(self, finished: Sequence[str]) -> list[str]:
        """The taps of ``finished`` that are layers with weights (a graph program's taps all are)."""
        graph = self._layout.taps is not None
        return [n for n in finished if graph or any(True for _ in self._taps[n].parameters(recurse=False))]

    def _no_penultimate(self) -> ModelError:
        """No linear layer: suggest the layers that finish last before the classifier's stage starts."""
        groups = top_groups(list(self._taps))
        last = self._probed.last_weighted
        head = next((g for g in groups if last and (last == g or last.startswith(g + "."))), None)
        before = [n for n in reversed(dict.fromkeys(self._probed.finished))
                  if head is None or not (n == head or n.startswith(head + "."))]
        example = f", e.g. {', '.join(before[:3])} (what feeds {head!r}, which computes the logits)" if before else ""
        return ModelError(f"{self.config['arch']} runs no nn.Linear layer, so its penultimate features (dfeat) cannot be "
                          f"found; name the layer whose output they are with `penultimate`{example}")

    def _probe_error(self, probe: torch.Tensor, exc: Exception) -> ModelError:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return ModelError(f"{self.config['arch']} fails on a probe batch of {tuple(probe.shape)} pixels "
                          f"({type(exc).__name__}: {first[:200]}); give its input with `input_channels`, `input_size`")

    def _check_output(self, probe: torch.Tensor, raw: Any) -> None:
        """Pick the logits from what the network returned for ``probe`` (``raw``; see
        ``output_key``) and check them."""
        key = self.config["output_key"]
        what = f"{self.config['arch']} returns"
        self._pick = output_picker(raw, key, what)
        if self._layout.fixed_batch == 1:  # ``raw`` is one image's: the whole probe, image by image
            try:
                with torch.no_grad():
                    out = self.eval()(probe)
            except Exception as exc:  # noqa: BLE001
                raise self._probe_error(probe, exc) from exc
        else:
            out = self._logits(raw)
        what += f" as {key!r}" if key is not None else ""
        if out.ndim != 2 or out.shape[0] != len(probe) or out.shape[1] < 2:
            raise ModelError(f"{what} shape {tuple(out.shape)} for {len(probe)} images, not (N, K) logits with K >= 2")
        if (out >= 0).all() and torch.allclose(out.sum(1), torch.ones(len(out)), atol=1e-5):
            raise ModelError(f"{what} probabilities (each row sums to 1), not logits; drop its final softmax")
        classes = self.config["classes"]
        if classes is not None and len(classes) != out.shape[1]:
            raise ModelError(f"{what} {out.shape[1]} logits but {len(classes)} class names were given: {classes}")
        self.config["num_classes"] = int(out.shape[1])


@dataclass(frozen=True)
class _Probed:
    """What the probe batch ran: the linear layer computing the logits, the last weighted layer
    (or graph tap) that finished, and every tap in the order it finished."""

    linear: str | None
    last_weighted: str | None
    finished: tuple[str, ...]

    @classmethod
    def of(cls, logits: torch.Tensor, linear_outputs: Mapping[str, torch.Tensor], finished: Sequence[str],
           weighted: Sequence[str]) -> "_Probed":
        """The linear layer whose output *is* the ``logits`` tensor, else the last one to finish:
        with several heads (a dict or tuple output), the logits' own head, not the last one run."""
        last = list(linear_outputs)[-1] if linear_outputs else None
        linear = next((n for n, out in reversed(linear_outputs.items()) if out is logits), last)
        return cls(linear, weighted[-1] if weighted else None, tuple(finished))
