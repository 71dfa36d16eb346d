"""The options several commands share, each named as the field of the request it fills
(:class:`~medart.stages.target.DataSpec`, :class:`~medart.stages.target.RunOptions`,
:class:`~medart.models.loading.ModelSource`), with the choices and help the declarations give
(:mod:`medart.attacks.specs`, :mod:`medart.detectors`, :mod:`medart.data.sources`,
:mod:`medart.models`, :mod:`medart.catalog`) — one definition per option, torch-free."""

from __future__ import annotations

from typing import Callable

import click

from medart import budget
from medart.attacks.specs import ATTACK_ENTRIES, ATTACKS, BACKENDS, PAPER_ATTACKS, attacks_where
from medart.catalog import ARCHS, BALANCES, DATASETS, EXECUTORS, SIZES
from medart.data.sources import SOURCES
from medart.detectors import DETECTORS
from medart.models import READS
from medart.models.defence_specs import DEFENCE_GRADIENTS, DEFENCES, JOIN, parse_defences

MODEL_URIS = f"models:/<name>@<alias>, models:/<name>/<version>, runs:/<id>/model, a folder or a file; medart reads {READS}."


def stack(*options: Callable) -> Callable:
    """One decorator that applies ``options`` in order (the first listed first in ``--help``)."""

    def apply(func):
        for option in reversed(options):
            func = option(func)
        return func

    return apply


class _Parsed(click.ParamType):
    """A value read by one of the library's parsers, so that a bad one is reported by click as an
    invalid value of its option (``--eps``, ``-P eps``)."""

    def parse(self, text: str):
        raise NotImplementedError

    def convert(self, value, param, ctx):
        from medart.errors import ConfigError

        if not isinstance(value, str):
            return value
        try:
            return self.parse(value)
        except ConfigError as exc:
            self.fail(str(exc), param, ctx)


class Eps(_Parsed):
    """An L∞ budget in (0, 1] pixels, a number or k/255, read once into a :class:`medart.budget.Eps`."""

    name = "eps"

    def parse(self, text):
        return budget.Eps(text)


class EpsList(_Parsed):
    """Comma-separated L∞ budgets, in order, each read once into a :class:`medart.budget.Eps`."""

    name = "eps-list"

    def parse(self, text):
        from medart.errors import ConfigError

        items = [v for v in text.split(",") if v.strip()]
        if not items:
            raise ConfigError("the ε list is empty; give e.g. 0.5/255,1/255,2/255")
        return tuple(budget.Eps(v) for v in items)


class GateText(_Parsed):
    """A registry gate: comma-separated METRIC>=BOUND terms (:mod:`medart.gate`)."""

    name = "gate"

    def parse(self, text):
        from medart.gate import Gate

        return Gate.parse(text)


class Weights(_Parsed):
    """Comma-separated positive numbers (the adaptive attack's λ search)."""

    name = "weights"

    def parse(self, text):
        from medart.errors import ConfigError

        try:
            weights = tuple(float(v) for v in text.split(",") if v.strip())
        except ValueError:
            weights = ()
        if not weights or min(weights) <= 0:
            raise ConfigError(f"`adaptive_weights` must be comma-separated numbers > 0 such as 0.01,0.1,1, got {text!r}")
        return weights


class Defence(_Parsed):
    """Preprocessing defences, ``+``-joined, as their canonical text."""

    name = "defence"

    def parse(self, text):
        return JOIN.join(str(d) for d in parse_defences(text))


class Names(_Parsed):
    """Comma-separated names from ``choices``, in order, each once; empty is allowed when ``empty``."""

    name = "names"

    def __init__(self, choices: tuple[str, ...], what: str, empty: bool = False) -> None:
        self.choices, self.what, self.empty = choices, what, empty

    def parse(self, text):
        from medart.attacks.specs import parse_names

        if self.empty and not text.strip():
            return ()
        return tuple(dict.fromkeys(parse_names(text, self.choices, self.what)))


def _int(ctx, param, value):
    return None if value is None else int(value)


def model_uri(required: bool = False) -> Callable:
    return click.option("--model-uri", required=required, default=None,
                        help=MODEL_URIS + " Default: the dataset's registered champion (medart-<dataset>@champion).")


