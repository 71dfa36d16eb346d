"""Scaling: time and peak memory of the pipeline's stages as the images double and grow.

Stages, all through medart's API on the paper's ResNet-50 (randomly initialised unless
``--model-uri``; speed does not depend on the weights):

- ``attack``: PGD (``--steps`` steps, ε = 1/255) with ``make_attack(...).generate`` on N images;
- ``detect``: LID (fixed clean Train reference batch) and KD fitted on the N clean + N
  adversarial images and run on them (``make_detector``, ``fit``, ``detect``), against
  ``--references`` clean Train images;
- ``predict``: ``medart.models.evaluation.predict`` on the 2N images.

Two sweeps: N = 128 → 256 → 512 → 1024 at 28 px, and 28 → 64 → 128 px at a fixed N. Each
configuration runs once per round, rounds interleave the configurations, times are medians;
peak memory is the resident-set high-water mark above the level at the stage's start. The
measured growth is printed next to linear growth (∝ N, and ∝ pixels for the image size).

    PYTHONPATH=$PWD python benchmarks/scaling.py --data-dir ../shared/data
"""

from __future__ import annotations

import time

import click
import numpy as np
import torch
from torch.utils.data import TensorDataset

import benchlib

STAGES = ("attack", "detect", "predict")
SLOPE_TOLERANCE = 1.1  # "no worse than linear": log-log slope of the pipeline time in N at most this


def run_stages(model, x, y, x_ref, y_ref, steps, batch_size, device) -> dict[str, dict[str, float]]:
    """Seconds and peak resident memory (MiB) of each stage on images ``x`` with labels ``y``."""
    from medart.attacks import make_attack, make_spec
    from medart.detectors import make_detector
    from medart.models.evaluation import predict

    num_classes = model.config["num_classes"]
    out = {}

    def stage(name, fn):
        with benchlib.peak_memory(trace_python=False) as peak:
            benchlib.sync(device)
            start = time.perf_counter()
            result = fn()
            benchlib.sync(device)
            seconds = time.perf_counter() - start
        out[name] = {"seconds": seconds, "rss_peak_mib": peak[0].rss_mib}
        return result

    attack = make_attack(model, make_spec("pgd", "1/255", steps=steps), num_classes, "art", batch_size, str(device))
    adv = stage("attack", lambda: attack.generate(x, y))
    both = torch.cat([x, adv])
    is_adv = np.r_[np.zeros(len(x), np.int64), np.ones(len(x), np.int64)]

    def detect():
        for name in ("lid", "kd"):
            detector = make_detector(name, model, batch_size=100, device=str(device))
            detector.fit(both, is_adv, x_ref=x_ref, y_ref=y_ref.numpy())
            detector.detect(both)

    stage("detect", detect)
    stage("predict", lambda: predict(model, TensorDataset(both, torch.cat([y, y])), batch_size, device))
    return out


def sweep(configs: list[tuple[int, int]], model, x_pool, y_pool, x_ref_by_size, y_ref, steps, batch_size, device, repeats, say):
    """Every ``(n, size)`` once per round, rounds rotated; per configuration and stage the median
    seconds and the median peak memory over the rounds."""
    runs: dict[tuple[int, int], list[dict]] = {c: [] for c in configs}
    for r in range(repeats):
        for n, size in configs[r % len(configs):] + configs[: r % len(configs)]:
            runs[(n, size)].append(run_stages(model, x_pool[size][:n], y_pool[:n], x_ref_by_size[size], y_ref, steps,
                                              batch_size, device))
            if say:
                say(f"round {r + 1}/{repeats}: N = {n}, {size}px")
    rows = []
    for n, size in configs:
        row = {"n": n, "size": size, "stages": {}}
        for s in STAGES:
            seconds = [run[s]["seconds"] for run in runs[(n, size)]]
            memory = [run[s]["rss_peak_mib"] for run in runs[(n, size)] if run[s]["rss_peak_mib"] is not None]
            row["stages"][s] = {"seconds": benchlib.spread(seconds),
                                "rss_peak_mib": float(np.median(memory)) if memory else None}
        total = [sum(run[s]["seconds"] for s in STAGES) for run in runs[(n, size)]]
        row["pipeline_seconds"] = benchlib.spread(total)
        rows.append(row)
    return rows


