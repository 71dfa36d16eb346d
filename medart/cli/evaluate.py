"""``medart evaluate``."""

from __future__ import annotations

import click

from medart.cli import main, options, run_line


@main.command()
@options.model_uri()
@options.model_options
@options.data_options
@click.option("--max-eval", type=click.IntRange(min=2), default=None,
              help="Evaluate on a stratified subset of this many test images: the same images, clean and attacked.")
@options.attacks(default="")
@click.option("--eps", type=options.EpsList(), default="1/255", show_default=True, help="Comma-separated ε values for --attacks.")
@click.option("--checks", is_flag=True,
              help="Also run the evaluation checklist (Carlini et al. 2019) on the attacked images at the largest --eps: "
                   "ε-monotonicity, ε = 1, iterative vs one step, white- vs black-box, more budget, vanishing gradients.")
@click.option("--check-steps", type=click.IntRange(min=1), default=100, show_default=True,
              help="APGD steps of the checklist (it also runs twice as many with two restarts).")
@click.option("--check-queries", type=click.IntRange(min=1), default=5000, show_default=True,
              help="Square queries of the checklist.")
@options.run_options
@click.option("--compare-with", default=None,
              help="A second model to evaluate the same way: an alias of the same registered model (e.g. challenger) "
                   "or a URI; the model options (--input-size, --normalize, …) apply to both.")
def evaluate(**opts) -> None:
    """Clean (and, with --attacks, robust) accuracy and AUC of a model on the test split; the
    metrics are linked to the registered version's logged model.

    Example: medart evaluate --model-uri models:/medart-pneumonia@champion --dataset pneumonia --attacks fgsm,pgd --compare-with challenger

    Example: medart evaluate --dataset pneumonia --attacks autoattack --eps 1/255,4/255 --checks
    """
    import dataclasses

    from medart import tracking
    from medart.attacks.checklist import ChecklistPlan
    from medart.models.loading import ModelSource
    from medart.render.checks import checklist_table
    from medart.render.tables import metric_columns
    from medart.stages.evaluate import evaluate as run_evaluate
    from medart.stages.target import DataSpec, RunOptions, Target, from_options

    tracking.configure(opts["tracking_uri"])
    data, run, source = from_options(DataSpec, opts), from_options(RunOptions, opts), from_options(ModelSource, opts)
    targets = [Target.load(source, data, opts["max_eval"])]  # without --model-uri: the dataset's champion
    if other := opts["compare_with"]:
        uri = other if ":/" in other else f"{targets[0].model_uri.split('@')[0]}@{other}"
        targets.append(Target.load(dataclasses.replace(source, model_uri=uri), data, opts["max_eval"]))
    plan = ChecklistPlan(tuple(opts["eps"]), opts["check_steps"], opts["check_queries"]) if opts["checks"] else None
    results, tables = {}, {}
    for target in targets:
        outcome = run_evaluate(target, opts["attacks"], opts["eps"], run, plan)
        results[target.model_uri], tables[target.model_uri] = outcome.metrics(), outcome.checks
        click.echo(run_line("evaluate", outcome.run_id, f"{target.model_uri} on {int(outcome.clean['n'])} test images"))
    click.echo(metric_columns(results), nl=False)
    for uri, checks in tables.items():
        if checks:
            click.echo(f"\nchecklist of {uri}:\n\n{checklist_table(checks)}", nl=False)
