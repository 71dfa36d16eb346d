"""``medart`` command line: thin click faces on :mod:`medart.experiment`."""

from __future__ import annotations

import sys
import warnings

import click

from medart.errors import MedartError
from medart.models.resnet import ARCHS
from medart.models.training import MONITORS, TrainConfig


class ReportsUserErrors:
    """Mixin for click commands: reports :class:`MedartError` as one line (``Error: …``, exit 2),
    without a traceback, and an interrupt (Ctrl-C, SIGTERM, SIGHUP) as one line with exit 130, after
    the open MLflow runs have ended KILLED."""

    interrupted = ("open runs ended as KILLED; run the same command again to resume from the last completed stage "
                   "(trained model, cached adversarial examples)")

    def invoke(self, ctx: click.Context):
        from medart.tracking import stop_on_signals

        stop_on_signals()
        try:
            return super().invoke(ctx)
        except MedartError as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(2)
        except KeyboardInterrupt as exc:
            click.echo(f"Interrupted ({exc or 'SIGINT'}): {self.interrupted}", err=True)
            sys.exit(130)


class MedartGroup(ReportsUserErrors, click.Group):
    """The ``medart`` command group (see :class:`ReportsUserErrors`)."""


@click.group(cls=MedartGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="medart")
def main() -> None:
    """Attack medical image classifiers and detect the attacks (Ma et al., Pattern Recognition 2021).

    Every command logs an MLflow run. Runs go to --tracking-uri, else $MLFLOW_TRACKING_URI, else
    sqlite:///mlflow.db in the current folder; view them with
    `mlflow ui --backend-store-uri sqlite:///mlflow.db`.
    """
    # User-facing warnings (e.g. a local file that fails the official checksum) as one line each,
    # each text once: a sweep loads the same file for every cell.
    shown: set[str] = set()

    def show(message, category, *args, **kwargs) -> None:
        if str(message) not in shown:
            shown.add(str(message))
            click.echo(f"Warning: {message}", err=True)

    warnings.showwarning = show


def _datasets() -> list[str]:
    from medart.data.tasks import TASKS

    return list(TASKS)


@main.command()
@click.option("--dataset", required=True, type=click.Choice(_datasets()), help="Task to learn (see `medart datasets`).")
@click.option("--data-dir", type=click.Path(file_okay=False), envvar="MEDART_DATA_DIR", show_envvar=True,
              help="Folder of MedMNIST .npz files (or the original dataset's root with --source original). "
                   "Default: ~/.medart/data.")
@click.option("--source", type=click.Choice(["medmnist", "original"]), default="medmnist", show_default=True,
              help="MedMNIST .npz files, or the original public layout (NIH CSV, Kaggle DR, ISIC, class folders).")
@click.option("--size", type=click.Choice(["28", "64", "128", "224"]), default="28", show_default=True,
              help="Which MedMNIST file variant to read (pixels per side).")
@click.option("--image-size", type=click.IntRange(16, 1024), default=None,
              help="Side of the model's input; images are resized to it. Default: the file's size (224 for original).")
@click.option("--arch", type=click.Choice(ARCHS), default="resnet50", show_default=True,
              help="Backbone under the paper's head; smallcnn is a ~0.3 M-parameter CNN (from scratch only).")
@click.option("--pretrained", default="imagenet", show_default=True,
              help="'imagenet' (torchvision weights, cached or downloaded), 'none' (from scratch), or a state_dict path.")
@click.option("--trusted-pickle", is_flag=True,
              help="Unpickle a --pretrained file in full (checkpoints with extra objects). This runs code the file "
                   "carries: only for files you trust. Default: tensor-only, refusing anything else.")
@click.option("--epochs", type=click.IntRange(min=1), default=30, show_default=True, help="The paper trained 300.")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=1e-4, show_default=True, help="SGD learning rate.")
@click.option("--momentum", type=click.FloatRange(0, 1, max_open=True), default=0.9, show_default=True)
@click.option("--weight-decay", type=click.FloatRange(min=0), default=0.0, show_default=True)
@click.option("--augment/--no-augment", default=True, show_default=True,
              help="Random rotation, width/height shift and horizontal flip, as in the paper.")
@click.option("--monitor", type=click.Choice(list(MONITORS)), default="val_acc", show_default=True,
              help="Validation metric that picks the best epoch and the registry alias.")
