"""Detector features: medart's KD and LID against straightforward references of the published code.

For N clean images and their N adversarial versions (medart's FGSM), on the paper's ResNet-50:

- **LID** over every stage (``input``, ``layer1`` … ``layer4``, ``dfeat``), k = 20, Ma et al.'s
  ``reference="batch"`` mode: each input against the clean images of its own mini-batch of 100,
  a clean image excluding itself. medart: ``LocalIntrinsicDimensionality(...)._features``
  (forward passes + :func:`medart.detectors.lid.lid_mle`). Reference, written here after Ma et
  al. 2018's ``get_lids_random_batch`` / ``mle_batch``: per mini-batch, the activations as NumPy
  arrays, ``scipy.spatial.distance.cdist``, a row-wise sort and ``-k / Σ log(r_i / r_k)``.
- **KD** of the 128-d penultimate features against clean Train references of the predicted
  class, exp(−d²/σ²). medart: ``KernelDensity`` (reference features, then
  :func:`medart.detectors.kd.log_kernel_density`). Reference, after Feinman et al. 2017's
  ``score_samples``: one scikit-learn ``KernelDensity`` per class (bandwidth σ/√2, the same
  kernel; one leaf, so every term is summed), scored one sample at a time; its normalised log
  density is shifted by (D/2)·log(πσ²) to medart's unnormalised mean.

Both sides compute in float64 from the same float32 activations (Ma et al.'s code used float32),
so values must agree to rounding: the maximum relative difference is reported. Each is timed
twice — end to end (forward passes included, done the same way by both sides: one pass per
mini-batch of 100) and the estimator alone on precomputed activations — and its peak memory is
measured at every N (resident-set high-water mark for everything including torch, ``tracemalloc``
for Python/NumPy), which shows whether memory grows with the number of mini-batches.

    PYTHONPATH=$PWD python benchmarks/detector_features.py --data-dir ../shared/data
"""

from __future__ import annotations

import math

import click
import numpy as np
import torch
from scipy.spatial.distance import cdist

import benchlib
from medart.cli import options

LAYERS = ("input", "layer1", "layer2", "layer3", "layer4", "dfeat")
LID_SPEEDUP_TARGET, KD_SPEEDUP_TARGET, REL_TARGET = 5.0, 10.0, 1e-6


# --- references, written as the published code does it ------------------------------------------

def mle_batch(data: np.ndarray, batch: np.ndarray, k: int, exclude_nearest: bool) -> np.ndarray:
    """Ma et al. 2018's ``mle_batch`` in float64: LID of each row of ``batch`` against ``data``.
    ``exclude_nearest`` drops the first sorted distance (the point itself when ``batch`` is ``data``)."""
    data = np.asarray(data, dtype=np.float64)
    batch = np.asarray(batch, dtype=np.float64)
    k = min(k, len(data) - 1)
    a = cdist(batch, data)
    a = np.apply_along_axis(np.sort, axis=1, arr=a)
    a = a[:, 1 : k + 1] if exclude_nearest else a[:, :k]
    with np.errstate(divide="ignore"):
        return np.apply_along_axis(lambda v: -k / np.sum(np.log(v / v[-1])), axis=1, arr=a)


def numpy_activations(model, x: torch.Tensor, device) -> dict[str, np.ndarray]:
    """One forward pass; every stage's output flattened, as NumPy ``(B, D)`` float32 (``input``:
    the pixels as given to the model, as medart's hooks see them)."""
    with torch.inference_mode():
        feats = model.features(x.to(device), [layer for layer in LAYERS if layer != "input"])
    feats["input"] = x
    return {layer: feats[layer].flatten(1).float().cpu().numpy() for layer in LAYERS}


