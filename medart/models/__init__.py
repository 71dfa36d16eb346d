"""The paper's ResNet classifier, its training, and its life in the MLflow registry; and the model
formats medart reads, each declared once.

A :class:`ModelFormat` entry of :data:`MODEL_FORMATS` declares one way a model is stored: the
name a loaded model records as its ``format`` (part of what makes two models the same network for
the example cache), what medart reads, and what keeps reading it from running code. The loader
(:func:`medart.models.loading.load_model`), its one-line error for anything else, and the command
line's help on model URIs read the entries; this module imports no torch, so ``medart --help``
reads them at once. tests/test_declarations.py loads a model of every format.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelFormat:
    """One way a model is stored that medart reads.

    Attributes:
        name: what a loaded adapted model records as its ``format`` (``config["format"]``).
        reads: what medart reads, as its messages and help say it.
        trust: what keeps reading it from running code the file carries.
        stored: a format of files (``False``: a module handed over in Python).
    """

    name: str
    reads: str
    trust: str
    stored: bool = True


MODEL_FORMATS: dict[str, ModelFormat] = {f.name: f for f in (
    ModelFormat("medart", "medart's own (medart.json)", "tensor-only weights"),
    ModelFormat("pt2", "an MLflow pytorch model in pt2", "MLflow's check that the archive holds no pickle"),
    ModelFormat("pickle", "an MLflow pytorch model in pickle, if trusted",
                "refused, before anything is unpickled, unless `trusted_pickle`"),
    ModelFormat("torchscript", "a TorchScript file", "runs no Python code"),
    ModelFormat("state_dict", "a model card (medart-card.json) with a tensor-only state_dict or TorchScript file",
                "tensor-only weights"),
    ModelFormat("module", "a torch.nn.Module handed over in Python", "the caller loaded it", stored=False),
)}
READS = "; ".join(f.reads for f in MODEL_FORMATS.values() if f.stored)  # what a model URI may hold

__all__ = ["MODEL_FORMATS", "ModelFormat", "READS"]