@click.option("--patience", type=click.IntRange(min=1), default=None, help="Stop after this many epochs without improvement.")
@click.option("--max-train", type=click.IntRange(min=1), default=None, help="Train on a stratified subset of this many images.")
@click.option("--max-eval", type=click.IntRange(min=1), default=None, help="Validate/test on stratified subsets of this size.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seeds the splits, initialisation and batches.")
@click.option("--device", default="auto", show_default=True, help="'auto' (CUDA when present), 'cpu' or 'cuda[:N]'.")
@click.option("--alias", default="champion", show_default=True, help="Registry alias moved to this version when it is the best.")
@click.option("--register/--no-register", default=True, show_default=True, help="Register the model as medart-<dataset>.")
@click.option("--download/--no-download", default=True, show_default=True, help="Fetch missing MedMNIST files.")
@click.option("--tracking-uri", default=None, envvar="MLFLOW_TRACKING_URI", help="MLflow tracking store.")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Progress bars.")
def train(dataset, data_dir, source, size, image_size, arch, pretrained, trusted_pickle, epochs, batch_size, lr, momentum,
          weight_decay, augment, monitor, patience, max_train, max_eval, seed, device, alias, register, download,
          tracking_uri, progress):
    """Train the paper's ResNet classifier and register it in the MLflow model registry.

    Example (the real chest X-ray file, CPU-sized):

        MEDART_DATA_DIR=../shared/data medart train --dataset pneumonia --pretrained none --epochs 10
    """
    from medart import tracking
    from medart.experiment import train_model

    uri = tracking.configure(tracking_uri)
    config = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, momentum=momentum, weight_decay=weight_decay,
                         augment=augment, monitor=monitor, patience=patience, seed=seed, device=device)
    out = train_model(dataset, data_dir, source=source, size=int(size), image_size=image_size, arch=arch,
                      pretrained=pretrained, train_config=config, max_train=max_train, max_eval=max_eval,
                      register=register, alias=alias, download=download, progress=progress,
                      trusted_pickle=trusted_pickle)
    click.echo(f"run {out.run_id} in {uri}: best epoch {out.best_epoch}, "
               f"test acc {out.test['acc']:.4f}, test AUC {out.test['auc']:.4f}, {out.seconds_per_epoch:.1f} s/epoch")
    if out.version is not None:
        where = f"@{alias}" if out.promoted else f" (alias '{alias}' kept on a better version)"
        click.echo(f"registered {out.model_uri}{where}")
    else:
        click.echo(f"model at {out.model_uri}")


@main.command()
@click.option("--model-uri", required=True, help="models:/<name>@<alias>, models:/<name>/<version>, runs:/<id>/model or a folder.")
@click.option("--dataset", required=True, type=click.Choice(_datasets()))
@click.option("--data-dir", type=click.Path(file_okay=False), envvar="MEDART_DATA_DIR", show_envvar=True)
@click.option("--source", type=click.Choice(["medmnist", "original"]), default="medmnist", show_default=True)
@click.option("--size", type=click.Choice(["28", "64", "128", "224"]), default="28", show_default=True)
@click.option("--max-eval", type=click.IntRange(min=2), default=None, help="Evaluate on a stratified subset of this size.")
@click.option("--attacks", default="", help="Also attack: comma-separated fgsm, bim, pgd, cw (paper settings).")
@click.option("--eps", "eps_list", default="1/255", show_default=True, help="Comma-separated ε values for --attacks.")
@click.option("--backend", type=click.Choice(["art", "torchattacks"]), default="art", show_default=True)
@click.option("--compare-with", default=None,
              help="A second model to evaluate the same way: an alias of the same registered model (e.g. challenger) or a URI.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--tracking-uri", default=None, envvar="MLFLOW_TRACKING_URI")
def evaluate(model_uri, dataset, data_dir, source, size, max_eval, attacks, eps_list, backend, compare_with, seed, tracking_uri):
    """Clean (and, with --attacks, robust) accuracy and AUC of a model on the test split; the
    metrics are linked to the registered version's logged model.

    Example: medart evaluate --model-uri models:/medart-pneumonia@champion --dataset pneumonia --attacks fgsm,pgd --compare-with challenger
    """
    from medart import tracking
    from medart.attacks import parse_eps_list, parse_names
    from medart.experiment import evaluate_model

    tracking.configure(tracking_uri)
    kwargs = dict(source=source, size=int(size), max_eval=max_eval, seed=seed, backend=backend,
                  attacks=parse_names(attacks) if attacks.strip() else [], eps_values=parse_eps_list(eps_list))
    uris = [model_uri]
    if compare_with:
        uris.append(compare_with if ":/" in compare_with else f"{model_uri.split('@')[0]}@{compare_with}")
    results = {uri: evaluate_model(uri, dataset, data_dir, **kwargs) for uri in uris}
    if len(uris) == 1:
        click.echo(" ".join(f"{k}={v:.4f}" for k, v in results[model_uri].items()))
    else:
        click.echo(comparison_table(results), nl=False)