def reference_lid(model, clean, adv, k, batch_size, device, published_adv: bool = False) -> np.ndarray:
    """LID features ``(2N, L)`` (clean rows, then adversarial), Ma et al.'s per-batch loop.

    ``published_adv``: drop the nearest clean neighbour of adversarial inputs too, as the
    published ``mle_batch`` does for every input (medart, and this reference by default, keep it:
    only an input's own copy is excluded)."""
    n = len(clean)
    out = np.empty((2 * n, len(LAYERS)))
    for start in range(0, n, batch_size):
        rows = slice(start, min(start + batch_size, n))
        a_clean = numpy_activations(model, clean[rows], device)
        a_adv = numpy_activations(model, adv[rows], device)
        for j, layer in enumerate(LAYERS):
            out[rows, j] = mle_batch(a_clean[layer], a_clean[layer], k, exclude_nearest=True)
            out[n + rows.start : n + rows.stop, j] = mle_batch(a_clean[layer], a_adv[layer], k, exclude_nearest=published_adv)
    return out


def reference_lid_estimator(acts: list[tuple[dict, dict]], k: int) -> np.ndarray:
    """The reference's LID step alone, on precomputed per-batch activations ``[(clean, adv), …]``."""
    clean_out, adv_out = [], []
    for a_clean, a_adv in acts:
        clean_out.append(np.stack([mle_batch(a_clean[l], a_clean[l], k, True) for l in LAYERS], axis=1))
        adv_out.append(np.stack([mle_batch(a_clean[l], a_adv[l], k, False) for l in LAYERS], axis=1))
    return np.concatenate(clean_out + adv_out)


def kd_shift(dim: int, sigma: float) -> float:
    """scikit-learn's Gaussian KDE with bandwidth σ/√2 is medart's exp(−d²/σ²) mean times
    (πσ²)^(−D/2): add this to its log density to get medart's value."""
    return 0.5 * dim * math.log(math.pi * sigma**2)


def reference_kd_estimator(z: np.ndarray, predicted: np.ndarray, z_ref: np.ndarray, y_ref: np.ndarray, sigma: float,
                           per_sample: bool = True, exact: bool = True) -> np.ndarray:
    """Feinman et al. 2017: a ``KernelDensity`` per class, ``score_samples`` one point at a time
    (``per_sample``; their ``score_point``) or all points of a class at once.

    ``exact``: one tree leaf holding every reference (``leaf_size`` ≥ their number), so scikit-learn
    sums every kernel term. Its default tree (``leaf_size=40``, what Feinman et al. ran) prunes
    nodes and is off by up to ~1e-6 relative on these features (more on tiny densities)."""
    from sklearn.neighbors import KernelDensity

    leaf = {"leaf_size": len(z_ref)} if exact else {}
    kdes = {c: KernelDensity(kernel="gaussian", bandwidth=sigma / math.sqrt(2), **leaf).fit(z_ref[y_ref == c])
            for c in np.unique(y_ref)}
    if per_sample:
        scores = np.array([kdes[c].score_samples(q.reshape(1, -1))[0] for q, c in zip(z, predicted)])
    else:
        scores = np.empty(len(z))
        for c in np.unique(predicted):
            scores[predicted == c] = kdes[c].score_samples(z[predicted == c])
    return scores + kd_shift(z.shape[1], sigma)


def reference_kd(model, x, x_ref, y_ref, sigma, batch_size, device) -> np.ndarray:
    """KD features end to end: forward passes for the references and the inputs, then Feinman's scoring."""
    def dfeat_and_logits(images):
        z, logits = [], []
        with torch.inference_mode():
            for start in range(0, len(images), batch_size):
                f = model.features(images[start : start + batch_size].to(device), ["dfeat", "logits"])
                z.append(f["dfeat"].float().cpu().numpy())
                logits.append(f["logits"].float().cpu().numpy())
        return np.concatenate(z), np.concatenate(logits)

    z_ref, _ = dfeat_and_logits(x_ref)
    z, logits = dfeat_and_logits(x)
    return reference_kd_estimator(z, logits.argmax(1), z_ref, y_ref, sigma)


# --- medart ---------------------------------------------------------------------------------------

def medart_lid(model, clean, adv, k, batch_size, device) -> np.ndarray:
    from medart.detectors.lid import LocalIntrinsicDimensionality

    detector = LocalIntrinsicDimensionality(model, layers=LAYERS, k=k, reference="batch", reference_size=batch_size,
                                            batch_size=batch_size, device=str(device))
    return detector._features(torch.cat([clean, adv]), x_clean=clean)


