"""KD at chance, explained: detection AUC against the bandwidth σ, the feature scale, and the paper
code's way of fitting the density.

For a registered model and the protocol's AdvTrain / AdvTest pairs (attacks from the attack stage,
reused from its cache), KD (:class:`medart.detectors.kd.KernelDensity`) is fitted on AdvTrain and
scored on AdvTest for every σ of a log grid and for ``auto`` (also the AUC of the raw log density,
lower = adversarial, without the fitted regression), in three variants:

- ``train``: the default, leak-free — the density of the predicted class over clean Train images;
- ``train, standardized``: the same, every feature unit scaled to unit variance first;
- ``batch``: the paper code's ``get_kd(model, X_test, Y_test, X_test, X_test_adv)`` — the density
  fitted on the clean images being scored, each clean image inside its own density.

Beside the AUC: the feature scale (median norm, median pairwise distance of the references,
median distance of clean and adversarial AdvTest features to the nearest reference of their
predicted class), the attack's success rate, and the AUC of the default setting on the pairs
whose attack succeeded and per source class.

    PYTHONPATH=$PWD python benchmarks/kd_bandwidth.py --data-dir "$MEDART_DATA_DIR" --eps 8/255 --max-examples 400
"""

from __future__ import annotations

import time
from pathlib import Path

import click
import numpy as np

import benchlib
from medart.budget import Eps
from medart.cli import options

VARIANTS = {"train": dict(reference="train"), "train_standardized": dict(reference="train", standardize=True),
            "batch": dict(reference="batch")}  # batch: the paper code's


def kd_scores(target, pairs, params: dict) -> tuple[np.ndarray, np.ndarray, float]:
    """KD fitted on AdvTrain with ``params``: its AdvTest scores (clean then adversarial), its raw
    AdvTest feature (the log density, before scaling and logistic regression) and its σ."""
    from medart.detectors import make_detector

    detector = make_detector("kd", target.model, random_state=target.seed, **params)
    x, y = pairs["adv_train"].xy()
    detector.fit(x, y, x_ref=target.reference[0], y_ref=target.reference[1].numpy(), x_clean=pairs["adv_train"].clean)
    test = pairs["adv_test"]
    x_test = test.xy()[0]
    raw = detector._features(x_test, x_clean=test.clean)[:, 0]
    return detector.detect(x_test, x_clean=test.clean)[0]["scores"], raw, detector.sigma_


def feature_scale(target, test) -> dict[str, float]:
    """Median feature norms and distances (feature units) of the references and the AdvTest pairs."""
    import torch

    from medart.detectors.activations import activations

    def feats(x):
        acts, logits = activations(target.model, x, ["dfeat"])
        return acts["dfeat"].double(), logits.argmax(1)

    ref, y_ref = feats(target.reference[0])[0], target.reference[1]
    clean, clean_pred = feats(test.clean)
    adv, adv_pred = feats(test.adversarial)

    def nearest(z, pred):
        return float(np.median([torch.cdist(z[i : i + 1], ref[y_ref == int(pred[i])]).min() for i in range(len(z))]))

    return {"norm_reference": float(ref.norm(dim=1).median()), "norm_clean": float(clean.norm(dim=1).median()),
            "norm_adversarial": float(adv.norm(dim=1).median()), "pairwise_reference": float(torch.pdist(ref).median()),
            "nearest_reference_clean": nearest(clean, clean_pred), "nearest_reference_adversarial": nearest(adv, adv_pred),
            "success_rate": float((adv_pred.numpy() != test.labels).mean())}


def subset_aucs(target, test, scores: np.ndarray) -> dict[str, float]:
    """AUC of ``scores`` on the AdvTest pairs whose attack succeeded, and per source class."""
    from sklearn.metrics import roc_auc_score

    from medart.models.evaluation import predict
    from torch.utils.data import TensorDataset
    import torch

    n = len(test)
    fooled = predict(target.model, TensorDataset(test.adversarial, torch.from_numpy(test.labels)))[0].argmax(1) != test.labels
    out = {}
    for name, rows in {"successful": fooled, **{f"class_{c}": test.labels == c for c in np.unique(test.labels)}}.items():
        if rows.sum() >= 1:
            out[name] = float(roc_auc_score(np.r_[np.zeros(rows.sum()), np.ones(rows.sum())],
                                            np.r_[scores[:n][rows], scores[n:][rows]]))
    return out


