"""``medart compare``."""

from __future__ import annotations

import click

from medart.catalog import ARCHS, DATASETS
from medart.cli import main, options


@main.command()
@click.option("--experiment", "experiments", multiple=True,
              help="Experiment(s) to read attack runs from, repeatable (default: every experiment).")
@click.option("--dataset", default=None, help="Only runs on this dataset.")
@click.option("--model-uri", default=None, help="Only runs of this model URI (as the runs logged it).")
@click.option("--filter", "filter_string", default=None,
              help="An extra MLflow search filter, e.g. \"params.backend = 'art'\".")
@click.option("--import", "imports", multiple=True, type=click.Path(dir_okay=False),
              help="A RobustBench model-info JSON file to put in the same table, repeatable.")
@click.option("--export-dir", type=click.Path(file_okay=False), default=None,
              help="Also write the RobustBench-shaped JSON files here (they are always logged to the run).")
@click.option("--tracking-uri", default=None, envvar="MLFLOW_TRACKING_URI")
def compare(experiments, dataset, model_uri, filter_string, imports, export_dir, tracking_uri):
    """One table and figure of every finished attack run — across datasets, models, attacks, ε and
    backends — plus RobustBench-style JSON in and out, logged as a run in medart/compare.

    Example: medart compare --dataset pneumonia --import robustbench/model_info/cifar10/Linf/Standard.json
    """
    from medart import tracking
    from medart.compare import compare as run_compare
    from medart.compare import table

    tracking.configure(tracking_uri)
    run_id, rows = run_compare(experiments, dataset, model_uri, filter_string, imports, export_dir)
    click.echo(f"compare run {run_id}: {len(rows)} rows; compare.md, figures/compare.png, robustbench/")
    click.echo(table(rows), nl=False)
