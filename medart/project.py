"""The ``MLproject`` entry points. MLflow hands every ``-P`` value over as a string and checks
none of their types, so each is read and checked here, and a bad one ends the run with one line.

``mlproject/<entry>.py key=value …`` calls :func:`run`.
"""

from __future__ import annotations

import sys
import warnings
from typing import Any, Callable, Sequence

import mlflow
from mlflow.exceptions import MlflowException

from medart import tracking
from medart.attacks import ATTACKS, BACKENDS, parse_eps, parse_eps_list, parse_names
from medart.errors import ConfigError, MedartError
from medart.models.resnet import ARCHS


class Params:
    """The ``-P`` values of one entry point, read one by one with their checks."""

    def __init__(self, raw: dict[str, str]) -> None:
        self.raw = raw

    def _get(self, name: str) -> str:
        return self.raw.get(name, "").strip()

    def _bad(self, name: str, problem: str) -> ConfigError:
        return ConfigError(f"-P {name}={self._get(name)!r}: {problem}")

    def text(self, name: str) -> str | None:
        """The value, or ``None`` when empty."""
        return self._get(name) or None

    def choice(self, name: str, choices: Sequence[str]) -> str:
        value = self._get(name).lower()
        if value not in choices:
            raise self._bad(name, f"choose from {', '.join(choices)}")
        return value

    def integer(self, name: str, minimum: int | None = None, maximum: int | None = None, optional: bool = False) -> int | None:
        text = self._get(name)
        if not text and optional:
            return None
        try:
            value = int(text)
        except ValueError:
            raise self._bad(name, "must be a whole number" + (" (or empty for none)" if optional else "")) from None
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            raise self._bad(name, f"must be between {minimum} and {maximum}" if maximum is not None else f"must be >= {minimum}")
        return value

    def number(self, name: str, zero: bool = False, optional: bool = False) -> float | None:
        """A number > 0 (>= 0 with ``zero``)."""
        text = self._get(name)
        if not text and optional:
            return None
        try:
            value = float(text)
        except ValueError:
            raise self._bad(name, "must be a number" + (" (or empty for the default)" if optional else "")) from None
        if not (value >= 0 if zero else value > 0):
            raise self._bad(name, "must be >= 0" if zero else "must be > 0")
        return value

    def eps(self, name: str = "eps") -> float:
        return self._checked(name, parse_eps)

    def eps_list(self, name: str = "eps") -> list[float]:
        return self._checked(name, parse_eps_list)

    def names(self, name: str, choices: Sequence[str], what: str) -> list[str]:
        return self._checked(name, lambda v: list(dict.fromkeys(parse_names(v, tuple(choices), what))))

    def _checked(self, name: str, parse: Callable[[str], Any]) -> Any:
        try:
            return parse(self._get(name))
        except ConfigError as exc:
            raise self._bad(name, str(exc)) from None


def _datasets() -> list[str]:
    from medart.data.tasks import TASKS

    return list(TASKS)


def _champion(dataset: str) -> str | None:
    from medart.models.registry import registered_name

    name = registered_name(dataset)
    try:
        mlflow.MlflowClient().get_model_version_by_alias(name, "champion")
    except MlflowException:
        return None
    return f"models:/{name}@champion"


def _train_kwargs(p: Params) -> dict[str, Any]:
    from medart.models.training import TrainConfig

    return dict(
        arch=p.choice("arch", ARCHS), pretrained=p.text("pretrained") or "imagenet",
        image_size=p.integer("image_size", 16, 1024, optional=True), max_train=p.integer("max_train", 1, optional=True),
        max_eval=p.integer("max_eval", 1, optional=True),
        train_config=TrainConfig(epochs=p.integer("epochs", 1), lr=p.number("lr"), seed=p.integer("seed")),
    )


