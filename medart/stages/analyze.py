"""The analysis stage: every analysis figure for one model, dataset and attack budget, attached to
one MLflow run (``medart analyze``).

It attacks AdvTrain + AdvTest as the attack stage does (cached examples are reused), then draws
the ε curves, saliency maps, stage activations, loss landscape, t-SNE embedding and Grad-CAM maps
of those images, and logs each figure under ``figures/`` with the numbers behind it as metrics,
``analysis.json`` and ``analysis.md``.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from typing import Callable

import mlflow
import numpy as np
import torch
from tqdm.auto import tqdm

from medart import tracking
from medart.analysis import embedding, gradcam, landscape, saliency, stages
from medart.attacks import AttackSpec, make_spec, parse_names
from medart.attacks.specs import check_backend
from medart.budget import Eps, eps_params
from medart.catalog import FIGURES
from medart.detectors.activations import resolve_layers
from medart.errors import ConfigError
from medart.models import registry
from medart.models.adapter import PENULTIMATE, top_groups
from medart.models.evaluation import device_of
from medart.models.training import TrainConfig
from medart.render import analysis as render
from medart.render.notes import note
from medart.stages.attack import attack
from medart.stages.compare import sweep_label, sweep_record, sweep_rows
from medart.stages.guard import guard
from medart.stages.sweep import sweep
from medart.stages.target import RunOptions, Target
from medart.stages.train import ModelRequest, train

__all__ = ["AnalysisOutcome", "AnalysisRequest", "GradcamSettings", "LandscapeSettings", "SurrogateSettings", "analyze",
           "display_order"]


def _text(value) -> str:
    return value if isinstance(value, str) else ",".join(map(str, value))


@dataclass(frozen=True)
class LandscapeSettings:
    """The loss landscape figure: loss surfaces over ``landscape_points``² points up to
    ``landscape_max_eps`` along g and g⊥, and the sharpness number at ``radius`` (``None``: the
    analysis ε). ε held as :class:`~medart.budget.Eps` (given as Eps or floats); each field is the
    same-named option."""

    landscape_points: int = 9
    landscape_max_eps: Eps = Eps(landscape.MAX_EPS)
    radius: Eps | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "landscape_max_eps", Eps(self.landscape_max_eps, "landscape_max_eps"))
        object.__setattr__(self, "radius", None if self.radius is None else Eps(self.radius, "radius"))

    @property
    def eps_axis(self) -> np.ndarray:
        """The landscape's ε values along each axis, ``(landscape_points,)``."""
        return landscape.eps_axis(self.landscape_points, self.landscape_max_eps)


@dataclass(frozen=True)
class SurrogateSettings:
    """The landscape's surrogate models, whose gradients give g⊥: those of ``surrogate_uris`` and
    ``surrogates`` ResNets trained here (``surrogate_arch``, ``surrogate_epochs``, ``surrogate_lr``,
    on ``surrogate_max_train`` images; default 1 unless ``surrogate_uris`` are given). Each field
    is the same-named option."""

    surrogate_uris: tuple[str, ...] = ()
    surrogates: int | None = None
    surrogate_arch: str = "resnet18"
    surrogate_epochs: int = 2
    surrogate_lr: float = 0.01
    surrogate_max_train: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "surrogate_uris", tuple(self.surrogate_uris))
        if self.surrogates is not None and self.surrogates < 0:
            raise ConfigError(f"`surrogates` must be >= 0, got {self.surrogates}")

    @property
    def count(self) -> int:
        """Surrogates to train here: ``surrogates``, by default 1 unless ``surrogate_uris`` are given."""
        return (0 if self.surrogate_uris else 1) if self.surrogates is None else self.surrogates


@dataclass(frozen=True)
class GradcamSettings:
    """Grad-CAM at ``gradcam_layer`` (on a network without the default ``layer4``: its last
    stage), compared by the IoU of the top-``gradcam_top`` regions."""

    gradcam_layer: str = "layer4"
    gradcam_top: float = 0.2