def medart_lid_estimator(acts: list[tuple[dict, dict]], k: int) -> np.ndarray:
    """medart's LID step alone (what ``_batch_features`` does after the forward passes)."""
    from medart.detectors.lid import lid_mle

    clean_out, adv_out = [], []
    for a_clean, a_adv in acts:
        size = len(a_clean[LAYERS[0]])
        self_index = torch.cat([torch.arange(size), torch.full((size,), -1)])
        lid = torch.stack([lid_mle(torch.cat([a_clean[l], a_adv[l]]), a_clean[l], k, self_index) for l in LAYERS], 1)
        clean_out.append(lid[:size])
        adv_out.append(lid[size:])
    return torch.cat(clean_out + adv_out).numpy()


def medart_kd(model, x, x_ref, y_ref, sigma, batch_size, device) -> np.ndarray:
    from medart.detectors.kd import KernelDensity

    detector = KernelDensity(model, bandwidth=sigma, batch_size=batch_size, device=str(device))
    detector._prepare(None, None, x_ref=x_ref, y_ref=y_ref.numpy())
    return detector._features(x)[:, 0]


def medart_kd_estimator(z: torch.Tensor, predicted: torch.Tensor, references: dict[int, torch.Tensor], sigma: float) -> np.ndarray:
    from medart.detectors.kd import log_kernel_density

    out = torch.empty(len(z), dtype=torch.float64)
    for c in predicted.unique().tolist():
        out[predicted == c] = log_kernel_density(z[predicted == c], references[c], sigma)
    return out.numpy()


# --- the benchmark --------------------------------------------------------------------------------

