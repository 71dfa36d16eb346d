"""Bayesian uncertainty (Feinman et al. 2017): MC-dropout variance of the predicted probabilities."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from medart.detectors.activations import activations
from medart.detectors.base import FeatureDetector
from medart.errors import ConfigError
from medart.models.evaluation import resolve_device


class BayesianUncertainty(FeatureDetector):
    """BU: log U(x), U = (1/T) Σ_t p_tᵀp_t − p̄ᵀp̄ over T stochastic passes with dropout on → logistic regression.

    Dropout sits only in the head of a :class:`~medart.models.resnet.MedResNet`, so the backbone
    runs once and only the head is sampled ``passes`` times (seeded), in float64. Any other
    network runs whole ``passes`` times with its dropout layers on and everything else in eval
    mode (seeded); a network without dropout cannot be scored (one-line error).
    """

    name = "bu"
    defence_params = ["passes", "batch_size"]

    def __init__(self, model, passes: int = 50, **kwargs) -> None:
        super().__init__(model, **kwargs)
        self.passes = passes

    def _check_params(self) -> None:
        if self.passes < 2:
            raise ConfigError(f"BU needs at least 2 MC-dropout passes, got {self.passes}")
        if not self._head_dropout() and not _dropouts(self.model):
            arch = getattr(self.model, "config", {}).get("arch", type(self.model).__name__)
            raise ConfigError(f"BU needs dropout (Monte Carlo dropout) and {arch} has no dropout layer; leave bu out of `detectors`")

    def _head_dropout(self) -> bool:
        """Whether the model has a MedResNet-style ``head``: a Sequential with dropout after ``dfeat``."""
        head = getattr(self.model, "head", None)
        return isinstance(head, torch.nn.Sequential) and any(isinstance(m, torch.nn.Dropout) for m in head)

    def _classifier(self):
        return LogisticRegression(random_state=self.random_state)

    def _features(self, x: torch.Tensor, **kwargs) -> np.ndarray:
        u = self._head_uncertainty(x) if self._head_dropout() else self._network_uncertainty(x)
        # U spans orders of magnitude; on raw values a few outliers can set the sign the logistic
        # regression learns against the ranking of the rest. The log keeps the ranking.
        return torch.log(u.clamp(min=0) + 1e-12).numpy()[:, None]

    def _head_uncertainty(self, x: torch.Tensor) -> torch.Tensor:
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
        return _uncertainty(torch.softmax(h, dim=-1))

    def _network_uncertainty(self, x: torch.Tensor) -> torch.Tensor:
        """T passes of the whole network, dropout on (seeded per batch), other layers in eval mode."""
        model, dev = self.model, resolve_device(self.device)
        was_training = model.training
        model.eval().to(dev)
        out = []
        try:
            for module in _dropouts(model):
                module.train()
            with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []), torch.no_grad():
                for start in range(0, len(x), self.batch_size):
                    torch.manual_seed(self.random_state + start)  # an input's score does not depend on the other batches
                    xb = x[start : start + self.batch_size].to(dev)
                    p = torch.stack([torch.softmax(model(xb).double(), dim=-1) for _ in range(self.passes)])
                    out.append(_uncertainty(p).cpu())
        finally:
            model.train(was_training)
        return torch.cat(out)


def _dropouts(model: torch.nn.Module) -> list[torch.nn.Module]:
    return [m for m in model.modules() if isinstance(m, torch.nn.modules.dropout._DropoutNd) and m.p > 0]


def _uncertainty(p: torch.Tensor) -> torch.Tensor:
    """U ``(N,)`` of probabilities ``p`` ``(T, N, K)`` from T passes."""
    return (p * p).sum(-1).mean(0) - (p.mean(0) ** 2).sum(-1)


def _linear(module: torch.nn.Linear, h: torch.Tensor) -> torch.Tensor:
    bias = None if module.bias is None else module.bias.detach().double().cpu()
    return torch.nn.functional.linear(h, module.weight.detach().double().cpu(), bias)
