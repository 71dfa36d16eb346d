"""Feature matching (Sabour et al. 2016, *Adversarial manipulation of deep representations*): move
an image, inside the L∞ ε-ball and [0, 1], until its penultimate features (the ``dfeat`` tap,
what KD, Mahalanobis and DFeat read) are those of a clean *guide* image of another class.

It needs no detector at all, so it is the adaptive attack a defender cannot rule out by keeping
the detector secret; detectors that compare features with clean ones (KD, Mahalanobis, DFeat)
should see a clean-looking image. Where it does not fit the threat model of the other attacks:
it does not read the classifier's decision, so misclassification is not guaranteed (an image
whose features only approach the guide's may keep its class: report its success rate, never
assume it), and it needs a clean image of the target class, which the attacks of Ma et al. do
not. That is why it is part of the adaptive study (``medart detect --adaptive``), where
AdvTrain's clean images serve as guides, and not an attack name of ``medart attack``.

Backends: ART's ``FeatureAdversariesPyTorch`` in its PGD variant (``optimizer=None``, no soft
constraint: ``lambda_=0``), which clamps to the estimator's ``clip_values`` (medart gives (0, 1);
its optimizer variant steps after the δ-clip, so it can end outside the ball, and is not used);
torchattacks' PGD with :class:`~medart.attacks.losses.FeatureMatchingLoss`. Both take signed
steps of ``step_size`` on the squared feature distance, from x or a uniform start, and medart
projects the result onto the ε-ball and [0, 1] once more, as for every attack.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch
from torch import nn

from medart.attacks.base import check_inputs, frozen, project, seeded
from medart.attacks.specs import AttackSpec, attacks_where, declared_backend
from medart.detectors.activations import layer_hooks
from medart.errors import ConfigError, DataError
from medart.models.evaluation import resolve_device


class FeatureTap(nn.Module):
    """``x`` ``(N, C, H, W)`` → the model's ``layer`` features, flattened to ``(N, D)``."""

    def __init__(self, model: nn.Module, layer: str = "dfeat") -> None:
        super().__init__()
        self.model, self.layer = model, layer
        self.train(model.training)  # a new module says training=True: restoring that would leave the model training

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        caught: dict[str, list[torch.Tensor]] = {}
        with layer_hooks(self.model, [self.layer], caught):
            self.model(x)
        return torch.cat(caught[self.layer]).flatten(1)  # a model run image by image hooks a layer once per image


def choose_guides(targets: np.ndarray, pool_labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """For each image's target class ``targets`` ``(n,)``, the index of a guide drawn (seeded, so
    the same run picks the same guides) among the pool images of that class ``pool_labels``."""
    rng = np.random.default_rng(seed)
    out = np.empty(len(targets), dtype=np.int64)
    for c in np.unique(targets):
        owners = np.flatnonzero(pool_labels == c)
        if not len(owners):
            raise DataError(f"no clean guide image of class {int(c)} for feature matching; "
                            "give guide images of every class the sources are moved towards")
        rows = np.flatnonzero(targets == c)
        out[rows] = owners[rng.integers(0, len(owners), len(rows))]
    return out


class FeatureMatching:
    """Feature-matching examples at the ``spec``'s ε, steps, step size and start (a paper attack's
    spec, e.g. BIM's; its loss is replaced), through ``backend``; ``layer`` the feature tap."""

    runs_on = {"art": "_art", "torchattacks": "_torchattacks"}  # backend → the method that runs it

    def __init__(self, model: nn.Module, spec: AttackSpec, backend: str = "art", layer: str = "dfeat",
                 batch_size: int = 128, device: str = "auto") -> None:
        if backend not in self.runs_on:
            declared_backend(backend)  # an unknown name says so
            raise ConfigError(f"feature matching runs on {', '.join(self.runs_on)}, not {backend}")
        if spec.step_size is None:
            takers = ", ".join(attacks_where(lambda a: a.defaults.step is not None))
            raise ConfigError(f"feature matching takes signed gradient steps of `step_size`; {spec.name} has none: "
                              f"give an attack with a step size ({takers})")
        if batch_size < 1:
            raise ConfigError(f"batch size must be >= 1, got {batch_size}")
        self.model, self.spec, self.backend, self.layer, self.batch_size = model, spec, backend, layer, batch_size
        self.device = resolve_device(device)

    def generate(self, x: torch.Tensor, guide: torch.Tensor, seed: int = 0) -> torch.Tensor:
        """Examples ``(N, C, H, W)`` on the CPU for sources ``x`` and guide images ``guide``, both
        float32 pixels in [0, 1] of the same shape."""
        for images in (x, guide):  # the label check is not ours to make: one class of dummy labels
            check_inputs(images, torch.zeros(len(images), dtype=torch.long), 1)
        if guide.shape != x.shape:
            raise DataError(f"guide images must have the sources' shape {tuple(x.shape)}, got {tuple(guide.shape)}")
        self.model.to(self.device)
        tap = FeatureTap(self.model, self.layer)
        out = []
        with frozen(self.model), seeded(seed, self.device):
            for first in range(0, len(x), self.batch_size):
                xb = x[first : first + self.batch_size].to(self.device)
                gb = guide[first : first + self.batch_size].to(self.device)
                adv = getattr(self, self.runs_on[self.backend])(tap, xb, gb)
                out.append(project(adv.to(xb.device, xb.dtype), xb, self.spec.eps).detach().cpu())
        return torch.cat(out) if out else x.clone()

    def _art(self, tap: FeatureTap, x: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        from art.attacks.evasion import FeatureAdversariesPyTorch
        from art.estimators.classification import PyTorchClassifier

        # ART reaches top-level children by name only: the tap as the one child "features"
        wrapped = nn.Sequential(OrderedDict(features=tap))
        with torch.no_grad():
            width = tap(x[:1]).shape[1]
        estimator = PyTorchClassifier(wrapped, loss=nn.MSELoss(), input_shape=tuple(x.shape[1:]), nb_classes=max(2, width),
                                      clip_values=(0.0, 1.0), preprocessing=None,
                                      device_type="gpu" if self.device.type == "cuda" else "cpu")
        spec = self.spec
        attack = FeatureAdversariesPyTorch(estimator, delta=float(spec.eps), lambda_=0.0, layer="features",
                                           max_iter=int(spec.steps), batch_size=len(x), step_size=float(spec.step_size),
                                           random_start=spec.random_start, verbose=False)
        return torch.from_numpy(attack.generate(x.cpu().numpy(), y=guide.cpu().numpy()))

    def _torchattacks(self, tap: FeatureTap, x: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        from medart.attacks import load_torchattacks_backend
        from medart.attacks.losses import FeatureMatchingLoss

        _LossPGD = load_torchattacks_backend()._LossPGD

        spec = self.spec
        with torch.no_grad():
            target = tap(guide)
        # the guide's features travel where torchattacks passes labels, to the loss
        attack = _LossPGD(tap, FeatureMatchingLoss(), eps=spec.eps, alpha=spec.step_size, steps=spec.steps,
                          random_start=spec.random_start)
        return attack(x, target)


__all__ = ["FeatureMatching", "FeatureTap", "choose_guides"]
