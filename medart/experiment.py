"""The paper's pipeline, stage by stage, with every stage tracked as an MLflow run."""

from __future__ import annotations

import functools
import json
import os
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import mlflow  # noqa: E402
import numpy as np  # noqa: E402
from mlflow.data.dataset_source_registry import resolve_dataset_source  # noqa: E402
from mlflow.data.meta_dataset import MetaDataset  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import ConcatDataset, TensorDataset  # noqa: E402

from medart import tracking  # noqa: E402
from medart.attacks import AttackSpec, cache, make_attack, make_spec  # noqa: E402
from medart.attacks.metrics import attack_metrics  # noqa: E402
from medart.data import ProtocolSplits, load_dataset, subsample  # noqa: E402
from medart.data.base import stack  # noqa: E402
from medart.errors import MedartError, ModelError  # noqa: E402
from medart.executors import Executor, InProcessExecutor  # noqa: E402
from medart.models import registry  # noqa: E402
from medart.models.evaluation import classification_metrics, predict  # noqa: E402
from medart.models.resnet import MedResNet, build_model, parameter_count  # noqa: E402
from medart.models.training import MONITORS, TrainConfig, fit, seed_everything  # noqa: E402


@dataclass
class TrainOutcome:
    run_id: str
    model_uri: str  # models:/<name>/<version>, or runs:/… when not registered
    registered_name: str | None
    version: str | None
    promoted: bool
    test: dict[str, float]
    seconds_per_epoch: float
    best_epoch: int


def _log_splits(splits: ProtocolSplits) -> None:
    info = splits.info
    # The local file source is registered twice by MLflow (file:// and plain paths); any is right.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        source = resolve_dataset_source(str(Path(info.get("file") or info["root"]).resolve()))
    digest = (info.get("file_md5") or info["split_digest"])[:16]
    for part in ("train", "val", "adv_train", "adv_test"):
        ds = MetaDataset(source, name=f"{splits.name}-{part}", digest=digest)
        mlflow.log_input(ds, context=part)
    mlflow.log_params({f"data.{k}": v for k, v in info.items()})
    mlflow.log_dict(
        {
            "counts": splits.counts(),
            "adv_train_indices": splits.adv_train.indices.tolist(),
            "adv_test_indices": splits.adv_test.indices.tolist(),
            **info,
        },
        "splits.json",
    )


def _training_figure(history: list[dict[str, float]], best_epoch: int):
    epochs = np.arange(1, len(history) + 1)
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.8))
    for key, style in (("train_loss", "-"), ("val_loss", "--")):
        ax_loss.plot(epochs, [h[key] for h in history], style, label=key)
    for key, style in (("train_acc", "-"), ("val_acc", "--"), ("val_auc", ":")):
        ax_acc.plot(epochs, [h[key] for h in history], style, label=key)
    for ax, title in ((ax_loss, "loss"), (ax_acc, "accuracy / AUC")):
        ax.axvline(best_epoch, color="grey", lw=0.8)
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.legend()
    fig.tight_layout()
    return fig


