"""Differentiable stand-ins for the detectors whose decision has no useful gradient: DFeat's
random forest (piecewise constant) and QFeat's quantiser (a step function before its RBF SVM).

An adaptive attack ascends the stand-in's logit through :class:`~medart.attacks.adaptive.DetectorHead`;
the examples it makes are then scored by the real, unchanged detector (nothing here writes to it),
so a stand-in that points the wrong way makes the attack weaker, never the reported AUC lower.

- :class:`DFeatSurrogate`: a small MLP on the detector's own min–max-scaled features, distilled
  (seeded, in float64) to the forest's predicted probability on the detector's fit images.
- :class:`QFeatBPDA`: BPDA (Athalye et al. 2018). The forward pass is the real detector: its hard
  quantiser thresholds, its scaler and its SVC's RBF decision function computed in torch from the
  support vectors. Only the backward pass through the quantiser is smooth (straight-through
  sigmoids whose temperature is a share of each unit's spread over the fit images).
"""

from __future__ import annotations

import torch
from sklearn.preprocessing import QuantileTransformer
from torch import nn

from medart.detectors.activations import activations
from medart.errors import ConfigError


def scaled(pipeline, features: torch.Tensor) -> torch.Tensor:
    """``features`` ``(N, F)`` through the fitted scaler (step ``scale``) of a medart detector's
    pipeline — a ``MinMaxScaler``, or KD's ``QuantileTransformer`` (:func:`ranks`) — in torch, in
    the features' dtype and device."""
    scale = pipeline.named_steps["scale"]
    as_tensor = lambda a: torch.as_tensor(a, dtype=features.dtype, device=features.device)  # noqa: E731
    if isinstance(scale, QuantileTransformer):
        references = as_tensor(scale.references_)
        return torch.stack([ranks(features[:, j], as_tensor(scale.quantiles_[:, j]), references)
                            for j in range(features.shape[1])], dim=1)
    return features * as_tensor(scale.scale_) + as_tensor(scale.min_)


