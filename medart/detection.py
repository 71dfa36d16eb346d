"""The paper's detection stage (Tables 4 and 5): detectors fitted on AdvTrain, scored on AdvTest,
and scored again on every other attack's examples (transfer), each step an MLflow run.

Only test images the model classifies correctly are attacked and used; a clean image is a
negative (0), its adversarial version a positive (1), and the two always fall on the same side of
a split. The adversarial examples come from the attack stage, so a cached attack run is reused.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import mlflow  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from sklearn.metrics import roc_auc_score, roc_curve  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from torch.utils.data import TensorDataset  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from medart import tracking  # noqa: E402
from medart.attacks import make_spec, parse_names  # noqa: E402
from medart.detectors import DETECTORS, NEEDS_REFERENCES, make_detector  # noqa: E402
from medart.errors import ConfigError, DataError  # noqa: E402
from medart.experiment import attack_model, load_attack_inputs  # noqa: E402
from medart.models.evaluation import predict  # noqa: E402

PAPER_DETECTORS = ("kd", "lid", "dfeat", "qfeat")


@dataclass
class Pairs:
    """Clean images ``(n, C, H, W)``, their adversarial versions, and their class labels ``(n,)``."""

    clean: torch.Tensor
    adversarial: torch.Tensor
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, rows: np.ndarray) -> "Pairs":
        index = torch.from_numpy(rows)
        return Pairs(self.clean[index], self.adversarial[index], self.labels[rows])

    def xy(self) -> tuple[torch.Tensor, np.ndarray]:
        """Detector inputs (clean then adversarial) and their 0/1 labels."""
        n = len(self)
        return torch.cat([self.clean, self.adversarial]), np.r_[np.zeros(n, np.int64), np.ones(n, np.int64)]


def detection_pairs(model, x: torch.Tensor, y: torch.Tensor, x_adv: torch.Tensor, only_successful: bool = False,
                    batch_size: int = 128, device: str = "auto", what: str = "") -> Pairs:
    """The pairs of the images ``model`` classifies correctly (and, with ``only_successful``, whose
    adversarial version it misclassifies, as in Ma et al. 2018)."""
    labels = y.numpy()
    keep = predict(model, TensorDataset(x, y), batch_size, device)[0].argmax(1) == labels
    if only_successful:
        keep &= predict(model, TensorDataset(x_adv, y), batch_size, device)[0].argmax(1) != labels
    if keep.sum() < 2:
        which = "classified correctly and attacked successfully" if only_successful else "classified correctly"
        raise DataError(f"only {int(keep.sum())} {what} images are {which}; detection needs at least 2: "
                        "attack more images (--max-examples) or a stronger attack")
    return Pairs(x[torch.from_numpy(keep)], x_adv[torch.from_numpy(keep)], labels[keep])


def resplit(fit: Pairs, test: Pairs, repeat: int, seed: int) -> tuple[Pairs, Pairs]:
    """Repeat 0: AdvTrain / AdvTest as given. Repeat r > 0: both pooled and split again at the same
    sizes, stratified by class, seeded by ``seed + r`` (pairs stay together)."""
    if repeat == 0:
        return fit, test
    pooled = Pairs(torch.cat([fit.clean, test.clean]), torch.cat([fit.adversarial, test.adversarial]),
                   np.r_[fit.labels, test.labels])
    counts = np.bincount(pooled.labels)
    stratify = pooled.labels if counts[counts > 0].min() >= 2 else None
    a, b = train_test_split(np.arange(len(pooled)), test_size=len(test), random_state=seed + repeat, stratify=stratify)
    return pooled.take(np.sort(a)), pooled.take(np.sort(b))


def parse_detector_params(items: Sequence[str], detectors: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``["lid.k=10", "lid.layers=input,layer4", "kd.bandwidth=auto"]`` → ``{"lid": {...}, "kd": {...}}``.

    Values become ``int``, ``float``, ``None`` (``none``), a list (comma-separated) or stay strings.
    """
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        name, dot, param = key.strip().partition(".")
        if not sep or not dot or not param:
            raise ConfigError(f"detector parameter '{item}' is not DETECTOR.NAME=VALUE, e.g. lid.k=10")
        if name not in detectors:
            raise ConfigError(f"parameter '{item}' is for detector '{name}', which is not among {', '.join(detectors)}")
        out.setdefault(name, {})[param] = _parse_value(value.strip(), list_ok=True)
    return out


