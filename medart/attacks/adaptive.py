"""Detector-aware attacks (Carlini & Wagner 2017, *Adversarial examples are not easily detected*):
the classifier and a fitted detector attacked together, in the same L∞ threat model as the
other attacks and through the same backends.

:class:`DetectorHead` wraps the classifier so that one forward pass gives ``(N, 2K)`` outputs: its
K logits, then, for every class c, the detector's logit (> 0 = "adversarial") for the input *if
the model predicted c*, differentiable in torch with respect to the input. It catches every layer
the logit reads (the image itself for ``input``) in that one pass.
:class:`~medart.attacks.losses.DetectorAwareLoss` reads both halves; ART's PGD and torchattacks'
PGD ascend it as they ascend cross-entropy (see :func:`medart.attacks.make_attack`'s ``loss``).

Exact logits (the detector's own score, in float64): KD (:class:`KDLogit`: the Gaussian kernel
density of the penultimate features against the fitted class-wise Train references), LID
(:class:`LIDLogit`: the LID of every layer against the fixed Train reference batch), Mahalanobis
(:class:`MahalanobisLogit`) and BU (:class:`BULogit`: the detector's seeded head-dropout masks).
Surrogates (:mod:`medart.attacks.surrogates`), for the detectors without a useful gradient: DFeat
(a distilled MLP) and QFeat (BPDA: the exact forward, a smooth backward through the quantiser).
Whatever the head, the adaptive examples are scored by the real, unchanged detector.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from medart.attacks.surrogates import DFeatSurrogate, QFeatBPDA, fitted, scaled
from medart.detectors.activations import INPUT, layer_hooks
from medart.detectors.base import as_tensor
from medart.detectors.distances import DUPLICATE
from medart.detectors.lid import MAX_LID
from medart.errors import ConfigError


def linear_logit(pipeline, features: torch.Tensor) -> torch.Tensor:
    """The decision function ``(N,)`` of a fitted ``MinMaxScaler`` → ``LogisticRegression`` pipeline
    (every medart detector with a logistic regression) on ``features`` ``(N, F)``, in torch."""
    classify = pipeline.named_steps["classify"]
    cast = lambda a: torch.as_tensor(a, dtype=features.dtype, device=features.device)  # noqa: E731
    return scaled(pipeline, features) @ cast(classify.coef_[0]) + cast(classify.intercept_[0])


def _fixed_reference(detector) -> None:
    if detector.reference != "train":
        raise ConfigError(f"an adaptive attack needs {detector.name.upper()} with reference='train' (fixed references); "
                          f"got reference={detector.reference!r}")
    fitted(detector)


class KDLogit(nn.Module):
    """A fitted :class:`~medart.detectors.kd.KernelDensity`'s logit for every class: ``(N, K)`` from
    penultimate features ``(N, D)``; column c is what the detector outputs for an input the model
    assigns to class c. Only ``reference="train"`` (a fixed reference set) can be attacked this way."""

    def __init__(self, detector, num_classes: int) -> None:
        super().__init__()
        _fixed_reference(detector)
        refs = [detector.references_.get(c) for c in range(num_classes)]
        if any(r is None for r in refs):
            raise ConfigError("the KD detector has no references of some class; fit it with references of every class")
        self.register_buffer("reference", torch.cat(refs).double())
        self.register_buffer("owner", torch.cat([torch.full((len(r),), c) for c, r in enumerate(refs)]))
        standardize = bool(detector.standardize)
        self.register_buffer("mean", detector.mean_.double() if standardize else torch.zeros(()))
        self.register_buffer("scale", detector.scale_.double() if standardize else torch.ones(()))
        self.sigma, self.pipeline, self.num_classes = detector.sigma_, detector.pipeline_, num_classes
        self.layers = [detector.layer]
        self.log_count = [math.log(len(r)) for r in refs]

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        z = (z.double() - self.mean) / self.scale
        d2 = _squared_distances(z, self.reference).clamp_min(0.0)
        kernel = -d2 / self.sigma**2
        density = torch.stack([torch.logsumexp(kernel.masked_fill(self.owner != c, -math.inf), dim=1) - self.log_count[c]
                               for c in range(self.num_classes)], dim=1)  # (N, K): log KD against each class
        return torch.stack([linear_logit(self.pipeline, density[:, c : c + 1]) for c in range(self.num_classes)], dim=1)


class LIDLogit(nn.Module):
    """A fitted :class:`~medart.detectors.lid.LocalIntrinsicDimensionality`'s logit ``(N, K)`` (the
    same for every class) from the activations ``(N, D_l)`` of each of its layers, in its order:
    the maximum-likelihood LID against the fixed Train reference batch ``reference_``, with the
    detector's edge cases (a zero nearest distance → 0, equal distances → ``MAX_LID``, clamped at
    ``MAX_LID``; gradients are 0 there), then its scaler and logistic regression. The LID is
    differentiable in the query through the k smallest distances. Only ``reference="train"``."""

    def __init__(self, detector, num_classes: int) -> None:
        super().__init__()
        _fixed_reference(detector)
        self.layers, self.k, self.pipeline, self.num_classes = list(detector.layers), detector.k, detector.pipeline_, num_classes
        for j, layer in enumerate(self.layers):
            self.register_buffer(f"reference{j}", detector.reference_[layer].double())

    def forward(self, *activations: torch.Tensor) -> torch.Tensor:
        references = [getattr(self, f"reference{j}") for j in range(len(self.layers))]
        lids = torch.stack([lid_mle_torch(a.double(), r, self.k) for a, r in zip(activations, references)], dim=1)
        return linear_logit(self.pipeline, lids).unsqueeze(1).expand(-1, self.num_classes)


class MahalanobisLogit(nn.Module):
    """A fitted :class:`~medart.detectors.mahalanobis.Mahalanobis` detector's logit ``(N, K)`` from
    penultimate features ``(N, D)``: log min_c (z − μ_c)ᵀ Σ⁻¹ (z − μ_c) does not depend on the
    predicted class, so every column is the same."""

    def __init__(self, detector, num_classes: int) -> None:
        super().__init__()
        fitted(detector)
        self.register_buffer("means", torch.as_tensor(detector.means_, dtype=torch.float64))
        self.register_buffer("precision", torch.as_tensor(detector.precision_, dtype=torch.float64))
        self.pipeline, self.num_classes, self.layers = detector.pipeline_, num_classes, [detector.layer]

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        diff = z.double()[:, None, :] - self.means[None]  # (N, C, D)
        d2 = torch.einsum("ncd,de,nce->nc", diff, self.precision, diff)
        feature = torch.log(d2.min(dim=1).values + 1e-12)[:, None]  # as the detector's _features
        return linear_logit(self.pipeline, feature).unsqueeze(1).expand(-1, self.num_classes)


class BULogit(nn.Module):
    """A fitted :class:`~medart.detectors.uncertainty.BayesianUncertainty`'s logit ``(N, K)`` (the
    same for every class) from penultimate features ``(N, D)``: the detector's T passes through the
    model's ``head`` with the same dropout masks (drawn from ``torch.Generator().manual_seed(random_state)``
    in the same order, one per pass shared by every input), U = mean_t p_tᵀp_t − p̄ᵀp̄,
    log(U + 1e-12), its scaler and logistic regression, in float64.

    Only a network with dropout in its head (a MedResNet): whole-network MC dropout seeds the
    global RNG per scoring batch, masks an attack's own batches and passes cannot reproduce."""

    def __init__(self, detector, num_classes: int) -> None:
        super().__init__()
        if not detector._head_dropout():
            raise ConfigError("an adaptive attack on BU needs the model's dropout in a MedResNet-style `head`: "
                              "whole-network MC dropout draws its seeded masks per scoring batch, which an attack "
                              "cannot reproduce; leave bu out")
        fitted(detector)
        self.head, self.passes, self.random_state = detector.model.head, detector.passes, detector.random_state
        self.pipeline, self.num_classes, self.layers = detector.pipeline_, num_classes, ["dfeat"]

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.random_state)  # the detector's masks, on every call
        h = z.double().expand(self.passes, *z.shape)  # (T, N, D)
        for module in self.head:
            if isinstance(module, nn.Dropout):
                keep = (torch.rand(self.passes, 1, h.shape[-1], generator=g) >= module.p).to(h)
                h = h * keep / (1.0 - module.p)
            elif isinstance(module, nn.Linear):
                bias = None if module.bias is None else module.bias.detach().double()
                h = nn.functional.linear(h, module.weight.detach().double(), bias)
            else:
                h = module(h)
        p = torch.softmax(h, dim=-1)
        u = (p * p).sum(-1).mean(0) - (p.mean(0) ** 2).sum(-1)
        feature = torch.log(u.clamp(min=0) + 1e-12)[:, None]  # as the detector's _features
        return linear_logit(self.pipeline, feature).unsqueeze(1).expand(-1, self.num_classes)