@dataclass(frozen=True)
class AnalysisRequest:
    """What ``medart analyze`` draws and measures; each field (and each field of its groups) is the
    same-named option.

    ``attacks`` at ``eps`` (the first attack is drawn in the per-image figures, all get numbers);
    names may be given as text (``"fgsm,pgd"``), ε as :class:`~medart.budget.Eps` or floats (held
    as Eps). ``figures`` (default all; text ``"all"`` too), each logged under ``figures/``:
      - ``eps_curves``: a nested sweep of ``attacks`` over ``curve_eps``, drawn with the sweep runs
        ``compare_sweeps`` (other models or datasets) in one figure.
      - ``saliency``: input-gradient maps; metric ``saliency_high_fraction`` (pixels ≥
        ``saliency_share`` × the image's maximum, mean over images).
      - ``stages``: ``res3a_relu`` and ``res5b_relu`` clean vs adversarial; metrics
        ``stage_change.<layer>.<attack>`` (also for ``dfeat``).
      - ``landscape``: loss surfaces of the shown images (:class:`LandscapeSettings`), g⊥ from the
        surrogate models (:class:`SurrogateSettings`); metrics ``sharpness`` (at ``radius``,
        default ``eps``), ``clean_loss``, ``surrogate_cosine``.
      - ``embedding``: t-SNE of ``dfeat``, clean vs adversarial, one panel per attack.
      - ``gradcam``: Grad-CAM clean vs adversarial (:class:`GradcamSettings`); metrics
        ``gradcam_iou.<attack>``.
    ``show`` images (1 to 16) appear in the per-image figures. ε values are in [0, 1] pixel units.
    """

    attacks: tuple[str, ...] = ("pgd",)
    eps: Eps = Eps(1 / 255)
    figures: tuple[str, ...] = FIGURES
    curve_eps: tuple[Eps, ...] = (Eps(0.5 / 255), Eps(1 / 255), Eps(2 / 255), Eps(4 / 255))
    compare_sweeps: tuple[str, ...] = ()
    saliency_share: float = 0.5
    landscape: LandscapeSettings = LandscapeSettings()
    surrogate: SurrogateSettings = SurrogateSettings()
    gradcam: GradcamSettings = GradcamSettings()
    show: int = 4

    def __post_init__(self) -> None:
        def put(name: str, value) -> None:
            object.__setattr__(self, name, value)

        put("attacks", tuple(dict.fromkeys(parse_names(_text(self.attacks)))))
        put("eps", Eps(self.eps))
        figures = _text(self.figures)
        put("figures", FIGURES if figures.strip().lower() == "all" else tuple(dict.fromkeys(parse_names(figures, FIGURES, "figure"))))
        put("curve_eps", tuple(sorted(Eps.many(self.curve_eps, "curve_eps"))))
        put("compare_sweeps", tuple(self.compare_sweeps))
        if not 1 <= self.show <= 16:
            raise ConfigError(f"`show` must be between 1 and 16 images, got {self.show}")
        if "eps_curves" in self.figures and not self.curve_eps:
            raise ConfigError("no ε values for the ε curves; pass `curve_eps`, or leave eps_curves out of `figures`")
        if "landscape" in self.figures:
            if self.surrogate.count == 0 and not self.surrogate.surrogate_uris:
                raise ConfigError("the loss landscape needs a separately trained surrogate model for g⊥: pass "
                                  "`surrogate_uris` or `surrogates` (trains that many), or leave landscape out of `figures`")
            landscape.eps_axis(self.landscape.landscape_points, self.landscape.landscape_max_eps)  # checks both

    @property
    def sharpness_radius(self) -> Eps:
        return self.eps if self.landscape.radius is None else self.landscape.radius


@dataclass
class AnalysisOutcome:
    run_id: str
    summary: dict[str, float]  # the run's metrics (fractions, nats, cosines)
    figures: list[str] = field(default_factory=list)  # artifact paths
    seconds: float = 0.0