def main_pipeline(p: Params) -> None:
    """Train (or reuse the dataset's champion, or load ``model_uri``), attack, detect — one parent
    run with a child run per stage."""
    from medart.detection import detect_model
    from medart.detectors import DETECTORS
    from medart.experiment import train_model

    dataset, attack, eps = p.choice("dataset", _datasets()), p.names("attack", ATTACKS, "attack"), p.eps()
    backend, data_dir = p.choice("backend", BACKENDS), p.text("data_dir")
    detectors = p.names("detectors", DETECTORS, "detector")
    max_examples, seed = p.integer("max_examples", 2, optional=True), p.integer("seed")
    train_kwargs = _train_kwargs(p) if not p.text("model_uri") else {}
    label = f"main-{'+'.join(attack)}-eps{eps * 255:.3g}/255-{backend}"
    with tracking.start_run(tracking.experiment_name(dataset, "main"), label) as run:
        logged = run.data.params  # `mlflow run` has logged the -P values already
        mlflow.log_params({k: v for k, v in p.raw.items() if k not in logged})
        model_uri = p.text("model_uri") or _champion(dataset)
        if model_uri is None:
            model_uri = train_model(dataset, data_dir, progress=False, **train_kwargs).model_uri
        mlflow.set_tag("medart.model_uri", model_uri)
        out = detect_model(model_uri, dataset, attack, eps, detectors, backend, data_dir, max_examples=max_examples,
                           reference_size=p.integer("reference_size", 1), seed=seed, transfer=len(attack) > 1,
                           progress=False)
        client = mlflow.MlflowClient()
        lines = []
        for name, run_id in out.attack_runs.items():
            metrics = client.get_run(run_id).data.metrics
            prefix = f"{name}." if len(attack) > 1 else ""
            mlflow.log_metrics({f"{prefix}{k}": metrics[k] for k in ("clean_acc", "clean_auc", "adv_acc", "adv_auc", "success_rate")})
            mlflow.log_metrics({f"{prefix}auc_{d}": v for d, v in out.auc[name].items()})
            lines.append(f"{name} ε={eps * 255:.3g}/255 ({backend}): accuracy {metrics['clean_acc']:.4f} clean, "
                         f"{metrics['adv_acc']:.4f} adversarial (success rate {metrics['success_rate']:.4f}); detection AUC "
                         + ", ".join(f"{d} {v:.3f}" for d, v in out.auc[name].items()))
    print(f"main run {run.info.run_id}, model {model_uri}")
    print("\n".join(lines))


def train_entry(p: Params) -> None:
    from medart.experiment import train_model

    out = train_model(p.choice("dataset", _datasets()), p.text("data_dir"), progress=False, **_train_kwargs(p))
    print(f"registered {out.model_uri}: test acc {out.test['acc']:.4f}, AUC {out.test['auc']:.4f}")


def _model_uri(p: Params, dataset: str) -> str:
    uri = p.text("model_uri") or _champion(dataset)
    if uri is None:
        raise ConfigError(f"-P model_uri is empty and no medart-{dataset}@champion is registered; train one first (-e train)")
    return uri


def attack_entry(p: Params) -> None:
    from medart.attacks import make_spec
    from medart.experiment import attack_model

    dataset = p.choice("dataset", _datasets())
    spec = make_spec(p.choice("attack", ATTACKS), p.eps())
    backend, data_dir = p.choice("backend", BACKENDS), p.text("data_dir")
    max_examples, seed = p.integer("max_examples", 2, optional=True), p.integer("seed")
    out = attack_model(_model_uri(p, dataset), dataset, spec, backend, data_dir, max_examples=max_examples, seed=seed,
                       progress=False)
    print(f"{spec.label()} via {backend}: accuracy {out.metrics['clean_acc']:.4f} -> {out.metrics['adv_acc']:.4f}")


def detect_entry(p: Params) -> None:
    from medart.detection import auc_table, detect_model
    from medart.detectors import DETECTORS

    dataset = p.choice("dataset", _datasets())
    attacks, eps = p.names("attacks", ATTACKS, "attack"), p.eps()
    backend, data_dir = p.choice("backend", BACKENDS), p.text("data_dir")
    detectors = p.names("detectors", DETECTORS, "detector")
    out = detect_model(_model_uri(p, dataset), dataset, attacks, eps, detectors, backend, data_dir,
                       max_examples=p.integer("max_examples", 2, optional=True), seed=p.integer("seed"),
                       reference_size=p.integer("reference_size", 1), repeats=p.integer("repeats", 1), progress=False)
    print(auc_table(out.auc), end="")


