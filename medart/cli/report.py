"""``medart report``."""

from __future__ import annotations

import click

from medart.cli import attach_report, main, options, run_line


@main.command()
@click.option("--run-id", default=None, help="The run to report (its child runs, and theirs, are included).")
@click.option("--experiment", default=None, help="Or: an experiment, e.g. medart/pneumonia/analysis (its newest top-level runs).")
@click.option("--max-runs", type=click.IntRange(min=1), default=20, show_default=True, help="With --experiment: how many runs.")
@click.option("--output", type=click.Path(dir_okay=False), default=None,
              help="Also write the page to this HTML file. Default: no file; the page lives in the run.")
@click.option("--log/--no-log", default=True, show_default=True,
              help="Attach the page to the run as report.html, linked from its description (with --experiment: "
                   "to a new 'report' run); --no-log needs --output.")
@options.tracking_uri
def report(**opts) -> None:
    """One self-contained HTML page of a run or an experiment.

    The page holds the tables, figures and numbers of the run and all its descendant runs (child
    runs, theirs, and so on), with the paper's numbers beside them where the task matches.

    Example: medart report --run-id 0123abcd… --output report.html
    """
    from medart import tracking
    from medart.errors import ConfigError
    from medart.stages.report import report_experiment

    run_id, experiment, log = opts["run_id"], opts["experiment"], opts["log"]
    if (run_id is None) == (experiment is None):
        raise ConfigError("give exactly one of `run_id` or `experiment`")
    tracking.configure(opts["tracking_uri"])
    if run_id:
        click.echo(attach_report(run_id, opts["output"], log))
    else:
        path, new_run = report_experiment(experiment, opts["output"], opts["max_runs"], log)
        if new_run:
            click.echo(run_line("report", new_run, "report.html" + (f", and {path}" if path else "")))
        else:
            click.echo(f"report: {path}")
