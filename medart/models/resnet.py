"""The paper's classifier: an ImageNet ResNet whose top is replaced by 2048 → 128 → K.

Normalisation lives inside the module, so callers and attacks work on [0, 1] pixels and an L∞
budget of 1/255 means one grey level. The same head also sits on medart's small CNN
(:mod:`medart.models.smallcnn`, ``arch="smallcnn"``), the low-capacity end of the ablations.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import torch
import torchvision
from torch import nn

from medart.catalog import ARCHS
from medart.errors import ConfigError, ModelError
from medart.models import smallcnn
from medart.models.adapter import unknown_tap

# Names the paper uses for Keras ResNet-50 layers, mapped to torchvision's blocks.
PAPER_TAPS = {"res3a_relu": "layer2.0", "res5b_relu": "layer4.1"}
# Taps named for what they are, mapped to the module whose output they are.
ROLE_TAPS = {"dfeat": "embed", "logits": "head"}


def _imagenet_state_dict(arch: str) -> dict[str, torch.Tensor]:
    weights = torchvision.models.get_model_weights(arch).DEFAULT
    try:
        return weights.get_state_dict(progress=True, check_hash=True)
    except (OSError, RuntimeError, ValueError) as exc:  # URLError is an OSError
        hub = Path(torch.hub.get_dir()) / "checkpoints"
        name = os.path.basename(weights.url)
        raise ModelError(
            f"ImageNet weights for {arch} are not in {hub} and could not be downloaded ({type(exc).__name__}); "
            f"copy {name} there, set `pretrained` to the path of a local state_dict, or use `pretrained`='none'"
        ) from exc


def load_state_dict_file(path: str | os.PathLike, trusted_pickle: bool = False) -> dict[str, torch.Tensor]:
    """A tensor-only state_dict from ``path``, read with ``weights_only=True``: a file that would
    need arbitrary objects unpickled (and so could run code) is refused, never executed.

    ``trusted_pickle=True`` unpickles the file in full — it runs whatever code the file carries,
    so only for files you made or trust — and accepts a whole pickled module or a checkpoint dict
    holding the weights under ``state_dict`` or ``model``.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"weights file {path} not found; pass an existing .pth state_dict, 'imagenet' or 'none'")
    try:
        state = torch.load(path, map_location="cpu", weights_only=not trusted_pickle)
    except Exception as exc:  # noqa: BLE001 - UnpicklingError, RuntimeError, EOFError…: all mean "not tensor-only"
        if trusted_pickle:
            raise ModelError(f"{path} cannot be unpickled ({type(exc).__name__}: {exc})") from exc
        raise ModelError(
            f"{path} is not a tensor-only state_dict ({type(exc).__name__}); refusing to unpickle it — save "
            "model.state_dict(), or pass `trusted_pickle`=True only if you trust the file's author"
        ) from exc
    if trusted_pickle:
        if isinstance(state, nn.Module):
            state = state.state_dict()
        elif isinstance(state, dict) and not any(isinstance(v, torch.Tensor) for v in state.values()):
            state = next((state[k] for k in ("state_dict", "model") if isinstance(state.get(k), dict)), state)
    if not isinstance(state, dict):
        raise ModelError(f"{path} holds a {type(state).__name__}, not a state_dict")
    return state


def _resnet(arch: str, pretrained: str, trusted_pickle: bool) -> tuple[nn.Sequential, list[nn.Module], int]:
    backbone = getattr(torchvision.models, arch)(weights=None)
    if pretrained == "imagenet":
        backbone.load_state_dict(_imagenet_state_dict(arch))
    elif pretrained != "none":
        state = {k: v for k, v in load_state_dict_file(pretrained, trusted_pickle).items() if not k.startswith("fc.")}
        missing, _ = backbone.load_state_dict(state, strict=False)
        if [k for k in missing if not k.startswith("fc.")]:
            raise ModelError(f"{pretrained} does not fit {arch}: missing {missing[:3]}…")
    stem = nn.Sequential(backbone.conv1, backbone.bn1, backbone.relu, backbone.maxpool)
    return stem, [backbone.layer1, backbone.layer2, backbone.layer3, backbone.layer4], backbone.fc.in_features


