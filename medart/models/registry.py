"""Logging medart models to MLflow, registering them, and loading them back safely.

A model is stored as tensor-only weights (``weights.pt``, read with ``weights_only=True``) plus
its architecture as JSON (``medart.json``), wrapped as an MLflow pyfunc "model from code" so the
registry, ``mlflow models serve`` and ``models:/`` URIs all work — and loading never unpickles
arbitrary objects. (medart does not log its own models with ``mlflow.pytorch.log_model``: ``pickle``
runs code on load, and ``pt2`` fixes the graph. Networks others logged that way are read by
:mod:`medart.models.loading`.)
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Iterator

import mlflow
import numpy as np
import torch
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.types import Schema, TensorSpec

from medart.errors import ModelError
from medart.models.resnet import MedResNet, load_state_dict_file
from medart.models.sanity import DEGENERATE_TAG

WEIGHTS, CONFIG = "weights.pt", "medart.json"
ARTIFACT_NAME = "model"
_PYFUNC_CODE = Path(__file__).with_name("pyfunc_model.py")
PROGRESS_BAR_ENV = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
_quiet = {"lock": threading.Lock(), "depth": 0, "set": False}


@contextlib.contextmanager
def quiet_downloads() -> Iterator[None]:
    """No "Downloading artifacts" bars from MLflow inside the block, unless the user set
    ``$MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR`` themselves.

    MLflow reads the variable at each download and shows its bar when it is unset, so
    :func:`medart.tracking.configure` alone (which sets it) leaves the bar on for every load by a
    process that never called it: a Python user, a Ray worker on another machine, a test.
    Thread-safe: the variable is set by the outermost block and removed when the last one ends."""
    with _quiet["lock"]:
        if _quiet["depth"] == 0:
            _quiet["set"] = PROGRESS_BAR_ENV not in os.environ
            if _quiet["set"]:
                os.environ[PROGRESS_BAR_ENV] = "false"
        _quiet["depth"] += 1
    try:
        yield
    finally:
        with _quiet["lock"]:
            _quiet["depth"] -= 1
            if _quiet["depth"] == 0 and _quiet["set"]:
                _quiet["set"] = False
                if os.environ.get(PROGRESS_BAR_ENV) == "false":
                    del os.environ[PROGRESS_BAR_ENV]


#: version tags of a hardened model (``medart harden``): where it came from and what it was trained against
PARENT_URI_TAG, PARENT_VERSION_TAG, TRAINER_TAG, EPS_TAG = ("medart.parent_model_uri", "medart.parent_version",
                                                            "medart.trainer", "medart.eps")
#: run tag of a stage run whose ``model_uri`` names an alias: the version it resolved to when the
#: model was loaded (``models:/<name>/<version>``), since the alias may point elsewhere later
VERSION_URI_TAG = "medart.model_version_uri"


def registered_name(dataset: str) -> str:
    """Registry name of a dataset's models: ``medart-<dataset>``."""
    return f"medart-{dataset}"


