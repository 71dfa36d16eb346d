"""``medart detect``."""

from __future__ import annotations

import click

from medart.catalog import ARCHS, DATASETS
from medart.cli import main, options


@main.command()
@options.model_uri()
@options.data_options
@options.max_examples
@options.run_options
@click.option("--attacks", default="fgsm,bim,pgd,cw", show_default=True, help="Comma-separated attack names.")
@click.option("--eps", default="1/255", show_default=True, help="L∞ budget of every attack: a number or k/255.")
@click.option("--detectors", default="kd,lid,dfeat,qfeat,bu,mahalanobis", show_default=True,
              help="Comma-separated: kd, lid, dfeat, qfeat (the paper's), bu, mahalanobis, art_binary (ART's own).")
@click.option("--param", "params", multiple=True, metavar="DETECTOR.NAME=VALUE",
              help="A detector setting, repeatable: --param lid.k=10 --param kd.bandwidth=0.5 --param lid.layers=input,layer4")
@click.option("--reference-size", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Clean Train images that KD, LID and Mahalanobis measure against.")
@click.option("--repeats", type=click.IntRange(min=1), default=1, show_default=True,
              help="1: the AdvTrain/AdvTest split; more: also re-drawn stratified splits, reported as mean ± std.")
@click.option("--only-successful", is_flag=True,
              help="Keep only adversarial examples that fool the model (Ma et al. 2018); default: every attacked image.")
@click.option("--transfer/--no-transfer", default=True, show_default=True,
              help="Also score each detector on every other attack's examples (Table 5).")
def detect(model_uri, dataset, data_dir, source, size, backend, max_examples, batch_size, seed, device, cache,
           tracking_uri, progress, attacks, eps, detectors, params, reference_size, repeats, only_successful, transfer):
    """Fit detectors on AdvTrain, score ROC-AUC on AdvTest, per attack and across attacks (Tables 4, 5).

    Example: medart detect --model-uri models:/medart-pneumonia@champion --dataset pneumonia --eps 1/255
    """
    from medart import tracking
    from medart.attacks import parse_eps, parse_names
    from medart.detection import auc_table, detect_model, parse_detector_params, transfer_table
    from medart.detectors import DETECTORS

    tracking.configure(tracking_uri)
    names = parse_names(detectors, tuple(DETECTORS), "detector")
    out = detect_model(model_uri, dataset, parse_names(attacks), parse_eps(eps), names, backend, data_dir,
                       source=source, size=int(size), max_examples=max_examples, reference_size=reference_size,
                       repeats=repeats, only_successful=only_successful, transfer=transfer,
                       detector_params=parse_detector_params(params, names), batch_size=batch_size, seed=seed,
                       device=device, use_cache=cache, progress=progress)
    pairs = ", ".join(f"{a} {c['fit']}/{c['test']}" for a, c in out.counts.items())
    click.echo(f"detect run {out.run_id}: pairs (AdvTrain/AdvTest) {pairs}; figures/detection_auc.png, detection_auc.md")
    click.echo(auc_table(out.auc, out.auc_std if repeats > 1 else None), nl=False)
    if out.transfer:
        click.echo("\n" + transfer_table(out.transfer), nl=False)
