"""ART's own ``BinaryActivationDetector`` (a small network on one layer's activations), made to
run in medart's protocol beside the other detectors: 0/1 labels, tensors, ``report["scores"]``,
``score`` and parameters that can be logged.

ART 1.20.1's ``BinaryActivationDetector.get_params()`` raises ``AttributeError`` (its
``defence_params`` name an attribute, ``layer``, it never sets); :meth:`get_params` here answers
from the adapter's own settings. ART's ``get_activations`` reaches only top-level children of the
model (for a MedResNet: ``stem``, ``layer1`` … ``layer4``, ``pool``, ``embed``, ``head``; for an
adapted network: ``network`` and ``dfeat``, through which its penultimate features pass) and
leaves its forward hook behind; the adapter removes it after every fit and detect.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import numpy as np
import torch
from art.defences.detector.evasion import BinaryActivationDetector, EvasionDetector
from art.estimators.classification import PyTorchClassifier
from torch import nn

from medart.detectors.base import as_tensor, check_fit_labels
from medart.detectors.fit_check import detection_auc, warn
from medart.errors import ConfigError
from medart.models.evaluation import device_of, resolve_device


@contextlib.contextmanager
def _art_hooks_removed(model: nn.Module, classifier: PyTorchClassifier) -> Iterator[None]:
    """ART's ``get_activations`` hooks the layer on first use and never unhooks it; it remembers
    that in ``classifier._features``, which is dropped too so that its next call hooks afresh."""
    before = {module: set(module._forward_hooks) for module in model.modules()}
    try:
        yield
    finally:
        for module, keys in before.items():
            for key in set(module._forward_hooks) - keys:
                del module._forward_hooks[key]
        classifier.__dict__.pop("_features", None)


class ARTBinaryActivation(BinaryActivationDetector):
    """ART's binary activation detector on a medart model, with an MLP (D → ``hidden`` → 2) as the
    detector network, trained by ART with Adam.

    Args:
        model: the frozen classifier, float32 ``(N, C, H, W)`` pixels in [0, 1] → logits.
        layer: a top-level child of ``model``; default (or ``dfeat``): the one holding the
            penultimate features (a MedResNet's ``embed``, an adapted network's ``dfeat``).
        hidden: units of the detector network's hidden layer.
        nb_epochs: training epochs of the detector network.
        learning_rate: Adam's learning rate.
        batch_size: images per batch for activations and detector training.
        device: ``auto``, ``cpu`` or ``cuda``.
        random_state: seeds the detector network's initialisation and batches.
    """

    name = "art_binary"
    defence_params = ["layer", "hidden", "nb_epochs", "learning_rate", "batch_size"]

    def __init__(self, model: nn.Module, layer: str | None = None, hidden: int = 64, nb_epochs: int = 30,
                 learning_rate: float = 1e-3, batch_size: int = 100, device: str = "auto", random_state: int = 0) -> None:
        if hidden < 1 or nb_epochs < 1 or not learning_rate > 0:
            raise ConfigError(f"art_binary needs hidden >= 1, nb_epochs >= 1 and learning_rate > 0, got {hidden}, {nb_epochs}, {learning_rate}")
        names = [name for name, _ in model.named_children()]
        if layer in (None, "dfeat") and hasattr(model, "layer_for"):
            penultimate = model.layer_for("dfeat")[0]
            layer = next((n for n, m in model.named_children() if m is penultimate), layer)
        if layer not in names:
            raise ConfigError(f"unknown layer '{layer}' for ART's BinaryActivationDetector; it reaches only top-level layers: {', '.join(names)}")
        self.model, self.layer, self.hidden, self.nb_epochs = model, layer, hidden, nb_epochs
        self.learning_rate, self.batch_size, self.device, self.random_state = learning_rate, batch_size, device, random_state
        self._device_type = "gpu" if resolve_device(device).type == "cuda" else "cpu"
        self._fitted = False
        # ART's constructor wants both networks; they are built in fit, once the input shape and
        # the activation width are known.
        EvasionDetector.__init__(self)

    def _art_classifier(self, network: nn.Module, input_shape: tuple[int, ...], nb_classes: int, **kwargs) -> PyTorchClassifier:
        return PyTorchClassifier(network, loss=nn.CrossEntropyLoss(), input_shape=input_shape, nb_classes=nb_classes,
                                 device_type=self._device_type, **kwargs)

    def fit(self, x: np.ndarray | torch.Tensor, y: np.ndarray, batch_size: int | None = None, nb_epochs: int | None = None,
            **kwargs) -> None:
        """Fit on inputs ``x`` with ``y`` = 1 adversarial / 0 clean (reference keywords are ignored)."""
        x = as_tensor(x)
        y = check_fit_labels(x, y)
        batch_size, nb_epochs = batch_size or self.batch_size, nb_epochs or self.nb_epochs
        with torch.no_grad():
            num_classes = self.model(x[:1].to(device_of(self.model))).shape[1]
        classifier = self._art_classifier(self.model, tuple(x.shape[1:]), num_classes, clip_values=(0.0, 1.0), preprocessing=None)
        with torch.random.fork_rng(devices=[]), _art_hooks_removed(self.model, classifier):
            width = int(np.prod(classifier.get_activations(x[:1].numpy(), self.layer, 1).shape[1:]))
            torch.manual_seed(self.random_state)
            network = nn.Sequential(nn.Flatten(), nn.Linear(width, self.hidden), nn.ReLU(), nn.Linear(self.hidden, 2))
            detector = self._art_classifier(network, (width,), 2, optimizer=torch.optim.Adam(network.parameters(), lr=self.learning_rate))
            super().__init__(classifier, detector, self.layer)
            super().fit(x.numpy(), np.eye(2, dtype=np.float32)[y], batch_size=batch_size, nb_epochs=nb_epochs)
        self._fitted = True

    def detect(self, x: np.ndarray | torch.Tensor, batch_size: int | None = None, **kwargs) -> tuple[dict, np.ndarray]:
        """``({"predictions": (N, 2) logits, "scores": (N,) logit margin}, is_adversarial (N,) bool)``."""
        if not self._fitted:
            raise ConfigError("ARTBinaryActivation is not fitted; call fit first")
        with _art_hooks_removed(self.model, self.classifier):
            report, flagged = super().detect(as_tensor(x).numpy(), batch_size=batch_size or self.batch_size)
        logits = np.asarray(report["predictions"], dtype=np.float64)
        return report | {"scores": logits[:, 1] - logits[:, 0]}, flagged

    def score(self, x: np.ndarray | torch.Tensor, y_is_adv: np.ndarray) -> float:
        """ROC-AUC of the detection scores against the true 0/1 labels; NaN, with a warning, when
        the scores are constant (:func:`medart.detectors.fit_check.detection_auc`)."""
        y = check_fit_labels(as_tensor(x), y_is_adv)
        auc, reason = detection_auc(y, self.detect(x)[0]["scores"])
        if reason:
            warn(self.name, f"{len(y)} inputs", reason)
        return auc

    def get_params(self) -> dict[str, Any]:
        return {p: getattr(self, p) for p in self.defence_params}
