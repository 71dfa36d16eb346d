"""Every analysis figure for one model, dataset and attack budget, attached to one MLflow run.

``medart analyze`` calls :func:`analyze_model`: it attacks AdvTrain + AdvTest as the attack stage
does (cached examples are reused), then draws the ε curves, saliency maps, stage activations, loss
landscape, t-SNE embedding and Grad-CAM maps of those images, and logs each figure under
``figures/`` with the numbers behind it as metrics, ``analysis.json`` and ``analysis.md``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, replace
from typing import Sequence

import mlflow
import numpy as np
import torch
from tqdm.auto import tqdm

from medart import tracking
from medart.analysis import embedding, eps_curves, gradcam, landscape, saliency, stages
from medart.attacks import make_spec, parse_names
from medart.errors import ConfigError
from medart.experiment import attack_model, load_attack_inputs, sweep, train_model
from medart.models import registry
from medart.models.training import TrainConfig

FIGURES = ("eps_curves", "saliency", "stages", "landscape", "embedding", "gradcam")
STAGE_LAYERS = ("res3a_relu", "res5b_relu", "dfeat")  # dfeat: a number only, it has no spatial map


@dataclass
class AnalysisOutcome:
    run_id: str
    summary: dict[str, float]  # the run's metrics
    figures: list[str] = field(default_factory=list)  # artifact paths
    seconds: float = 0.0


def parse_figures(value: str | Sequence[str]) -> list[str]:
    """``"saliency,gradcam"`` (or a list) → checked figure names; ``"all"`` → every figure."""
    text = value if isinstance(value, str) else ",".join(value)
    if text.strip().lower() == "all":
        return list(FIGURES)
    return list(dict.fromkeys(parse_names(text, FIGURES, "figure")))


def display_order(labels: np.ndarray, clean_pred: np.ndarray, adv_pred: np.ndarray, n: int) -> np.ndarray:
    """Indices of the ``n`` images the figures show: first those the model gets right and the
    attack flips (what the figures explain), then other correct ones, then the rest, each group
    in dataset order."""
    right = clean_pred == labels
    fooled = right & (adv_pred != labels)
    order = np.r_[np.flatnonzero(fooled), np.flatnonzero(right & ~fooled), np.flatnonzero(~right)]
    return order[:n]


def _mean(values: np.ndarray) -> float:
    return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")


def summary_table(summary: dict[str, float], attacks: Sequence[str], share: float, radius: float, top: float) -> str:
    """Markdown: the analysis numbers with what each means."""
    rows = [("clean accuracy", "clean_acc", "%", "on the analysed images")]
    rows += [(f"accuracy under {a.upper()}", f"adv_acc.{a}", "%", "") for a in attacks]
    rows.append((f"saliency: pixels ≥ {share:g}·max", "saliency_high_fraction", "%",
                 "mean share of high-gradient pixels per image; large = large high-attention regions"))
    for a in attacks:
        for layer in STAGE_LAYERS:
            rows.append((f"relative change {layer} ({a.upper()})", f"stage_change.{layer}.{a}", "%", "‖A(x_adv) − A(x)‖ / ‖A(x)‖"))
    rows += [
        ("clean loss", "clean_loss", "nats", "cross-entropy at the landscape's origin"),
        (f"sharpness at r = {radius * 255:.3g}/255", "sharpness", "nats", "loss increase of one signed-gradient step of size r"),
        ("surrogate cosine", "surrogate_cosine", "", "cos(sign ∇ model, sign ∇ surrogates) before orthogonalising"),
    ]
    rows += [(f"Grad-CAM IoU top-{top * 100:g}% ({a.upper()})", f"gradcam_iou.{a}", "", "1 = same attention, ~0.11 = random")
             for a in attacks]
    lines = ["| quantity | value | meaning |", "|---|---|---|"]
    for name, key, unit, meaning in rows:
        if key in summary:
            value = summary[key] * 100 if unit == "%" else summary[key]
            lines.append(f"| {name} | {value:.2f}{' ' + unit if unit else ''} | {meaning} |")
    return "\n".join(lines) + "\n"


def analyze_model(
    model_uri: str,
    dataset: str,
    attacks: Sequence[str] = ("pgd",),
    eps: float = 1 / 255,
    data_dir: str | os.PathLike | None = None,
    *,
    figures: Sequence[str] = FIGURES,
    backend: str = "art",
    source: str = "medmnist",
    size: int = 28,
    max_examples: int | None = None,
    curve_eps: Sequence[float] = (0.5 / 255, 1 / 255, 2 / 255, 4 / 255),
    compare_sweeps: Sequence[str] = (),
    surrogate_uris: Sequence[str] = (),
    surrogates: int = 0,
    surrogate_config: TrainConfig | None = None,
    surrogate_arch: str = "resnet18",
    surrogate_max_train: int | None = None,
    landscape_points: int = 9,
    landscape_max_eps: float = landscape.MAX_EPS,
    radius: float | None = None,
    saliency_share: float = 0.5,
    gradcam_layer: str = "layer4",
    gradcam_top: float = 0.2,
    show: int = 4,
    batch_size: int = 128,
    seed: int = 0,
    device: str = "auto",
    use_cache: bool = True,
    progress: bool = True,
) -> AnalysisOutcome:
    """Attack AdvTrain + AdvTest (``max_examples`` caps both, 80/20) with each of ``attacks`` at
    ``eps`` (paper settings) and analyse the model on those images, as one run in
    ``medart/<dataset>/analysis`` whose children are the attack runs (and the sweep and surrogate
    training runs it needs).

    ``figures`` (default all), each logged under ``figures/``:
      - ``eps_curves``: a nested sweep of ``attacks`` over ``curve_eps``, drawn with the sweeps
        ``compare_sweeps`` (other models or datasets) in one figure.
      - ``saliency``: input-gradient maps; metric ``saliency_high_fraction`` (pixels ≥
        ``saliency_share`` × the image's maximum, mean over images).
      - ``stages``: ``res3a_relu`` and ``res5b_relu`` clean vs adversarial (first attack); metrics
        ``stage_change.<layer>.<attack>`` (also for ``dfeat``).
      - ``landscape``: loss surfaces of the shown images over ``landscape_points``² points up to
        ``landscape_max_eps``, g⊥ from ``surrogate_uris`` plus ``surrogates`` ResNets trained here
        (``surrogate_arch``, ``surrogate_config``, seeds ``seed + 1 …``); metrics ``sharpness``
        (at ``radius``, default ``eps``), ``clean_loss``, ``surrogate_cosine``.
      - ``embedding``: t-SNE of ``dfeat``, clean vs adversarial, one panel per attack.
      - ``gradcam``: Grad-CAM at ``gradcam_layer`` clean vs adversarial (first attack); metrics
        ``gradcam_iou.<attack>`` (IoU of the top-``gradcam_top`` regions).
    ``show`` images appear in the per-image figures. Per-image numbers go to ``analysis.json``.
    """
    started = time.perf_counter()
    figures = parse_figures(list(figures))
    attacks = list(dict.fromkeys(parse_names(",".join(attacks))))
    specs = {a: make_spec(a, eps) for a in attacks}
    radius = eps if radius is None else radius
    if "landscape" in figures:
        if surrogates < 0:
            raise ConfigError(f"surrogates must be >= 0, got {surrogates}")
        if not surrogate_uris and surrogates == 0:
            raise ConfigError("the loss landscape needs a separately trained surrogate model for g⊥: pass --surrogate-uri "
                              "or --surrogates N (trains N), or leave landscape out of --figures")
        eps_axis = landscape.eps_axis(landscape_points, landscape_max_eps)
    if not 1 <= show <= 16:
        raise ConfigError(f"show must be between 1 and 16 images, got {show}")
    if "eps_curves" in figures:
        curve_eps = sorted(make_spec("fgsm", e).eps for e in curve_eps)
        if not curve_eps:
            raise ConfigError("no ε values for the ε curves; pass --curve-eps, or leave eps_curves out of --figures")

    inputs = load_attack_inputs(model_uri, dataset, data_dir, source, size, max_examples, seed)
    model, classes = inputs.model, inputs.model.classes
    side = model.config.get("image_size") or size
    attack_kwargs = dict(source=source, size=size, max_examples=max_examples, batch_size=batch_size, seed=seed,
                         device=device, use_cache=use_cache, progress=progress)
    eps_label = f"{eps * 255:.3g}/255"
    summary: dict[str, float] = {}
    details: dict = {"attacks": attacks, "eps": eps, "figures": figures}
    logged: list[str] = []

    def log_figure(fig, name: str) -> None:
        tracking.log_figure(fig, f"figures/{name}.png")
        logged.append(f"figures/{name}.png")

    with tracking.start_run(tracking.experiment_name(dataset, "analysis"), f"analyze-{'+'.join(attacks)}-eps{eps_label}-{backend}") as run:
        mlflow.log_params({"model_uri": model_uri, "dataset": dataset, "attacks": ",".join(attacks), "eps": eps,
                           "backend": backend, "figures": ",".join(figures), "max_examples": max_examples, "seed": seed,
                           "image_size": side, "arch": model.config["arch"], "show": show})
        bar = tqdm(total=len(attacks) + len(figures), desc="analysis", disable=not progress)
        adversarial, attack_runs = {}, {}
        for attack, spec in specs.items():
            out = attack_model(model_uri, dataset, spec, backend, data_dir, inputs=inputs, **attack_kwargs)
            adversarial[attack] = torch.cat([out.adversarial[p] for p in ("adv_train", "adv_test")])
            attack_runs[attack] = out.run_id
            summary[f"adv_acc.{attack}"] = out.metrics["adv_acc"]
            summary["clean_acc"] = out.metrics["clean_acc"]
            bar.update()
        mlflow.set_tags({f"medart.attack_run.{a}": r for a, r in attack_runs.items()})
        x = torch.cat([inputs.clean[p][0] for p in ("adv_train", "adv_test")])
        y = torch.cat([inputs.clean[p][1] for p in ("adv_train", "adv_test")])
        labels = y.numpy()
        first = attacks[0]
        with torch.no_grad():
            model.eval()
            clean_pred = torch.cat([model(x[s : s + batch_size]).argmax(1) for s in range(0, len(x), batch_size)]).numpy()
            adv_pred = {a: torch.cat([model(v[s : s + batch_size]).argmax(1) for s in range(0, len(v), batch_size)]).numpy()
                        for a, v in adversarial.items()}
        shown = display_order(labels, clean_pred, adv_pred[first], show)
        details |= {"n": len(x), "labels": labels.tolist(), "clean_pred": clean_pred.tolist(),
                    "adv_pred": {a: p.tolist() for a, p in adv_pred.items()}, "shown": shown.tolist(),
                    "indices": {p: inputs.indices[p].tolist() for p in ("adv_train", "adv_test")}}
        subtitle = f"{dataset}, {model.config['arch']} at {side} px, {len(x)} test images"
        seconds: dict[str, float] = {}

        for name in figures:
            start = time.perf_counter()
            if name == "eps_curves":
                sweep_id, rows, _ = sweep(model_uri, dataset, attacks, curve_eps, backend, data_dir, **attack_kwargs)
                curves = {f"{dataset} · {model_uri.removeprefix('models:/')}": rows}
                for other in compare_sweeps:
                    curves[eps_curves.sweep_label(other) + f" ({other[:8]})"] = eps_curves.sweep_rows(other)
                mlflow.set_tag("medart.sweep_run", sweep_id)
                log_figure(eps_curves.eps_curves_figure(curves, f"accuracy vs ε ({backend}, {len(x)} images)"), "eps_curves")
                details["eps_curves"] = curves

            elif name == "saliency":
                maps = saliency.saliency_maps(model, x, y, "loss", batch_size, device)
                fractions = saliency.high_saliency_fraction(maps, saliency_share)
                summary["saliency_high_fraction"] = _mean(fractions)
                details["saliency_high_fraction"] = fractions.tolist()
                log_figure(saliency.saliency_figure(
                    x[shown], maps[shown], fractions[shown], saliency_share,
                    f"saliency |∂ loss/∂x| — {subtitle}; mean share of pixels ≥ {saliency_share:g}·max: "
                    f"{summary['saliency_high_fraction'] * 100:.1f}%"), "saliency")

            elif name == "stages":
                details["stage_change"] = {}
                for attack, x_adv in adversarial.items():
                    change = stages.relative_change(model, x, x_adv, STAGE_LAYERS, device=device)
                    details["stage_change"][attack] = {layer: v.tolist() for layer, v in change.items()}
                    summary |= {f"stage_change.{layer}.{attack}": _mean(v) for layer, v in change.items()}
                    if attack == first:
                        spatial = stages.PAPER_STAGES
                        log_figure(stages.stages_figure(
                            x[shown], stages.stage_maps(model, x[shown], spatial, device=device),
                            stages.stage_maps(model, adversarial[first][shown], spatial, device=device),
                            {layer: change[layer][shown] for layer in spatial},
                            f"mean-over-channels activations, clean vs {specs[first].label()} — {subtitle}; mean relative "
                            + ", ".join(f"change {layer}: {_mean(change[layer]) * 100:.1f}%" for layer in spatial)),
                            "stages")

            elif name == "landscape":
                models = [registry.load_model(uri) for uri in surrogate_uris]
                trained = []
                config = surrogate_config or TrainConfig(epochs=2, lr=0.01)
                for k in range(surrogates):
                    out = train_model(dataset, data_dir, source=source, size=size, image_size=side, arch=surrogate_arch,
                                      pretrained="none", train_config=replace(config, seed=seed + 1 + k),
                                      max_train=surrogate_max_train, register=False, progress=progress)
                    trained.append(out.model_uri)
                    models.append(registry.load_model(out.model_uri))
                mlflow.log_params({"surrogate_uris": ",".join([*surrogate_uris, *trained]), "landscape_points": landscape_points,
                                   "landscape_max_eps": landscape_max_eps, "radius": radius})
                g = landscape.gradient_direction(model, x, y, batch_size, device)
                g_perp, cosine = landscape.surrogate_direction(models, x, y, g, True, batch_size, device)
                grid = landscape.loss_grid(model, x[shown], y[shown], g[shown], g_perp[shown], eps_axis, eps_axis, batch_size, device)
                sharp = landscape.sharpness(model, x, y, radius, batch_size, device)
                clean_loss = landscape.per_image_loss(model, x, y, batch_size, device)
                summary |= {"sharpness": _mean(sharp), "sharpness_median": float(np.nanmedian(sharp)),
                            "clean_loss": _mean(clean_loss), "surrogate_cosine": _mean(cosine)}
                details["landscape"] = {"eps": eps_axis.tolist(), "grid": grid.tolist(), "sharpness": sharp.tolist(),
                                        "clean_loss": clean_loss.tolist(), "surrogate_cosine": cosine.tolist(),
                                        "surrogates": [*surrogate_uris, *trained]}
                log_figure(landscape.landscape_figure(
                    grid, eps_axis, eps_axis,
                    [f"image {k} ({classes[labels[i]]}): sharpness {sharp[i]:.3f}" for k, i in enumerate(shown)],
                    f"loss landscape x + ε1·g + ε2·g⊥ ({len(models)} surrogate(s)) — {subtitle}; mean sharpness at "
                    f"{radius * 255:.3g}/255: {summary['sharpness']:.3f} nats"), "landscape")

            elif name == "embedding":
                clean_feats = embedding.penultimate_features(model, x, device=device)
                coords = {a: embedding.tsne_embedding(clean_feats, embedding.penultimate_features(model, v, device=device), seed)
                          for a, v in adversarial.items()}
                details["embedding"] = {a: {"clean": c.tolist(), "adversarial": v.tolist()} for a, (c, v) in coords.items()}
                log_figure(embedding.embedding_figure(coords, labels, classes,
                                                      f"t-SNE of penultimate features (dfeat), ε = {eps_label} — {subtitle}"),
                           "embedding")

            elif name == "gradcam":
                clean_cam = gradcam.grad_cam(model, x, None, gradcam_layer, batch_size, device)
                details["gradcam_iou"] = {}
                for attack, x_adv in adversarial.items():
                    adv_cam = gradcam.grad_cam(model, x_adv, None, gradcam_layer, batch_size, device)
                    iou = gradcam.cam_overlap(clean_cam, adv_cam, gradcam_top)
                    summary[f"gradcam_iou.{attack}"] = _mean(iou)
                    details["gradcam_iou"][attack] = iou.tolist()
                    if attack == first:
                        captions = [(classes[clean_pred[i]], classes[adv_pred[first][i]]) for i in shown]
                        log_figure(gradcam.gradcam_figure(
                            x[shown], x_adv[shown], clean_cam[shown], adv_cam[shown], iou[shown], captions,
                            f"Grad-CAM at {gradcam_layer} (predicted class), clean vs {specs[first].label()} — {subtitle}; "
                            f"mean IoU of top-{gradcam_top * 100:g}% regions: {summary[f'gradcam_iou.{attack}']:.2f}"),
                            "gradcam")
            seconds[name] = time.perf_counter() - start
            bar.update()
        bar.close()

        total = time.perf_counter() - started
        summary_metrics = {k: v for k, v in summary.items() if np.isfinite(v)}
        mlflow.log_metrics(summary_metrics | {f"seconds.{k}": v for k, v in seconds.items()} | {"seconds": total})
        mlflow.log_dict(details | {"summary": summary, "seconds": seconds}, "analysis.json")
        mlflow.log_text(summary_table(summary, attacks, saliency_share, radius, gradcam_top), "analysis.md")
    return AnalysisOutcome(run.info.run_id, summary, logged, total)
