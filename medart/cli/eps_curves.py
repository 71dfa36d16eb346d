"""``medart eps-curves``."""

from __future__ import annotations

import click

from medart.cli import main, options, run_line


@main.command("eps-curves")
@click.option("--run-id", "run_ids", multiple=True, required=True, help="A `medart sweep` run (repeatable: one curve each).")
@click.option("--label", "labels", multiple=True, help="Legend label per --run-id, in the same order. Default: dataset · model.")
@options.tracking_uri
def eps_curves(**opts) -> None:
    """Accuracy-vs-ε curves of several sweeps in one figure.

    One curve per sweep run (of other models or datasets), as in the paper's Figures 4 and 5.

    Example: medart eps-curves --run-id <sweep of model A> --run-id <sweep of model B> --label A --label B
    """
    from medart import tracking
    from medart.stages.compare import compare_sweeps

    tracking.configure(opts["tracking_uri"])
    run_id = compare_sweeps(opts["run_ids"], opts["labels"])
    click.echo(run_line("eps-curves", run_id, "figures/eps_curves.png, eps_curves.json"))
