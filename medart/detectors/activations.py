"""Layer activations by name, with forward hooks that never outlive the call.

ART's ``get_activations`` reaches only top-level children, keeps the gradient graph and leaves a
hook behind per call; detectors need nested blocks (``layer3.5``), no gradients and no leaks.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import torch
from torch import nn

from medart.errors import ConfigError
from medart.models.evaluation import resolve_device

INPUT = "input"  # the pixels themselves, as given to the model
# Names a MedResNet user knows, mapped to the submodule whose output they are.
ALIASES = {"dfeat": "embed", "res3a_relu": "layer2.0", "res5b_relu": "layer4.1"}


def resolve_layers(model: nn.Module, layers: Sequence[str]) -> list[str]:
    """Check every name: ``input``, an alias above, or a (nested) submodule name such as ``layer3.5``."""
    if not layers:
        raise ConfigError("no layers given; name at least one, e.g. dfeat or layer3.5")
    names = dict(model.named_modules())
    for layer in layers:
        if layer != INPUT and ALIASES.get(layer, layer) not in names:
            blocks = [n for n in names if n.startswith("layer") and n.count(".") == 1]
            raise ConfigError(f"unknown layer '{layer}'; use input, {', '.join(ALIASES)}, or a module name such as {', '.join(blocks[:3])}")
    return list(layers)


@contextlib.contextmanager
def _hooks(model: nn.Module, layers: Sequence[str], store: dict[str, torch.Tensor]) -> Iterator[None]:
    handles = []
    try:
        for layer in layers:
            if layer == INPUT:
                continue
            module = model.get_submodule(ALIASES.get(layer, layer))
            handles.append(module.register_forward_hook(lambda _m, _i, out, name=layer: store.__setitem__(name, out)))
        yield
    finally:
        for handle in handles:
            handle.remove()


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
    store: dict[str, torch.Tensor] = {}
    try:
        with _hooks(model, layers, store), torch.inference_mode():
            for start in range(0, len(x), batch_size):
                xb = x[start : start + batch_size].to(dev)
                store.clear()
                logits = model(xb)
                out = {layer: (xb if layer == INPUT else store[layer]).float().cpu() for layer in layers}
                yield slice(start, start + len(xb)), out, logits.float().cpu()
    finally:
        model.train(was_training)


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
