"""Render the README's "Performance" section from the benchmark result files.

Every number comes from a JSON file the benchmark scripts wrote (``benchmarks/results/*.json``),
with the machine, date, commit and command recorded in it; nothing is typed by hand.

    python benchmarks/readme_tables.py                       # print the section
    python benchmarks/readme_tables.py --output benchmarks/results/performance.md
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

RESULTS = Path(__file__).resolve().parent / "results"


def provenance(result: dict) -> str:
    m = result["machine"]
    where = f"GPU {m['gpu']}" if m.get("gpu") else f"CPU, {m['torch_threads']} torch thread(s)"
    load = ", ".join(f"{v:.1f}" for v in m.get("load_average_at_start", []))
    commit = (result.get("git_commit") or "unknown")[:10]
    return (f"*{m['cores']} cores of {m['cpu']}, {where}; {result['date'][:10]}, commit `{commit}`; load average at start "
            f"{load}.*\n\n```bash\n{result['command']}\n```\n")


def table(header: list[str], rows: list[list]) -> str:
    return "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
                      *["| " + " | ".join(str(c) for c in row) + " |" for row in rows]]) + "\n"


def spread(s: dict, digits: int = 2) -> str:
    return f"{s['median']:.{digits}f} [{s['q1']:.{digits}f}–{s['q3']:.{digits}f}]" if s["n"] > 1 else f"{s['median']:.{digits}f}"


def targets(result: dict) -> str:
    lines = []
    for c in result.get("targets", []):
        if c.get("applies") is False:
            status = "not applicable to this configuration"
        else:
            status = "met" if c["met"] else "**missed**"
        where = " ".join(str(c[k]) + ("px" if k == "size" else "") for k in ("size", "attack") if k in c)
        value = c["value"]
        shown = "n/a" if value is None else (f"{value:.3f}" if abs(value) < 1e3 else f"{value:.0f}")
        if "value_cpu" in c:
            shown = f"wall-clock {shown} — {status}; CPU time {c['value_cpu']:.3f} — {'met' if c['met_cpu'] else '**missed**'}"
        else:
            shown = f"{shown} — {status}"
        lines.append(f"- {c['target']}{' (' + where + ')' if where else ''}: {shown}")
    return "\n".join(lines) + "\n"


def attack_throughput(r: dict) -> str:
    variants = ["bare", "torchattacks", "art", "medart-torchattacks", "medart-art"]
    def rate(x, v):  # per wall-clock second / per CPU second of the process
        work = x["batch"] * x["steps"]
        return f"{work / x['variants'][v]['wall_seconds']['median']:.1f} / {work / x['variants'][v]['cpu_seconds']['median']:.1f}"

    speed = table(["input", "batch", "attack × steps", *variants],
                  [[f"{x['size']}px", x["batch"], f"{x['attack']} × {x['steps']}", *[rate(x, v) for v in variants]]
                   for x in r["results"]])
    ratio_names = ["medart-art/art", "medart-torchattacks/torchattacks", "art/bare", "torchattacks/bare", "medart-art/bare",
                   "medart-torchattacks/bare"]
    ratios = table(["input", "attack", "measure", *ratio_names],
                   [[f"{x['size']}px", x["attack"], measure, *[spread(x[key][k]) for k in ratio_names]]
                    for x in r["results"] for measure, key in (("wall", "ratios"), ("CPU", "cpu_ratios"))])
    return (f"#### Attack throughput ({r['model']})\n\n{provenance(r)}\nImage·steps per wall-clock second / per "
            f"CPU second of the process, medians of {r['config']['repeats']} interleaved rounds:\n\n{speed}\nThroughput ratios, median [quartiles] of the "
            f"per-round ratios (1.00 = as fast), by wall-clock time and by the process's CPU time (which other jobs on a "
            f"shared machine disturb less):\n\n{ratios}\n{targets(r)}")


def detector_features(r: dict) -> str:
    c = r["config"]
    rows = []
    for x in r["results"]:
        for what, label in (("lid", "LID, all stages, end to end"), ("lid_estimator", "LID from activations"),
                            ("kd", "KD, end to end"), ("kd_estimator", "KD from features")):
            t = x["times"]
            rows.append([x["n"], x["batches"], label, f"{t[what + '.medart']['wall_seconds']['median']:.3g}",
                         f"{t[what + '.reference']['wall_seconds']['median']:.3g}", spread(x["speedups"][what]),
                         f"{x['max_rel_diff'][what]:.1e}"])
    speed = table(["N clean + N adv", "mini-batches", "features", "medart s", "reference s", "speed-up", "max rel diff"], rows)
    mem_rows = [[x["n"], name.replace(".", " "), f"{m['rss_peak_mib']:.0f}" if m["rss_peak_mib"] is not None else "n/a",
                 f"{m['tracemalloc_peak_mib']:.1f}"]
                for x in r["results"] for name, m in x["memory"].items() if name.split(".")[0] in ("lid", "kd")]
    memory = table(["N", "variant", "peak RSS above start (MiB)", "Python/NumPy peak (MiB)"], mem_rows)
    last = r["results"][-1]
    notes = (f"Scikit-learn's default tree (`leaf_size=40`, as Feinman et al. ran it) is itself off the exact kernel sum "
             f"by up to {last['max_rel_diff']['kd_sklearn_default_tree_vs_exact']:.1e} relative here, so the KD reference "
             "puts every reference in one leaf. Ma et al.'s published `mle_batch` drops the nearest clean neighbour of "
             "every query, adversarial ones included (usually the example's own clean source); medart drops only an "
             "input's own copy. On these inputs the adversarial LIDs of the two readings differ by a median of "
             + ", ".join(f"{layer} {v:.0%}" for layer, v in last["lid_published_adv_median_rel_gap"].items()) + ".\n")
    return (f"#### Detector features ({c['model']}, {c['size']} px, k = {c['k']}, mini-batches of {c['batch_size']}, "
            f"{c['references']} KD references, {c['threads']} torch thread(s))\n\n{provenance(r)}\nSeconds (median of "
            f"{c['repeats']} interleaved rounds) and speed-up (reference time / medart time per round, median [quartiles]); "
            f"\"end to end\" includes the forward passes, done the same way by both:\n\n{speed}\nPeak memory:\n\n"
            f"{memory}\n{notes}\n{targets(r)}")


def scaling(r: dict) -> str:
    stages = ("attack", "detect", "predict")

    def rows(by, growth, key, unit):
        out = []
        for row, g in zip(by, growth):
            cells = [f"{row[key]}{unit}", f"{g['expected_linear']:.2f}×", f"{row['pipeline_seconds']['median']:.1f} s",
                     f"{g['pipeline_time']:.2f}×"]
            for s in stages:
                mem = row["stages"][s]["rss_peak_mib"]
                cells.append(f"{row['stages'][s]['seconds']['median']:.2f} s / {'n/a' if mem is None else f'{mem:.0f} MiB'}")
            out.append(cells)
        return out

    header = ["", "linear growth", "pipeline", "measured growth", *[f"{s} time / peak memory" for s in stages]]
    c = r["config"]
    slope = r.get("pipeline_slope_in_n")
    slope_line = "" if slope is None else (f"Log-log slope of the pipeline time in N: {slope:.2f} (1 = linear); per stage "
                                           + ", ".join(f"{s} {v:.2f}" for s, v in r["stage_slopes_in_n"].items()) + ".\n\n")
    return (f"#### Scaling ({c['model']}; PGD × {c['steps']}, LID + KD, prediction)\n\n{provenance(r)}\n"
            f"Number of images at {c['base_size']} px:\n\n{table(header, rows(r['by_n'], r['growth_n'], 'n', ''))}\n"
            f"Image size at {c['size_n']} images (linear = ∝ pixels):\n\n"
            f"{table(header, rows(r['by_size'], r['growth_size'], 'size', 'px'))}\n{slope_line}{targets(r)}")


def paper_fidelity(r: dict) -> str:
    c = r["config"]
    t = r["tables"]
    scope = "all test images" if c["max_examples"] is None else f"{c['max_examples']} test images"
    return (f"#### Paper fidelity (ResNet-50 from scratch, 28 px, {c['epochs']} epochs, lr {c['lr']}; {scope}; "
            f"{c['backend']} backend)\n\n{provenance(r)}\nTable 2 (ε = 1/255; paper: Chest X-Ray):\n\n{t['table2.md']}\n"
            f"Table 3 (accuracy %):\n\n{t['table3.md']}\nTable 4 (detection AUC %, ε = 1/255; paper in brackets):\n\n"
            f"{t['table4.md']}\nTable 5 (transfer):\n\n{t['table5.md']}\nWall time:\n\n{t['stages.md']}\n{targets(r)}")


INTRO = """## Performance

