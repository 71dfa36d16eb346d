"""``medart evaluate``."""

from __future__ import annotations

import click

from medart.cli import main, options


@main.command()
@options.model_uri()
@options.model_options
@options.data_options
@click.option("--max-eval", type=click.IntRange(min=2), default=None,
              help="Evaluate on a stratified subset of this size (and attack as many).")
@options.attacks(default="")
@click.option("--eps", type=options.EpsList(), default="1/255", show_default=True, help="Comma-separated ε values for --attacks.")
@options.run_options
@click.option("--compare-with", default=None,
              help="A second model to evaluate the same way: an alias of the same registered model (e.g. challenger) "
                   "or a URI; the model options (--input-size, --normalize, …) apply to both.")
def evaluate(**opts) -> None:
    """Clean (and, with --attacks, robust) accuracy and AUC of a model on the test split; the
    metrics are linked to the registered version's logged model.

    Example: medart evaluate --model-uri models:/medart-pneumonia@champion --dataset pneumonia --attacks fgsm,pgd --compare-with challenger
    """
    import dataclasses

    from medart import tracking
    from medart.render.tables import metric_columns
    from medart.stages.evaluate import evaluate as run_evaluate
    from medart.stages.target import DataSpec, ModelSource, RunOptions, Target, from_options

    tracking.configure(opts["tracking_uri"])
    data, run, source = from_options(DataSpec, opts), from_options(RunOptions, opts), from_options(ModelSource, opts)
    uris = [opts["model_uri"]]
    if other := opts["compare_with"]:
        uris.append(other if ":/" in other else f"{uris[0].split('@')[0]}@{other}")
    results = {}
    for uri in uris:
        target = Target.load(dataclasses.replace(source, model_uri=uri), data, opts["max_eval"])
        results[uri] = run_evaluate(target, opts["attacks"], opts["eps"], opts["max_eval"], run).metrics()
    click.echo(metric_columns(results), nl=False)