def ranks(x: torch.Tensor, quantiles: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
    """scikit-learn's ``QuantileTransformer`` (uniform output) of one feature ``x`` ``(N,)``: the
    piecewise-linear map of its fitted ``quantiles`` ``(Q,)`` onto ``references`` ``(Q,)``, the
    mean of the map read upwards and downwards (tied quantiles), 0 and 1 beyond the ends. The value
    is exact; the gradient beyond the ends is the end segment's slope, so an attack started out
    there still sees which way the rank rises (a clamp would give it none)."""
    up = _interp(x, quantiles, references)
    down = -_interp(-x, -quantiles.flip(0), -references.flip(0))
    line = 0.5 * (up + down)
    exact = torch.where(x >= quantiles[-1], torch.ones_like(x), torch.where(x <= quantiles[0], torch.zeros_like(x), line))
    return line + (exact - line).detach()


def _interp(x: torch.Tensor, xp: torch.Tensor, fp: torch.Tensor) -> torch.Tensor:
    """``np.interp(x, xp, fp)`` inside ``[xp[0], xp[-1]]`` for non-decreasing ``xp`` (the upper
    of tied points), and the end segments extended beyond it."""
    i = torch.searchsorted(xp, x.detach().contiguous(), right=True).clamp(1, len(xp) - 1)
    x0, x1, y0, y1 = xp[i - 1], xp[i], fp[i - 1], fp[i]
    width = x1 - x0
    slope = torch.where(width > 0, (y1 - y0) / torch.where(width > 0, width, torch.ones_like(width)), torch.zeros_like(width))
    return y0 + slope * (x - x0)


def fitted(detector) -> None:
    """A one-line ConfigError unless ``detector`` has been fitted."""
    if getattr(detector, "pipeline_", None) is None:
        raise ConfigError(f"the {detector.name} detector is not fitted; call fit before attacking it")


def fit_features(detector, fit_images: torch.Tensor) -> torch.Tensor:
    """The detector's ``layer`` features ``(N, D)`` float64 of ``fit_images`` ``(N, C, H, W)``."""
    caught = activations(detector.model, fit_images, [detector.layer], detector.batch_size, detector.device)[0]
    return caught[detector.layer].double()


class DFeatSurrogate(nn.Module):
    """A fitted :class:`~medart.detectors.features.DeepFeatures` (random forest) replaced, for the
    gradient only, by ``Linear(D, HIDDEN) → ReLU → Linear(HIDDEN, 1)`` on the same min–max-scaled
    ``layer`` features, trained with binary cross-entropy against the forest's probability of
    "adversarial" on ``fit_images`` (the detector's AdvTrain inputs). ``(N, D)`` features →
    ``(N, K)`` logits (log-odds of the surrogate; the same for every class).

    ``agreement_``: the share of ``fit_images`` where the surrogate's decision (logit > 0) is the
    forest's (probability > 0.5).
    """

    HIDDEN, EPOCHS, LR = 64, 400, 0.01

    def __init__(self, detector, num_classes: int, fit_images: torch.Tensor) -> None:
        super().__init__()
        fitted(detector)
        self.layers, self.pipeline, self.num_classes = [detector.layer], detector.pipeline_, num_classes
        z = fit_features(detector, fit_images)
        target = torch.from_numpy(detector.pipeline_.predict_proba(z.numpy())[:, 1])
        x = scaled(self.pipeline, z)
        with torch.random.fork_rng(devices=[]):  # seeded here without moving the caller's RNG
            torch.manual_seed(detector.random_state)
            self.net = nn.Sequential(nn.Linear(z.shape[1], self.HIDDEN), nn.ReLU(), nn.Linear(self.HIDDEN, 1)).double()
        optimizer = torch.optim.Adam(self.net.parameters(), lr=self.LR)
        for _ in range(self.EPOCHS):  # full batch: deterministic, a few hundred 128-d rows per step
            optimizer.zero_grad()
            nn.functional.binary_cross_entropy_with_logits(self.net(x).squeeze(1), target).backward()
            optimizer.step()
        self.net.requires_grad_(False)
        with torch.no_grad():
            self.agreement_ = float(((self.net(x).squeeze(1) > 0) == (target > 0.5)).double().mean())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        logit = self.net(scaled(self.pipeline, z.double()))
        return logit.expand(-1, self.num_classes)


class QFeatBPDA(nn.Module):
    """A fitted :class:`~medart.detectors.features.QuantizedFeatures`' decision function ``(N, K)``
    (the same for every class) from ``layer`` features ``(N, D)``, exact in the forward pass; the
    gradient of each unit's quantisation ``1[z > t]`` is that of ``sigmoid((z − t) / τ)``, with τ =
    ``TEMPERATURE`` × the unit's standard deviation over ``fit_images``."""

    TEMPERATURE = 0.1

    def __init__(self, detector, num_classes: int, fit_images: torch.Tensor) -> None:
        super().__init__()
        fitted(detector)
        svc = detector.pipeline_.named_steps["classify"]
        self.layers, self.pipeline, self.num_classes = [detector.layer], detector.pipeline_, num_classes
        self.gamma = float(svc._gamma)  # the RBF width the SVC was fitted with ("scale" resolved)
        as64 = lambda a: torch.as_tensor(a, dtype=torch.float64)  # noqa: E731
        self.register_buffer("thresholds", as64(detector.thresholds_)[:, None, :])  # (levels − 1, 1, D)
        spread = fit_features(detector, fit_images).std(dim=0)
        self.register_buffer("tau", (self.TEMPERATURE * spread).clamp_min(1e-6))  # a dead unit keeps a finite slope
        # sklearn stores a binary SVC's dual coefficients and intercept with the sign of decision_function
        self.register_buffer("support", as64(svc.support_vectors_))
        self.register_buffer("dual", as64(svc.dual_coef_[0]))
        self.register_buffer("intercept", as64(svc.intercept_[0]))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        z = z.double()
        hard = (z[None] > self.thresholds).sum(0).double()
        soft = torch.sigmoid((z[None] - self.thresholds) / self.tau).sum(0)
        q = scaled(self.pipeline, hard + (soft - soft.detach()))  # value: the hard code; gradient: the soft one's
        d2 = (q.square().sum(1, keepdim=True) + self.support.square().sum(1) - 2.0 * q @ self.support.T).clamp_min(0.0)
        decision = torch.exp(-self.gamma * d2) @ self.dual + self.intercept
        return decision[:, None].expand(-1, self.num_classes)


__all__ = ["DFeatSurrogate", "QFeatBPDA", "fit_features", "fitted", "scaled"]
