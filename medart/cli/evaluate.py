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
@click.option("--gate", type=options.GateText(), default=None, metavar="METRIC>=BOUND,…",
              help="Move the --model-uri alias (champion) to the --compare-with version only if it passes every term: "
                   "METRIC is clean or ATTACK@EPS (e.g. pgd@2/255), BOUND a fraction (0.85), a percentage, champion "
                   "or champion-ci (the low end of the champion's 95 % Wilson interval). The gate's attacks run "
                   "(alone when --attacks is empty). A refused promotion exits with code 3. See docs/hardening.md.")
def evaluate(**opts) -> None:
    """Clean (and, with --attacks, robust) accuracy and AUC of a model on the test split; the
    metrics are linked to the registered version's logged model.

    Example: medart evaluate --model-uri models:/medart-pneumonia@champion --dataset pneumonia --attacks fgsm,pgd --compare-with challenger

    Example: medart evaluate --dataset pneumonia --attacks autoattack --eps 1/255,4/255 --checks

    Example (a CI gate: exit 0 promoted, 3 refused): medart evaluate --dataset pneumonia --compare-with challenger
    --gate "clean>=0.85,pgd@2/255>=champion-ci"
    """
    import dataclasses
    import sys

    from medart import tracking
    from medart.attacks.checklist import ChecklistPlan
    from medart.errors import ConfigError
    from medart.models.loading import ModelSource
    from medart.render.checks import checklist_table
    from medart.render.tables import metric_columns
    from medart.stages.evaluate import evaluate as run_evaluate
    from medart.stages.target import DataSpec, RunOptions, Target, from_options

    tracking.configure(opts["tracking_uri"])
    gate, attacks, eps = opts["gate"], opts["attacks"], opts["eps"]
    if gate is not None and not opts["compare_with"]:
        raise ConfigError("`gate` decides whether a challenger replaces the champion: give `compare_with` (e.g. challenger)")
    data, run, source = from_options(DataSpec, opts), from_options(RunOptions, opts), from_options(ModelSource, opts)
    targets = [Target.load(source, data, opts["max_eval"])]  # without --model-uri: the dataset's champion
    if other := opts["compare_with"]:
        uri = other if ":/" in other else f"{targets[0].model_uri.split('@')[0]}@{other}"
        targets.append(Target.load(dataclasses.replace(source, model_uri=uri), data, opts["max_eval"]))
    if gate is not None:
        from medart.stages.gate import GatePlan, apply_gate

        gate_plan = GatePlan.resolve(targets[0].model_uri, targets[1].model_uri)  # before anything runs
        needed = gate.attacks()
        attacks = tuple(dict.fromkeys([*attacks, *(a for a, _ in needed)]))
        eps = list(dict.fromkeys([*(eps if opts["attacks"] else []), *(e for _, e in needed)]))
    plan = ChecklistPlan(tuple(eps), opts["check_steps"], opts["check_queries"]) if opts["checks"] else None
    results, tables, outcomes = {}, {}, []
    for target in targets:
        outcome = run_evaluate(target, attacks, eps, run, plan)
        outcomes.append(outcome)
        results[target.model_uri], tables[target.model_uri] = outcome.metrics(), (outcome.checks, int(outcome.clean["n"]))
        click.echo(run_line("evaluate", outcome.run_id, f"{target.model_uri} on {int(outcome.clean['n'])} test images"))
    click.echo(metric_columns(results), nl=False)
    for uri, (checks, n) in tables.items():
        if checks:
            click.echo(f"\nchecklist of {uri}:\n\n{checklist_table(checks, n)}", nl=False)
    if gate is not None:
        from medart.gate import EXIT_REFUSED

        gated = apply_gate(gate, gate_plan, *outcomes)
        where = f"{gate_plan.name}@{gate_plan.alias}"
        click.echo(f"\ngate {gate.text()} on version {gate_plan.challenger_version} (challenger) against "
                   f"{gate_plan.champion_version} ({gate_plan.alias}):")
        for verdict in gated.decision.verdicts:
            click.echo(f"  {'pass' if verdict.passed else 'FAIL'}  {verdict.line()}")
        if gated.decision.promote:
            click.echo(f"PROMOTED: {where} -> version {gate_plan.challenger_version}")
        else:
            click.echo(f"REFUSED: {where} stays on version {gate_plan.champion_version}; {gated.decision.reason}")
            sys.exit(EXIT_REFUSED)
