"""``medart sweep``."""

from __future__ import annotations

import click

from medart.cli import attach_report, main, options, run_line


@main.command()
@options.target_options
@options.run_options
@options.executor_options
@click.option("--retries", type=click.IntRange(min=0), default=None,
              help="Times Ray runs a failed cell again before reporting it (exit status 1); the other cells complete. Default: 2.")
@options.attacks()
@click.option("--eps", type=options.EpsList(), default="0.2/255,0.5/255,1/255,2/255,5/255", show_default=True,
              help="Comma-separated ε values (numbers or k/255).")
@options.report
@click.pass_context
def sweep(ctx, **opts) -> None:
    """Every attack at every ε as nested MLflow runs, with an accuracy-vs-ε figure and a table.

    With --executor ray each (attack, ε) cell is a Ray task logging its child run to the same
    tracking store, which every worker must reach (an MLflow server on a cluster).
    """
    from medart import tracking
    from medart.executors import make_executor
    from medart.models.loading import ModelSource
    from medart.render.sweep import sweep_table
    from medart.stages.sweep import sweep as run_sweep
    from medart.stages.target import DataSpec, RunOptions, Target, from_options

    tracking.configure(opts["tracking_uri"])
    with make_executor(opts["executor"], address=opts["address"], workers=opts["workers"], retries=opts["retries"],
                       cpus_per_task=opts["cpus_per_task"], gpus_per_task=opts["gpus_per_task"]) as executor:
        target = Target.load(from_options(ModelSource, opts), from_options(DataSpec, opts), opts["max_examples"])
        out = run_sweep(target, opts["attacks"], opts["eps"], from_options(RunOptions, opts, executor=executor))
    click.echo(run_line("sweep", out.run_id, f"{len(out.rows)} child runs; figure figures/accuracy_vs_eps.png, table sweep.md"))
    click.echo(sweep_table(out.rows, out.failed, out.check), nl=False)
    if opts["report"]:
        click.echo(attach_report(out.run_id))
    if out.failed:
        click.echo(f"Error: {len(out.failed)} of {len(out.rows) + len(out.failed)} cells failed (see the table above and "
                   f"sweep.json in run {out.run_id}); the others are logged", err=True)
        ctx.exit(1)
