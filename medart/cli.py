"""``medart`` command line: thin click faces on :mod:`medart.experiment`."""

from __future__ import annotations

import sys
import warnings

import click

from medart.errors import MedartError
from medart.models.training import MONITORS, TrainConfig


class MedartGroup(click.Group):
    """Reports :class:`MedartError` as one line (``Error: …``, exit 2), without a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except MedartError as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(2)


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
@click.option("--arch", type=click.Choice(["resnet50", "resnet18", "resnet34"]), default="resnet50", show_default=True)
@click.option("--pretrained", default="imagenet", show_default=True,
              help="'imagenet' (torchvision weights, cached or downloaded), 'none' (from scratch), or a state_dict path.")
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
def train(dataset, data_dir, source, size, image_size, arch, pretrained, epochs, batch_size, lr, momentum, weight_decay,
          augment, monitor, patience, max_train, max_eval, seed, device, alias, register, download, tracking_uri, progress):
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
                      register=register, alias=alias, download=download, progress=progress)
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
