"""Which models medart fine-tunes, and how a fine-tuned copy is stored: always in a format whose
loading runs no code.

=====================================  ==============================================================
parent model                           the fine-tuned copy
=====================================  ==============================================================
medart's own (``medart.json``)         medart's own format: tensor-only weights + JSON architecture
model card + tensor-only state_dict    a model card (the parent's, with the input contract, classes,
(a torchvision or ``timm:`` network)   penultimate layer and output key it was read with) + the new
                                       tensor-only state_dict
=====================================  ==============================================================

The others are refused before anything runs: a ``pt2`` or TorchScript program is a fixed graph
medart reads but does not export again, and an MLflow ``pickle`` model could only be stored as a
pickle, which runs code when it loads. Their fix is the same: the network's state_dict with a
model card (``medart register``).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch
from torch import nn

from medart.errors import ModelError
from medart.models import MODEL_FORMATS, cards, registry
from medart.models.adapter import AdaptedClassifier
from medart.models.resnet import MedResNet

FINE_TUNABLE = "medart's own models and model-card models with a tensor-only state_dict (torchvision or timm networks)"
# why each other format (medart.models.MODEL_FORMATS) cannot be stored again without running code on load
_REFUSED = {"pt2": "a fixed graph medart reads but does not export again",
            "torchscript": "a fixed graph medart reads but does not export again",
            "pickle": "which medart could only store as a pickle again, and a pickle runs code when it loads",
            "module": "which medart has no code-free format for"}


def check_fine_tunable(model: nn.Module, uri: str) -> None:
    """A one-line :class:`~medart.errors.ModelError` unless medart can fine-tune ``model`` and store
    the copy without pickles (see the module), and it has weights to train."""
    stored = "medart" if isinstance(model, MedResNet) else model.config.get("format")
    if stored not in ("medart", "state_dict"):
        what = MODEL_FORMATS[stored].reads if stored in MODEL_FORMATS else f"a {type(model).__name__}"
        raise ModelError(f"'{uri}' is {what}, {_REFUSED.get(stored, 'which medart cannot store again')}; medart "
                         f"fine-tunes {FINE_TUNABLE}: register its state_dict with a model card (medart register) and "
                         "harden that")
    if not any(p.requires_grad for p in model.parameters()):
        raise ModelError(f"'{uri}' has no trainable parameters (all have requires_grad=False); nothing to fine-tune")


def log_copy(model: nn.Module, registered_model_name: str | None, image_size: int):
    """Log ``model`` (checked by :func:`check_fine_tunable`) as the active run's ``model`` in its
    parent's format, registering it as a new version of ``registered_model_name`` when given.
    Returns MLflow's ``ModelInfo``."""
    if isinstance(model, MedResNet):
        return registry.log_model(model, registered_model_name, image_size)
    config = model.config
    card = cards.ModelCard(architecture=config["arch"], weights="weights.pt", classes=tuple(config["classes"]),
                           input={k: v for k, v in config["input"].items() if v is not None},
                           penultimate=config["penultimate"], output_key=config["output_key"])
    with tempfile.TemporaryDirectory(prefix="medart-hardened-") as tmp:
        folder = Path(tmp)
        torch.save({k: v.detach().cpu() for k, v in model.network.state_dict().items()}, folder / "weights.pt")
        (folder / cards.CARD).write_text(json.dumps(card.as_dict(), indent=2))
        return registry.log_card_model(folder / cards.CARD, model, registered_model_name)
