"""``medart detect`` and ``medart adaptive`` (the same stage with the adaptive attacks on)."""

from __future__ import annotations

import click

from medart.cli import attach_report, main, options, run_line

#: the options of both commands, in the order ``--help`` lists them
_study_options = options.stack(
    options.target_options,
    options.run_options,
    options.attacks(),
    options.eps(help="L∞ budget of every attack: a number or k/255."),
    options.steps,
    options.step_size,
    options.detectors("kd,lid,dfeat,qfeat,bu,mahalanobis"),
    click.option("--param", "params", multiple=True, metavar="DETECTOR.NAME=VALUE",
                 help="A detector setting, repeatable: --param lid.k=10 --param kd.bandwidth=0.5 --param lid.layers=input,layer4"),
    options.reference_size,
    click.option("--repeats", type=click.IntRange(min=1), default=1, show_default=True,
                 help="1: the AdvTrain/AdvTest split; more: also re-drawn stratified splits, reported as mean ± std."),
    click.option("--only-successful", is_flag=True,
                 help="Keep only adversarial examples that fool the model (Ma et al. 2018); default: every attacked image."),
    click.option("--transfer/--no-transfer", default=True, show_default=True,
                 help="Also score each detector on every other attack's examples (Table 5)."),
    options.report,
)

_adaptive_options = options.stack(
    click.option("--adaptive-weights", type=options.Weights(), default="0.01,0.1,1", show_default=True,
                 help="λ values of the adaptive loss (CW margin + λ · detector logit): one attack each, the best kept per image."),
    click.option("--adaptive-steps", type=click.IntRange(min=1), default=None,
                 help="Steps of the adaptive attacks (same step size). Default: the plain attack's."),
    click.option("--adaptive-restarts", type=click.IntRange(min=1), default=1, show_default=True,
                 help="Runs of the detector-aware attack per λ, the first from the plain attack's start, the others from "
                      "random ones; the best kept per image, so more never make it weaker."),
)


@main.command()
@_study_options
@click.option("--adaptive", is_flag=True,
              help="Also attack each fitted detector that has a differentiable path with an attack that knows it, and "
                   "every detector with feature matching; report AUC, success and undetected success (at 5 % false "
                   "positives) against the plain attack (as `medart adaptive`).")
@_adaptive_options
def detect(**opts) -> None:
    """Fit detectors on AdvTrain, score ROC-AUC on AdvTest, per attack and across attacks (Tables 4, 5).

    Example: medart detect --model-uri models:/medart-pneumonia@champion --dataset pneumonia --eps 1/255
    """
    _run(opts)


@main.command()
@_study_options
@_adaptive_options
def adaptive(**opts) -> None:
    """The detectors against attacks that know them and against feature matching (detect --adaptive).

    `medart detect --adaptive`: per attack at ε, the detector-aware attack (Carlini & Wagner 2017)
    on each detector with a differentiable path, and feature matching (Sabour et al. 2016) scored
    by every detector, beside the plain attack.

    Example: medart adaptive --dataset pneumonia --attacks bim --eps 8/255 --detectors kd,mahalanobis --adaptive-restarts 3
    """
    _run(opts | {"adaptive": True})


def _run(opts: dict) -> None:
    from medart import tracking
    from medart.models.loading import ModelSource
    from medart.render.detection import auc_table, transfer_table
    from medart.stages.adaptive import AdaptiveBudget
    from medart.stages.detect import DetectRequest, pair_counts, parse_detector_params
    from medart.stages.detect import detect as run_detect
    from medart.stages.target import DataSpec, RunOptions, Target, from_options

    tracking.configure(opts["tracking_uri"])
    budget = AdaptiveBudget(opts["adaptive_weights"], opts["adaptive_steps"], opts["adaptive_restarts"])
    request = from_options(DetectRequest, opts, params=parse_detector_params(opts["params"], opts["detectors"]),
                           budget=budget)
    target = Target.load(from_options(ModelSource, opts), from_options(DataSpec, opts), opts["max_examples"], opts["reference_size"])
    out = run_detect(target, request, from_options(RunOptions, opts))
    click.echo(run_line("detect", out.run_id, f"pairs (AdvTrain/AdvTest) {pair_counts(out.counts)}; "
                                              "figures/detection_auc.png, figures/roc_all.png, detection_auc.md"))
    repeats = request.repeats > 1
    click.echo(auc_table(out.intervals, out.auc if repeats else None, out.auc_std if repeats else None, out.check), nl=False)
    if out.transfer:
        click.echo("\n" + transfer_table(out.transfer, out.check), nl=False)
    if out.adaptive:
        from medart.render.detection import adaptive_table

        click.echo("\nadaptive.md, figures/adaptive.png:\n" + adaptive_table(out.adaptive), nl=False)
    if opts["report"]:
        click.echo(attach_report(out.run_id))