def lid_mle_torch(query: torch.Tensor, reference: torch.Tensor, k: int) -> torch.Tensor:
    """:func:`medart.detectors.lid.lid_mle` ``(N,)`` of ``query`` ``(N, D)`` against ``reference``
    ``(M, D)``, differentiable in ``query`` through its k smallest distances, with the same edge
    cases: a zero nearest distance gives 0, k equal distances ``MAX_LID``, and LID is clamped at
    ``MAX_LID`` (the gradient is 0 there, never NaN)."""
    r2 = _squared_distances(query, reference).topk(k, dim=1, largest=False).values  # ascending r_1² … r_k²
    zero = r2[:, 0] == 0
    r2 = torch.where(zero[:, None], 1.0, r2)  # the rows that are 0 anyway, kept away from log(0)'s NaN gradient
    mean_log = 0.5 * torch.log(r2 / r2[:, -1:]).mean(dim=1)  # ≤ 0; = 0 only if all k distances are equal
    lid = torch.where(mean_log < 0, (-1.0 / torch.where(mean_log < 0, mean_log, -1.0)).clamp(max=MAX_LID), MAX_LID)
    return torch.where(zero, 0.0, lid)


def _squared_distances(query: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """‖q_i − r_j‖² ``(N, M)`` as :func:`medart.detectors.distances.squared_distances` computes them
    (exact duplicates → 0), out of place so that autograd can run through them."""
    q_sq, r_sq = query.square().sum(1, keepdim=True), reference.square().sum(1)
    d2 = q_sq + r_sq - 2.0 * query @ reference.T
    return torch.where(d2 <= DUPLICATE * (q_sq + r_sq), 0.0, d2)


class DetectorHead(nn.Module):
    """The classifier and its detector as one module: ``x`` ``(N, C, H, W)`` → ``(N, 2K)``, the K
    logits then the K per-class detector logits of ``logit`` (e.g. :class:`KDLogit`), which is called
    with the flattened features ``(N, D_l)`` of each of ``layers`` (one name or several; ``input`` is
    ``x`` itself), caught in the classifier's one forward pass."""

    def __init__(self, model: nn.Module, logit: nn.Module, layers: str | Sequence[str] = "dfeat") -> None:
        super().__init__()
        self.model, self.logit = model, logit
        self.layers = [layers] if isinstance(layers, str) else list(layers)
        self.train(model.training)  # a new module says training=True: restoring that would leave the model training

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        caught: dict[str, list[torch.Tensor]] = {}
        with layer_hooks(self.model, self.layers, caught):
            logits = self.model(x)
        # a model run image by image hooks a layer once per image
        features = [(x if layer == INPUT else torch.cat(caught[layer])).flatten(1) for layer in self.layers]
        return torch.cat([logits, self.logit(*features).to(logits.dtype)], dim=1)


EXACT = {"kd": KDLogit, "lid": LIDLogit, "mahalanobis": MahalanobisLogit, "bu": BULogit}
SURROGATES = {"dfeat": DFeatSurrogate, "qfeat": QFeatBPDA}  # fitted on the detector's fit images
LOGITS = EXACT | SURROGATES  # detector name → its differentiable logit


def detector_head(model: nn.Module, detector, num_classes: int, fit_images=None) -> DetectorHead:
    """:class:`DetectorHead` for a fitted medart detector named in :data:`LOGITS`. ``fit_images``
    ``(N, C, H, W)``: the detector's fit inputs (AdvTrain clean and adversarial images), needed by
    the surrogates (DFeat, QFeat) and ignored by the exact logits."""
    name = getattr(detector, "name", None)
    if name not in LOGITS:
        raise ConfigError(f"adaptive attacks support the {', '.join(LOGITS)} detectors, not {name or detector!r}")
    if name in SURROGATES:
        if fit_images is None:
            raise ConfigError(f"an adaptive attack on {name} fits a differentiable surrogate on the detector's fit images; "
                              "pass fit_images=<its clean and adversarial AdvTrain images>")
        logit = SURROGATES[name](detector, num_classes, as_tensor(fit_images))
    else:
        logit = EXACT[name](detector, num_classes)
    return DetectorHead(model, logit, logit.layers)


__all__ = ["EXACT", "LOGITS", "SURROGATES", "BULogit", "DetectorHead", "KDLogit", "LIDLogit", "MahalanobisLogit",
           "detector_head", "lid_mle_torch", "linear_logit"]
