"""The attack stage: one attack on AdvTrain and AdvTest of a target, as one MLflow run."""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass
from typing import Callable

import mlflow
import numpy as np
import torch
from torch.utils.data import TensorDataset

from medart import tracking
from medart.attacks import AttackSpec, cache, make_attack
from medart.attacks.metrics import attack_metrics
from medart.data.splits import stratified_choice
from medart.models.defended import attack_spec
from medart.executors import InProcessExecutor
from medart.models.evaluation import predict
from medart.models.loading import ModelSource, load_model
from medart.render.gallery import gallery_figure
from medart.render.notes import attack_note
from medart.stages.guard import guard
from medart.stages.target import RunOptions, Target

GALLERY = "figures/gallery.png"
GALLERY_SIZE = 6  # AdvTest images in the gallery


@dataclass
class AttackOutcome:
    run_id: str
    metrics: dict[str, float]
    cached_from: str | None  # the run that made the examples, when they come from the cache
    adversarial: dict[str, torch.Tensor]  # part → x_adv, float32 (N, 3, S, S)
    clean: dict[str, tuple[torch.Tensor, torch.Tensor]]  # part → (x, y)
    spec: AttackSpec | None = None  # the attack as run (through a defence: with its defence gradient)

    @property
    def cached(self) -> bool:
        return self.cached_from is not None


def attack(target: Target, spec: AttackSpec, run: RunOptions = RunOptions(), shards: int = 1) -> AttackOutcome:
    """Attack AdvTrain and AdvTest of ``target`` with ``spec`` through ``run.backend``, as one MLflow run.

    Metrics (over AdvTrain + AdvTest): ``clean_acc``, ``clean_auc``, ``adv_acc``, ``adv_auc``,
    ``clean_balanced_acc``, ``adv_balanced_acc``, ``clean_recall_<class>``, ``adv_recall_<class>``,
    ``success_rate``, ``linf_mean``/``linf_max``, ``l2_mean``/``l2_max`` (pixel units),
    ``seconds`` and ``image_steps_per_second`` of the generation, and for ``autoattack`` made in
    this process ``broken_by.<part>``, the images each part broke first. The run's description
    (``mlflow.note.content``, what the MLflow UI opens on) is a short table of these, and
    ``figures/gallery.png`` shows :data:`GALLERY_SIZE` AdvTest images (:func:`_log_gallery`). The
    examples are logged as artifacts (``adversarial/<part>.npz``: ``x_adv``, ``labels``,
    ``indices``; :mod:`medart.attacks.cache`) and reused, bit for bit, by a later run with the
    same network, data, spec, backend and seed:
    such a run is tagged ``medart.cached_from`` with the run that made them, and says so on the
    ``medart`` logger.
    For a model behind a preprocessing defence the spec's ``defence_gradient`` (default ``bpda``)
    and ``eot_samples`` are logged with it, and ``defence``, the defence
    (:func:`medart.models.defended.attack_spec`).
    Targeted specs aim each image at class ``(y + 1) mod K``. ``run.executor`` (default: this
    process) makes the examples in ``shards`` shards of whole batches, the same examples as one
    piece (:mod:`medart.executors`). The run carries the degenerate-model guard's tag and metrics
    (:func:`medart.stages.guard.guard`).
    """
    model, clean, indices, backend, seed = target.model, target.clean, target.indices, run.backend, target.seed
    spec = attack_spec(spec, model)  # through a preprocessing defence: BPDA (EOT) unless it says plain
    key = cache.cache_key(target.network_digest, target.splits.info, indices, spec, backend, seed)
    cached_run = cache.find(key) if run.cache else None
    generator = make_attack(model, spec, target.num_classes, backend, run.batch_size, run.device)
    executor = run.executor or InProcessExecutor()

    with tracking.start_run(tracking.experiment_name(target.dataset, "attack"), f"{spec.label()}-{backend}",
                            run.parent_run_id) as mlflow_run:
        mlflow.set_tags(target.tags)  # the version an alias named, for later comparisons
        mlflow.log_params(spec.as_params() | {"backend": backend, "model_uri": target.model_uri, "dataset": target.dataset,
                                              "seed": seed, "max_examples": target.max_examples,
                                              "batch_size": run.batch_size, "shards": shards}
                          | ({"defence": model.config["defence"]} if spec.defence_gradient else {}))
        mlflow.log_params({f"n_{part}": len(x) for part, (x, _) in clean.items()})
        mlflow.set_tags({cache.CACHE_TAG: key, "medart.cached": str(cached_run is not None).lower()})
        if cached_run is not None:
            mlflow.set_tag("medart.cached_from", cached_run)
            logging.getLogger("medart").info(f"{spec.label()} via {backend}: examples from cache of run {cached_run}")
        check = guard(target, run)
        adversarial, seconds = {}, 0.0
        for part, (x, y) in clean.items():
            aim = (y + 1) % target.num_classes if spec.targeted else y
            if cached_run is not None:
                adversarial[part] = cache.load(cached_run, part, indices[part])
            else:
                start = time.perf_counter()
                adversarial[part] = executor.generate(generator, x, aim, seed=seed, shards=shards, progress=run.progress,
                                                      loader=_loader(target))
                seconds += time.perf_counter() - start
            cache.save(part, adversarial[part], y, indices[part])

        x_all = torch.cat([clean[p][0] for p in clean])
        y_all = torch.cat([clean[p][1] for p in clean]).numpy()
        adv_all = torch.cat([adversarial[p] for p in clean])
        probs_clean, _ = predict(model, TensorDataset(x_all, torch.from_numpy(y_all)), run.batch_size, run.device)
        probs_adv, _ = predict(model, TensorDataset(adv_all, torch.from_numpy(y_all)), run.batch_size, run.device)
        metrics = attack_metrics(probs_clean, probs_adv, y_all, x_all, adv_all, spec.eps, target.splits.classes)
        if cached_run is None:
            metrics |= {"seconds": seconds, "image_steps_per_second": len(x_all) * spec.steps / max(seconds, 1e-9)}
            if not executor.remote:  # a remote executor's shards ran on copies of the generator
                metrics |= generator.metrics()
        mlflow.log_metrics(metrics)
        tracking.describe(attack_note(f"{spec.variant.upper()} via {backend}", spec.eps, metrics, check))
        n_test = len(clean["adv_test"][1])  # AdvTest: the last part of x_all
        _log_gallery(target, f"{spec.label()} via {backend}", clean["adv_test"], adversarial["adv_test"],
                     (probs_clean[-n_test:], probs_adv[-n_test:]))
    return AttackOutcome(mlflow_run.info.run_id, metrics, cached_run, adversarial, clean, spec)


