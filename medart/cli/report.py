"""``medart report``."""

from __future__ import annotations

import click

from medart.catalog import ARCHS, DATASETS
from medart.cli import main, options


@main.command()
@click.option("--run-id", default=None, help="The run to report (its child runs are included).")
@click.option("--experiment", default=None, help="Or: an experiment, e.g. medart/pneumonia/analysis (its newest top-level runs).")
@click.option("--max-runs", type=click.IntRange(min=1), default=20, show_default=True, help="With --experiment: how many runs.")
@click.option("--output", type=click.Path(dir_okay=False), default=None,
              help="HTML file to write. Default: report-<run id>.html or report-<experiment>.html.")
@click.option("--log/--no-log", default=True, show_default=True,
              help="Attach the page to the run as report.html (with --experiment: to a new 'report' run).")
@click.option("--tracking-uri", default=None, envvar="MLFLOW_TRACKING_URI")
def report(run_id, experiment, max_runs, output, log, tracking_uri):
    """A self-contained HTML page of a run's (or experiment's) tables and figures, with the paper's
    numbers beside them where the task matches.

    Example: medart report --run-id 0123abcd… --output report.html
    """
    from medart import tracking
    from medart.analysis.report import report_experiment, report_run
    from medart.errors import ConfigError

    if (run_id is None) == (experiment is None):
        raise ConfigError("give exactly one of --run-id or --experiment")
    tracking.configure(tracking_uri)
    if run_id:
        click.echo(f"report {report_run(run_id, output, log)}" + (" (also the run's report.html)" if log else ""))
    else:
        path, new_run = report_experiment(experiment, output, max_runs, log)
        click.echo(f"report {path}" + (f" (also report.html of run {new_run})" if new_run else ""))