def save_files(model: MedResNet, folder: Path) -> dict[str, str]:
    """Write ``medart.json`` and ``weights.pt`` into ``folder``; returns their paths by role."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CONFIG).write_text(json.dumps(model.config, indent=2))
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, folder / WEIGHTS)
    return {"config": str(folder / CONFIG), "weights": str(folder / WEIGHTS)}


def load_files(config_path: str | Path, weights_path: str | Path, device: str | torch.device = "cpu",
               trusted_pickle: bool = False) -> MedResNet:
    """Rebuild a model from its JSON architecture and tensor-only weights (``trusted_pickle``: see
    :func:`~medart.models.resnet.load_state_dict_file`)."""
    try:
        config = json.loads(Path(config_path).read_text())
        model = MedResNet.from_config(config)
        model.load_state_dict(load_state_dict_file(weights_path, trusted_pickle))
    except FileNotFoundError as exc:
        raise ModelError(f"{exc.filename} is missing; this is not a medart model folder") from exc
    except (json.JSONDecodeError, KeyError, RuntimeError, TypeError, ValueError) as exc:
        raise ModelError(f"cannot load medart model from {Path(config_path).parent}: {type(exc).__name__}: {exc}") from exc
    return model.to(device).eval()


def log_model(model: MedResNet, registered_model_name: str | None = None, image_size: int | None = None) -> mlflow.models.model.ModelInfo:
    """Log ``model`` to the active run as ``model`` and optionally register a new version of it."""
    size = image_size or model.config.get("image_size") or -1
    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 3, size, size))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, model.config["num_classes"]))]),
    )
    from medart import __version__

    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings(), quiet_downloads():
        # The signature fixes the input's dtype and shape; an example image adds up to 0.6 MB of JSON
        # (224 px) to every model. MLflow's message starts with a colour code, hence the leading .*
        warnings.filterwarnings("ignore", r".*An input example was not provided", UserWarning)
        artifacts = save_files(model, Path(tmp))
        return mlflow.pyfunc.log_model(
            name=ARTIFACT_NAME,
            python_model=str(_PYFUNC_CODE),
            artifacts=artifacts,
            signature=signature,
            pip_requirements=[f"medart=={__version__}", f"torch=={torch.__version__.split('+')[0]}", f"mlflow=={mlflow.__version__}"],
            registered_model_name=registered_model_name,
        )


def log_card_model(card: Path, model: torch.nn.Module, registered_model_name: str | None = None) -> mlflow.models.model.ModelInfo:
    """Log the model card at ``card`` and the weights file it names (beside it) to the active run
    as ``model``, a pyfunc "model from code" (:mod:`medart.models.card_pyfunc`: nothing is
    pickled), and optionally register a new version of it. ``model``: what the card loads to
    (:func:`medart.models.loading.load_card`), for the signature."""
    from medart import __version__
    from medart.models.cards import PYFUNC_CODE, ModelCard

    size = model.config["image_size"] or -1
    signature = ModelSignature(inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 3, size, size))]),
                               outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, model.config["num_classes"]))]))
    with warnings.catch_warnings(), quiet_downloads():
        warnings.filterwarnings("ignore", r".*An input example was not provided", UserWarning)  # as log_model
        return mlflow.pyfunc.log_model(
            name=ARTIFACT_NAME, python_model=str(PYFUNC_CODE), signature=signature, registered_model_name=registered_model_name,
            artifacts={"card": str(card), "weights": str(card.parent / ModelCard.read(card).weights)},
            pip_requirements=[f"medart=={__version__}", f"torch=={torch.__version__.split('+')[0]}"])


def load_model(uri: str, device: str | torch.device = "cpu", trusted_pickle: bool = False) -> MedResNet:
    """Load a medart model from ``models:/<name>@<alias>``, ``models:/<name>/<version>``,
    ``runs:/<run_id>/model``, ``models:/<model_id>`` or a local folder holding its files.

    Weights are read tensor-only; ``trusted_pickle=True`` unpickles them in full, running any code
    they carry — only for folders you made or trust. (Other networks: :mod:`medart.models.loading`.)"""
    with downloaded(uri) as folder:
        return _load_folder(folder, uri, device, trusted_pickle)


@contextlib.contextmanager
def downloaded(uri: str) -> Iterator[Path]:
    """The local path behind ``uri``: a path as it is, a URI's artifacts downloaded into a
    temporary folder that is removed when the block ends (read what you need inside it)."""
    local = Path(uri)
    if "://" not in uri and local.exists():
        yield local
        return
    if ":/" not in uri:  # not a URI (models:/…, runs:/…, s3://…): a local path that is not there
        raise ModelError(f"no file or folder '{uri}'; give an existing path, "
                         "or a URI such as models:/medart-pneumonia@champion")
    # the download is read into memory and removed: every evaluation, sweep cell and Ray worker
    # loads a model (92 MB for ResNet-50), and a kept copy per load filled the disk
    with tempfile.TemporaryDirectory(prefix="medart-model-") as tmp, quiet_downloads():
        try:
            folder = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp))
        except MlflowException as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(
                f"model URI '{uri}' cannot be loaded from {mlflow.get_tracking_uri()}: {first}; "
                "check the name, version or alias (e.g. models:/medart-pneumonia@champion) and `tracking_uri`"
            ) from exc
        except OSError as exc:
            raise ModelError(f"model URI '{uri}' cannot be read: {exc}") from exc
        yield folder


def medart_folder(folder: Path) -> Path | None:
    """Where in ``folder`` (itself, or a logged model's ``artifacts``) medart's own files are, if anywhere."""
    return next((sub for sub in (folder, folder / "artifacts") if (sub / CONFIG).is_file()), None)


def _load_folder(folder: Path, uri: str, device: str | torch.device, trusted_pickle: bool) -> MedResNet:
    if (sub := medart_folder(folder)) is not None:
        return load_files(sub / CONFIG, sub / WEIGHTS, device, trusted_pickle)
    raise ModelError(f"'{uri}' holds no {CONFIG}; it is not a medart model (train one with `medart train`)")


def logged_model_id(uri: str) -> str | None:
    """The MLflow 3 logged-model id behind ``models:/<name>@<alias>``, ``models:/<name>/<version>``
    or ``models:/<model_id>``, so metrics can be linked to the model; ``None`` for other URIs."""
    if not uri.startswith("models:/"):
        return None
    ref = uri.removeprefix("models:/")
    client = mlflow.MlflowClient()
    try:
        if "@" in ref:
            version = client.get_model_version_by_alias(*ref.split("@", 1))
        elif "/" in ref:
            version = client.get_model_version(*ref.split("/", 1))
        else:
            return client.get_logged_model(ref).model_id
    except MlflowException:
        return None
    # The sqlite store leaves ModelVersion.model_id empty; the source names the logged model.
    source = version.source or ""
    return version.model_id or (source.removeprefix("models:/") if source.startswith("models:/m-") else None)


def version_of(uri: str) -> tuple[str, str] | None:
    """``(registered name, version)`` behind ``models:/<name>@<alias>`` or ``models:/<name>/<version>``
    (the alias resolved now); ``None`` for any other URI (``runs:/``, a folder, ``models:/<model_id>``)."""
    if not uri.startswith("models:/"):
        return None
    ref = uri.removeprefix("models:/")
    if "@" in ref:
        name, alias = ref.split("@", 1)
        try:
            return name, str(mlflow.MlflowClient().get_model_version_by_alias(name, alias).version)
        except MlflowException as exc:
            raise ModelError(f"'{uri}': no alias '{alias}' on registered model '{name}' in {mlflow.get_tracking_uri()}") from exc
    if "/" in ref:
        name, version = ref.split("/", 1)
        return name, version
    return None


def version_tags(uri: str) -> dict[str, str] | None:
    """The tags of the registered version behind ``uri`` (:func:`version_of`: an alias resolved
    now); ``None`` for a URI outside the registry or a version (or alias) the store does not hold."""
    try:
        found = version_of(uri)
        return dict(mlflow.MlflowClient().get_model_version(*found).tags) if found else None
    except (ModelError, MlflowException):
        return None


def tag_version(name: str, version: str | int, tags: dict[str, str]) -> None:
    """Set ``tags`` on a registered model version (e.g. the degenerate-model guard's ``medart.degenerate``)."""
    client = mlflow.MlflowClient()
    for key, value in tags.items():
        client.set_model_version_tag(name, str(version), key, value)


def promote_if_best(name: str, version: str | int, alias: str, metric: str, value: float, higher_is_better: bool = True) -> bool:
    """Point ``alias`` at ``version`` if its ``metric`` beats the version the alias holds now.

    The metric is kept as a version tag, so the comparison needs no run lookups. A version tagged
    ``medart.degenerate=true`` (:func:`tag_version`) never gets the alias, and a version that is not
    takes it from one that is, whatever their metrics: a model that learnt nothing can score a
    high validation accuracy on lopsided labels.
    """
    client = mlflow.MlflowClient()
    client.set_model_version_tag(name, str(version), metric, str(value))
    if _degenerate(client.get_model_version(name, str(version))):
        return False
    try:
        current = client.get_model_version_by_alias(name, alias)
    except MlflowException:
        current = None
    if (current is not None and str(current.version) != str(version) and metric in current.tags
            and not _degenerate(current)):
        old = float(current.tags[metric])
        if not np.isnan(old) and (np.isnan(value) or (value < old if higher_is_better else value > old)):
            return False
    client.set_registered_model_alias(name, alias, str(version))
    return True


def _degenerate(version) -> bool:
    return version.tags.get(DEGENERATE_TAG) == "true"