@dataclass
class _Images:
    """The analysed images: AdvTrain + AdvTest, clean and per attack, and what the model says."""

    x: torch.Tensor  # float32 (N, 3, S, S) in [0, 1]
    y: torch.Tensor  # int64 (N,)
    adversarial: dict[str, torch.Tensor]  # attack → x_adv like x
    clean_pred: np.ndarray  # (N,)
    adv_pred: dict[str, np.ndarray]  # attack → (N,)
    shown: np.ndarray  # indices of the images the per-image figures show

    @property
    def labels(self) -> np.ndarray:
        return self.y.numpy()


@dataclass
class _Analysis:
    """What one analysis run has measured so far, and the figures it logged."""

    target: Target
    request: AnalysisRequest
    run: RunOptions  # its stages' runs become children of the analysis run
    specs: dict[str, AttackSpec]
    images: _Images | None = None
    summary: dict[str, float] = field(default_factory=dict)
    details: dict = field(default_factory=dict)
    figures: list[str] = field(default_factory=list)

    def log_figure(self, fig, name: str) -> None:
        tracking.log_figure(fig, f"figures/{name}.png")
        self.figures.append(f"figures/{name}.png")

    @property
    def subtitle(self) -> str:
        model = self.target.model
        return f"{self.target.dataset}, {model.config['arch']} at {self.target.side} px, {len(self.images.x)} test images"

    @property
    def first(self) -> str:
        """The attack drawn in the per-image figures."""
        return self.request.attacks[0]


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


@torch.no_grad()
def _predict(model, x: torch.Tensor, batch_size: int) -> np.ndarray:
    model.eval()
    device = device_of(model)  # where the attack left it
    return torch.cat([model(x[s : s + batch_size].to(device)).argmax(1).cpu() for s in range(0, len(x), batch_size)]).numpy()


def _attack_images(a: _Analysis, bar) -> None:
    """Each attack on AdvTrain + AdvTest as a child run; the images and predictions the figures use."""
    parts = ("adv_train", "adv_test")
    adversarial, attack_runs = {}, {}
    for name, spec in a.specs.items():
        out = attack(a.target, spec, a.run)
        adversarial[name] = torch.cat([out.adversarial[p] for p in parts])
        attack_runs[name] = out.run_id
        a.summary[f"adv_acc.{name}"] = out.metrics["adv_acc"]
        a.summary["clean_acc"] = out.metrics["clean_acc"]
        a.summary["clean_balanced_acc"] = out.metrics["clean_balanced_acc"]
        bar.update()
    mlflow.set_tags({f"medart.attack_run.{name}": r for name, r in attack_runs.items()})
    clean = a.target.clean
    x, y = torch.cat([clean[p][0] for p in parts]), torch.cat([clean[p][1] for p in parts])
    model, batch = a.target.model, a.run.batch_size
    clean_pred = _predict(model, x, batch)
    adv_pred = {name: _predict(model, v, batch) for name, v in adversarial.items()}
    shown = display_order(y.numpy(), clean_pred, adv_pred[a.first], a.request.show)
    a.images = _Images(x, y, adversarial, clean_pred, adv_pred, shown)
    a.details |= {"n": len(x), "labels": y.numpy().tolist(), "clean_pred": clean_pred.tolist(),
                  "adv_pred": {name: p.tolist() for name, p in adv_pred.items()}, "shown": shown.tolist(),
                  "indices": {p: a.target.indices[p].tolist() for p in parts}}


def _eps_curves(a: _Analysis) -> None:
    """A nested sweep over ``curve_eps``, drawn with the sweeps ``compare_sweeps`` in one figure."""
    out = sweep(a.target, a.request.attacks, a.request.curve_eps, a.run)
    curves = {f"{a.target.dataset} · {a.target.model_uri.removeprefix('models:/')}": out.rows}
    for other in a.request.compare_sweeps:
        curves[sweep_label(other) + f" ({other[:8]})"] = sweep_rows(other)
    mlflow.set_tag("medart.sweep_run", out.run_id)
    title = f"accuracy vs ε ({a.run.backend}, {len(a.images.x)} images)"
    a.log_figure(render.eps_curves_figure(curves, title), "eps_curves")
    a.details["eps_curves"] = {label: [sweep_record(r) for r in rows] for label, rows in curves.items()}


