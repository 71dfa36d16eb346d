"""``medart analyze``."""

from __future__ import annotations

import click

from medart.catalog import ARCHS, DATASETS
from medart.cli import main, options


@main.command()
@options.model_uri()
@options.data_options
@options.max_examples
@options.run_options
@click.option("--attacks", default="pgd", show_default=True,
              help="Comma-separated attacks; the first one is drawn in the per-image figures, all get numbers.")
@click.option("--eps", default="1/255", show_default=True, help="L∞ budget of the attacks: a number or k/255.")
@click.option("--figures", default="all", show_default=True,
              help="Comma-separated: eps_curves, saliency, stages, landscape, embedding, gradcam (or all).")
@click.option("--curve-eps", default="0.5/255,1/255,2/255,4/255", show_default=True, help="ε values of the ε curves.")
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
@click.option("--landscape-max-eps", default="8/255", show_default=True, help="Largest ε1 and ε2 of the landscape grid.")
@click.option("--radius", default=None, help="L∞ radius of the sharpness number. Default: --eps.")
@click.option("--saliency-share", type=click.FloatRange(0, 1, min_open=True), default=0.5, show_default=True,
              help="A pixel is high-saliency when ≥ this share of its image's maximum.")
@click.option("--gradcam-layer", default="layer4", show_default=True, help="Layer whose output Grad-CAM weighs (layer3, layer4.1, …).")
@click.option("--gradcam-top", type=click.FloatRange(0, 1, min_open=True), default=0.2, show_default=True,
              help="Share of most-attended pixels whose IoU measures the clean/adversarial overlap.")
@click.option("--show", type=click.IntRange(1, 16), default=4, show_default=True, help="Images in the per-image figures.")
@click.option("--report/--no-report", default=True, show_default=True, help="Also write the run's HTML report (medart report).")
@click.option("--output", type=click.Path(dir_okay=False), default=None, help="Report file. Default: report-<run id>.html.")
def analyze(model_uri, dataset, data_dir, source, size, backend, max_examples, batch_size, seed, device, cache, tracking_uri,
            progress, attacks, eps, figures, curve_eps, compare_sweeps, surrogate_uris, surrogates, surrogate_arch,
            surrogate_epochs, surrogate_lr, surrogate_max_train, landscape_points, landscape_max_eps, radius, saliency_share,
            gradcam_layer, gradcam_top, show, report, output):
    """The paper's analysis figures for one model (Figs. 4-11), attached to one MLflow run.

    ε curves, saliency maps, early/late stage activations, loss landscape (with surrogate models),
    t-SNE of penultimate features and Grad-CAM, clean vs adversarial, with the numbers behind them
    as metrics, analysis.json and analysis.md.

    Example: medart analyze --model-uri models:/medart-pneumonia@champion --dataset pneumonia --attacks pgd --eps 1/255 --max-examples 64
    """
    from medart import tracking
    from medart.analysis.analyze import analyze_model, parse_figures
    from medart.analysis.report import report_run
    from medart.attacks import parse_eps, parse_eps_list, parse_names

    tracking.configure(tracking_uri)
    config = TrainConfig(epochs=surrogate_epochs, lr=surrogate_lr, batch_size=64, seed=seed, device=device)
    out = analyze_model(
        model_uri, dataset, parse_names(attacks), parse_eps(eps), data_dir, figures=parse_figures(figures), backend=backend,
        source=source, size=int(size), max_examples=max_examples, curve_eps=parse_eps_list(curve_eps),
        compare_sweeps=compare_sweeps, surrogate_uris=surrogate_uris,
        surrogates=(0 if surrogate_uris else 1) if surrogates is None else surrogates, surrogate_config=config,
        surrogate_arch=surrogate_arch, surrogate_max_train=surrogate_max_train, landscape_points=landscape_points,
        landscape_max_eps=parse_eps(landscape_max_eps), radius=None if radius is None else parse_eps(radius),
        saliency_share=saliency_share, gradcam_layer=gradcam_layer, gradcam_top=gradcam_top, show=show,
        batch_size=batch_size, seed=seed, device=device, use_cache=cache, progress=progress)
    click.echo(f"analysis run {out.run_id} ({out.seconds:.0f} s): {', '.join(out.figures)}, analysis.md, analysis.json")
    for key, value in out.summary.items():
        click.echo(f"  {key} = {value:.4f}")
    if report:
        click.echo(f"report {report_run(out.run_id, output)} (also the run's report.html)")