def train_model(
    dataset: str,
    data_dir: str | os.PathLike | None = None,
    *,
    source: str = "medmnist",
    size: int = 28,
    image_size: int | None = None,
    arch: str = "resnet50",
    pretrained: str = "imagenet",
    train_config: TrainConfig | None = None,
    max_train: int | None = None,
    max_eval: int | None = None,
    register: bool = True,
    alias: str = "champion",
    download: bool = True,
    progress: bool = True,
    trusted_pickle: bool = False,
) -> TrainOutcome:
    """Train the paper's classifier on ``dataset`` and log it to MLflow (tracking URI as configured).

    Logs params (with the model's ``n_parameters``), the dataset inputs and split, per-epoch metrics, a training-curve figure, the
    test-split metrics of the best checkpoint (``test_acc``, ``test_auc``) and the model; registers
    it as ``medart-<dataset>`` and points ``alias`` at it when it is the best version so far on the
    monitored validation metric. ``max_train`` / ``max_eval`` take stratified subsets (quick runs).
    ``trusted_pickle`` reads a ``pretrained`` file with full unpickling (only for files you trust).
    """
    config = train_config or TrainConfig()
    splits = load_dataset(dataset, data_dir, source=source, size=size, image_size=image_size, seed=config.seed, download=download)
    train = subsample(splits.train, max_train, config.seed)
    val = subsample(splits.val, max_eval, config.seed)
    test = ConcatDataset([subsample(part, max_eval, config.seed) for part in splits.test])
    side = image_size or (size if source == "medmnist" else 224)

    run_name = f"train-{arch}-{side}px-seed{config.seed}"
    with tracking.start_run(tracking.experiment_name(dataset, "train"), run_name) as run:
        mlflow.log_params({f"train.{k}": v for k, v in asdict(config).items()})
        mlflow.log_params(
            {"dataset": dataset, "source": source, "image_size": side, "arch": arch, "pretrained": pretrained,
             "max_train": max_train, "max_eval": max_eval, "n_train": len(train), "n_val": len(val), "n_test": len(test)}
        )
        _log_splits(splits)
        seed_everything(config.seed)  # the initial weights too, whatever drew from the global RNG before
        model = build_model(len(splits.classes), arch, pretrained, splits.classes, side, trusted_pickle=trusted_pickle)
        mlflow.log_param("n_parameters", parameter_count(model))
        result = fit(model, train, val, config, on_epoch=lambda e, m: mlflow.log_metrics(m, step=e), progress=progress)

        probs, labels = predict(model, test, progress=progress, desc="test")
        test_metrics = classification_metrics(probs, labels)
        mlflow.log_metrics({f"test_{k}": v for k, v in test_metrics.items()})
        mlflow.log_metrics({f"best_{k}": v for k, v in result.best.items()} | {"best_epoch": result.best_epoch,
                            "seconds_per_epoch": result.seconds_per_epoch})
        tracking.log_figure(_training_figure(result.history, result.best_epoch), "figures/training.png")
        mlflow.log_text(json.dumps(result.history, indent=1), "history.json")

        name = registry.registered_name(dataset) if register else None
        info = registry.log_model(model, registered_model_name=name, image_size=side)
        version, promoted = None, False
        if name is not None:
            version = str(info.registered_model_version)
            promoted = registry.promote_if_best(
                name, version, alias, config.monitor, result.best[config.monitor], MONITORS[config.monitor] > 0
            )
            mlflow.set_tags({"registered_model": name, "registered_version": version, "alias_promoted": str(promoted)})
        model_uri = f"models:/{name}/{version}" if name else f"runs:/{run.info.run_id}/{registry.ARTIFACT_NAME}"
    return TrainOutcome(run.info.run_id, model_uri, name, version, promoted, test_metrics,
                        result.seconds_per_epoch, result.best_epoch)