def growth(rows: list[dict], key: str, expected: list[float]) -> list[dict]:
    """Each row's time and memory relative to the first row, next to the expected linear growth."""
    base = rows[0]
    out = []
    for row, exp in zip(rows, expected):
        g = {"expected_linear": exp, "pipeline_time": row["pipeline_seconds"]["median"] / base["pipeline_seconds"]["median"]}
        for s in STAGES:
            g[f"{s}_time"] = row["stages"][s]["seconds"]["median"] / base["stages"][s]["seconds"]["median"]
            m0, m = base["stages"][s]["rss_peak_mib"], row["stages"][s]["rss_peak_mib"]
            g[f"{s}_memory"] = m / m0 if m and m0 else None
        g[key] = row[key]
        out.append(g)
    return out


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares exponent b of y ∝ x^b."""
    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])


def table(rows: list[dict], growths: list[dict], key: str, unit: str) -> str:
    def fmt(v):
        return "n/a" if v is None else f"{v:.2f}×"

    body = []
    for row, g in zip(rows, growths):
        cells = [f"{row[key]}{unit}", fmt(g["expected_linear"]), f"{row['pipeline_seconds']['median']:.1f} s", fmt(g["pipeline_time"])]
        for s in STAGES:
            st = row["stages"][s]
            mem = "n/a" if st["rss_peak_mib"] is None else f"{st['rss_peak_mib']:.0f} MiB"
            cells.append(f"{st['seconds']['median']:.2f} s ({fmt(g[f'{s}_time'])}), {mem} ({fmt(g[f'{s}_memory'])})")
        body.append(cells)
    return benchlib.markdown_table([key, "linear growth", "pipeline", "pipeline growth",
                                    *[f"{s}: time (growth), peak memory (growth)" for s in STAGES]], body)


@click.command(cls=benchlib.BenchmarkCommand, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--n-values", default="128,256,512,1024", show_default=True, help="Numbers of images (at --base-size).")
@click.option("--sizes", default="28,64,128", show_default=True, help="Image sides in pixels (at --size-n images).")
@click.option("--base-size", type=click.IntRange(min=8), default=28, show_default=True, help="Image side of the N sweep.")
@click.option("--size-n", type=click.IntRange(min=1), default=64, show_default=True, help="Images in the size sweep.")
@click.option("--references", type=click.IntRange(min=101), default=200, show_default=True,
              help="Clean Train images for LID (100 drawn) and KD.")
@click.option("--steps", type=click.IntRange(min=1), default=2, show_default=True, help="PGD steps in the attack stage.")
@click.option("--batch-size", type=click.IntRange(min=1), default=128, show_default=True, help="Attack/predict batch.")
@click.option("--repeats", type=click.IntRange(min=1), default=3, show_default=True, help="Interleaved rounds.")
@click.option("--arch", type=click.Choice(["resnet50", "resnet18", "resnet34"]), default="resnet50", show_default=True)
@click.option("--model-uri", default=None, help="A trained medart model instead of a randomly initialised one.")
@click.option("--data-dir", envvar="MEDART_DATA_DIR", default=None,
              help="Folder of pneumoniamnist.npz (its Train images); uniform random pixels without it.")
@click.option("--device", default="auto", show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=None, help="torch CPU threads (default: torch's choice).")
@click.option("--output", type=click.Path(dir_okay=False), default=None,
              help="Result JSON. Default: benchmarks/results/scaling-<cpu|cuda>.json.")
@click.option("--tracking-uri", default=None, help="MLflow tracking URI (default $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db).")
@click.option("--progress/--no-progress", default=True, show_default=True)
def main(n_values, sizes, base_size, size_n, references, steps, batch_size, repeats, arch, model_uri, data_dir, device,
         threads, output, tracking_uri, progress) -> None:
    """Time and memory of attack, detection and prediction as the number of images and their size grow."""
    from medart.models.evaluation import resolve_device

    if threads:
        torch.set_num_threads(threads)
    dev = resolve_device(device)
    ns, side_list = benchlib.parse_ints(n_values, "--n-values"), benchlib.parse_ints(sizes, "--sizes")
    env = benchlib.environment(dev)
    model, model_label = benchlib.benchmark_model(model_uri, arch, dev)

    n_pool = max(max(ns), size_n)
    pool, refs, source = {}, {}, None
    for side in dict.fromkeys([base_size, *side_list]):
        x, y, source = benchlib.chest_xrays(n_pool + references, side, data_dir)
        pool[side], refs[side] = x[:n_pool], x[n_pool:]
        y_pool, y_ref = y[:n_pool], y[n_pool:]
    say = (lambda msg: click.echo(f"  {msg}", err=True)) if progress else None
    common = dict(model=model, x_pool=pool, y_pool=y_pool, x_ref_by_size=refs, y_ref=y_ref, steps=steps,
                  batch_size=batch_size, device=dev, repeats=repeats, say=say)
    by_n = sweep([(n, base_size) for n in ns], **common)
    by_size = sweep([(size_n, s) for s in side_list], **common)
    growth_n = growth(by_n, "n", [n / ns[0] for n in ns])
    growth_size = growth(by_size, "size", [(s / side_list[0]) ** 2 for s in side_list])
    exponent = slope(ns, [r["pipeline_seconds"]["median"] for r in by_n]) if len(ns) > 1 else None
    checks = [{"target": f"pipeline time no worse than linear in the number of images (log-log slope ≤ {SLOPE_TOLERANCE})",
               "value": exponent, "met": exponent is not None and exponent <= SLOPE_TOLERANCE}]
    table_n = table(by_n, growth_n, "n", "")
    table_size = table(by_size, growth_size, "size", "px")

    config = {"n_values": ns, "sizes": side_list, "base_size": base_size, "size_n": size_n, "references": references,
              "steps": steps, "batch_size": batch_size, "repeats": repeats, "model": model_label,
              "threads": torch.get_num_threads(), "data": source}
    payload = {"benchmark": "scaling", **env, "config": config, "by_n": by_n, "growth_n": growth_n, "by_size": by_size,
               "growth_size": growth_size, "pipeline_slope_in_n": exponent,
               "stage_slopes_in_n": {s: slope(ns, [r["stages"][s]["seconds"]["median"] for r in by_n]) for s in STAGES}
               if len(ns) > 1 else {}, "targets": checks}
    path = benchlib.write_json(output or benchlib.RESULTS / f"scaling-{dev.type}.json", payload)
    metrics = {f"n{r['n']}.{s}.seconds": r["stages"][s]["seconds"]["median"] for r in by_n for s in STAGES}
    metrics |= {f"{r['size']}px.{s}.seconds": r["stages"][s]["seconds"]["median"] for r in by_size for s in STAGES}
    if exponent is not None:
        metrics["pipeline_slope_in_n"] = exponent
    run_id = benchlib.log_run(tracking_uri, f"scaling-{dev.type}", config, metrics, payload, "scaling.json",
                              {"scaling_n.md": table_n, "scaling_size.md": table_size})
    click.echo(f"medians of {repeats} interleaved rounds ({benchlib.machine_label(env)}); growth relative to the first row:")
    click.echo(f"\nnumber of images ({base_size}px):\n{table_n}")
    click.echo(f"image size ({size_n} images; linear = ∝ pixels):\n{table_size}")
    if exponent is not None:
        click.echo("log-log slope in N: pipeline " + f"{exponent:.2f}, "
                   + ", ".join(f"{s} {v:.2f}" for s, v in payload["stage_slopes_in_n"].items()))
    for c in checks:
        click.echo(f"{'MET ' if c['met'] else 'MISS'} {c['target']}: {c['value'] if c['value'] is None else round(c['value'], 3)}")
    click.echo(f"wrote {path}; MLflow run {run_id}")


if __name__ == "__main__":
    main()