Measured by the scripts in `benchmarks/` (each has `--help`, writes a JSON file under
`benchmarks/results/` and logs a run in the MLflow experiment `medart/benchmarks`). This section
is generated from those files by `python benchmarks/readme_tables.py`; every block names the
machine, date, commit and command it was measured with. Timings interleave the variants (each
round runs every variant once, in rotating order) and report medians with quartiles, because
shared machines are noisy; ratios are computed per round. On a GPU the scripts pick CUDA by
themselves (`--device auto`); there, the 224 × 224 throughput at batch 64 is

```bash
PYTHONPATH=$PWD python benchmarks/attack_throughput.py --sizes 28,64,224 --attacks bim,pgd --repeats 10
```

(on CUDA the batch defaults to 64 at every size; the result goes to
`benchmarks/results/attack_throughput-cuda.json`, beside the CPU file, and appears here on the
next rendering).

- **Attack throughput** — image·steps per second of BIM/PGD on one batch: a bare PyTorch loop
  doing the same steps (the floor), torchattacks and ART called directly, and medart through each
  backend (`make_attack(...).generate`).
- **Detector features** — medart's KD and LID (Ma et al.'s mini-batch mode, every ResNet stage)
  against references written in the benchmark after the published code (per-batch SciPy `cdist`
  and sort for LID, scikit-learn `KernelDensity.score_samples` per sample for KD): values,
  time and peak memory at two numbers of mini-batches.