def max_rel_diff(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise AssertionError(f"shapes differ: {a.shape} vs {b.shape}")
    if not (np.isfinite(a) == np.isfinite(b)).all():
        return math.inf
    ok = np.isfinite(a)
    return float((np.abs(a[ok] - b[ok]) / np.maximum(np.abs(b[ok]), 1e-300)).max(initial=0.0))


def run_n(model, clean, adv, x_ref, y_ref, sigma, k, batch_size, device, repeats, say) -> dict:
    """Values, times and peak memory of every variant for one N."""
    n = len(clean)
    both = torch.cat([clean, adv])
    acts_np = [(numpy_activations(model, clean[s : s + batch_size], device), numpy_activations(model, adv[s : s + batch_size], device))
               for s in range(0, n, batch_size)]
    acts_t = [({l: torch.from_numpy(a) for l, a in c.items()}, {l: torch.from_numpy(a) for l, a in d.items()}) for c, d in acts_np]
    with torch.inference_mode():
        z_ref = torch.cat([model.features(x_ref[s : s + batch_size].to(device), ["dfeat"])["dfeat"].float().cpu()
                           for s in range(0, len(x_ref), batch_size)])
        q = [model.features(both[s : s + batch_size].to(device), ["dfeat", "logits"]) for s in range(0, len(both), batch_size)]
    z = torch.cat([f["dfeat"].float().cpu() for f in q])
    predicted = torch.cat([f["logits"].argmax(1).cpu() for f in q])
    references = {int(c): z_ref[y_ref == c] for c in y_ref.unique().tolist()}
    z_np, pred_np, z_ref_np, y_ref_np = z.double().numpy(), predicted.numpy(), z_ref.double().numpy(), y_ref.numpy()

    variants = {
        "lid.medart": lambda: medart_lid(model, clean, adv, k, batch_size, device),
        "lid.reference": lambda: reference_lid(model, clean, adv, k, batch_size, device),
        "lid_estimator.medart": lambda: medart_lid_estimator(acts_t, k),
        "lid_estimator.reference": lambda: reference_lid_estimator(acts_np, k),
        "kd.medart": lambda: medart_kd(model, both, x_ref, y_ref, sigma, batch_size, device),
        "kd.reference": lambda: reference_kd(model, both, x_ref, y_ref_np, sigma, batch_size, device),
        "kd_estimator.medart": lambda: medart_kd_estimator(z, predicted, references, sigma),
        "kd_estimator.reference": lambda: reference_kd_estimator(z_np, pred_np, z_ref_np, y_ref_np, sigma),
        "kd_estimator.reference_sklearn_batched": lambda: reference_kd_estimator(z_np, pred_np, z_ref_np, y_ref_np, sigma, False),
    }
    values = {name: np.asarray(fn()) for name, fn in variants.items()}  # also the warm-up call
    values["lid.published_adv"] = reference_lid(model, clean, adv, k, batch_size, device, published_adv=True)
    values["kd_estimator.sklearn_default_tree"] = reference_kd_estimator(z_np, pred_np, z_ref_np, y_ref_np, sigma, exact=False)
    comparisons = {
        "lid": max_rel_diff(values["lid.medart"], values["lid.reference"]),
        "lid_estimator": max_rel_diff(values["lid_estimator.medart"], values["lid_estimator.reference"]),
        "kd": max_rel_diff(values["kd.medart"], values["kd.reference"]),
        "kd_estimator": max_rel_diff(values["kd_estimator.medart"], values["kd_estimator.reference"]),
        "kd_estimator_sklearn_batched": max_rel_diff(values["kd_estimator.medart"], values["kd_estimator.reference_sklearn_batched"]),
        "lid_medart_vs_lid_estimator": max_rel_diff(values["lid.medart"], values["lid_estimator.medart"]),
        "kd_sklearn_default_tree_vs_exact": max_rel_diff(values["kd_estimator.sklearn_default_tree"], values["kd_estimator.reference"]),
    }
    per_layer = {layer: max_rel_diff(values["lid.medart"][:, j], values["lid.reference"][:, j]) for j, layer in enumerate(LAYERS)}
    published = values["lid.published_adv"][n:]
    ours = values["lid.reference"][n:]
    published_gap = {layer: float(np.median(np.abs(published[:, j] - ours[:, j]) / np.abs(ours[:, j])))
                     for j, layer in enumerate(LAYERS)}

    timings = benchlib.interleaved(variants, repeats, device, warmup=0, progress=say)
    memory = {}
    for name, fn in variants.items():
        with benchlib.peak_memory() as peak:
            fn()
        memory[name] = {"rss_peak_mib": peak[0].rss_mib, "tracemalloc_peak_mib": peak[0].tracemalloc_mib}
    times = {name: {"wall_seconds": benchlib.spread(timings.wall[name]), "cpu_seconds": benchlib.spread(timings.cpu[name])}
             for name in variants}
    speedups = {
        "lid": timings.paired_ratio("lid.medart", "lid.reference"),
        "lid_estimator": timings.paired_ratio("lid_estimator.medart", "lid_estimator.reference"),
        "kd": timings.paired_ratio("kd.medart", "kd.reference"),
        "kd_estimator": timings.paired_ratio("kd_estimator.medart", "kd_estimator.reference"),
        "kd_estimator_vs_sklearn_batched": timings.paired_ratio("kd_estimator.medart", "kd_estimator.reference_sklearn_batched"),
    }
    finite = {name: float(np.isfinite(v).mean()) for name, v in values.items()}
    return {"n": n, "batches": -(-n // batch_size), "max_rel_diff": comparisons, "lid_max_rel_diff_per_layer": per_layer,
            "lid_published_adv_median_rel_gap": published_gap, "finite_share": finite, "times": times, "speedups": speedups,
            "memory": memory, "lid_medians": dict(zip(LAYERS, np.median(values["lid.medart"], axis=0).tolist()))}


def check_targets(results: list[dict]) -> list[dict]:
    big = results[-1]
    checks = []
    for what, target in (("lid", LID_SPEEDUP_TARGET), ("kd", KD_SPEEDUP_TARGET)):
        for scope in (what, f"{what}_estimator"):
            value = big["speedups"][scope]["median"]
            checks.append({"target": f"{scope}: medart ≥ {target:g}× faster than the reference (N = {big['n']})",
                           "value": value, "met": value >= target})
        worst = max(r["max_rel_diff"][s] for r in results for s in (what, f"{what}_estimator"))
        checks.append({"target": f"{what}: values equal to ≤ {REL_TARGET:g} relative", "value": worst, "met": worst <= REL_TARGET})
    first, last = results[0], results[-1]
    for what in ("lid", "kd"):
        a, b = first["memory"][f"{what}.medart"]["rss_peak_mib"], last["memory"][f"{what}.medart"]["rss_peak_mib"]
        if a is not None and b is not None:
            # "does not grow": within 25 % (or 16 MiB, the allocator's granularity) across a ≥ 2× change in batches
            checks.append({"target": f"{what}: medart peak memory does not grow from {first['batches']} to {last['batches']} "
                                     "mini-batches", "value": b / max(a, 1e-9), "met": b <= max(1.25 * a, a + 16)})
    return checks


def tables(results: list[dict]) -> tuple[str, str]:
    def cell(s):
        return f"{s['median']:.3g}" + (f" [{s['q1']:.3g}–{s['q3']:.3g}]" if s["n"] > 1 else "")

    rows = []
    for r in results:
        for what in ("lid", "lid_estimator", "kd", "kd_estimator"):
            med, ref = r["times"][f"{what}.medart"], r["times"][f"{what}.reference"]
            rows.append([r["n"], r["batches"], what, cell(med["wall_seconds"]), cell(ref["wall_seconds"]), cell(r["speedups"][what]),
                         f"{r['max_rel_diff'][what]:.2e}"])
    speed = benchlib.markdown_table(["N", "mini-batches", "features", "medart s", "reference s", "speed-up", "max rel diff"], rows)
    mem_rows = []
    for r in results:
        for name, m in r["memory"].items():
            mem_rows.append([r["n"], name, f"{m['rss_peak_mib']:.1f}" if m["rss_peak_mib"] is not None else "n/a",
                             f"{m['tracemalloc_peak_mib']:.1f}"])
    memory = benchlib.markdown_table(["N", "variant", "peak RSS above start (MiB)", "tracemalloc peak (MiB)"], mem_rows)
    return speed, memory


@click.command(cls=benchlib.BenchmarkCommand, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--n", "n_values", default="200,800", show_default=True,
              help="Clean images (as many adversarial), comma-separated: memory is compared between the first and last.")
@click.option("--references", type=click.IntRange(min=2), default=1000, show_default=True, help="Clean Train images for KD.")
@click.option("--size", type=click.IntRange(min=8), default=28, show_default=True, help="Input side in pixels.")
@click.option("--arch", type=click.Choice(["resnet50", "resnet18", "resnet34"]), default="resnet50", show_default=True)
@click.option("--model-uri", default=None, help="A trained medart model (models:/…, runs:/…). Default: a randomly initialised one.")
@click.option("--k", type=click.IntRange(min=1), default=20, show_default=True, help="LID neighbours.")
@click.option("--batch-size", type=click.IntRange(min=2), default=100, show_default=True, help="LID mini-batch (Ma et al.: 100).")
@click.option("--eps", type=options.Eps(), default="1/255", show_default=True, help="FGSM ε that makes the adversarial images.")
@click.option("--repeats", type=click.IntRange(min=1), default=3, show_default=True, help="Interleaved timed rounds per N.")
@click.option("--data-dir", envvar="MEDART_DATA_DIR", default=None,
              help="Folder of pneumoniamnist.npz (its Train images); uniform random pixels without it.")
@click.option("--device", default="auto", show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=None, help="torch CPU threads (default: torch's choice).")
@click.option("--output", type=click.Path(dir_okay=False), default=None,
              help="Result JSON. Default: benchmarks/results/detector_features-<cpu|cuda>.json.")
@click.option("--tracking-uri", default=None, help="MLflow tracking URI (default $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db).")
@click.option("--progress/--no-progress", default=True, show_default=True)
def main(n_values, references, size, arch, model_uri, k, batch_size, eps, repeats, data_dir, device, threads, output,
         tracking_uri, progress) -> None:
    """KD and LID detector features: medart against per-batch NumPy/SciPy/scikit-learn references."""
    from medart.attacks import make_attack, make_spec
    from medart.detectors.kd import select_bandwidth
    from medart.errors import ConfigError
    from medart.models.evaluation import resolve_device

    if threads:
        torch.set_num_threads(threads)
    dev = resolve_device(device)
    ns = benchlib.parse_ints(n_values, "--n")
    if min(ns) <= k:
        raise ConfigError(f"every N must exceed k = {k} (LID needs k neighbours in a mini-batch); got --n {n_values}")
    if any(n % batch_size and n % batch_size <= k for n in ns):
        raise ConfigError(f"a last mini-batch of ≤ k images is folded into the one before by medart, not by Ma et al.'s "
                          f"code; use N that are multiples of --batch-size {batch_size}")
    env = benchlib.environment(dev)
    model, model_label = benchlib.benchmark_model(model_uri, arch, dev)
    num_classes = model.config["num_classes"]

    x_all, y_all, source = benchlib.chest_xrays(max(ns) + references, size, data_dir)
    x_ref, y_ref = x_all[max(ns):], y_all[max(ns):] % num_classes
    with torch.inference_mode():
        z_ref = torch.cat([model.features(x_ref[s : s + 256].to(dev), ["dfeat"])["dfeat"].float().cpu() for s in range(0, len(x_ref), 256)])
    sigma = select_bandwidth(z_ref)
    fgsm = make_attack(model, make_spec("fgsm", eps), num_classes, "torchattacks", batch_size=128, device=str(dev))
    results = []
    for n in ns:
        clean, labels = x_all[:n], y_all[:n] % num_classes
        adv = fgsm.generate(clean, labels)
        say = (lambda msg, n=n: click.echo(f"  N = {n}: {msg}", err=True)) if progress else None
        results.append(run_n(model, clean, adv, x_ref, y_ref, sigma, k, batch_size, dev, repeats, say))

    speed, memory = tables(results)
    checks = check_targets(results)
    config = {"n": ns, "references": references, "size": size, "arch": arch, "model": model_label, "k": k,
              "batch_size": batch_size, "layers": list(LAYERS), "eps": eps, "repeats": repeats, "sigma": sigma,
              "threads": torch.get_num_threads(), "data": source}
    payload = {"benchmark": "detector_features", **env, "config": config, "results": results, "targets": checks}
    path = benchlib.write_json(output or benchlib.RESULTS / f"detector_features-{dev.type}.json", payload)
    metrics = {}
    for r in results:
        metrics |= {f"n{r['n']}.speedup.{k_}": v["median"] for k_, v in r["speedups"].items()}
        metrics |= {f"n{r['n']}.max_rel_diff.{k_}": v for k_, v in r["max_rel_diff"].items()}
        metrics |= {f"n{r['n']}.peak_rss_mib.{k_}": v["rss_peak_mib"] for k_, v in r["memory"].items() if v["rss_peak_mib"] is not None}
    run_id = benchlib.log_run(tracking_uri, f"detector-features-{dev.type}", config, metrics, payload, "detector_features.json",
                              {"speed.md": speed, "memory.md": memory})
    click.echo(f"seconds, median [quartiles] of {repeats} interleaved rounds; speed-up = reference / medart per round "
               f"({benchlib.machine_label(env)}):\n{speed}")
    click.echo(f"peak memory:\n{memory}")
    for r in results:
        click.echo(f"N = {r['n']}: LID max rel diff per layer "
                   + ", ".join(f"{l} {v:.1e}" for l, v in r["lid_max_rel_diff_per_layer"].items())
                   + "; published mle_batch (nearest clean neighbour of adversarial inputs dropped) differs from "
                   + "medart's by a median of " + ", ".join(f"{l} {v:.1%}" for l, v in r["lid_published_adv_median_rel_gap"].items()))
    for c in checks:
        click.echo(f"{'MET ' if c['met'] else 'MISS'} {c['target']}: {c['value']:.3g}")
    click.echo(f"wrote {path}; MLflow run {run_id}")


if __name__ == "__main__":
    main()