def evaluate_model(
    model_uri: str,
    dataset: str,
    data_dir: str | os.PathLike | None = None,
    *,
    source: str = "medmnist",
    size: int = 28,
    max_eval: int | None = None,
    seed: int = 0,
    attacks: Sequence[str] = (),
    eps_values: Sequence[float] = (1 / 255,),
    backend: str = "art",
    progress: bool = False,
) -> dict[str, float]:
    """Test-split metrics of a (registered) model, logged as a run in ``medart/<dataset>/evaluate``.

    Clean ``acc``, ``auc``, ``loss``, ``n`` on the test split (``max_eval`` images per part at
    most); with ``attacks``, each attack at each ε (paper settings) as a child attack run, adding
    ``adv_acc.<attack>.eps<k>``, ``adv_auc.…`` and ``success_rate.…`` (ε = k/255). For a
    ``models:/`` URI the metrics are also linked to the registered version's logged model.
    """
    model = registry.load_model(model_uri)
    side = model.config.get("image_size") or size
    splits = load_dataset(dataset, data_dir, source=source, size=size, image_size=side, seed=seed)
    if splits.classes != model.classes:
        raise ModelError(f"{model_uri} predicts {model.classes}, but {dataset} has classes {splits.classes}")
    specs = [make_spec(attack, eps) for attack in attacks for eps in eps_values]
    test = ConcatDataset([subsample(part, max_eval, seed) for part in splits.test])
    with tracking.start_run(tracking.experiment_name(dataset, "evaluate"), f"evaluate-{side}px"):
        mlflow.log_params({"model_uri": model_uri, "dataset": dataset, "max_eval": max_eval, "seed": seed, "n_test": len(test),
                           "attacks": ",".join(attacks), "eps": ",".join(f"{e:.6g}" for e in eps_values), "backend": backend})
        probs, labels = predict(model, test)
        metrics = classification_metrics(probs, labels) | {"n": float(len(labels))}
        inputs = load_attack_inputs(model_uri, dataset, data_dir, source, size, max_eval, seed) if specs else None
        for spec in specs:
            out = attack_model(model_uri, dataset, spec, backend, data_dir, source=source, size=size, max_examples=max_eval,
                               seed=seed, progress=progress, inputs=inputs)
            label = f"{spec.name}.eps{spec.eps * 255:.3g}"
            metrics |= {f"{k}.{label}": out.metrics[k] for k in ("adv_acc", "adv_auc", "success_rate")}
        logged = {(f"test_{k}" if k in ("acc", "auc", "loss", "n") else k): v for k, v in metrics.items()}
        model_id = registry.logged_model_id(model_uri)
        mlflow.log_metrics(logged, model_id=model_id)  # on the run, and on the model when there is one
        if model_id:
            mlflow.set_tag("medart.logged_model_id", model_id)
    return metrics


@dataclass
class AttackOutcome:
    run_id: str
    metrics: dict[str, float]
    cached: bool
    adversarial: dict[str, torch.Tensor]  # part → x_adv, float32 (N, 3, S, S)
    clean: dict[str, tuple[torch.Tensor, torch.Tensor]]  # part → (x, y)


@dataclass
class AttackInputs:
    """What an attack run needs besides the spec, loaded once (a sweep shares it across cells)."""

    model: MedResNet
    info: dict  # the dataset's ProtocolSplits.info
    clean: dict[str, tuple[torch.Tensor, torch.Tensor]]  # part → (x, y)
    indices: dict[str, np.ndarray]
    weights_digest: str
    reference: tuple[torch.Tensor, torch.Tensor] | None = None  # clean Train images (x, y) for detectors


def load_attack_inputs(
    model_uri: str, dataset: str, data_dir=None, source: str = "medmnist", size: int = 28,
    max_examples: int | None = None, seed: int = 0, reference_size: int = 0,
) -> AttackInputs:
    """The model, and AdvTrain / AdvTest as tensors (``max_examples`` caps both together, 80/20);
    with ``reference_size`` > 0 also a stratified sample of that many clean Train images."""
    model = registry.load_model(model_uri)
    side = model.config.get("image_size") or size
    splits = load_dataset(dataset, data_dir, source=source, size=size, image_size=side, seed=seed)
    if splits.classes != model.classes:
        raise ModelError(f"{model_uri} predicts {model.classes}, but {dataset} has classes {splits.classes}")
    n_test = sum(len(p) for p in splits.test)
    parts = {}
    for part in ("adv_train", "adv_test"):
        ds = getattr(splits, part)
        cap = None if max_examples is None else max(1, round(max_examples * len(ds) / n_test))
        parts[part] = subsample(ds, cap, seed)
    reference = stack(subsample(splits.train, reference_size, seed)) if reference_size > 0 else None
    return AttackInputs(
        model, splits.info, {part: stack(ds) for part, ds in parts.items()},
        {part: ds.indices for part, ds in parts.items()}, cache.weights_digest(model), reference,
    )