#: ``ModelSource``: how to read a network that is not medart's own (what its card or signature does not say)
model_options = stack(
    click.option("--input-channels", type=click.Choice(["1", "3"]), default=None, callback=_int,
                 help="Channels the model takes: 1 (medart averages the grey image's channels) or 3. "
                      "Default: its model card or MLflow signature, else 3."),
    click.option("--input-size", type=click.IntRange(min=1), default=None,
                 help="Side (pixels) the model takes; images are resized to it. Default: its card or signature, "
                      "else the data's side."),
    click.option("--normalize", default=None, metavar="imagenet|MEAN;STD|m,s",
                 help="Normalisation the model expects, applied inside it so ε stays in [0, 1] pixels: imagenet, "
                      "per-channel MEAN;STD (comma-separated) or one m,s. Default: its card's, else none."),
    click.option("--classes", default=None,
                 help="Comma-separated class names in logit order. Default: its card's, else the dataset's when the counts agree."),
    click.option("--penultimate", default=None,
                 help="Layer whose output are the penultimate features (dfeat), which only the detectors and analyses "
                      "read. Default: the input of its last linear layer."),
    click.option("--output-key", default=None, metavar="KEY|INDEX",
                 help="For a model returning a dict, tuple/list or object (e.g. a HuggingFace output) instead of a "
                      "logits tensor: the key, index or attribute holding the logits. Default: its card's, else none."),
    click.option("--defence", type=Defence(), multiple=True, metavar="NAME[:KEY=VALUE]",
                 help=f"Preprocessing defence in front of the model: {', '.join(DEFENCES)}, e.g. jpeg:quality=75, "
                      "squeeze:bits=4, smooth:window=3, noise:sigma=0.1. Repeat it, or join with +, to stack them "
                      "(applied in order). Attacks go through it with BPDA (and EOT for noise); see docs/defences.md."),
    click.option("--trusted-pickle", is_flag=True,
                 help="Allow a model that must be unpickled (an MLflow pickle-format model; for pipeline also a "
                      "--pretrained file): unpickling runs code it carries, so only for models you trust."),
)

dataset = click.option("--dataset", type=click.Choice(DATASETS), default="pneumonia", show_default=True,
                       help="Task (see `medart datasets`).")
data_dir = click.option("--data-dir", type=click.Path(file_okay=False), envvar="MEDART_DATA_DIR", show_envvar=True,
                        help="Folder of MedMNIST .npz files (or the dataset's own root folder with a layout --source). "
                             "Default: ~/.medart/data.")
source = click.option("--source", type=click.Choice(SOURCES), default="medmnist", show_default=True,
                      help="MedMNIST .npz files, or a public layout (`medart datasets` lists which each dataset "
                           "accepts); 'original' is the dataset's first layout.")
size = click.option("--size", type=click.Choice([str(s) for s in SIZES]), default="28", show_default=True, callback=_int,
                    help="Which MedMNIST file variant to read (pixels per side).")
seed = click.option("--seed", type=int, default=0, show_default=True, help="Seeds the splits, training and random starts.")
download = click.option("--download/--no-download", default=True, show_default=True, help="Fetch missing MedMNIST files.")

#: ``DataSpec``: which images
data_options = stack(dataset, data_dir, source, size, seed)

backend = click.option("--backend", type=click.Choice(BACKENDS), default="art", show_default=True,
                       help="Library that runs the attacks; both give the same threat model.")
batch_size = click.option("--batch-size", type=click.IntRange(min=1), default=128, show_default=True)
device = click.option("--device", default="auto", show_default=True, help="'auto' (CUDA when present), 'cpu' or 'cuda[:N]'.")
cache = click.option("--cache/--no-cache", default=True, show_default=True,
                     help="Reuse examples a finished run made with the same model, data, attack, backend and seed.")
report = click.option("--report/--no-report", default=True, show_default=True,
                      help="When the run finishes, attach its HTML report (medart report) to it as report.html, "
                           "linked from its description in the MLflow UI.")
progress = click.option("--progress/--no-progress", default=True, show_default=True, help="Progress bars.")
tracking_uri = click.option("--tracking-uri", default=None, envvar="MLFLOW_TRACKING_URI", help="MLflow tracking store.")

#: ``RunOptions``: how the attacks run
run_options = stack(backend, batch_size, device, cache, progress, tracking_uri)

max_examples = click.option("--max-examples", type=click.IntRange(min=2), default=None,
                            help="Attack a stratified subset of AdvTrain + AdvTest of this size.")

#: ``Target``: the model and the images it is attacked on
target_options = stack(model_uri(), model_options, data_options, max_examples)