def _log_gallery(target: Target, label: str, clean: tuple[torch.Tensor, torch.Tensor], x_adv: torch.Tensor,
                probs: tuple[np.ndarray, np.ndarray]) -> None:
    """``figures/gallery.png`` on the active run: :data:`GALLERY_SIZE` of the AdvTest images
    ``clean`` = ``(x, y)`` drawn with the target's seed, stratified by class, beside their
    perturbations and adversarial versions ``x_adv``, with the model's answers read from ``probs``
    (clean, adversarial; ``(N, K)``): the probabilities the run's metrics came from, so the
    gallery costs no forward pass."""
    x, y = clean
    labels = y.numpy()
    shown = stratified_choice(labels, GALLERY_SIZE, target.seed)
    shown = shown[np.argsort(labels[shown], kind="stable")]  # a class's images together
    names = [f"AdvTest #{target.indices['adv_test'][i]}" for i in shown]
    title = f"{label}\n{len(shown)} of {len(labels)} AdvTest images (seed {target.seed}, stratified by class)"
    tracking.log_figure(gallery_figure(x[shown], x_adv[shown], labels[shown], probs[0][shown], probs[1][shown],
                                       target.splits.classes, title, names), GALLERY)


def _load_again(source: ModelSource, side: int, tracking_uri: str) -> torch.nn.Module:
    # runs in a worker process: the driver's tracking store, the model as the driver loaded it
    tracking.configure(tracking_uri)
    return load_model(source, side)


def _loader(target: Target) -> Callable[[], torch.nn.Module] | None:
    """How another process loads ``target.model`` again (None for a model that only lives here)."""
    if target.source is None:
        return None
    return functools.partial(_load_again, target.source, target.data.side(), tracking.absolute_uri(mlflow.get_tracking_uri()))
