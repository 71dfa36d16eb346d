"""Registering a model card and its weights (``medart register``): checked, logged as an MLflow
model (a pyfunc "model from code", like medart's own; :mod:`medart.models.card_pyfunc`) and
registered, so ``models:/<name>@<alias>`` reaches every stage."""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
from pathlib import Path

import mlflow

from medart import tracking
from medart.errors import ModelError
from medart.models.cards import CARD, ModelCard
from medart.models.loading import ModelSource, load_card
from medart.models.registry import log_card_model


def register(weights: str | Path, card: str | Path, name: str, alias: str | None = None) -> tuple[str, str]:
    """Check that ``weights`` + ``card`` load and give logits, then log them as an MLflow model in
    the experiment ``medart/register`` and register it as a new version of ``name`` (with
    ``alias``). Returns ``(models:/ URI, version)``."""
    weights, described = Path(weights), ModelCard.read(card)
    if not weights.is_file():
        raise ModelError(f"weights file {weights} not found")
    with tempfile.TemporaryDirectory(prefix="medart-card-") as tmp:
        folder = Path(tmp)
        shutil.copy(weights, folder / weights.name)
        (folder / CARD).write_text(json.dumps(dataclasses.replace(described, weights=weights.name).as_dict(), indent=2))
        model = load_card(folder / CARD, ModelSource(str(folder)))
        with tracking.start_run("medart/register", f"register-{name}"):
            mlflow.log_params({"weights": weights.name, "architecture": model.config["arch"], "name": name})
            info = log_card_model(folder / CARD, model, name)
    version = str(info.registered_model_version)
    if alias:
        mlflow.MlflowClient().set_registered_model_alias(name, alias, version)
    return f"models:/{name}/{version}", version