def attack_model(
    model_uri: str,
    dataset: str,
    spec: AttackSpec,
    backend: str = "art",
    data_dir: str | os.PathLike | None = None,
    *,
    source: str = "medmnist",
    size: int = 28,
    max_examples: int | None = None,
    batch_size: int = 128,
    seed: int = 0,
    device: str = "auto",
    use_cache: bool = True,
    progress: bool = True,
    inputs: AttackInputs | None = None,
    parent_run_id: str | None = None,
    executor: Executor | None = None,
    shards: int = 1,
) -> AttackOutcome:
    """Attack AdvTrain and AdvTest of ``dataset`` with ``spec`` through ``backend``, as one MLflow run.

    Metrics (over AdvTrain + AdvTest): ``clean_acc``, ``clean_auc``, ``adv_acc``, ``adv_auc``,
    ``success_rate``, ``linf_mean``/``linf_max``, ``l2_mean``/``l2_max`` (pixel units),
    ``seconds`` and ``image_steps_per_second`` of the generation. The examples are logged as
    artifacts and reused by a later run with the same model, data, spec, backend and seed.
    Targeted specs aim each image at class ``(y + 1) mod K``. ``inputs`` (from
    :func:`load_attack_inputs` with the same arguments) saves reloading model and data.
    ``parent_run_id`` makes the run a child of that run (see :func:`medart.tracking.start_run`).
    ``executor`` (default: this process) makes the examples in ``shards`` shards of whole
    batches, the same examples as one piece (:mod:`medart.executors`).
    """
    inputs = inputs or load_attack_inputs(model_uri, dataset, data_dir, source, size, max_examples, seed)
    model, clean, indices = inputs.model, inputs.clean, inputs.indices
    key = cache.cache_key(inputs.weights_digest, inputs.info, indices, spec, backend, seed)
    experiment = tracking.experiment_name(dataset, "attack")
    cached_run = cache.find(key) if use_cache else None
    attack = make_attack(model, spec, model.config["num_classes"], backend, batch_size, device)
    executor = executor or InProcessExecutor()

    with tracking.start_run(experiment, f"{spec.label()}-{backend}", parent_run_id) as run:
        mlflow.log_params(spec.as_params() | {"backend": backend, "model_uri": model_uri, "dataset": dataset, "seed": seed,
                                              "max_examples": max_examples, "batch_size": batch_size, "shards": shards})
        mlflow.log_params({f"n_{part}": len(x) for part, (x, _) in clean.items()})
        mlflow.set_tags({cache.CACHE_TAG: key, "medart.cached": str(cached_run is not None).lower()})
        adversarial, seconds = {}, 0.0
        for part, (x, y) in clean.items():
            target = (y + 1) % model.config["num_classes"] if spec.targeted else y
            if cached_run is not None:
                adversarial[part] = cache.load(cached_run, part, x, spec.eps)
            else:
                start = time.perf_counter()
                adversarial[part] = executor.generate(attack, x, target, seed=seed, shards=shards, progress=progress)
                seconds += time.perf_counter() - start
            cache.save(part, x, adversarial[part], y, indices[part])
        if cached_run is not None:
            mlflow.set_tag("medart.cached_from", cached_run)

        x_all = torch.cat([clean[p][0] for p in clean])
        y_all = torch.cat([clean[p][1] for p in clean]).numpy()
        adv_all = torch.cat([adversarial[p] for p in clean])
        probs_clean, _ = predict(model, TensorDataset(x_all, torch.from_numpy(y_all)), batch_size, device)
        probs_adv, _ = predict(model, TensorDataset(adv_all, torch.from_numpy(y_all)), batch_size, device)
        metrics = attack_metrics(probs_clean, probs_adv, y_all, x_all, adv_all, spec.eps)
        if cached_run is None:
            metrics |= {"seconds": seconds, "image_steps_per_second": len(x_all) * spec.steps / max(seconds, 1e-9)}
        mlflow.log_metrics(metrics)
    return AttackOutcome(run.info.run_id, metrics, cached_run is not None, adversarial, clean)