def sweep_entry(p: Params) -> int:
    from medart.executors import EXECUTORS, make_executor
    from medart.experiment import sweep, sweep_table

    dataset = p.choice("dataset", _datasets())
    attacks, eps_values = p.names("attacks", ATTACKS, "attack"), p.eps_list()
    backend, data_dir = p.choice("backend", BACKENDS), p.text("data_dir")
    executor = p.choice("executor", EXECUTORS)
    ray_options = {} if executor != "ray" else dict(
        address=p.text("address"), workers=p.integer("workers", 1, optional=True), retries=p.integer("retries", 0),
        cpus_per_task=p.number("cpus_per_task"), gpus_per_task=p.number("gpus_per_task", zero=True, optional=True))
    with make_executor(executor, **ray_options) as runner:
        run_id, rows, failed = sweep(_model_uri(p, dataset), dataset, attacks, eps_values, backend, data_dir, executor=runner,
                                     max_examples=p.integer("max_examples", 2, optional=True), seed=p.integer("seed"),
                                     progress=False)
    print(sweep_table(rows, failed), end="")
    if failed:
        print(f"Error: {len(failed)} of {len(rows) + len(failed)} cells failed (see sweep.json in run {run_id}); "
              "the others are logged", file=sys.stderr)
    return 1 if failed else 0


def evaluate_entry(p: Params) -> None:
    from medart.experiment import evaluate_model

    dataset = p.choice("dataset", _datasets())
    attacks = p.names("attacks", ATTACKS, "attack") if p.text("attacks") else []
    metrics = evaluate_model(_model_uri(p, dataset), dataset, p.text("data_dir"),
                             max_eval=p.integer("max_eval", 2, optional=True), seed=p.integer("seed"), attacks=attacks,
                             eps_values=p.eps_list(), backend=p.choice("backend", BACKENDS))
    print(" ".join(f"{k}={v:.4f}" for k, v in metrics.items()))


def ablate_entry(p: Params) -> None:
    from medart.ablation import INITS, AblationSettings, make_grid, parse_resolutions, run_ablation
    from medart.detectors import DETECTORS
    from medart.models.training import TrainConfig

    dataset = p.choice("dataset", _datasets())
    cells = make_grid(p._checked("resolutions", parse_resolutions), p.names("inits", INITS, "initialisation"),
                      p.names("archs", ARCHS, "architecture"))
    settings = AblationSettings(
        train=TrainConfig(epochs=p.integer("epochs", 1), lr=p.number("lr"), seed=p.integer("seed")),
        max_train=p.integer("max_train", 2, optional=True), max_eval=p.integer("max_eval", 2, optional=True),
        attacks=tuple(p.names("attacks", ATTACKS, "attack")), eps=tuple(p.eps_list("eps")),
        bisect_attack=p.choice("bisect_attack", ATTACKS), eps_max=p.eps("eps_max"), eps_tolerance=p.eps("eps_tol"),
        detect_attack=p.choice("detect_attack", ATTACKS), detect_eps=p.eps("detect_eps"),
        detectors=tuple(p.names("detectors", DETECTORS, "detector")),
        max_examples=p.integer("max_examples", 10, optional=True), reference_size=p.integer("reference_size", 1),
        backend=p.choice("backend", BACKENDS))
    out = run_ablation(dataset, cells, settings, p.text("data_dir"), progress=False)
    print(out.table + "\n" + out.findings, end="")


ENTRY_POINTS: dict[str, Callable[[Params], int | None]] = {
    "main": main_pipeline, "train": train_entry, "attack": attack_entry, "detect": detect_entry,
    "sweep": sweep_entry, "evaluate": evaluate_entry, "ablate": ablate_entry,
}


def run(entry: str, argv: Sequence[str]) -> int:
    """Run ``entry`` with ``argv`` = ``["key=value", …]``; 0 on success, 2 (one ``Error:`` line) on a user
    error, 1 when a sweep completed with failed cells."""
    warnings.formatwarning = lambda message, *args, **kwargs: f"Warning: {message}\n"
    warnings.simplefilter("once")  # a text once, however many stages load the same file
    raw = {}
    for item in argv:
        key, sep, value = item.partition("=")
        if not sep:
            print(f"Error: argument {item!r} is not key=value", file=sys.stderr)
            return 2
        raw[key] = value
    tracking.configure()  # `mlflow run` sets MLFLOW_TRACKING_URI for the entry point
    tracking.stop_on_signals()
    try:
        status = ENTRY_POINTS[entry](Params(raw))
    except MedartError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        print(f"Interrupted ({exc or 'SIGINT'}): runs ended as KILLED; run again to resume from the last completed stage",
              file=sys.stderr)
        return 130
    return status or 0
