"""``medart compare``."""

from __future__ import annotations

import click

from medart.cli import attach_report, main, options, run_line


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
@options.tracking_uri
@options.report
def compare(**opts) -> None:
    """Robustness of finished attack runs in one table and figure.

    Across datasets, models, attacks, ε and backends, plus RobustBench-style JSON in and out, logged
    as a run in medart/compare.

    Example: medart compare --dataset pneumonia --import robustbench/model_info/cifar10/Linf/Standard.json
    """
    from medart import tracking
    from medart.attacks.specs import PAPER_ATTACKS
    from medart.render.compare import compare_table, worst_case_table
    from medart.stages.compare import CompareRequest, compare as run_compare, worst_case
    from medart.stages.target import from_options

    tracking.configure(opts["tracking_uri"])
    out = run_compare(from_options(CompareRequest, opts))
    click.echo(run_line("compare", out.run_id, f"{len(out.rows)} rows; compare.md, figures/compare.png, robustbench/"
                         + (", tradeoff.md, figures/tradeoff.png" if out.tradeoff else "")))
    click.echo(compare_table(out.rows), nl=False)
    click.echo("\n" + worst_case_table(worst_case(out.rows), PAPER_ATTACKS), nl=False)
    if out.tradeoff:
        click.echo("\nClean accuracy against AutoAttack's (tradeoff.md, figures/tradeoff.png):\n\n" + out.tradeoff, nl=False)
    if opts["report"]:
        click.echo(attach_report(out.run_id))