def _parse_value(text: str, list_ok: bool = False) -> Any:
    if list_ok and "," in text:
        return [_parse_value(part.strip()) for part in text.split(",")]
    if text.lower() == "none":
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def _fit(name: str, model, params: dict, fit: Pairs, reference, seed: int, batch_size: int, device: str):
    detector = make_detector(name, model, **({"batch_size": batch_size, "device": device, "random_state": seed} | params))
    x, y = fit.xy()
    extra = {"x_ref": reference[0], "y_ref": reference[1].numpy()} if name in NEEDS_REFERENCES else {}
    detector.fit(x, y, x_clean=fit.clean, **extra)  # x_clean: the mini-batch references of Ma et al.'s LID
    return detector


def _scores(detector, pairs: Pairs) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x, y = pairs.xy()
    report, flagged = detector.detect(x, x_clean=pairs.clean)
    return y, report["scores"], flagged


@dataclass
class DetectionOutcome:
    run_id: str
    auc: dict[str, dict[str, float]]  # attack → detector → ROC-AUC on AdvTest (mean over repeats)
    auc_std: dict[str, dict[str, float]]
    transfer: dict[str, dict[str, dict[str, float]]]  # detector → fitted on attack → scored on attack → AUC
    counts: dict[str, dict[str, int]]  # attack → {"fit": pairs, "test": pairs}
    attack_runs: dict[str, str] = field(default_factory=dict)
    child_runs: dict[str, str] = field(default_factory=dict)