def comparison_table(results: dict[str, dict[str, float]]) -> str:
    """Markdown: a row per metric, a column per model."""
    names = list(results)
    lines = ["| metric | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for key in results[names[0]]:
        lines.append(f"| {key} | " + " | ".join(f"{results[n].get(key, float('nan')):.4f}" for n in names) + " |")
    return "\n".join(lines) + "\n"


@main.command()
def datasets() -> None:
    """List the named datasets and where each comes from."""
    from medart.data.tasks import TASKS

    for task in TASKS.values():
        origin = f"MedMNIST {task.flag}" + (", original layout" if task.original else "")
        click.echo(f"{task.name:12s} {len(task.classes)} classes ({', '.join(task.classes)}) — {task.description} [{origin}]")


_MODEL_URI = click.option("--model-uri", required=True,
                          help="models:/<name>@<alias>, models:/<name>/<version>, runs:/<id>/model or a folder.")


def _attack_options(func):
    options = [
        _MODEL_URI,
        click.option("--dataset", required=True, type=click.Choice(_datasets())),
        click.option("--data-dir", type=click.Path(file_okay=False), envvar="MEDART_DATA_DIR", show_envvar=True),
        click.option("--source", type=click.Choice(["medmnist", "original"]), default="medmnist", show_default=True),
        click.option("--size", type=click.Choice(["28", "64", "128", "224"]), default="28", show_default=True),
        click.option("--backend", type=click.Choice(["art", "torchattacks"]), default="art", show_default=True,
                     help="Library that runs the attack; both give the same threat model."),
        click.option("--max-examples", type=click.IntRange(min=2), default=None,
                     help="Attack a stratified subset of AdvTrain + AdvTest of this size."),
        click.option("--batch-size", type=click.IntRange(min=1), default=128, show_default=True),
        click.option("--seed", type=int, default=0, show_default=True, help="Seeds the split and random starts."),
        click.option("--device", default="auto", show_default=True),
        click.option("--cache/--no-cache", default=True, show_default=True,
                     help="Reuse examples a finished run made with the same model, data, attack, backend and seed."),
        click.option("--tracking-uri", default=None, envvar="MLFLOW_TRACKING_URI"),
        click.option("--progress/--no-progress", default=True, show_default=True),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _executor_options(func):
    options = [
        click.option("--executor", type=click.Choice(["in-process", "ray"]), default="in-process", show_default=True,
                     help="Where the work runs: here, or on Ray (a local instance, or a cluster with --address); "
                          "Ray is an extra: pip install 'medart[ray]'."),
        click.option("--address", default=None,
                     help="Ray cluster: 'auto' (the one `ray start` runs on this machine) or ray://HOST:10001. "
                          "Default: a local Ray instance, stopped afterwards."),
        click.option("--workers", type=click.IntRange(min=1), default=None, help="CPUs of the local Ray instance. Default: all."),
        click.option("--cpus-per-task", type=click.FloatRange(min=0, min_open=True), default=None,
                     help="CPUs (torch threads) each Ray task or actor reserves. Default: 1."),
        click.option("--gpus-per-task", type=click.FloatRange(min=0), default=None,
                     help="GPUs each Ray task or actor reserves; a fraction shares one. Default: 1 if the cluster has GPUs, else 0."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _attack_kwargs(source, size, max_examples, batch_size, seed, device, cache, progress) -> dict:
    return dict(source=source, size=int(size), max_examples=max_examples, batch_size=batch_size, seed=seed,
                device=device, use_cache=cache, progress=progress)


@main.command()
@_attack_options
@_executor_options
@click.option("--shards", type=click.IntRange(min=1), default=1, show_default=True,
              help="Attack AdvTrain and AdvTest in this many shards of whole batches, in parallel on Ray; "
                   "the examples are the same as in one piece.")
@click.option("--attack", required=True, help="fgsm, bim, pgd or cw (CW-L∞: PGD on the CW margin loss).")
@click.option("--eps", default="1/255", show_default=True, help="L∞ budget in [0,1] pixels: a number or k/255.")
@click.option("--steps", type=int, default=None, help="Default: the paper's (fgsm 1, bim 40, pgd 20, cw 20).")
@click.option("--step-size", default=None, help="Default: the paper's (fgsm ε, bim ε/40, pgd and cw ε/10).")
@click.option("--random-start/--no-random-start", default=None, help="Default: on for pgd and cw, off for fgsm and bim.")
@click.option("--kappa", type=float, default=0.0, show_default=True, help="CW confidence κ (cw only).")
@click.option("--targeted", is_flag=True, help="Aim each image at class (y+1) mod K instead of away from y.")
def attack(model_uri, dataset, data_dir, source, size, backend, max_examples, batch_size, seed, device, cache,
           tracking_uri, progress, executor, address, workers, cpus_per_task, gpus_per_task, shards, attack, eps, steps,
           step_size, random_start, kappa, targeted):
    """Attack AdvTrain and AdvTest with one attack; log metrics and the examples to MLflow.

    Example: medart attack --model-uri models:/medart-pneumonia@champion --dataset pneumonia --attack bim --eps 1/255
    """
    from medart import tracking
    from medart.attacks import make_spec
    from medart.executors import make_executor
    from medart.experiment import attack_model

    tracking.configure(tracking_uri)
    spec = make_spec(attack, eps, steps, step_size, random_start, kappa, targeted)
    with make_executor(executor, address=address, workers=workers, cpus_per_task=cpus_per_task,
                       gpus_per_task=gpus_per_task) as runner:
        out = attack_model(model_uri, dataset, spec, backend, data_dir, executor=runner, shards=shards,
                           **_attack_kwargs(source, size, max_examples, batch_size, seed, device, cache, progress))
    m = out.metrics
    click.echo(f"run {out.run_id}{' (examples from cache)' if out.cached else ''}: {spec.label()} via {backend} on {int(m['n'])} images")
    click.echo(f"accuracy {m['clean_acc']:.4f} -> {m['adv_acc']:.4f}, AUC {m['clean_auc']:.4f} -> {m['adv_auc']:.4f}, "
               f"success rate {m['success_rate']:.4f}, max L∞ {m['linf_max'] * 255:.4f}/255")


@main.command()
@_attack_options
@_executor_options
@click.option("--retries", type=click.IntRange(min=0), default=None,
              help="Times Ray runs a failed cell again before reporting it (exit status 1); the other cells complete. Default: 2.")
@click.option("--attacks", default="fgsm,bim,pgd,cw", show_default=True, help="Comma-separated attack names.")
@click.option("--eps", "eps_list", default="0.2/255,0.5/255,1/255,2/255,5/255", show_default=True,
              help="Comma-separated ε values (numbers or k/255).")
@click.pass_context
def sweep(ctx, model_uri, dataset, data_dir, source, size, backend, max_examples, batch_size, seed, device, cache,
          tracking_uri, progress, executor, address, workers, cpus_per_task, gpus_per_task, retries, attacks, eps_list):
    """Every attack at every ε as nested MLflow runs, with an accuracy-vs-ε figure and a table.

    With --executor ray each (attack, ε) cell is a Ray task logging its child run to the same
    tracking store, which every worker must reach (an MLflow server on a cluster).
    """
    from medart import tracking
    from medart.attacks import parse_eps_list, parse_names
    from medart.executors import make_executor
    from medart.experiment import sweep as run_sweep
    from medart.experiment import sweep_table

    tracking.configure(tracking_uri)
    names, eps_values = parse_names(attacks), parse_eps_list(eps_list)
    with make_executor(executor, address=address, workers=workers, retries=retries, cpus_per_task=cpus_per_task,
                       gpus_per_task=gpus_per_task) as runner:
        run_id, rows, failed = run_sweep(model_uri, dataset, names, eps_values, backend, data_dir, executor=runner,
                                         **_attack_kwargs(source, size, max_examples, batch_size, seed, device, cache, progress))
    click.echo(f"sweep run {run_id}: {len(rows)} child runs; figure figures/accuracy_vs_eps.png, table sweep.md")
    click.echo(sweep_table(rows, failed), nl=False)
    if failed:
        click.echo(f"Error: {len(failed)} of {len(rows) + len(failed)} cells failed (see the table above and "
                   f"sweep.json in run {run_id}); the others are logged", err=True)
        ctx.exit(1)


@main.command()
@_attack_options
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
@click.option("--tracking-uri", default=None, envvar="MLFLOW_TRACKING_URI")
def compare(experiments, dataset, model_uri, filter_string, imports, export_dir, tracking_uri):
    """One table and figure of every finished attack run — across datasets, models, attacks, ε and
    backends — plus RobustBench-style JSON in and out, logged as a run in medart/compare.

    Example: medart compare --dataset pneumonia --import robustbench/model_info/cifar10/Linf/Standard.json
    """
    from medart import tracking
    from medart.compare import compare as run_compare
    from medart.compare import table

    tracking.configure(tracking_uri)
    run_id, rows = run_compare(experiments, dataset, model_uri, filter_string, imports, export_dir)
    click.echo(f"compare run {run_id}: {len(rows)} rows; compare.md, figures/compare.png, robustbench/")
    click.echo(table(rows), nl=False)


@main.command()
@_attack_options
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


@main.command("eps-curves")
@click.option("--run-id", "run_ids", multiple=True, required=True, help="A `medart sweep` run (repeatable: one curve each).")
@click.option("--label", "labels", multiple=True, help="Legend label per --run-id, in the same order. Default: dataset · model.")
@click.option("--tracking-uri", default=None, envvar="MLFLOW_TRACKING_URI")
def eps_curves(run_ids, labels, tracking_uri):
    """Accuracy-vs-ε curves of several sweeps (models or datasets) in one figure (Figs. 4 and 5).

    Example: medart eps-curves --run-id <sweep of model A> --run-id <sweep of model B> --label A --label B
    """
    from medart import tracking
    from medart.analysis.eps_curves import compare_sweeps

    tracking.configure(tracking_uri)
    run_id = compare_sweeps(run_ids, labels or None)
    click.echo(f"run {run_id}: figures/eps_curves.png, eps_curves.json")


@main.command()
@click.option("--run-id", default=None, help="The run to report (its child runs are included).")
@click.option("--experiment", default=None, help="Or: an experiment, e.g. medart/pneumonia/analysis (its newest top-level runs).")
@click.option("--max-runs", type=click.IntRange(min=1), default=20, show_default=True, help="With --experiment: how many runs.")
@click.option("--output", type=click.Path(dir_okay=False), default=None,
              help="HTML file to write. Default: report-<run id>.html or report-<experiment>.html.")
@click.option("--log/--no-log", default=True, show_default=True,
              help="Attach the page to the run as report.html (with --experiment: to a new 'report' run).")
@click.option("--tracking-uri", default=None, envvar="MLFLOW_TRACKING_URI")
def report(run_id, experiment, max_runs, output, log, tracking_uri):
    """A self-contained HTML page of a run's (or experiment's) tables and figures, with the paper's
    numbers beside them where the task matches.

    Example: medart report --run-id 0123abcd… --output report.html
    """
    from medart import tracking
    from medart.analysis.report import report_experiment, report_run
    from medart.errors import ConfigError

    if (run_id is None) == (experiment is None):
        raise ConfigError("give exactly one of --run-id or --experiment")
    tracking.configure(tracking_uri)
    if run_id:
        click.echo(f"report {report_run(run_id, output, log)}" + (" (also the run's report.html)" if log else ""))
    else:
        path, new_run = report_experiment(experiment, output, max_runs, log)
        click.echo(f"report {path}" + (f" (also report.html of run {new_run})" if new_run else ""))


@main.command()
@click.option("--dataset", required=True, type=click.Choice(_datasets()), help="The one dataset every cell learns.")
@click.option("--data-dir", type=click.Path(file_okay=False), envvar="MEDART_DATA_DIR", show_envvar=True)
@click.option("--source", type=click.Choice(["medmnist", "original"]), default="medmnist", show_default=True)
@click.option("--size", type=click.Choice(["28", "64", "128", "224"]), default="28", show_default=True,
              help="Which MedMNIST file variant to read (its native side).")
@click.option("--resolutions", default="28,64,128,224", show_default=True,
              help="Input sides (px) of the grid; images are resized to each (the file's own side = native).")
@click.option("--inits", default="none,imagenet", show_default=True,
              help="Initialisations: none (from scratch), imagenet (skipped, with the reason, where weights are unavailable).")
@click.option("--archs", default="smallcnn,resnet18,resnet50", show_default=True,
              help=f"Architectures (capacity), from {', '.join(ARCHS)}; resnet50 carries the paper's head.")
@click.option("--epochs", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=0.01, show_default=True, help="SGD learning rate.")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True, help="Training batch size.")
@click.option("--max-train", type=click.IntRange(min=2), default=None, help="Train on a stratified subset of this many images.")
@click.option("--max-eval", type=click.IntRange(min=2), default=None, help="Validate/test on stratified subsets of this size.")
@click.option("--max-examples", type=click.IntRange(min=10), default=100, show_default=True,
              help="Test images (AdvTrain + AdvTest) attacked, bisected and measured per cell.")
@click.option("--attacks", default="fgsm,bim,pgd,cw", show_default=True, help="Attacks run at every --eps.")
@click.option("--eps", "eps_list", default="1/255,4/255", show_default=True, help="The fixed ε list.")
@click.option("--bisect-attack", type=click.Choice(["fgsm", "bim", "pgd", "cw"]), default="pgd", show_default=True,
              help="The attack whose least successful ε is bisected.")
@click.option("--eps-max", default="32/255", show_default=True, help="Upper end of the bisection.")
@click.option("--eps-tol", default="0.25/255", show_default=True, help="Bisect until the bracket is at most this wide.")
@click.option("--threshold", type=click.FloatRange(0, 1, min_open=True), default=0.01, show_default=True,
              help="An attack succeeds when accuracy falls below this (the paper: 1 %).")
@click.option("--detect-attack", type=click.Choice(["fgsm", "bim", "pgd", "cw"]), default="pgd", show_default=True)
@click.option("--detect-eps", default="1/255", show_default=True, help="ε of the examples the detectors see.")
@click.option("--detectors", default="kd,dfeat", show_default=True)
@click.option("--reference-size", type=click.IntRange(min=1), default=200, show_default=True,
              help="Clean Train images KD measures against.")
@click.option("--radius", default=None, help="L∞ radius of the sharpness number. Default: --detect-eps.")
@click.option("--vanishing", type=click.FloatRange(min=0, min_open=True), default=1e-8, show_default=True,
              help="An input gradient whose largest entry is below this counts as vanished (gradient masking).")
@click.option("--backend", type=click.Choice(["art", "torchattacks"]), default="art", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="Seeds splits, training and attacks of every cell.")
@click.option("--device", default="auto", show_default=True)
@click.option("--tracking-uri", default=None, envvar="MLFLOW_TRACKING_URI")
@click.option("--progress/--no-progress", default=True, show_default=True)
def ablate(dataset, data_dir, source, size, resolutions, inits, archs, epochs, lr, batch_size, max_train, max_eval,
           max_examples, attacks, eps_list, bisect_attack, eps_max, eps_tol, threshold, detect_attack, detect_eps,
           detectors, reference_size, radius, vanishing, backend, seed, device, tracking_uri, progress):
    """Test the paper's explanations: a grid over input resolution × initialisation × capacity.

    Each cell trains a model, attacks it at a fixed ε list, bisects the least ε that leaves
    accuracy below --threshold, measures loss sharpness, vanishing gradients and KD/DFeat detection
    AUC; one parent MLflow run (medart/<dataset>/ablation) with a child run per cell, the
    side-by-side table, a figure and a generated text of each factor's effect.

    Example (CPU-sized): medart ablate --dataset pneumonia --resolutions 28,64 --archs smallcnn,resnet18 --epochs 3 --max-train 500 --max-examples 60
    """
    from medart import tracking
    from medart.ablation import AblationSettings, make_grid, run_ablation
    from medart.attacks import parse_eps, parse_eps_list, parse_names

    cells = make_grid(resolutions, inits, archs)
    settings = AblationSettings(
        train=TrainConfig(epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, device=device),
        max_train=max_train, max_eval=max_eval, attacks=tuple(parse_names(attacks)), eps=tuple(parse_eps_list(eps_list)),
        bisect_attack=bisect_attack, eps_max=parse_eps(eps_max), eps_tolerance=parse_eps(eps_tol), threshold=threshold,
        detect_attack=detect_attack, detect_eps=parse_eps(detect_eps), detectors=tuple(detectors.split(",")),
        radius=None if radius is None else parse_eps(radius), vanishing=vanishing, max_examples=max_examples,
        reference_size=reference_size, backend=backend)
    tracking.configure(tracking_uri)
    out = run_ablation(dataset, cells, settings, data_dir, source=source, size=int(size), progress=progress)
    counts = {s: sum(r["status"] == s for r in out.rows) for s in ("finished", "failed", "skipped")}
    click.echo(f"ablation run {out.run_id}: {counts['finished']} cells finished, {counts['failed']} failed, "
               f"{counts['skipped']} skipped; ablation.md, findings.md, figures/ablation.png")
    click.echo(out.table)
    click.echo(out.findings, nl=False)
