"""What a stage measures and how it runs: the typed requests every stage takes.

A face (the command line, the MLproject, a Python user) builds these once — it loads the model and
the data into a :class:`Target` — and hands them to the stages, which never load a model again.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from functools import cached_property
from typing import TYPE_CHECKING, Any, Mapping

from medart.models.loading import ModelSource

if TYPE_CHECKING:  # the types only: building a request loads nothing heavy
    import numpy as np
    import torch

    from medart.data.base import MedicalImageDataset
    from medart.data.splits import ProtocolSplits
    from medart.executors import Executor
    from medart.models.adapter import Classifier
    from medart.models.sanity import ModelCheck


def from_options(cls, options: Mapping[str, Any], **overrides: Any):
    """``cls(**…)`` from the options whose names are fields of the dataclass ``cls``: a face names its
    options as the request's fields, so a new field is one edit here and one option there."""
    names = {f.name for f in fields(cls) if f.init}
    return cls(**({k: v for k, v in options.items() if k in names} | overrides))


@dataclass(frozen=True)
class DataSpec:
    """Which images: a named task, where its files are, which variant, and the seed of its splits.

    ``size`` is the MedMNIST file variant (pixels per side; 28, 64, 128, 224); ``source`` is
    ``medmnist`` (the ``.npz`` files under ``data_dir``) or a public layout rooted at ``data_dir``
    (``original``: the dataset's first; ``nih``, ``chexpert``, … as ``medart datasets`` lists).
    """

    dataset: str
    data_dir: str | os.PathLike | None = None
    source: str = "medmnist"
    size: int = 28
    seed: int = 0
    download: bool = True

    def load(self, image_size: int | None = None) -> "ProtocolSplits":
        """The protocol splits, images resized to ``image_size`` (default: the file's side)."""
        from medart.data import load_dataset

        return load_dataset(self.dataset, self.data_dir, source=self.source, size=self.size, image_size=image_size,
                            seed=self.seed, download=self.download)

    def side(self, image_size: int | None = None) -> int:
        """The side (px) of the images a model is given."""
        return image_size or (self.size if self.source == "medmnist" else 224)


@dataclass(frozen=True)
class RunOptions:
    """How a stage runs, not what it measures: none of these changes a number it reports (the
    backend gives the same threat model, the cache the same examples)."""

    backend: str = "art"  # the library that runs the attacks: art or torchattacks
    batch_size: int = 128
    device: str = "auto"  # auto (CUDA when present), cpu, cuda[:N]
    cache: bool = True  # reuse the examples of a finished attack run with the same inputs
    progress: bool = True
    parent_run_id: str | None = None  # make the stage's run a child of this run
    executor: "Executor | None" = field(default=None, compare=False)  # default: this process


def champion(dataset: str) -> str | None:
    """``models:/medart-<dataset>@champion`` when that alias exists in the registry, else ``None``."""
    import mlflow

    from medart.models.registry import registered_name

    name = registered_name(dataset)
    try:
        mlflow.MlflowClient().get_model_version_by_alias(name, "champion")
    except mlflow.exceptions.MlflowException:
        return None
    return f"models:/{name}@champion"


