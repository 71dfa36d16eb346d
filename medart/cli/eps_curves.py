"""``medart eps-curves``."""

from __future__ import annotations

import click

from medart.catalog import ARCHS, DATASETS
from medart.cli import main, options


@main.command("eps-curves")
@click.option("--run-id", "run_ids", multiple=True, required=True, help="A `medart sweep` run (repeatable: one curve each).")
@click.option("--label", "labels", multiple=True, help="Legend label per --run-id, in the same order. Default: dataset · model.")
@click.option("--tracking-uri", default=None, envvar="MLFLOW_TRACKING_URI")
def eps_curves(run_ids, labels, tracking_uri):
    """Accuracy-vs-ε curves of several sweeps (models or datasets) in one figure (Figs. 4 and 5).

    Example: medart eps-curves --run-id <sweep of model A> --run-id <sweep of model B> --label A --label B
    """
    from medart import tracking
    from medart.analysis.eps_curves import compare_sweeps

    tracking.configure(tracking_uri)
    run_id = compare_sweeps(run_ids, labels or None)
    click.echo(f"run {run_id}: figures/eps_curves.png, eps_curves.json")
