"""``medart analyze``."""

from __future__ import annotations

import click

from medart.attacks.specs import ATTACKS
from medart.catalog import ARCHS
from medart.cli import attach_report, main, options, run_line


@main.command()
@options.target_options
@options.run_options
@click.option("--attacks", type=options.Names(ATTACKS, "attack"), default="pgd", show_default=True,
              help="Comma-separated attacks; the first one is drawn in the per-image figures, all get numbers.")
@options.eps(help="L∞ budget of the attacks: a number or k/255.")
@click.option("--figures", default="all", show_default=True,
              help="Comma-separated: eps_curves, saliency, stages, landscape, embedding, gradcam (or all).")
@click.option("--curve-eps", type=options.EpsList(), default="0.5/255,1/255,2/255,4/255", show_default=True,
              help="Comma-separated ε values of the ε curves.")
@click.option("--compare-sweep", "compare_sweeps", multiple=True, metavar="RUN_ID",
              help="A `medart sweep` run of another model or dataset to draw in the same ε-curve figure (repeatable).")
@click.option("--surrogate-uri", "surrogate_uris", multiple=True,
              help="A separately trained model whose gradient gives the landscape's g⊥ (repeatable).")
@click.option("--surrogates", type=click.IntRange(min=0), default=None,
              help="Train this many surrogates here (seeds seed+1…). Default: 1 unless --surrogate-uri is given.")
@click.option("--surrogate-arch", type=click.Choice(ARCHS), default="resnet18", show_default=True)
@click.option("--surrogate-epochs", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--surrogate-lr", type=click.FloatRange(min=0, min_open=True), default=0.01, show_default=True)
@click.option("--surrogate-max-train", type=click.IntRange(min=2), default=None, help="Train surrogates on a stratified subset.")
@click.option("--landscape-points", type=click.IntRange(min=2), default=9, show_default=True, help="Grid points per landscape axis.")
@click.option("--landscape-max-eps", type=options.Eps(), default="8/255", show_default=True,
              help="Largest ε1 and ε2 of the landscape grid.")
@click.option("--radius", type=options.Eps(), default=None, help="L∞ radius of the sharpness number. Default: --eps.")
@click.option("--saliency-share", type=click.FloatRange(0, 1, min_open=True), default=0.5, show_default=True,
              help="A pixel is high-saliency when ≥ this share of its image's maximum.")
@click.option("--gradcam-layer", default="layer4", show_default=True, help="Layer whose output Grad-CAM weighs (layer3, layer4.1, …).")
@click.option("--gradcam-top", type=click.FloatRange(0, 1, min_open=True), default=0.2, show_default=True,
              help="Share of most-attended pixels whose IoU measures the clean/adversarial overlap.")
@click.option("--show", type=click.IntRange(1, 16), default=4, show_default=True, help="Images in the per-image figures.")
@options.report
@click.option("--output", type=click.Path(dir_okay=False), default=None,
              help="Also write the HTML report to this file (with --no-report: only there). Default: no file.")
def analyze(**opts) -> None:
    """The paper's analysis figures of one model (Figures 4 to 11).

    All attached to one MLflow run: ε curves, saliency maps, early/late stage activations, loss landscape (with surrogate models),
    t-SNE of penultimate features and Grad-CAM, clean vs adversarial, with the numbers behind them
    as metrics, analysis.json and analysis.md.

    Example: medart analyze --model-uri models:/medart-pneumonia@champion --dataset pneumonia --attacks pgd --eps 1/255 --max-examples 64
    """
    from medart import tracking
    from medart.models.loading import ModelSource
    from medart.stages.analyze import AnalysisRequest, GradcamSettings, LandscapeSettings, SurrogateSettings
    from medart.stages.analyze import analyze as run_analysis
    from medart.stages.target import DataSpec, RunOptions, Target, from_options

    tracking.configure(opts["tracking_uri"])
    # the settings are checked before the model loads
    request = from_options(AnalysisRequest, opts, landscape=from_options(LandscapeSettings, opts),
                           surrogate=from_options(SurrogateSettings, opts), gradcam=from_options(GradcamSettings, opts))
    target = Target.load(from_options(ModelSource, opts), from_options(DataSpec, opts), opts["max_examples"])
    out = run_analysis(target, request, from_options(RunOptions, opts))
    click.echo(run_line("analysis", out.run_id, f"{out.seconds:.0f} s, {', '.join(out.figures)}, analysis.md, analysis.json"))
    for key, value in out.summary.items():
        click.echo(f"  {key} = {value:.4f}")
    if opts["report"] or opts["output"]:
        click.echo(attach_report(out.run_id, opts["output"], opts["report"]))