@dataclass
class Target:
    """What is attacked: one loaded model and the test images it is measured on.

    ``clean`` holds AdvTrain and AdvTest as tensors (``max_examples`` caps both together, split in
    the protocol's proportion); ``reference`` a stratified sample of ``reference_size`` clean Train
    images, for the detectors that measure against clean data.
    """

    model_uri: str
    model: "Classifier"  # a MedResNet or an AdaptedClassifier
    data: DataSpec
    splits: "ProtocolSplits"
    max_examples: int | None = None
    reference_size: int = 0
    source: ModelSource | None = None  # how the model was loaded (a worker process loads it again)
    version_uri: str | None = None  # models:/<name>/<version> an alias in model_uri pointed at when loaded
    _check: "ModelCheck | None" = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def load(cls, model: "str | ModelSource | None", data: DataSpec, max_examples: int | None = None,
             reference_size: int = 0) -> "Target":
        """Load the model ``model`` names (a URI or a :class:`ModelSource`; default: the dataset's
        registered champion) and ``data`` at the model's input side. The model must fit the
        dataset — its classes (count and names), and colour images only for 3-channel models —
        or a :class:`~medart.errors.ModelError` says so before anything runs."""
        import dataclasses

        from medart.errors import ConfigError
        from medart.models import loading, registry

        source = model if isinstance(model, ModelSource) else ModelSource(model)
        if source.model_uri is None:
            uri = champion(data.dataset)
            if uri is None:
                raise ConfigError(f"no `model_uri` given and no {registry.registered_name(data.dataset)}@champion is "
                                  "registered in this tracking store: train one (medart train; a model it flags as "
                                  "degenerate is registered but never champion) or give `model_uri`")
            source = dataclasses.replace(source, model_uri=uri)
        loaded = loading.load_model(source, side=data.side())
        splits = data.load(loaded.config.get("image_size") or data.size)
        loading.fit_to_dataset(loaded, splits, source.model_uri)
        version = registry.version_of(source.model_uri) if "@" in source.model_uri else None
        return cls(source.model_uri, loaded, data, splits, max_examples, reference_size, source,
                   f"models:/{version[0]}/{version[1]}" if version else None)

    @property
    def tags(self) -> dict[str, str]:
        """Run tags naming the registered version measured, where ``model_uri`` is an alias (which
        may move later: ``medart compare`` reads the version from here)."""
        from medart.models.registry import VERSION_URI_TAG

        return {VERSION_URI_TAG: self.version_uri} if self.version_uri else {}

    @property
    def dataset(self) -> str:
        return self.data.dataset

    @property
    def seed(self) -> int:
        return self.data.seed

    @property
    def num_classes(self) -> int:
        return self.model.config["num_classes"]

    @property
    def side(self) -> int:
        return self.model.config.get("image_size") or self.data.size

    @cached_property
    def parts(self) -> dict[str, "MedicalImageDataset"]:
        """AdvTrain and AdvTest, each capped in proportion so that together they hold ``max_examples``."""
        from medart.data import subsample

        n_test = sum(len(p) for p in self.splits.test)
        out = {}
        for part in ("adv_train", "adv_test"):
            ds = getattr(self.splits, part)
            cap = None if self.max_examples is None else max(1, round(self.max_examples * len(ds) / n_test))
            out[part] = subsample(ds, cap, self.seed)
        return out

    @cached_property
    def clean(self) -> dict[str, tuple["torch.Tensor", "torch.Tensor"]]:
        """part → (x, y): float32 ``(N, 3, S, S)`` images in [0, 1] and int64 labels ``(N,)``."""
        from medart.data.base import stack

        return {part: stack(ds) for part, ds in self.parts.items()}

    def model_check(self, run: RunOptions = RunOptions()) -> "ModelCheck":
        """Whether the model is degenerate on the ``clean`` images
        (:func:`medart.models.sanity.check_predictions`), predicted on ``run``'s device once per
        target (:func:`medart.stages.guard.guard` records it and warns on each run)."""
        if self._check is None:
            import torch
            from torch.utils.data import TensorDataset

            from medart.models.evaluation import predict
            from medart.models.sanity import check_predictions

            x, y = (torch.cat(t) for t in zip(*self.clean.values()))
            probs, labels = predict(self.model, TensorDataset(x, y), run.batch_size, run.device)
            self._check = check_predictions(probs.argmax(1), labels, self.splits.classes)
        return self._check

    @property
    def indices(self) -> dict[str, "np.ndarray"]:
        """part → the attacked images' indices in that part of the splits (``splits.adv_train``,
        ``splits.adv_test``): ``splits.<part>[i]`` is image ``i`` again."""
        import numpy as np

        # an uncapped part is the split part itself, whose own indices point into the file's split
        return {part: np.arange(len(ds)) if ds is getattr(self.splits, part) else ds.indices
                for part, ds in self.parts.items()}

    @cached_property
    def network_digest(self) -> str:
        """What makes the model the network it is (:func:`medart.attacks.cache.network_digest`)."""
        from medart.attacks import cache

        return cache.network_digest(self.model)

    @cached_property
    def reference(self) -> tuple["torch.Tensor", "torch.Tensor"] | None:
        """``reference_size`` clean Train images ``(x, y)``, stratified; ``None`` when 0."""
        from medart.data import subsample
        from medart.data.base import stack

        return stack(subsample(self.splits.train, self.reference_size, self.seed)) if self.reference_size > 0 else None

    def test_set(self, max_images: int | None = None):
        """The whole test split (AdvTrain then AdvTest), at most ``max_images`` per part, stratified."""
        from torch.utils.data import ConcatDataset

        from medart.data import subsample

        return ConcatDataset([subsample(part, max_images, self.seed) for part in self.splits.test])
