"""Predictions and the classification metrics: the paper's accuracy and AUC, and the balanced
accuracy and per-class recall that show what a model does for a rare class."""

from __future__ import annotations

import itertools
import re
from typing import Sequence

import numpy as np
import torch
from sklearn.metrics import recall_score, roc_auc_score
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from medart.intervals import Estimate, auc_interval, macro_auc_interval, mean_of, proportion


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def device_of(model: nn.Module) -> torch.device:
    """Where ``model`` lives: its first parameter's device, else its first buffer's (a converted
    TorchScript program can hold its weights as buffers only), else the CPU."""
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        return tensor.device
    return torch.device("cpu")


@torch.no_grad()
def predict(
    model: nn.Module,
    dataset: Dataset,
    batch_size: int = 256,
    device: str | torch.device = "auto",
    progress: bool = False,
    desc: str = "predict",
) -> tuple[np.ndarray, np.ndarray]:
    """Softmax probabilities ``(N, K)`` and labels ``(N,)`` of ``dataset`` under ``model`` in eval
    mode (dropout off, batch-norm statistics frozen); the caller's mode is restored afterwards."""
    device = resolve_device(device)
    was_training = model.training
    model.eval().to(device)
    probs, labels = [], []
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    try:
        for x, y in tqdm(loader, desc=desc, disable=not progress, leave=False):
            probs.append(torch.softmax(model(x.to(device)), dim=1).cpu())
            labels.append(y)
    finally:
        model.train(was_training)
    return torch.cat(probs).numpy(), torch.cat(labels).numpy()


def recall_key(name: str) -> str:
    """The metric-name form of a class name: ``no finding`` → ``no_finding``."""
    return re.sub(r"[^0-9A-Za-z]+", "_", str(name)).strip("_").lower()


def recall_keys(names: Sequence[str]) -> list[str]:
    """:func:`recall_key` of each class name, made unique so that no class's recall overwrites
    another's: a name with no letter or digit becomes its index, names that clean up to the same
    form (``Mass`` and ``mass``) get ``_<index>`` each, and should that still collide (a third
    class named ``mass 1``) every class is named by its index."""
    keys = [recall_key(name) or str(i) for i, name in enumerate(names)]
    keys = [f"{key}_{i}" if keys.count(key) > 1 else key for i, key in enumerate(keys)]
    return keys if len(set(keys)) == len(keys) else [str(i) for i in range(len(keys))]


def class_recalls(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """Recall of each class ``(K,)`` in [0, 1]; NaN for a class with no image among ``labels``."""
    return recall_score(labels, predictions, labels=np.arange(num_classes), average=None, zero_division=np.nan)


def classification_metrics(probs: np.ndarray, labels: np.ndarray, classes: Sequence[str] | None = None) -> dict[str, float]:
    """``acc``, ``balanced_acc``, ``auc`` and ``recall_<class>`` in [0, 1] and the mean cross-entropy ``loss``.

    ``balanced_acc`` is the mean recall over the classes present in ``labels`` (scikit-learn's
    ``balanced_accuracy_score``): a model that answers the majority class for everything scores
    1/K on it, however lopsided the classes. ``recall_<class>`` is named after ``classes``
    (``recall_normal``; made unique by :func:`recall_keys`), else the class index (``recall_0``),
    and is NaN for a class with no image.
    AUC is the ROC-AUC of the positive class for 2 classes and the one-vs-rest macro average
    otherwise; it is NaN when the labels hold a single class (AUC is then undefined).
    """
    k = probs.shape[1]
    eps = np.finfo(np.float32).tiny
    recalls = class_recalls(labels, probs.argmax(1), k)
    out = {
        "acc": float((probs.argmax(1) == labels).mean()),
        "loss": float(-np.log(probs[np.arange(len(labels)), labels] + eps).mean()),
    }
    present = np.unique(labels)
    if len(present) < 2:
        out["auc"] = float("nan")
    elif k == 2:
        out["auc"] = float(roc_auc_score(labels, probs[:, 1]))
    else:
        out["auc"] = float(roc_auc_score(labels, probs, multi_class="ovr", average="macro", labels=np.arange(k)))
    out["balanced_acc"] = float(np.nanmean(recalls))
    names = list(classes) if classes is not None and len(classes) == k else [str(i) for i in range(k)]
    out |= {f"recall_{key}": float(r) for key, r in zip(recall_keys(names), recalls)}
    return out


def classification_intervals(probs: np.ndarray, labels: np.ndarray,
                             classes: Sequence[str] | None = None) -> dict[str, Estimate]:
    """The 95 % intervals of :func:`classification_metrics`' fractions, under the same names:
    ``acc`` (Wilson, n images), ``recall_<class>`` (Wilson, n images of the class), ``balanced_acc``
    (MOVER over the recalls, n images) and ``auc`` (DeLong; for K > 2 of the macro mean; n the
    smallest class). Their values are :func:`classification_metrics`' (the AUC's up to float rounding)."""
    k = probs.shape[1]
    predictions = probs.argmax(1)
    names = list(classes) if classes is not None and len(classes) == k else [str(i) for i in range(k)]
    recalls = {f"recall_{key}": proportion(predictions[labels == c] == c) for c, key in enumerate(recall_keys(names))}
    if len(np.unique(labels)) < 2:
        auc = Estimate(float("nan"), float("nan"), float("nan"), 0)
    else:
        auc = auc_interval(probs[:, 1], labels == 1) if k == 2 else macro_auc_interval(probs, labels)
    return {"acc": proportion(predictions == labels), "auc": auc, "balanced_acc": mean_of(list(recalls.values()))} | recalls


def evaluate(model: nn.Module, dataset: Dataset, batch_size: int = 256, device: str | torch.device = "auto") -> dict[str, float]:
    probs, labels = predict(model, dataset, batch_size, device)
    return classification_metrics(probs, labels)
