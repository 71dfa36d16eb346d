"""Detector-aware attacks (Carlini & Wagner 2017, *Adversarial examples are not easily detected*):
the classifier and a fitted detector attacked together, in the same L∞ threat model as the
other attacks and through the same backends.

:class:`DetectorHead` wraps the classifier so that one forward pass gives ``(N, 2K)`` outputs: its
K logits, then, for every class c, the detector's logit (its logistic regression's decision
function, > 0 = "adversarial") for the input *if the model predicted c*, differentiable in torch
with respect to the input. :class:`~medart.attacks.losses.DetectorAwareLoss` reads both halves;
ART's PGD and torchattacks' PGD ascend it as they ascend cross-entropy (see
:func:`medart.attacks.make_attack`'s ``loss``).

Supported: KD (:class:`KDLogit`: the Gaussian kernel density of the penultimate features against
the fitted class-wise Train references, the detector's own σ, standardisation, min–max scaling
and logistic regression, in float64) and Mahalanobis (:class:`MahalanobisLogit`).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from medart.detectors.activations import layer_for
from medart.errors import ConfigError


def linear_logit(pipeline, features: torch.Tensor) -> torch.Tensor:
    """The decision function ``(N,)`` of a fitted ``MinMaxScaler`` → ``LogisticRegression`` pipeline
    (every medart detector with a logistic regression) on ``features`` ``(N, F)``, in torch."""
    scale, classify = pipeline.named_steps["scale"], pipeline.named_steps["classify"]
    as_tensor = lambda a: torch.as_tensor(a, dtype=features.dtype, device=features.device)  # noqa: E731
    scaled = features * as_tensor(scale.scale_) + as_tensor(scale.min_)
    return scaled @ as_tensor(classify.coef_[0]) + as_tensor(classify.intercept_[0])


class KDLogit(nn.Module):
    """A fitted :class:`~medart.detectors.kd.KernelDensity`'s logit for every class: ``(N, K)`` from
    penultimate features ``(N, D)``; column c is what the detector outputs for an input the model
    assigns to class c. Only ``reference="train"`` (a fixed reference set) can be attacked this way."""

    def __init__(self, detector, num_classes: int) -> None:
        super().__init__()
        if detector.reference != "train":
            raise ConfigError("an adaptive attack needs KD with reference='train' (fixed references); "
                              f"got reference={detector.reference!r}")
        if getattr(detector, "pipeline_", None) is None:
            raise ConfigError("the KD detector is not fitted; call fit before attacking it")
        refs = [detector.references_.get(c) for c in range(num_classes)]
        if any(r is None for r in refs):
            raise ConfigError("the KD detector has no references of some class; fit it with references of every class")
        self.register_buffer("reference", torch.cat(refs).double())
        self.register_buffer("owner", torch.cat([torch.full((len(r),), c) for c, r in enumerate(refs)]))
        standardize = bool(detector.standardize)
        self.register_buffer("mean", detector.mean_.double() if standardize else torch.zeros(()))
        self.register_buffer("scale", detector.scale_.double() if standardize else torch.ones(()))
        self.sigma, self.pipeline, self.num_classes = detector.sigma_, detector.pipeline_, num_classes
        self.log_count = [math.log(len(r)) for r in refs]

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        z = (z.double() - self.mean) / self.scale
        ref = self.reference
        # ‖z − r‖² expanded as one matrix product, out of place so that autograd can run through it
        d2 = (z.square().sum(1, keepdim=True) + ref.square().sum(1) - 2.0 * z @ ref.T).clamp_min(0.0)
        kernel = -d2 / self.sigma**2
        density = torch.stack([torch.logsumexp(kernel.masked_fill(self.owner != c, -math.inf), dim=1) - self.log_count[c]
                               for c in range(self.num_classes)], dim=1)  # (N, K): log KD against each class
        return torch.stack([linear_logit(self.pipeline, density[:, c : c + 1]) for c in range(self.num_classes)], dim=1)


class MahalanobisLogit(nn.Module):
    """A fitted :class:`~medart.detectors.mahalanobis.Mahalanobis` detector's logit ``(N, K)`` from
    penultimate features ``(N, D)``: log min_c (z − μ_c)ᵀ Σ⁻¹ (z − μ_c) does not depend on the
    predicted class, so every column is the same."""

    def __init__(self, detector, num_classes: int) -> None:
        super().__init__()
        if getattr(detector, "pipeline_", None) is None:
            raise ConfigError("the Mahalanobis detector is not fitted; call fit before attacking it")
        self.register_buffer("means", torch.as_tensor(detector.means_, dtype=torch.float64))
        self.register_buffer("precision", torch.as_tensor(detector.precision_, dtype=torch.float64))
        self.pipeline, self.num_classes = detector.pipeline_, num_classes

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        diff = z.double()[:, None, :] - self.means[None]  # (N, C, D)
        d2 = torch.einsum("ncd,de,nce->nc", diff, self.precision, diff)
        feature = torch.log(d2.min(dim=1).values + 1e-12)[:, None]  # as the detector's _features
        return linear_logit(self.pipeline, feature).unsqueeze(1).expand(-1, self.num_classes)


class DetectorHead(nn.Module):
    """The classifier and its detector as one module: ``x`` ``(N, C, H, W)`` → ``(N, 2K)``, the K
    logits then the K per-class detector logits of ``logit`` (e.g. :class:`KDLogit`) on the
    ``layer`` features."""

    def __init__(self, model: nn.Module, logit: nn.Module, layer: str = "dfeat") -> None:
        super().__init__()
        self.model, self.logit, self.layer = model, logit, layer
        self.train(model.training)  # a new module says training=True: restoring that would leave the model training

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        caught: list[torch.Tensor] = []
        module, side = layer_for(self.model, self.layer)
        if side == "input":
            handle = module.register_forward_pre_hook(lambda _m, args: caught.append(args[0]))
        else:
            handle = module.register_forward_hook(lambda _m, _a, out: caught.append(out))
        try:
            logits = self.model(x)
        finally:
            handle.remove()
        features = caught[0] if len(caught) == 1 else torch.cat(caught)
        return torch.cat([logits, self.logit(features.flatten(1)).to(logits.dtype)], dim=1)


LOGITS = {"kd": KDLogit, "mahalanobis": MahalanobisLogit}  # detector name → its differentiable logit


def detector_head(model: nn.Module, detector, num_classes: int, fit_images=None) -> DetectorHead:
    """:class:`DetectorHead` for a fitted medart detector (``kd`` or ``mahalanobis`` so far)."""
    name = getattr(detector, "name", None)
    if name not in LOGITS:
        raise ConfigError(f"adaptive attacks support the {', '.join(LOGITS)} detectors so far, not {name or detector!r}")
    return DetectorHead(model, LOGITS[name](detector, num_classes), detector.layer)


__all__ = ["LOGITS", "DetectorHead", "KDLogit", "MahalanobisLogit", "detector_head", "linear_logit"]