def _small_cnn(pretrained: str, image_size: int | None) -> tuple[nn.Sequential, list[nn.Module], int]:
    if pretrained != "none":
        raise ModelError(f"smallcnn is medart's own architecture: no ImageNet or other pretrained weights exist for it "
                         f"(got `pretrained`={pretrained!r}); use `pretrained`='none'")
    if image_size is not None and image_size < smallcnn.MIN_SIDE:
        raise ModelError(f"smallcnn halves the image side in each of its {len(smallcnn.WIDTHS)} stages and needs inputs "
                         f"of at least {smallcnn.MIN_SIDE} px, got {image_size} px; use a larger `image_size` or a resnet `arch`")
    return smallcnn.small_cnn_backbone()


def imagenet_unavailable(arch: str) -> str | None:
    """Why ImageNet weights for ``arch`` cannot be had here (one line), or ``None`` when they can:
    found in torchvision's cache or downloaded into it."""
    if arch not in ARCHS:
        raise ConfigError(f"unknown architecture '{arch}'; choose one of: {', '.join(ARCHS)}")
    if arch == "smallcnn":
        return "no ImageNet weights exist for smallcnn (medart's own architecture)"
    try:
        _imagenet_state_dict(arch)
    except ModelError as exc:
        return str(exc)
    return None


def parameter_count(model: nn.Module) -> int:
    """Number of trainable and frozen parameters (weights and biases, not batch-norm buffers)."""
    return sum(p.numel() for p in model.parameters())


