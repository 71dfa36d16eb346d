"""Model formats and loading: where models come from, each with its trust rule; every one
becomes a medart model. :class:`ModelSource` names the model and what the caller says about it.
The formats are declared in :data:`medart.models.MODEL_FORMATS`; what the loader does with each:

=====================================  ==================================================  =========================
format                                 what medart does                                    trust
=====================================  ==================================================  =========================
medart's own (``medart.json``)         rebuilds the MedResNet                              tensor-only weights
MLflow ``pytorch``, ``pt2``            ``torch.export.load`` → unflattened, adapted        MLflow's check that the
                                                                                           archive holds no pickle
MLflow ``pytorch``, ``pickle``         ``mlflow.pytorch.load_model``, adapted              refused (before anything
                                                                                           is unpickled) unless
                                                                                           ``trusted_pickle``
TorchScript file                       ``torch.jit.load`` → converted for taps, adapted    runs no Python code
model card + weights                   torchvision/timm network + state_dict, adapted      tensor-only weights
=====================================  ==================================================  =========================

The input contract (channels, side, normalisation), the class names, the penultimate layer and
the ``output_key`` (where the logits are in a dict, tuple or object output) come from the model card (a card file, or ``metadata={"medart": {...}}`` of an MLflow model), else
from what the model declares (its MLflow signature, its program's input shape), else from the
caller's :class:`ModelSource`; an option contradicting the model is an error.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping

import torch
from torch import nn

from medart.errors import ConfigError, ModelError
from medart.models import MODEL_FORMATS, READS, programs, registry
from medart.models.adapter import AdaptedClassifier, InputContract, Layout, parse_normalize
from medart.models.cards import CARD, ModelCard, build_architecture, is_torchscript, load_torchscript
from medart.models.resnet import load_state_dict_file

if TYPE_CHECKING:
    from medart.data.splits import ProtocolSplits

_OPTIONS = {"channels": "input_channels", "size": "input_size", "mean": "normalize", "std": "normalize"}
_PICKLE_ENV = "MLFLOW_ALLOW_PICKLE_DESERIALIZATION"
_pickle_lock = threading.Lock()


@dataclass(frozen=True)
class ModelSource:
    """Which model, and how to read it: ``model_uri`` (``models:/…``, ``runs:/…``, a folder or a
    file) and, for a network that is not medart's own, what the model does not say itself (a
    model card or the MLflow signature comes first; see the formats above):
    ``input_channels`` (1 or 3), ``input_size`` (pixels per side), ``normalize`` (``imagenet``,
    ``MEAN;STD`` with comma-separated per-channel values, or ``m,s``), ``classes`` (names, comma-
    separated text or a tuple; default: the dataset's when the counts agree) and ``penultimate``
    (the layer whose output is the penultimate features; default: the input of the last linear
    layer), ``output_key`` (for a network returning a dict, tuple/list or object: the key, index
    or attribute holding the logits; default: none, the network returns the logits tensor).
    ``trusted_pickle`` allows an MLflow ``pickle`` model, which runs code when it loads, for this
    URI only. ``defence``: preprocessing defences put in front of the model, in order
    (:mod:`medart.models.defence_specs`: ``jpeg:quality=75``, ``squeeze:bits=4``, ``smooth:window=3``,
    ``noise:sigma=0.1``; a text, each of which may join several with ``+``, or a tuple of them),
    kept as their canonical texts."""

    model_uri: str | None = None
    trusted_pickle: bool = False
    input_channels: int | None = None
    input_size: int | None = None
    normalize: str | None = None
    classes: str | tuple[str, ...] | None = None
    penultimate: str | None = None
    output_key: str | None = None
    defence: str | tuple[str, ...] = ()

    def __post_init__(self) -> None:
        from medart.models.defence_specs import parse_defences  # torch-free: a bad defence fails before anything loads

        object.__setattr__(self, "defence", tuple(str(d) for d in parse_defences(self.defence or ())))
        if self.output_key is not None:  # an index given as a number from Python is the same key as from the CLI
            object.__setattr__(self, "output_key", str(self.output_key))
        if isinstance(self.classes, str):
            names = tuple(c.strip() for c in self.classes.split(",") if c.strip())
            object.__setattr__(self, "classes", names or None)
        elif self.classes is not None:
            object.__setattr__(self, "classes", tuple(self.classes))


def load_model(source: ModelSource, side: int | None = None) -> nn.Module:
    """The model ``source`` names, on the CPU in eval mode: a MedResNet for medart's own format,
    else an :class:`AdaptedClassifier`; behind a
    :class:`~medart.models.defended.DefendedClassifier` when ``source`` names a
    ``defence``. ``side``: the input side to assume when nothing says it."""
    with registry.downloaded(source.model_uri) as path:
        model = _load(path, source, side)
    if source.defence:
        from medart.models.defended import DefendedClassifier

        model = DefendedClassifier(model, source.defence, side).eval()
    return model


def _load(path: Path, source: ModelSource, side: int | None) -> nn.Module:
    uri = source.model_uri
    if path.is_file():
        if path.suffix == ".json":
            return load_card(path, source, side)
        if is_torchscript(path):
            return adapt(load_torchscript(path), ModelCard(), source, side)
    elif (folder := registry.medart_folder(path)) is not None:
        given = [f"`{name}`" for name in ("input_channels", "input_size", "normalize", "classes", "penultimate", "output_key")
                 if getattr(source, name) is not None]
        if given:
            raise ConfigError(f"'{uri}' is a medart model, which knows its own input, classes, features and output; "
                              f"drop {', '.join(given)}")
        return registry.load_files(folder / registry.CONFIG, folder / registry.WEIGHTS, "cpu", source.trusted_pickle)
    else:
        for sub in (path, path / "artifacts"):
            if (sub / CARD).is_file():
                return load_card(sub / CARD, source, side)
        if (path / "MLmodel").is_file():
            return _from_mlflow(path, source, side)
    raise ModelError(f"'{uri}' holds no model medart reads; it reads {READS}")


def adapt(network: Any, card: ModelCard, source: ModelSource, side: int | None = None,
          declared: Mapping[str, Any] | None = None, stored_as: str = "module") -> AdaptedClassifier:
    """``network`` (a module, a TorchScript module or an exported program) with its input contract,
    classes, penultimate layer and ``output_key`` from ``card``, ``declared`` (what the model itself
    says) and ``source`` (the caller's options), in that order; an ``output_key`` option that
    contradicts the card's is an error. ``stored_as``: how a module was stored (``pickle``,
    ``state_dict``; a program's format is its own: ``pt2``, ``torchscript``)."""
    if stored_as not in MODEL_FORMATS:
        raise ConfigError(f"unknown model format '{stored_as}'; choose from: {', '.join(MODEL_FORMATS)}")
    contract = _contract(card, declared or {}, source, side)
    if None not in (card.output_key, source.output_key) and card.output_key != source.output_key:
        raise ConfigError(f"'{source.model_uri}' declares output_key {card.output_key!r}, but `output_key` gives "
                          f"{source.output_key!r}; drop `output_key`")
    layout, name = Layout(format=stored_as), card.architecture
    if isinstance(network, torch.jit.ScriptModule):
        example = torch.rand(2, contract.channels, contract.size, contract.size)
        name = name or f"torchscript {network.original_name}"
        network, layout = programs.from_torchscript(network, example)
        layout = dataclasses.replace(layout, format="torchscript")
    elif isinstance(network, torch.export.ExportedProgram):
        name = name or "pt2 program"
        network, layout = programs.from_exported(network)
        layout = dataclasses.replace(layout, format="pt2")
    elif not isinstance(network, nn.Module):
        raise ModelError(f"'{source.model_uri}' holds a {type(network).__name__}, not a torch.nn.Module")
    classes = card.classes or source.classes
    return AdaptedClassifier(network, classes, contract, card.penultimate or source.penultimate,
                             name or type(network).__name__, source.model_uri or "", layout,
                             card.output_key or source.output_key).eval()


def _contract(card: ModelCard, declared: Mapping[str, Any], source: ModelSource, side: int | None) -> InputContract:
    given: dict[str, Any] = {"channels": source.input_channels, "size": source.input_size}
    if source.normalize:
        given["mean"], given["std"] = parse_normalize(source.normalize)
    said = {k: v for k, v in {**declared, **(card.input or {})}.items() if v is not None}
    for key, value in given.items():
        if value is not None and key in said and _values(said[key]) != _values(value):
            raise ConfigError(f"'{source.model_uri}' declares input {key} {said[key]}, but `{_OPTIONS[key]}` gives "
                              f"{value}; drop `{_OPTIONS[key]}`")
    merged = {k: v for k, v in given.items() if v is not None} | said
    if merged.get("size") is None and side is not None:
        merged["size"] = side
    return InputContract.from_dict(merged)


def _values(value: Any) -> tuple[float, ...]:
    return tuple(float(v) for v in value) if isinstance(value, (list, tuple)) else (float(value),)


def load_card(path: Path, source: ModelSource, side: int | None = None) -> nn.Module:
    """The model a card at ``path`` describes, adapted (:func:`adapt`)."""
    card = ModelCard.read(path)
    if card.weights is None:
        raise ConfigError(f"{path}: the card names no `weights` file")
    weights = path.parent / card.weights
    if not weights.is_file():
        raise ModelError(f"{path}: its weights file {weights} is missing")
    if is_torchscript(weights):
        network = load_torchscript(weights)
    elif card.architecture is None:
        raise ConfigError(f"{path}: a state_dict needs its `architecture` (a torchvision name, or timm:<name>)")
    else:
        network = build_architecture(card.architecture, load_state_dict_file(weights, source.trusted_pickle), str(weights))
    return adapt(network, card, source, side, stored_as="state_dict")


def _from_mlflow(folder: Path, source: ModelSource, side: int | None) -> nn.Module:
    from mlflow.models import Model

    uri = source.model_uri
    logged = Model.load(str(folder / "MLmodel"))
    flavor = logged.flavors.get("pytorch")
    if flavor is None:
        raise ModelError(f"'{uri}' is an MLflow model of flavour {', '.join(logged.flavors)}, not pytorch; medart reads {READS}")
    card = ModelCard.from_dict((logged.metadata or {}).get("medart") or {}, f"{uri} (MLmodel metadata 'medart')")
    declared = _signature_input(logged.signature)
    data = folder / flavor.get("model_data", "data")
    if (data / "model.pt2").is_file():
        _check_pickle_free(data / "model.pt2", source)
        program = torch.export.load(str(data / "model.pt2"))
        _, channels, height, width = programs.input_shape(program)
        declared |= {"channels": channels} if isinstance(channels, int) else {}
        declared |= {"size": height} if isinstance(height, int) and height == width else {}
        return adapt(program, card, source, side, declared)
    if (data / "model.pth").is_file():
        if not source.trusted_pickle:
            raise ModelError(f"'{uri}' is an MLflow pytorch model in the pickle format, which runs code when it loads; "
                             "refused: pass `trusted_pickle`=True only if you trust its author (or log it as pt2)")
        with _pickle_allowed():
            network = _mlflow_load(str(folder))
        return adapt(network, card, source, side, declared, stored_as="pickle")
    raise ModelError(f"'{uri}' is an MLflow pytorch model without model.pt2 or model.pth; medart reads {READS}")


def _signature_input(signature) -> dict[str, int]:
    """Channels and side from a ``(-1, C, S, S)`` tensor signature, if the model has one."""
    inputs = getattr(signature, "inputs", None)
    if inputs is None or not inputs.is_tensor_spec() or len(inputs.inputs[0].shape) != 4:
        return {}
    _, channels, height, width = inputs.inputs[0].shape
    out = {"channels": channels} if channels in (1, 3) else {}
    return out | ({"size": height} if height > 0 and height == width else {})


def _check_pickle_free(path: Path, source: ModelSource) -> None:
    """MLflow's own check that a pt2 archive unpickles nothing (its loader runs it too)."""
    import mlflow.pytorch
    from mlflow.exceptions import MlflowException

    validate = getattr(mlflow.pytorch, "_validate_pt2_archive_is_pickle_free", None)
    if validate is None or source.trusted_pickle:
        return
    try:
        validate(str(path))
    except MlflowException as exc:
        raise ModelError(f"'{source.model_uri}' is a pt2 program holding pickled objects, which run code when they load; "
                         "refused: pass `trusted_pickle`=True only if you trust its author") from exc


@contextlib.contextmanager
def _pickle_allowed() -> Iterator[None]:
    """MLflow's own switch for unpickling models, on for this block only (the caller was trusted)."""
    with _pickle_lock:
        before = os.environ.get(_PICKLE_ENV)
        os.environ[_PICKLE_ENV] = "true"
        try:
            yield
        finally:
            if before is None:
                os.environ.pop(_PICKLE_ENV, None)
            else:
                os.environ[_PICKLE_ENV] = before


def _mlflow_load(folder: str) -> nn.Module:
    import mlflow.pytorch
    from mlflow.exceptions import MlflowException

    try:
        return mlflow.pytorch.load_model(folder, map_location="cpu", weights_only=False)
    except (MlflowException, ImportError, AttributeError, RuntimeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelError(f"the pickled model in {folder} cannot be loaded ({type(exc).__name__}: {first[:200]})") from exc


def fit_to_dataset(model: nn.Module, splits: "ProtocolSplits", uri: str) -> None:
    """Check that ``model`` can be measured on ``splits`` (one-line :class:`ModelError` otherwise):
    its class count (and names, when the model declares them; else it takes the dataset's) and,
    for a one-channel model, grey images."""
    k, n = model.config["num_classes"], len(splits.classes)
    if k != n:
        raise ModelError(f"{uri} has {k} outputs (classes {model.classes}) but {splits.name} has {n} classes "
                         f"{splits.classes}; use a model for this task")
    if model.config.get("classes_declared") is False:
        model.name_classes(splits.classes)
    elif model.classes != splits.classes:
        raise ModelError(f"{uri} predicts {model.classes}, but {splits.name} has classes {splits.classes}")
    if (model.config.get("input") or {}).get("channels") == 1:
        x = torch.stack([splits.train[i][0] for i in range(min(8, len(splits.train)))])
        if not (torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 1], x[:, 2])):
            raise ModelError(f"{uri} takes 1 (grey) channel but {splits.name} images are in colour; use a 3-channel model")
