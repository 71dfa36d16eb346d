"""How long the small commands take to answer: ``medart --help``, ``medart attack --help`` and
``medart datasets``, each a whole process from start to exit, this checkout against an earlier one.

Each round runs every (command, checkout) once, in rotating order, so that load from other jobs
hits both checkouts of a command alike; the ratio this/baseline is taken per round and summarised
by its median. Process CPU seconds (the children's, from ``resource``) beside wall seconds: the
CPU time is what other jobs on a shared machine disturb least.

    git worktree add ../medart-before 149a09e     # the checkout to compare against
    PYTHONPATH=$PWD python benchmarks/cli_startup.py --baseline ../medart-before --data-dir "$MEDART_DATA_DIR"
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import click
import torch

import benchlib

COMMANDS = {"medart --help": ["--help"], "medart attack --help": ["attack", "--help"], "medart datasets": ["datasets"]}
_RUN = "from medart.cli import main; main()"  # the `medart` console script's body, with PYTHONPATH choosing the checkout


def _process(checkout: Path, args: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU seconds of one ``medart <args>`` process importing medart from ``checkout``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    # run from the checkout: `python -c` puts the current folder first on the path
    done = subprocess.run([sys.executable, "-c", _RUN, *args], env=env | {"PYTHONPATH": str(checkout)}, cwd=checkout,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise click.ClickException(f"medart {' '.join(args)} from {checkout} exited {done.returncode}: "
                                   f"{done.stderr.strip().splitlines()[-1:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


@click.command(cls=benchlib.BenchmarkCommand, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--baseline", type=click.Path(exists=True, file_okay=False), required=True,
              help="An earlier checkout of medart to compare against (e.g. a git worktree of an older commit).")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="The data folder `medart datasets` reports on ($MEDART_DATA_DIR for both checkouts).")
@click.option("--repeats", type=click.IntRange(min=1), default=9, show_default=True, help="Timed rounds.")
@click.option("--output", type=click.Path(dir_okay=False), default=None,
              help="Result JSON. Default: benchmarks/results/cli_startup.json.")
@click.option("--tracking-uri", default=None, help="MLflow store the run is logged in. Default: none logged.")
def main(baseline, data_dir, repeats, output, tracking_uri) -> None:
    """Time the small commands of this checkout against --baseline's."""
    here, before = benchlib.REPOSITORY, Path(baseline).resolve()
    env = dict(os.environ) | ({"MEDART_DATA_DIR": str(Path(data_dir).resolve())} if data_dir else {})
    variants = {}
    for name, args in COMMANDS.items():
        for which, checkout in (("after", here), ("before", before)):
            variants[f"{name}|{which}"] = (lambda c=checkout, a=args: _process(c, a, env))
    timings = benchlib.Timings()
    names = list(variants)
    for fn in variants.values():  # one untimed round: the first process of each reads everything from disk
        fn()
    for r in range(repeats):
        for name in names[r % len(names):] + names[: r % len(names)]:
            timings.add(name, *variants[name]())
        click.echo(f"round {r + 1}/{repeats}", err=True)
    results = []
    for name in COMMANDS:
        a, b = f"{name}|after", f"{name}|before"
        results.append({"command": name, "after_wall": benchlib.spread(timings.wall[a]),
                        "before_wall": benchlib.spread(timings.wall[b]), "after_cpu": benchlib.spread(timings.cpu[a]),
                        "before_cpu": benchlib.spread(timings.cpu[b]),
                        "ratio_wall": benchlib.spread([x / y for x, y in zip(timings.wall[a], timings.wall[b])]),
                        "ratio_cpu": benchlib.spread([x / y for x, y in zip(timings.cpu[a], timings.cpu[b])])})
    payload = {"benchmark": "cli_startup", **benchlib.environment(torch.device("cpu")), "repeats": repeats,
               "baseline_commit": _commit(before), "results": results}
    path = benchlib.write_json(output or benchlib.RESULTS / "cli_startup.json", payload)
    click.echo(benchlib.markdown_table(
        ["command", "before s", "after s", "after / before"],
        [[r["command"], f"{r['before_wall']['median']:.2f}", f"{r['after_wall']['median']:.2f}",
          f"{r['ratio_wall']['median']:.3f}"] for r in results]))
    click.echo(f"wrote {path}")
    if tracking_uri:
        benchlib.log_run(tracking_uri, "cli-startup", {"repeats": repeats, "baseline_commit": payload["baseline_commit"]},
                         {f"ratio.{r['command']}": r["ratio_wall"]["median"] for r in results}, payload, "cli_startup.json")


def _commit(checkout: Path) -> str | None:
    done = subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True, text=True)
    return done.stdout.strip() or None


if __name__ == "__main__":
    main()