def _saliency(a: _Analysis) -> None:
    im, share = a.images, a.request.saliency_share
    maps = saliency.saliency_maps(a.target.model, im.x, im.y, "loss", a.run.batch_size, a.run.device)
    fractions = saliency.high_saliency_fraction(maps, share)
    a.summary["saliency_high_fraction"] = _mean(fractions)
    a.details["saliency_high_fraction"] = fractions.tolist()
    title = (f"saliency |∂ loss/∂x| — {a.subtitle}; mean share of pixels ≥ {share:g}·max: "
             f"{a.summary['saliency_high_fraction'] * 100:.1f}%")
    a.log_figure(render.saliency_figure(im.x[im.shown], maps[im.shown], fractions[im.shown], share, title), "saliency")


def spatial_stages(model, probe: torch.Tensor) -> tuple[str, ...]:
    """The early and late stages drawn: the paper's ``res3a_relu`` and ``res5b_relu`` where the model
    has them, else the middle and the last of its top-level stages, each at its last layer whose
    output still has a spatial grid (a small network's ``features`` stage may end flattened).
    ``probe``: an image ``(1, 3, S, S)`` the layers' shapes are read from. Empty when no stage has one."""
    if all(t in model.tap_names() for t in stages.PAPER_STAGES):
        return stages.PAPER_STAGES
    named = model.stage_taps()
    taps = [t for t in model.tap_names() if t not in ("input", "dfeat", "logits")]
    with torch.no_grad():
        shapes = {t: v.shape for t, v in model.features(probe[:1], taps).items()}
    spatial = [t for t in taps if len(shapes[t]) == 4 and shapes[t][-2] * shapes[t][-1] > 1]
    found = [members[-1] for group, members in top_groups(spatial).items()
             if any(s == group or s.startswith(group + ".") for s in named)]
    return tuple(dict.fromkeys([found[len(found) // 2], found[-1]])) if found else ()


def _stages(a: _Analysis) -> None:
    im, model, device = a.images, a.target.model, a.run.device
    spatial = spatial_stages(model, im.x)
    if not spatial:
        logging.getLogger("medart").warning(f"the stages figure draws layers with a spatial grid; {a.target.model_uri} "
                                            "has none: skipped")
        return
    a.details["stage_change"] = {}
    for name, x_adv in im.adversarial.items():
        change = stages.relative_change(model, im.x, x_adv, (*spatial, "dfeat"), device=device)
        a.details["stage_change"][name] = {layer: v.tolist() for layer, v in change.items()}
        a.summary |= {f"stage_change.{layer}.{name}": _mean(v) for layer, v in change.items()}
        if name != a.first:
            continue
        title = (f"mean-over-channels activations, clean vs {a.specs[name].label()} — {a.subtitle}; mean relative "
                 + ", ".join(f"change {layer}: {_mean(change[layer]) * 100:.1f}%" for layer in spatial))
        a.log_figure(render.stages_figure(
            im.x[im.shown], stages.stage_maps(model, im.x[im.shown], spatial, device=device),
            stages.stage_maps(model, x_adv[im.shown], spatial, device=device),
            {layer: change[layer][im.shown] for layer in spatial}, title), "stages")


def _surrogates(a: _Analysis) -> tuple[list, list[str]]:
    """The landscape's surrogate models: those of ``surrogate_uris``, then ``surrogates`` trained here
    (child runs, seeds ``seed + 1 …``); returns the models and the URIs of those trained."""
    settings, target = a.request.surrogate, a.target
    models = [registry.load_model(uri) for uri in settings.surrogate_uris]
    trained = []
    model_request = ModelRequest(arch=settings.surrogate_arch, pretrained="none", image_size=target.side,
                                 max_train=settings.surrogate_max_train, register=False)
    for k in range(settings.count):
        config = TrainConfig(epochs=settings.surrogate_epochs, lr=settings.surrogate_lr, seed=target.seed + 1 + k,
                             device=a.run.device)
        out = train(target.data, model_request, config, a.run)
        trained.append(out.model_uri)
        models.append(out.model)  # the trained model in memory: no reload from the store
    return models, trained


def _landscape(a: _Analysis) -> None:
    request, im, model = a.request, a.images, a.target.model
    settings, uris = request.landscape, request.surrogate.surrogate_uris
    batch, device, radius, axis = a.run.batch_size, a.run.device, request.sharpness_radius, settings.eps_axis
    models, trained = _surrogates(a)
    mlflow.log_params({"surrogate_uris": ",".join([*uris, *trained]), "landscape_points": settings.landscape_points}
                      | eps_params("landscape_max_eps", settings.landscape_max_eps) | eps_params("radius", radius))
    g = landscape.gradient_direction(model, im.x, im.y, batch, device)
    g_perp, cosine = landscape.surrogate_direction(models, im.x, im.y, g, True, batch, device)
    s = im.shown
    grid = landscape.loss_grid(model, im.x[s], im.y[s], g[s], g_perp[s], axis, batch, device)
    sharp = landscape.sharpness(model, im.x, im.y, radius, batch, device)
    clean_loss = landscape.per_image_loss(model, im.x, im.y, batch, device)
    a.summary |= {"sharpness": _mean(sharp), "sharpness_median": float(np.nanmedian(sharp)),
                  "clean_loss": _mean(clean_loss), "surrogate_cosine": _mean(cosine)}
    a.details["landscape"] = {"eps": axis.tolist(), "grid": grid.tolist(), "sharpness": sharp.tolist(),
                              "clean_loss": clean_loss.tolist(), "surrogate_cosine": cosine.tolist(),
                              "surrogates": [*uris, *trained]}
    classes = model.classes
    labels = [f"image {k} ({classes[im.labels[i]]}): sharpness {sharp[i]:.3f}" for k, i in enumerate(s)]
    title = (f"loss landscape x + ε1·g + ε2·g⊥ ({len(models)} surrogate(s)) — {a.subtitle}; mean sharpness at "
             f"{radius}: {a.summary['sharpness']:.3f} nats")
    a.log_figure(render.landscape_figure(grid, axis, labels, title), "landscape")


def _embedding(a: _Analysis) -> None:
    im, model, device = a.images, a.target.model, a.run.device
    clean = embedding.penultimate_features(model, im.x, device=device)
    coords = {name: embedding.tsne_embedding(clean, embedding.penultimate_features(model, v, device=device), a.target.seed)
              for name, v in im.adversarial.items()}
    a.details["embedding"] = {name: {"clean": c.tolist(), "adversarial": v.tolist()} for name, (c, v) in coords.items()}
    title = f"t-SNE of penultimate features (dfeat), ε = {a.request.eps} — {a.subtitle}"
    a.log_figure(render.embedding_figure(coords, im.labels, model.classes, title), "embedding")


def _gradcam(a: _Analysis) -> None:
    settings, im, model = a.request.gradcam, a.images, a.target.model
    layer, top, batch, device = settings.gradcam_layer, settings.gradcam_top, a.run.batch_size, a.run.device
    if layer == GradcamSettings.gradcam_layer and layer not in model.tap_names() and (found := spatial_stages(model, im.x)):
        layer = found[-1]  # the default, layer4, on a network without one: its last stage
    clean_cam = gradcam.grad_cam(model, im.x, None, layer, batch, device)
    a.details["gradcam_iou"] = {}
    for name, x_adv in im.adversarial.items():
        adv_cam = gradcam.grad_cam(model, x_adv, None, layer, batch, device)
        iou = gradcam.cam_overlap(clean_cam, adv_cam, top)
        a.summary[f"gradcam_iou.{name}"] = _mean(iou)
        a.details["gradcam_iou"][name] = iou.tolist()
        if name != a.first:
            continue
        s, classes = im.shown, model.classes
        captions = [(classes[im.clean_pred[i]], classes[im.adv_pred[name][i]]) for i in s]
        title = (f"Grad-CAM at {layer} (predicted class), clean vs {a.specs[name].label()} — {a.subtitle}; "
                 f"mean IoU of top-{top * 100:g}% regions: {a.summary[f'gradcam_iou.{name}']:.2f}")
        a.log_figure(render.gradcam_figure(im.x[s], x_adv[s], clean_cam[s], adv_cam[s], iou[s], captions, title), "gradcam")


READS_PENULTIMATE = {"stages", "embedding"}  # the figures that read dfeat
DRAW: dict[str, Callable[[_Analysis], None]] = {
    "eps_curves": _eps_curves, "saliency": _saliency, "stages": _stages, "landscape": _landscape,
    "embedding": _embedding, "gradcam": _gradcam,
}


def analyze(target: Target, request: AnalysisRequest = AnalysisRequest(), run: RunOptions = RunOptions()) -> AnalysisOutcome:
    """Attack AdvTrain + AdvTest of ``target`` with each of ``request.attacks`` at ``request.eps``
    (paper settings) and analyse the model on those images, as one run in
    ``medart/<dataset>/analysis`` whose children are the attack runs (and the sweep and surrogate
    training runs it needs). :class:`AnalysisRequest` lists the figures and their settings; the
    numbers go to the run's metrics, per-image numbers to ``analysis.json``, a table of them with
    their meaning to ``analysis.md`` (also the run's description).
    """
    started = time.perf_counter()
    model, attacks = target.model, request.attacks
    for attack_name in attacks:
        check_backend(attack_name, run.backend)
    if READS_PENULTIMATE & set(request.figures):  # a model whose penultimate features cannot be found: one line now
        resolve_layers(model, [PENULTIMATE])
    name = f"analyze-{'+'.join(attacks)}-eps{request.eps}-{run.backend}"
    with tracking.start_run(tracking.experiment_name(target.dataset, "analysis"), name, run.parent_run_id) as mlflow_run:
        mlflow.set_tags(target.tags)  # the version an alias named, for later comparisons
        mlflow.log_params({"model_uri": target.model_uri, "dataset": target.dataset, "attacks": ",".join(attacks)}
                          | eps_params("eps", request.eps) | {"backend": run.backend, "figures": ",".join(request.figures),
                           "max_examples": target.max_examples, "seed": target.seed, "image_size": target.side,
                           "arch": model.config["arch"], "show": request.show})
        guard(target, run)
        a = _Analysis(target, request, dataclasses.replace(run, parent_run_id=mlflow_run.info.run_id),
                      {attack_name: make_spec(attack_name, request.eps) for attack_name in attacks})
        a.details = {"attacks": list(attacks), "eps": request.eps, "figures": list(request.figures)}
        bar = tqdm(total=len(attacks) + len(request.figures), desc="analysis", disable=not run.progress)
        _attack_images(a, bar)
        seconds: dict[str, float] = {}
        for figure in request.figures:
            start = time.perf_counter()
            DRAW[figure](a)
            seconds[figure] = time.perf_counter() - start
            bar.update()
        bar.close()
        total = time.perf_counter() - started
        finite = {k: v for k, v in a.summary.items() if np.isfinite(v)}
        mlflow.log_metrics(finite | {f"seconds.{k}": v for k, v in seconds.items()} | {"seconds": total})
        mlflow.log_dict(a.details | {"summary": a.summary, "seconds": seconds}, "analysis.json")
        table = render.analysis_table(a.summary, attacks, request.saliency_share, request.sharpness_radius,
                                      request.gradcam.gradcam_top)
        mlflow.log_text(table, "analysis.md")
        tracking.describe(note(f"Analysis of {target.model_uri} under {', '.join(attacks).upper()} at ε = "
                               f"{request.eps}, {run.backend}: n = {len(a.images.x)} images "
                               f"(AdvTrain + AdvTest); figures {', '.join(request.figures)}", table))
    return AnalysisOutcome(mlflow_run.info.run_id, a.summary, a.figures, total)