class MedResNet(nn.Module):
    """ResNet backbone (or medart's small CNN) + the paper's head, with named feature taps.

    Args:
        num_classes: K, the number of output logits.
        arch: ``resnet50`` (the paper's), ``resnet18``, ``resnet34``, or ``smallcnn`` (a VGG-style
            network of about 0.3 M parameters, :mod:`medart.models.smallcnn`; inputs of at least
            16 px, random initialisation only).
        pretrained: ``"imagenet"`` (torchvision's weights, from the local cache or downloaded),
            ``"none"`` (random initialisation) or a path to a tensor-only backbone state_dict.
        hidden: width of the penultimate dense layer (128 in the paper).
        dropout: dropout after it (0.2 in the paper).
        classes: class names, stored with the model so a registry copy knows them.
        image_size: the input side the model was trained at (stored, not enforced).
        trusted_pickle: read a ``pretrained`` file with full unpickling (runs code it carries;
            only for files you trust). Default: tensor-only, refusing anything else.

    Input: float32 ``(N, 3, H, W)`` in [0, 1]. Output: logits ``(N, K)``. Inside, pixels are
    mapped to [-1, 1] as in the paper. The head is Linear → ReLU → Dropout → Linear: the ReLU of
    Keras' ``Dense(128, activation="relu")`` makes the 128 units a feature layer ("dfeat") rather
    than a factorisation of one linear map.
    """

    def __init__(
        self,
        num_classes: int,
        arch: str = "resnet50",
        pretrained: str = "none",
        hidden: int = 128,
        dropout: float = 0.2,
        classes: Sequence[str] | None = None,
        image_size: int | None = None,
        trusted_pickle: bool = False,
    ) -> None:
        super().__init__()
        if arch not in ARCHS:
            raise ConfigError(f"unknown architecture '{arch}'; choose one of: {', '.join(ARCHS)}")
        if num_classes < 2:
            raise ConfigError(f"a classifier needs at least 2 classes, got {num_classes}")
        if classes is not None and len(classes) != num_classes:
            raise ConfigError(f"{len(classes)} class names for {num_classes} classes")
        self.config: dict[str, Any] = {
            "arch": arch,
            "num_classes": num_classes,
            "hidden": hidden,
            "dropout": dropout,
            "classes": list(classes) if classes is not None else [str(i) for i in range(num_classes)],
            "image_size": image_size,
            "normalization": "[-1,1]",
        }
        if arch == "smallcnn":
            stem, stages, width = _small_cnn(pretrained, image_size)
        else:
            stem, stages, width = _resnet(arch, pretrained, trusted_pickle)
        self.config["pretrained"] = pretrained if pretrained in ("imagenet", "none") else "file"
        self.stem = stem
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten())
        self.embed = nn.Sequential(nn.Linear(width, hidden), nn.ReLU(inplace=True))
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden, num_classes))

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "MedResNet":
        """The architecture described by ``config`` (as stored with a model), randomly initialised."""
        keys = ("num_classes", "arch", "hidden", "dropout", "classes", "image_size")
        return cls(**{k: config[k] for k in keys if k in config}, pretrained="none")

    @property
    def classes(self) -> list[str]:
        return self.config["classes"]

    def tap_names(self) -> list[str]:
        """Every name :meth:`features` accepts, in forward order."""
        blocks = [f"layer{i}.{j}" for i in range(1, 5) for j in range(len(getattr(self, f"layer{i}")))]
        return ["input", "stem", *blocks, "layer1", "layer2", "layer3", "layer4", "pool", "dfeat", "logits", *PAPER_TAPS]

    def layer_for(self, tap: str) -> tuple[nn.Module, str]:
        """The module whose output is ``tap``: any named module (``layer3.5.conv1``), ``dfeat``
        (``embed``), ``logits`` (``head``) or the paper's names."""
        name = (ROLE_TAPS | PAPER_TAPS).get(tap, tap)
        try:
            return self.get_submodule(name), "output"
        except AttributeError:
            raise unknown_tap(tap, [*self.tap_names(), *(n for n, _ in self.named_modules() if n)], "layer") from None

    def stage_taps(self) -> list[str]:
        """The four residual (or small-CNN) stages."""
        return ["layer1", "layer2", "layer3", "layer4"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x, frozenset())[0]

    def features(self, x: torch.Tensor, taps: Sequence[str] = ("dfeat",)) -> dict[str, torch.Tensor]:
        """Outputs of the named layers for a batch ``x`` (N, 3, H, W) in [0, 1].

        ``input`` is the normalised input, ``layerI.J`` the output of block J of stage I,
        ``layerI`` the stage output, ``pool`` the pooled features (2048-d for a ResNet-50, 512 for
        ResNet-18/34, 128 for the small CNN), ``dfeat`` the
        ``hidden``-unit penultimate features (N, 128), ``logits`` (N, K); ``res3a_relu`` and
        ``res5b_relu`` are the paper's names for ``layer2.0`` and ``layer4.1``.
        """
        unknown = sorted(set(taps) - set(self.tap_names()))
        if unknown:
            raise ConfigError(f"unknown feature tap(s) {unknown}; choose from {self.tap_names()}")
        wanted = frozenset(PAPER_TAPS.get(t, t) for t in taps)
        _, out = self._run(x, wanted)
        return {t: out[PAPER_TAPS.get(t, t)] for t in taps}

    def _run(self, x: torch.Tensor, taps: frozenset[str]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        out: dict[str, torch.Tensor] = {}
        h = x * 2.0 - 1.0
        if "input" in taps:
            out["input"] = h
        h = self.stem(h)
        if "stem" in taps:
            out["stem"] = h
        for i in range(1, 5):
            stage = getattr(self, f"layer{i}")
            if any(t.startswith(f"layer{i}.") for t in taps):
                for j, block in enumerate(stage):
                    h = block(h)
                    if f"layer{i}.{j}" in taps:
                        out[f"layer{i}.{j}"] = h
            else:  # call the stage itself, so forward hooks on it fire
                h = stage(h)
            if f"layer{i}" in taps:
                out[f"layer{i}"] = h
        h = self.pool(h)
        if "pool" in taps:
            out["pool"] = h
        h = self.embed(h)
        if "dfeat" in taps:
            out["dfeat"] = h
        logits = self.head(h)
        if "logits" in taps:
            out["logits"] = logits
        return logits, out


def build_model(
    num_classes: int,
    arch: str = "resnet50",
    pretrained: str = "imagenet",
    classes: Sequence[str] | None = None,
    image_size: int | None = None,
    hidden: int = 128,
    dropout: float = 0.2,
    trusted_pickle: bool = False,
) -> MedResNet:
    """The paper's network; see :class:`MedResNet`."""
    return MedResNet(num_classes, arch, pretrained, hidden, dropout, classes, image_size, trusted_pickle)