def _fraction_of_eps(fraction: float) -> str:
    """``1.0`` → ``ε``, ``0.025`` → ``ε/40``."""
    return "ε" if fraction == 1 else f"ε/{round(1 / fraction):d}"


def attack_help() -> str:
    """Each declared attack and what it is, with its backends where not every backend runs it."""
    return "; ".join(f"{a.name}: {a.about}" + ("" if set(a.backends) == set(BACKENDS) else f" ({', '.join(a.backends)} only)")
                     for a in ATTACK_ENTRIES.values()) + "."


def attacks(default: str = ",".join(PAPER_ATTACKS), what: str = "Comma-separated attacks") -> Callable:
    return click.option("--attacks", type=Names(ATTACKS, "attack", empty=not default), default=default, show_default=True,
                        help=f"{what}, at their own default settings: {attack_help()}")


def eps(default: str = "1/255", help: str = "L∞ budget in [0,1] pixels: a number or k/255.") -> Callable:
    return click.option("--eps", type=Eps(), default=default, show_default=True, help=help)


def detectors(default: str) -> Callable:
    listed = "; ".join(f"{d.name}: {d.about}" + (" (the paper's)" if d.paper else "") for d in DETECTORS.values())
    return click.option("--detectors", type=Names(tuple(DETECTORS), "detector"), default=default, show_default=True,
                        help=f"Comma-separated detectors: {listed}.")


steps = click.option("--steps", type=click.IntRange(min=1), default=None,
                     help="Attack steps. Default: " + ", ".join(
                         f"{a.name} {a.defaults.steps}" + ("" if a.defaults.unit == "steps" else f" {a.defaults.unit}")
                         for a in ATTACK_ENTRIES.values()) + ".")
step_size = click.option("--step-size", type=Eps(), default=None,
                         help="Attack step size: a number or k/255. Default: "
                              + ", ".join(f"{a.name} {_fraction_of_eps(a.defaults.step)}" for a in ATTACK_ENTRIES.values()
                                          if a.defaults.step)
                              + f"; {', '.join(attacks_where(lambda a: a.defaults.step is None))} set their own.")
#: how an attack goes through a preprocessing defence (``AttackSpec.defence_gradient``, ``eot_samples``)
defence_gradient = stack(
    click.option("--defence-gradient", type=click.Choice(DEFENCE_GRADIENTS), default=None,
                 help="With --defence: bpda (ART's gradient estimate through the defence, with EOT for noise) or "
                      "plain (its own gradient: zero through jpeg and squeeze, the masking to expose). Default: bpda."),
    click.option("--eot-samples", type=click.IntRange(min=1), default=None,
                 help="With a noise --defence under bpda: the draws each gradient averages (EOT). Default: 8."),
)
reference_size = click.option("--reference-size", type=click.IntRange(min=1), default=1000, show_default=True,
                              help="Clean Train images that KD, LID and Mahalanobis measure against.")

executor_options = stack(
    click.option("--executor", type=click.Choice(EXECUTORS), default="in-process", show_default=True,
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
)

image_size = click.option("--image-size", type=click.IntRange(16, 1024), default=None,
                          help="Side of the model's input; images are resized to it. Default: the file's size (224 for original).")
pretrained = click.option("--pretrained", default="imagenet", show_default=True,
                          help="'imagenet' (torchvision weights, cached or downloaded), 'none' (from scratch), or a "
                               "tensor-only state_dict path.")
epochs = click.option("--epochs", type=click.IntRange(min=1), default=10, show_default=True, help="The paper trained 300.")
lr = click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=0.01, show_default=True, help="SGD learning rate.")
max_train = click.option("--max-train", type=click.IntRange(min=1), default=None,
                         help="Train on a stratified subset of this many images.")
max_eval = click.option("--max-eval", type=click.IntRange(min=1), default=None,
                        help="Validate/test on stratified subsets of this size.")

arch = click.option("--arch", type=click.Choice(ARCHS), default="resnet50", show_default=True,
                    help="Backbone under the paper's head; smallcnn is a ~0.3 M-parameter CNN (from scratch only).")
balance = click.option("--balance", type=click.Choice(BALANCES), default=BALANCES[0], show_default=True,
                        help="Counter class imbalance in training: weights (class-weighted loss), sampler (class-balanced "
                             "batches, drawn with replacement) or none (every image alike, as before).")