def _sweep_figure(rows: list[dict], dataset: str, backend: str):
    fig, ax = plt.subplots(figsize=(6, 4))
    clean = rows[0]["clean_acc"] * 100
    # PGD and CW often coincide (on two classes they take the same steps): shrinking markers and
    # distinct dashes keep every line visible
    styles = [("o", "-", 8), ("s", "--", 6.5), ("^", "-.", 5), ("D", ":", 3.5)]
    for k, attack in enumerate(dict.fromkeys(r["attack"] for r in rows)):
        pts = [(0.0, clean)] + sorted((r["eps"] * 255, r["adv_acc"] * 100) for r in rows if r["attack"] == attack)
        marker, dashes, size = styles[k % len(styles)]
        ax.plot(*zip(*pts), marker=marker, ls=dashes, ms=size, label=attack.upper())
    ax.axhline(clean, color="grey", ls="--", lw=0.8, label="clean")
    ax.set_xlabel("ε (×1/255)")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(-2, 102)
    ax.set_title(f"{dataset}: accuracy under attack ({backend}, {int(rows[0]['n'])} images)")
    ax.legend()
    fig.tight_layout()
    return fig


def sweep_table(rows: list[dict], failed: Sequence[dict] = ()) -> str:
    """Markdown: accuracy / AUC per attack (rows) and ε (columns), then the cells that failed."""
    lines = []
    if rows:
        eps_values = sorted({r["eps"] for r in rows})
        lines.append("| attack | " + " | ".join(f"ε={e * 255:.3g}/255 acc / AUC" for e in eps_values) + " |")
        lines.append("|" + "---|" * (len(eps_values) + 1))
        lines.append("| none | " + " | ".join(f"{rows[0]['clean_acc'] * 100:.2f} / {rows[0]['clean_auc'] * 100:.2f}" for _ in eps_values) + " |")
        for attack in dict.fromkeys(r["attack"] for r in rows):
            by_eps = {r["eps"]: r for r in rows if r["attack"] == attack}
            cells = [f"{by_eps[e]['adv_acc'] * 100:.2f} / {by_eps[e]['adv_auc'] * 100:.2f}" if e in by_eps else "" for e in eps_values]
            lines.append(f"| {attack.upper()} | " + " | ".join(cells) + " |")
    if failed:
        lines += ["", f"Failed cells ({len(failed)}):", "", "| attack | ε | error |", "|---|---|---|"]
        lines += [f"| {f['attack'].upper()} | {f['eps'] * 255:.3g}/255 | {f['error'].replace('|', '/')} |" for f in failed]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class SweepJob:
    """What every cell of a sweep shares; it pickles, so a worker process can run cells from it."""

    model_uri: str
    dataset: str
    backend: str
    data_dir: str | os.PathLike | None
    tracking_uri: str
    parent_run_id: str
    attack_kwargs: dict  # attack_model's keyword arguments


@functools.lru_cache(maxsize=1)
def _shared_inputs(tracking_uri: str, model_uri: str, dataset: str, data_dir, source: str = "medmnist", size: int = 28,
                   max_examples: int | None = None, seed: int = 0) -> AttackInputs:
    # Model and data once per process for all the cells it runs (a models:/ URI means the model
    # of the tracking store it is read from, hence the URI in the key).
    return load_attack_inputs(model_uri, dataset, data_dir, source, size, max_examples, seed)


