"""Bayesian uncertainty (Feinman et al. 2017): MC-dropout variance of the predicted probabilities."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from medart.detectors.activations import activations
from medart.detectors.base import FeatureDetector
from medart.errors import ConfigError


class BayesianUncertainty(FeatureDetector):
    """BU: U(x) = (1/T) Σ_t p_tᵀp_t − p̄ᵀp̄ over T stochastic passes with dropout on → logistic regression.

    Dropout sits only in the head of a :class:`~medart.models.resnet.MedResNet`, so the backbone
    runs once and only the head is sampled ``passes`` times (seeded).
    """

    name = "bu"
    defence_params = ["passes", "batch_size"]

    def __init__(self, model, passes: int = 50, **kwargs) -> None:
        super().__init__(model, **kwargs)
        self.passes = passes

    def _check_params(self) -> None:
        if self.passes < 2:
            raise ConfigError(f"BU needs at least 2 MC-dropout passes, got {self.passes}")
        if not hasattr(self.model, "head") or not any(isinstance(m, torch.nn.Dropout) for m in self.model.head.modules()):
            raise ConfigError("BU needs a model whose `head` has dropout (a MedResNet)")

    def _classifier(self):
        return LogisticRegression(random_state=self.random_state)

    def _features(self, x: torch.Tensor) -> np.ndarray:
        z = activations(self.model, x, ["dfeat"], self.batch_size, self.device)[0]["dfeat"]
        head = self.model.head.cpu()
        was_training = head.training
        head.train()  # dropout on
        try:
            with torch.random.fork_rng(devices=[]), torch.inference_mode():
                torch.manual_seed(self.random_state)
                p = torch.stack([torch.softmax(head(z), dim=1).double() for _ in range(self.passes)])  # (T, N, K)
        finally:
            head.train(was_training)
        u = (p * p).sum(-1).mean(0) - (p.mean(0) ** 2).sum(-1)
        return u.numpy()[:, None]