- **Scaling** — attack, detection and prediction as the number of images doubles and as the
  images grow, next to linear growth.
- **Paper fidelity** — the whole pipeline on the real chest X-ray file, next to the paper's
  Chest X-Ray numbers, with the wall time of each stage.
"""

RENDERERS = {"attack_throughput": attack_throughput, "detector_features": detector_features, "scaling": scaling,
             "paper_fidelity": paper_fidelity}
ORDER = list(RENDERERS)


def render(paths: list[Path]) -> str:
    """The Performance section for the result files ``paths`` (unknown files are skipped)."""
    results = []
    for path in paths:
        data = json.loads(Path(path).read_text())
        if data.get("benchmark") in RENDERERS:
            results.append(data)
    results.sort(key=lambda d: (ORDER.index(d["benchmark"]), d["machine"]["device"]))
    parts = [INTRO]
    parts += [RENDERERS[d["benchmark"]](d) for d in results]
    return "\n".join(parts)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("files", nargs=-1, type=click.Path(exists=True, dir_okay=False))
@click.option("--output", type=click.Path(dir_okay=False), default=None, help="Write the section here instead of printing it.")
def main(files, output) -> None:
    """Render the README "Performance" section from FILES (default: benchmarks/results/*.json)."""
    paths = [Path(f) for f in files] or sorted(RESULTS.glob("*.json"))
    if not paths:
        raise click.ClickException(f"no result files in {RESULTS}; run the benchmark scripts first")
    text = render(paths)
    if output:
        tmp = Path(f"{output}.{os.getpid()}.tmp")
        tmp.write_text(text)
        os.replace(tmp, output)
    else:
        click.echo(text)


if __name__ == "__main__":
    main()