def detect_model(
    model_uri: str,
    dataset: str,
    attacks: Sequence[str],
    eps: float,
    detectors: Sequence[str] = PAPER_DETECTORS,
    backend: str = "art",
    data_dir: str | os.PathLike | None = None,
    *,
    source: str = "medmnist",
    size: int = 28,
    max_examples: int | None = None,
    reference_size: int = 1000,
    repeats: int = 1,
    only_successful: bool = False,
    transfer: bool = True,
    detector_params: dict[str, dict[str, Any]] | None = None,
    batch_size: int = 128,
    seed: int = 0,
    device: str = "auto",
    use_cache: bool = True,
    progress: bool = True,
) -> DetectionOutcome:
    """Table 4 and Table 5 of the paper for one model, dataset and ε.

    Each attack (paper defaults at ``eps``) runs as the attack stage does (its own MLflow run,
    reused from the cache when possible). Then, under one parent run in ``medart/<dataset>/detect``,
    one child run per attack fits every detector on the AdvTrain pairs and scores ROC-AUC on the
    AdvTest pairs (``repeats`` > 1 adds re-drawn stratified splits: mean ± std), with detector
    parameters as params, ``auc_<detector>`` metrics and ROC curves. The parent gets the AUC table
    (``detection_auc.md``/``.json``, ``figures/detection_auc.png``) and, with ``transfer``, each
    detector fitted on one attack and scored on every attack's AdvTest pairs (``transfer.md``/
    ``.json``, ``figures/transfer.png``). ``reference_size`` clean Train images serve KD, LID and
    Mahalanobis as their clean reference set.
    """
    detectors = list(dict.fromkeys(parse_names(",".join(detectors), tuple(DETECTORS), "detector")))
    params = detector_params or {}
    for name in params:
        if name not in detectors:
            raise ConfigError(f"parameters given for detector '{name}', which is not among {', '.join(detectors)}")
    if repeats < 1:
        raise ConfigError(f"repeats must be >= 1, got {repeats}")
    if reference_size < 1:
        raise ConfigError(f"reference_size must be >= 1 clean Train images, got {reference_size}")
    specs = {attack: make_spec(attack, eps) for attack in dict.fromkeys(attacks)}
    if not specs:
        raise ConfigError("no attacks given; choose from fgsm, bim, pgd, cw")

    inputs = load_attack_inputs(model_uri, dataset, data_dir, source, size, max_examples, seed, reference_size)
    model, reference = inputs.model, inputs.reference
    for name in detectors:  # settings errors now, not after the attacks have run
        detector = make_detector(name, model, **params.get(name, {}))
        detector.set_params()  # ART's hook: runs the detector's _check_params
        if getattr(detector, "reference", None) == "train" and detector.reference_size > len(reference[0]):
            raise ConfigError(f"{name} reference_size {detector.reference_size} exceeds the {len(reference[0])} clean "
                              "reference images; raise --reference-size or lower it")
    loading = dict(source=source, size=size, max_examples=max_examples, batch_size=batch_size, seed=seed,
                   device=device, use_cache=use_cache, progress=progress, inputs=inputs)
    pairs: dict[str, dict[str, Pairs]] = {}
    attack_runs: dict[str, str] = {}
    for attack, spec in specs.items():
        out = attack_model(model_uri, dataset, spec, backend, data_dir, **loading)
        attack_runs[attack] = out.run_id
        pairs[attack] = {
            part: detection_pairs(model, *out.clean[part], out.adversarial[part], only_successful, batch_size, device,
                                  what=f"{part} {attack}")
            for part in ("adv_train", "adv_test")
        }

    eps_label = f"{eps * 255:.3g}/255"
    auc: dict[str, dict[str, float]] = {}
    auc_std: dict[str, dict[str, float]] = {}
    fitted: dict[str, dict[str, Any]] = {}
    child_runs: dict[str, str] = {}
    bar = tqdm(total=len(specs) * len(detectors) * repeats, desc="detectors", disable=not progress)
    with tracking.start_run(tracking.experiment_name(dataset, "detect"), f"detect-eps{eps_label}-{backend}") as parent:
        mlflow.log_params({"model_uri": model_uri, "dataset": dataset, "attacks": ",".join(specs), "eps": eps,
                           "backend": backend, "detectors": ",".join(detectors), "repeats": repeats,
                           "only_successful": only_successful, "reference_size": len(reference[0]),
                           "max_examples": max_examples, "seed": seed})
        mlflow.set_tags({f"medart.attack_run.{a}": r for a, r in attack_runs.items()})
        for attack, spec in specs.items():
            fit_pairs, test_pairs = pairs[attack]["adv_train"], pairs[attack]["adv_test"]
            with tracking.start_run(tracking.experiment_name(dataset, "detect"), f"detect-{spec.label()}-{backend}") as child:
                child_runs[attack] = child.info.run_id
                mlflow.set_tag("medart.attack_run", attack_runs[attack])
                mlflow.log_params(spec.as_params() | {"backend": backend, "model_uri": model_uri, "dataset": dataset,
                                                      "detectors": ",".join(detectors), "repeats": repeats,
                                                      "only_successful": only_successful, "n_fit_pairs": len(fit_pairs),
                                                      "n_test_pairs": len(test_pairs), "seed": seed})
                auc[attack], auc_std[attack], fitted[attack], curves = {}, {}, {}, {}
                for name in detectors:
                    values = []
                    for repeat in range(repeats):
                        start = time.perf_counter()
                        fit_r, test_r = resplit(fit_pairs, test_pairs, repeat, seed)
                        detector = _fit(name, model, params.get(name, {}), fit_r, reference, seed, batch_size, device)
                        y, scores, flagged = _scores(detector, test_r)
                        values.append(_auc(y, scores))
                        if repeat == 0:
                            fitted[attack][name] = detector
                            curves[name] = (*roc_curve(y, scores)[:2], values[0])
                            mlflow.log_metrics({f"detect_acc_{name}": float((flagged == y).mean()),
                                                f"seconds_{name}": time.perf_counter() - start})
                        bar.update()
                    auc[attack][name] = float(np.mean(values))
                    auc_std[attack][name] = float(np.std(values))
                    mlflow.log_params({f"{name}.{k}": _loggable(v) for k, v in detector.get_params().items()})
                    mlflow.log_metrics({f"auc_{name}": auc[attack][name]}
                                       | ({f"auc_{name}_std": auc_std[attack][name]} if repeats > 1 else {}))
                    if repeats > 1:
                        mlflow.log_dict({"auc": values}, f"repeats/{name}.json")
                split = "AdvTest" if repeats == 1 else "AdvTest, split 0"
                tracking.log_figure(_roc_figure(curves, f"{dataset}: {spec.label()} ({backend}, {split})"), "figures/roc.png")
                mlflow.log_table({"detector": list(auc[attack]), "auc": list(auc[attack].values())}, "detection_auc.json")
        bar.close()

        mlflow.log_metrics({f"{a}.auc_{d}": v for a, row in auc.items() for d, v in row.items()})
        mlflow.log_text(auc_table(auc, auc_std if repeats > 1 else None), "detection_auc.md")
        mlflow.log_table(_long_table(auc, auc_std), "detection_auc.json")
        tracking.log_figure(_heatmaps({"auc": _by_detector(auc)}, "attack", "detector",
                                      f"detection AUC (%)\n{dataset}, ε = {eps_label}, {backend}"), "figures/detection_auc.png")

        transfer_auc: dict[str, dict[str, dict[str, float]]] = {}
        if transfer and len(specs) > 1:
            for name in detectors:
                transfer_auc[name] = {
                    fit_attack: {test_attack: _auc(*_scores(fitted[fit_attack][name], pairs[test_attack]["adv_test"])[:2])
                                 for test_attack in specs}
                    for fit_attack in specs
                }
            mlflow.log_text(transfer_table(transfer_auc), "transfer.md")
            mlflow.log_dict(transfer_auc, "transfer.json")
            tracking.log_figure(_heatmaps({name.upper(): m for name, m in transfer_auc.items()}, "scored on", "fitted on",
                                          f"transfer AUC (%), {dataset}, ε = {eps_label}"), "figures/transfer.png")
    counts = {a: {"fit": len(p["adv_train"]), "test": len(p["adv_test"])} for a, p in pairs.items()}
    return DetectionOutcome(parent.info.run_id, auc, auc_std, transfer_auc, counts, attack_runs, child_runs)