def sweep_cell(job: SweepJob, cell: tuple[str, float]) -> dict:
    """One (attack, ε) cell of a sweep as a child run of ``job.parent_run_id``; returns its row.
    Runs in the sweep's process or in a worker process, which loads model and data once."""
    attack, eps = cell
    tracking.configure(job.tracking_uri)
    loading = {k: job.attack_kwargs[k] for k in ("source", "size", "max_examples", "seed") if k in job.attack_kwargs}
    inputs = _shared_inputs(job.tracking_uri, job.model_uri, job.dataset, job.data_dir, **loading)
    out = attack_model(job.model_uri, job.dataset, make_spec(attack, eps), job.backend, job.data_dir, inputs=inputs,
                       parent_run_id=job.parent_run_id, **job.attack_kwargs)
    return {"attack": attack, "eps": eps, "run_id": out.run_id, "cached": out.cached, **out.metrics}


class SweepOutcome(NamedTuple):
    run_id: str  # the parent run
    rows: list[dict]  # one per finished cell: attack, eps, run_id, cached and the attack metrics
    failed: list[dict]  # one per failed cell: attack, eps, error (one line), detail


def sweep(
    model_uri: str,
    dataset: str,
    attacks: list[str],
    eps_values: list[float],
    backend: str = "art",
    data_dir: str | os.PathLike | None = None,
    executor: Executor | None = None,
    **attack_kwargs,
) -> SweepOutcome:
    """Every attack at every ε (paper defaults otherwise) as child runs of one parent run, which
    gets the accuracy-vs-ε figure (``figures/accuracy_vs_eps.png``), the table (``sweep.md``,
    ``sweep.json``) and ``failed_cells``.

    ``executor`` runs the cells: in this process by default, where the first failure ends the
    sweep; on Ray (:class:`medart.executors.RayExecutor`) as tasks logging to the same tracking
    store, where a cell that still fails after its retries is reported in the table and the rest
    complete. Every cell failing, or a user error in any, fails the sweep.
    """
    executor = executor or InProcessExecutor()
    specs = [make_spec(attack, eps) for attack in attacks for eps in eps_values]  # bad values fail before any run
    cells = [(spec.name, spec.eps) for spec in specs]
    label = f"sweep-{'+'.join(attacks)}-{backend}"
    with tracking.start_run(tracking.experiment_name(dataset, "attack"), label) as parent:
        params = {"attacks": ",".join(attacks), "eps": ",".join(f"{e:.6g}" for e in eps_values), "backend": backend,
                  "model_uri": model_uri, "dataset": dataset} | executor.params()
        logged = parent.data.params  # `mlflow run -e sweep` has logged its -P values already (eps as written)
        mlflow.log_params({k: v for k, v in params.items() if k not in logged})
        tracking_uri, show_progress = mlflow.get_tracking_uri(), attack_kwargs.get("progress", True)
        if executor.remote:  # workers: other processes, maybe other machines; the executor shows progress
            tracking_uri, attack_kwargs = tracking.absolute_uri(tracking_uri), attack_kwargs | {"progress": False}
            data_dir = os.path.abspath(data_dir) if data_dir else None
        job = SweepJob(model_uri, dataset, backend, data_dir, tracking_uri, parent.info.run_id, attack_kwargs)
        try:
            outcomes = executor.map(functools.partial(sweep_cell, job), cells, progress=show_progress)
        finally:
            _shared_inputs.cache_clear()
        rows = [o.value for o in outcomes if o.ok]
        failed = [{"attack": a, "eps": e, "error": o.error, "detail": o.detail} for (a, e), o in zip(cells, outcomes) if not o.ok]
        mlflow.log_metric("failed_cells", len(failed))
        if rows:
            tracking.log_figure(_sweep_figure(rows, dataset, backend), "figures/accuracy_vs_eps.png")
        mlflow.log_text(sweep_table(rows, failed), "sweep.md")
        mlflow.log_dict({"rows": rows, "failed": failed}, "sweep.json")
        if not rows:
            raise MedartError(f"all {len(cells)} cells of the sweep failed, e.g. {failed[0]['attack']} "
                              f"ε={failed[0]['eps'] * 255:.3g}/255: {failed[0]['error']}; see sweep.md in run {parent.info.run_id}")
    return SweepOutcome(parent.info.run_id, rows, failed)
