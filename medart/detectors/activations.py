"""Layer activations by name, with forward hooks that never outlive the call.

ART's ``get_activations`` reaches only top-level children, keeps the gradient graph and leaves a
hook behind per call; detectors need nested blocks (``layer3.5``), no gradients and no leaks.
A model names its layers itself (``tap_names``, ``layer_for``: a MedResNet's ``dfeat`` is its
``embed``, an adapted network's the input of its last linear layer); any other module by its
submodule names.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import torch
from torch import nn

from medart.errors import ConfigError
from medart.models.adapter import tap_hooks, unknown_tap
from medart.models.evaluation import resolve_device

INPUT = "input"  # the pixels themselves, as given to the model


def layer_for(model: nn.Module, layer: str) -> tuple[nn.Module, str]:
    """``(module, "input" | "output")``: hooking that side of the module shows the layer."""
    if hasattr(model, "layer_for"):
        return model.layer_for(layer)
    try:
        return model.get_submodule(layer), "output"
    except AttributeError:
        raise unknown_tap(layer, [INPUT, *(n for n, _ in model.named_modules() if n)], "layer") from None


def resolve_layers(model: nn.Module, layers: Sequence[str]) -> list[str]:
    """Check every name: ``input``, a tap of the model (``dfeat``, ``res3a_relu``), or a (nested)
    submodule name such as ``layer3.5``; an unknown one is reported with the nearest names."""
    if not layers:
        raise ConfigError("no layers given; name at least one, e.g. dfeat or layer3.5")
    for layer in layers:
        if layer != INPUT:
            layer_for(model, layer)
    return list(layers)


@contextlib.contextmanager
def layer_hooks(model: nn.Module, layers: Sequence[str], store: dict[str, list]) -> Iterator[None]:
    """While open, every forward pass of ``model`` appends each of ``layers``' tensors to
    ``store[layer]`` (with autograd, unlike :func:`activations`); the hooks go when it closes."""
    with tap_hooks(_Plain(model), layers, store):
        yield


class _Plain:
    """A plain module seen through :func:`layer_for` (submodule names)."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def layer_for(self, layer: str) -> tuple[nn.Module, str]:
        return layer_for(self.model, layer)


def iter_activations(
    model: nn.Module, x: torch.Tensor, layers: Sequence[str], batch_size: int = 100, device: str = "auto"
) -> Iterator[tuple[slice, dict[str, torch.Tensor], torch.Tensor]]:
    """Yield ``(rows, {layer: activations (B, …)}, logits (B, K))``, float32 on the CPU, batch by
    batch, so a caller can reduce each batch (e.g. LID per layer) without holding every
    activation of the dataset."""
    layers = resolve_layers(model, layers)
    dev = resolve_device(device)
    was_training = model.training
    model.eval().to(dev)
    store: dict[str, list[torch.Tensor]] = {}
    try:
        with layer_hooks(model, layers, store), torch.inference_mode():
            for start in range(0, len(x), batch_size):
                xb = x[start : start + batch_size].to(dev)
                for caught in store.values():
                    caught.clear()
                logits = model(xb)
                out = {layer: (xb if layer == INPUT else _joined(store[layer])).float().cpu() for layer in layers}
                yield slice(start, start + len(xb)), out, logits.float().cpu()
    finally:
        model.train(was_training)


def _joined(caught: list[torch.Tensor]) -> torch.Tensor:
    """One batch's tensor of a layer: a model that runs image by image hooks it once per image."""
    return caught[0] if len(caught) == 1 else torch.cat(caught)


def activations(
    model: nn.Module, x: torch.Tensor, layers: Sequence[str], batch_size: int = 100, device: str = "auto"
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """All activations of ``x`` at ``layers``, flattened to ``(N, D)`` float32, and the logits ``(N, K)``."""
    parts: dict[str, list[torch.Tensor]] = {layer: [] for layer in layers}
    logits = []
    for _, out, z in iter_activations(model, x, layers, batch_size, device):
        for layer, value in out.items():
            parts[layer].append(value.flatten(1))
        logits.append(z)
    return {layer: torch.cat(values) for layer, values in parts.items()}, torch.cat(logits)