def _auc(y: np.ndarray, scores: np.ndarray) -> float:
    return float(roc_auc_score(y, scores))


def _loggable(value: Any) -> Any:
    return ",".join(map(str, value)) if isinstance(value, (list, tuple)) else value


def _by_detector(auc: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    detectors = list(next(iter(auc.values())))
    return {d: {a: auc[a][d] for a in auc} for d in detectors}


def auc_table(auc: dict[str, dict[str, float]], std: dict[str, dict[str, float]] | None = None) -> str:
    """Table 4 layout: a row per detector, a column per attack, AUC in %."""
    attacks = list(auc)
    lines = ["| detector | " + " | ".join(a.upper() for a in attacks) + " |", "|---" * (len(attacks) + 1) + "|"]
    for d in next(iter(auc.values())):
        cells = [f"{auc[a][d] * 100:.2f}" + (f" ± {std[a][d] * 100:.2f}" if std else "") for a in attacks]
        lines.append(f"| {d.upper()} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def transfer_table(transfer: dict[str, dict[str, dict[str, float]]]) -> str:
    """Table 5 layout: per detector, a row per attack it was fitted on, a column per attack scored."""
    blocks = []
    for name, matrix in transfer.items():
        attacks = list(matrix)
        lines = [f"| {name.upper()}: fitted on ↓ scored on → | " + " | ".join(a.upper() for a in attacks) + " |",
                 "|---" * (len(attacks) + 1) + "|"]
        for fit_attack in attacks:
            lines.append(f"| {fit_attack.upper()} | " + " | ".join(f"{matrix[fit_attack][t] * 100:.2f}" for t in attacks) + " |")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def _long_table(auc, std) -> dict[str, list]:
    rows = [(a, d, v, std[a][d]) for a, row in auc.items() for d, v in row.items()]
    return {"attack": [r[0] for r in rows], "detector": [r[1] for r in rows], "auc": [r[2] for r in rows],
            "auc_std": [r[3] for r in rows]}


def _roc_figure(curves: dict[str, tuple[np.ndarray, np.ndarray, float]], title: str):
    fig, ax = plt.subplots(figsize=(5, 5))
    for name, (fpr, tpr, auc) in curves.items():
        ax.plot(fpr, tpr, label=f"{name.upper()} (AUC {auc * 100:.1f})")
    ax.plot([0, 1], [0, 1], color="grey", ls="--", lw=0.8)
    ax.set_xlabel("false positive rate (clean flagged)")
    ax.set_ylabel("true positive rate (adversarial flagged)")
    ax.set_title(title)
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig


def _heatmaps(matrices: dict[str, dict[str, dict[str, float]]], xlabel: str, ylabel: str, title: str):
    """One annotated heatmap per matrix (rows → columns → AUC in [0, 1]), four to a row, on a shared
    50–100 % colour scale (lower values show in the darkest colour, with their number)."""
    ncols = min(4, len(matrices))
    nrows = -(-len(matrices) // ncols)
    sample = next(iter(matrices.values()))
    cell = 0.55
    width = ncols * (1.6 + cell * len(next(iter(sample.values())))) + 1.0
    height = nrows * (1.3 + cell * len(sample)) + 0.6
    fig, axes = plt.subplots(nrows, ncols, figsize=(width, height), squeeze=False, layout="constrained")
    for k, ax in enumerate(axes.flat):
        if k >= len(matrices):
            ax.axis("off")
            continue
        name, matrix = list(matrices.items())[k]
        rows, cols = list(matrix), list(next(iter(matrix.values())))
        values = np.array([[matrix[r][c] * 100 for c in cols] for r in rows])
        image = ax.imshow(values, vmin=50, vmax=100, cmap="viridis")
        for (i, j), v in np.ndenumerate(values):
            ax.text(j, i, f"{v:.1f}", ha="center", va="center", color="white" if v < 80 else "black", fontsize=8)
        ax.set_xticks(range(len(cols)), [c.upper() for c in cols])
        ax.set_yticks(range(len(rows)), [r.upper() for r in rows])
        ax.set_xlabel(xlabel)
        if k % ncols == 0:
            ax.set_ylabel(ylabel)
        if len(matrices) > 1:
            ax.set_title(name)
    fig.colorbar(image, ax=axes, shrink=0.8, label="AUC (%)")
    fig.suptitle(title)
    return fig


__all__ = ["DetectionOutcome", "Pairs", "auc_table", "detect_model", "detection_pairs", "parse_detector_params",
           "resplit", "transfer_table"]
