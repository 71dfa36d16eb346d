"""Bayesian uncertainty (Feinman et al. 2017): MC-dropout variance of the predicted probabilities."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from medart.detectors.activations import activations
from medart.detectors.base import FeatureDetector
from medart.errors import ConfigError


class BayesianUncertainty(FeatureDetector):
    """BU: log U(x), U = (1/T) Σ_t p_tᵀp_t − p̄ᵀp̄ over T stochastic passes with dropout on → logistic regression.

    Dropout sits only in the head of a :class:`~medart.models.resnet.MedResNet`, so the backbone
    runs once and only the head is sampled ``passes`` times (seeded), in float64.
    """

    name = "bu"
    defence_params = ["passes", "batch_size"]

    def __init__(self, model, passes: int = 50, **kwargs) -> None:
        super().__init__(model, **kwargs)
        self.passes = passes

    def _check_params(self) -> None:
        if self.passes < 2:
            raise ConfigError(f"BU needs at least 2 MC-dropout passes, got {self.passes}")
        head = getattr(self.model, "head", None)
        if not isinstance(head, torch.nn.Sequential) or not any(isinstance(m, torch.nn.Dropout) for m in head):
            raise ConfigError("BU needs a model whose `head` is a Sequential with dropout (a MedResNet)")

    def _classifier(self):
        return LogisticRegression(random_state=self.random_state)

    def _features(self, x: torch.Tensor, **kwargs) -> np.ndarray:
        z = activations(self.model, x, ["dfeat"], self.batch_size, self.device)[0]["dfeat"].double()
        g = torch.Generator().manual_seed(self.random_state)
        # One dropout mask per pass, shared by every input: an input's score then depends on the
        # input alone, not on its position in the batch or on what else is being scored.
        h = z.expand(self.passes, *z.shape)  # (T, N, D)
        for module in self.model.head:
            if isinstance(module, torch.nn.Dropout):
                keep = (torch.rand(self.passes, 1, h.shape[-1], generator=g) >= module.p).double()
                h = h * keep / (1.0 - module.p)
            else:
                h = _linear(module, h) if isinstance(module, torch.nn.Linear) else module(h)
        p = torch.softmax(h, dim=-1)  # (T, N, K)
        u = (p * p).sum(-1).mean(0) - (p.mean(0) ** 2).sum(-1)
        # U spans orders of magnitude; on raw values a few outliers can set the sign the logistic
        # regression learns against the ranking of the rest. The log keeps the ranking.
        return torch.log(u.clamp(min=0) + 1e-12).numpy()[:, None]


def _linear(module: torch.nn.Linear, h: torch.Tensor) -> torch.Tensor:
    bias = None if module.bias is None else module.bias.detach().double().cpu()
    return torch.nn.functional.linear(h, module.weight.detach().double().cpu(), bias)
