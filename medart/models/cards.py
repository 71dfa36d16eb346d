"""Model cards: a plain weights file described by a small JSON file.

A card (``medart-card.json``) says what a weights file is::

    {"architecture": "resnet18",              # a torchvision name, or "timm:<name>" (needs timm)
     "weights": "resnet18-cxr.pt",            # beside the card: a tensor-only state_dict or a TorchScript file
     "classes": ["normal", "pneumonia"],
     "input": {"channels": 3, "size": 64, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
     "penultimate": null,                     # optional: the layer whose output is the penultimate features
     "output_key": null}                      # optional: the key/index/attribute of the logits in a dict, tuple or object output

Trust: a state_dict is read with ``weights_only=True`` (tensors only; anything else is refused,
never unpickled) and a TorchScript file with ``torch.jit.load``, which runs no Python code.
:func:`medart.models.loading.load_card` reads a card into a medart model;
:func:`medart.stages.register.register` (``medart register``) logs the card and the weights as an
MLflow model (a pyfunc "model from code", like medart's own) and registers it, so
``models:/<name>@<alias>`` reaches every stage.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from medart.errors import ConfigError, ModelError

CARD = "medart-card.json"
PYFUNC_CODE = Path(__file__).with_name("card_pyfunc.py")  # the MLflow entry point stored with a card model


@dataclass(frozen=True)
class ModelCard:
    """What a model says about itself (any field may be missing; see the module docstring)."""

    architecture: str | None = None
    weights: str | None = None
    classes: tuple[str, ...] | None = None
    input: Mapping[str, Any] | None = None
    penultimate: str | None = None
    output_key: str | None = None

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], where: str) -> "ModelCard":
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(values) - set(names))
        if unknown:
            raise ConfigError(f"{where}: unknown card field(s) {unknown}; a model card has {', '.join(names)}")
        classes = values.get("classes")
        if classes is not None and (isinstance(classes, str) or not all(isinstance(c, str) for c in classes)):
            raise ConfigError(f"{where}: `classes` must be a list of class names, got {classes!r}")
        if values.get("input") is not None and not isinstance(values["input"], Mapping):
            raise ConfigError(f"{where}: `input` must be an object with channels, size, mean, std")
        key = values.get("output_key")
        if key is not None and (isinstance(key, bool) or not isinstance(key, (str, int))):
            raise ConfigError(f"{where}: `output_key` must be the logits' key, attribute or index, got {key!r}")
        return cls(**{**values, "classes": tuple(classes) if classes is not None else None,
                      "output_key": str(key) if key is not None else None})

    @classmethod
    def read(cls, path: str | Path) -> "ModelCard":
        path = Path(path)
        try:
            values = json.loads(path.read_text())
        except FileNotFoundError:
            raise ModelError(f"model card {path} not found") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ModelError(f"model card {path} is not JSON ({exc})") from None
        if not isinstance(values, dict):
            raise ModelError(f"model card {path} must hold a JSON object, got {type(values).__name__}")
        return cls.from_dict(values, str(path))

    def as_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["classes"] = list(self.classes) if self.classes is not None else None
        out["input"] = dict(self.input) if self.input is not None else None
        return out


def is_torchscript(path: Path) -> bool:
    """A TorchScript archive carries its code (``…/code/__torch__…``); a ``torch.save`` file does not."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any("/code/__torch__" in name for name in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def load_torchscript(path: Path) -> torch.jit.ScriptModule:
    """``torch.jit.load`` (no Python code runs), without its deprecation notice."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return torch.jit.load(str(path), map_location="cpu")


def build_architecture(architecture: str, state: Mapping[str, torch.Tensor], where: str) -> nn.Module:
    """The torchvision (or ``timm:``) network ``architecture`` with the tensors of ``state``; its
    class count is read from the weights of its last linear layer."""
    if architecture.startswith("timm:"):
        try:
            import timm
        except ImportError:
            raise ConfigError(f"{where}: architecture {architecture} needs the timm package (pip install timm)") from None

        def make(k: int) -> nn.Module:
            return timm.create_model(architecture.removeprefix("timm:"), pretrained=False, num_classes=k)
    else:
        import torchvision

        name = architecture.removeprefix("torchvision:")
        known = torchvision.models.list_models()
        if name not in known:
            near = difflib.get_close_matches(name, known, n=3) or known[:3]
            raise ConfigError(f"{where}: unknown torchvision architecture '{name}'; nearest: {', '.join(near)}")

        def make(k: int) -> nn.Module:
            return torchvision.models.get_model(name, weights=None, num_classes=k)
    network = make(2)
    last = [n for n, m in network.named_modules() if isinstance(m, nn.Linear)]
    weight = state.get(f"{last[-1]}.weight") if last else None
    if weight is not None and weight.shape[0] != 2:
        network = make(int(weight.shape[0]))
    missing, unexpected = network.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ModelError(f"{where} does not fit {architecture}: missing {missing[:3]}, unexpected {unexpected[:3]}; "
                         "check `architecture` and that the file is that network's state_dict")
    return network.eval()