def study(target, name: str, eps: Eps, sigmas: list[float]) -> dict:
    """One attack: pairs, feature scale, AUC per variant and σ, and the default's subsets."""
    from sklearn.metrics import roc_auc_score

    from medart.attacks import make_spec
    from medart.stages.attack import attack
    from medart.stages.detect import PARTS, detection_pairs
    from medart.stages.target import RunOptions

    out = attack(target, make_spec(name, eps), RunOptions(progress=False))
    pairs = {part: detection_pairs(target.model, out.clean[part], out.adversarial[part], what=f"{part} {name}") for part in PARTS}
    y = pairs["adv_test"].xy()[1]
    result = {"pairs": {p: len(v) for p, v in pairs.items()}, "scale": feature_scale(target, pairs["adv_test"]), "auc": {}}
    for variant, params in VARIANTS.items():
        rows = {}
        for sigma in [*sigmas, "auto"]:
            start = time.perf_counter()
            scores, raw, fitted_sigma = kd_scores(target, pairs, params | {"bandwidth": sigma})
            # auc_raw: lower density = adversarial, no fitted sign or scale (a check on the regression)
            rows[str(sigma)] = {"sigma": fitted_sigma, "auc": float(roc_auc_score(y, scores)),
                                "auc_raw": float(roc_auc_score(y, -raw)), "seconds": time.perf_counter() - start}
            if sigma == "auto" and variant == "train":
                result["auto_subsets"] = subset_aucs(target, pairs["adv_test"], scores)
        result["auc"][variant] = rows
        click.echo(f"{name} {variant}: " + ", ".join(f"σ {r['sigma']:.3g} → {100 * r['auc']:.1f} (raw {100 * r['auc_raw']:.1f})"
                                                     for r in rows.values()))
    return result


@click.command(cls=benchlib.BenchmarkCommand)
@click.option("--model-uri", default=None, help="Registered model (default: the pneumonia champion).")
@click.option("--data-dir", envvar="MEDART_DATA_DIR", required=True, help="Folder holding pneumoniamnist.npz.")
@click.option("--attacks", default="bim,pgd", show_default=True)
@click.option("--eps", type=options.Eps(), default="8/255", show_default=True)
@click.option("--max-examples", type=int, default=400, show_default=True, help="AdvTrain + AdvTest images attacked.")
@click.option("--reference-size", type=int, default=1000, show_default=True, help="Clean Train references.")
@click.option("--sigmas", default="0.01,0.03,0.1,0.3,1,3,10,30,100", show_default=True, help="Bandwidths σ to sweep.")
@click.option("--tracking-uri", default=None, help="MLflow store with the model (default: MLFLOW_TRACKING_URI).")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), default=benchlib.RESULTS / "kd_bandwidth-cpu.json",
              show_default=True)
def main(model_uri, data_dir, attacks, eps, max_examples, reference_size, sigmas, tracking_uri, output) -> None:
    """Sweep KD's bandwidth σ on AdvTest; write the JSON, a figure beside it and an MLflow run."""
    import torch

    from medart import tracking
    from medart.render.detection import bandwidth_figure
    from medart.stages.target import DataSpec, Target

    tracking.configure(tracking_uri)
    target = Target.load(model_uri, DataSpec("pneumonia", data_dir, download=False), max_examples, reference_size)
    grid = [float(s) for s in sigmas.split(",")]
    start = time.perf_counter()
    results = {name: study(target, name, eps, grid) for name in attacks.split(",")}
    payload = {"environment": benchlib.environment(torch.device("cpu")), "model_uri": target.model_uri, "eps": eps,
               "max_examples": max_examples, "reference_size": reference_size, "seconds": time.perf_counter() - start,
               "attacks": results}
    benchlib.write_json(output, payload)
    curves = {f"{a}, {v}": ([r["sigma"] for k, r in rows.items() if k != "auto"], [r["auc"] for k, r in rows.items() if k != "auto"])
              for a, res in results.items() for v, rows in res["auc"].items()}
    auto = {v: rows["auto"]["sigma"] for v, rows in next(iter(results.values()))["auc"].items()}
    fig = bandwidth_figure(curves, auto, f"KD: AUC against σ ({eps}, {target.model_uri})")
    fig.savefig(output.with_suffix(".png"), dpi=110)
    metrics = {f"{a}.auc_{v}_auto": rows["auto"]["auc"]
               for a, res in results.items() for v, rows in res["auc"].items()}
    benchlib.log_run(tracking_uri, "kd-bandwidth", {"eps": eps, "attacks": attacks, "sigmas": grid}, metrics, payload,
                     "kd_bandwidth.json")
    click.echo(f"wrote {output} and {output.with_suffix('.png')}")


if __name__ == "__main__":
    main()
