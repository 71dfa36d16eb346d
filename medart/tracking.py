"""MLflow plumbing: where runs go, how they are named and tagged, and how figures are logged."""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path
from typing import Iterator

import mlflow
from mlflow.entities import RunTag
from mlflow.utils.mlflow_tags import MLFLOW_RUN_NOTE

from medart.interrupts import deferred_interrupts, raise_pending_interrupt

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
ARTIFACT_ROOT_ENV = "MEDART_ARTIFACT_ROOT"  # where new experiments keep their artifacts (a folder or s3://…)
#: A run's description: Markdown, what the MLflow UI's run page opens on ("mlflow.note.content").
NOTE_TAG = MLFLOW_RUN_NOTE
NOTE_LIMIT = 8000  # characters: MLflow's limit on a tag's value


def configure(tracking_uri: str | None = None) -> str:
    """Use ``tracking_uri``, else ``$MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db`` in the
    working directory (the ``./mlruns`` file store MLflow would pick fails since MLflow 3.13)."""
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # medart shows its own progress
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


def absolute_uri(uri: str) -> str:
    """``uri`` naming the same store from any working directory: a relative sqlite path made
    absolute (worker processes need not share the driver's working directory)."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////") and uri != "sqlite:///:memory:":
        return "sqlite:///" + os.path.abspath(uri.removeprefix("sqlite:///"))
    return uri


def use_experiment(name: str) -> None:
    """Make ``name`` the active experiment, creating it under ``$MEDART_ARTIFACT_ROOT/<name>`` when
    that is set (else where the tracking store puts artifacts: ``./mlruns`` for a local sqlite
    store, the server's ``--default-artifact-root`` for a server)."""
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is None:
        root = os.environ.get(ARTIFACT_ROOT_ENV)
        location = None
        if root:
            location = f"{root.rstrip('/')}/{name}" if "://" in root else str(Path(root).expanduser().resolve() / name)
        try:
            experiment_id = mlflow.create_experiment(name, artifact_location=location)
        except mlflow.exceptions.MlflowException:  # another process created it first
            if (experiment := mlflow.get_experiment_by_name(name)) is None:
                raise
            experiment_id = experiment.experiment_id
    else:
        experiment_id = experiment.experiment_id
    # By id: set_experiment(name) that loses this same race returns without activating the
    # experiment, and the runs that follow land in whichever experiment was active before
    # (mlflow/mlflow#12259).
    mlflow.set_experiment(experiment_id=experiment_id)


def experiment_name(dataset: str, task: str) -> str:
    """``medart/<dataset>/<task>``, e.g. ``medart/pneumonia/train``."""
    return f"medart/{dataset}/{task}"


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


# Tags MLflow derives from the process that starts a run; a child started in another process (a
# Ray worker) takes its parent's, as a child started in the parent's own process would have them.
_PROCESS_TAGS = ("mlflow.user", "mlflow.source.")


@contextlib.contextmanager
def start_run(experiment: str, run_name: str, parent_run_id: str | None = None, **kwargs) -> Iterator[mlflow.ActiveRun]:
    """An MLflow run tagged with medart's version and git commit.

    Started while another run is active, it becomes that run's child, in the parent's experiment.
    With ``parent_run_id`` and no active run (a worker process or machine, the parent running
    elsewhere), it becomes that run's child, in its experiment, with its user and source tags.
    Started by ``mlflow run`` (``$MLFLOW_RUN_ID`` set, nothing active yet), it becomes the child of
    the project's run (:func:`_adopt_project_run`), in the experiment ``mlflow run`` chose.
    Otherwise it goes to ``experiment``. Leaving the block by an exception (a user error) ends the
    run as FAILED, by an interrupt (Ctrl-C, or SIGTERM after :func:`medart.interrupts.stop_on_signals`) as KILLED,
    so no run is ever left RUNNING or mistaken for a finished result.
    """
    from medart import __version__

    tags = {"medart.version": __version__}
    active = mlflow.active_run()
    if active is None and parent_run_id is None and os.environ.get("MLFLOW_RUN_ID"):
        active = _adopt_project_run()
    if active is not None:
        kwargs |= {"nested": True, "experiment_id": active.info.experiment_id, "parent_run_id": parent_run_id}
    elif parent_run_id is not None:
        parent = mlflow.MlflowClient().get_run(parent_run_id)
        tags |= {k: v for k, v in parent.data.tags.items() if k.startswith(_PROCESS_TAGS)}
        kwargs |= {"parent_run_id": parent_run_id, "experiment_id": parent.info.experiment_id}
    else:
        use_experiment(experiment)
    if commit := git_commit():
        tags["mlflow.source.git.commit"] = commit
    with deferred_interrupts():  # a run created but not yet entered could never be ended
        started = mlflow.start_run(run_name=run_name, tags=tags, **kwargs)
    if _PROJECT["run"] is not None and active is not None and active.info.run_id == _PROJECT["run"].info.run_id:
        _point_project_run_at(started)
    with started as run:
        try:
            raise_pending_interrupt()
            yield run
        except KeyboardInterrupt:  # Ctrl-C, or SIGTERM via interrupts.stop_on_signals: killed, not failed
            mlflow.end_run("KILLED")
            raise


STAGE_RUN_TAG = "medart.stage_run_id"  # on a project run: its newest direct child, the stage's run
# The run `mlflow run` created for this process, once a stage has adopted it as its parent.
_PROJECT: dict = {"run": None, "stages": []}


def _adopt_project_run() -> mlflow.ActiveRun:
    """Make the run ``mlflow run`` created for this process (``$MLFLOW_RUN_ID``) the active parent
    of the stage's runs.

    One writer of params per run: ``mlflow run`` has logged every ``-P`` value on it as typed (the
    strings ``1/255``, ``none``), so the project run records what was asked and the stage's runs,
    its children, what the stage resolved (ε as k/255 beside its float, the champion's URI),
    exactly as when the stage runs outside a project. :func:`end_project_run` ends it.
    """
    run = mlflow.start_run()  # resumes $MLFLOW_RUN_ID (and unsets it, so the stage's run is new)
    _PROJECT.update(run=run, stages=[])
    return run


def _point_project_run_at(stage: mlflow.ActiveRun) -> None:
    """Name the project run after its newest direct child — the stage's run, started after any
    runs it reuses or makes first (``detect`` attacks before it detects) — tag its id, and list
    every direct child in the description the run page opens on."""
    _PROJECT["stages"].append(stage.info.run_name)
    runs = ", ".join(f"`{name}`" for name in _PROJECT["stages"])
    tags = {"mlflow.runName": f"{stage.info.run_name} (mlflow run)", STAGE_RUN_TAG: stage.info.run_id,
            NOTE_TAG: f"`mlflow run` of medart: this run's params are the `-P` values as given; its "
                                   f"child runs ({runs}) hold what the stage resolved and measured."}
    mlflow.MlflowClient().log_batch(_PROJECT["run"].info.run_id, tags=[RunTag(k, v) for k, v in tags.items()])


def end_project_run(status: str = "FINISHED") -> None:
    """End the project run adopted by :func:`_adopt_project_run`, if any, with ``status``
    (``mlflow run`` marks it again from the exit code)."""
    run, _PROJECT["run"] = _PROJECT["run"], None
    if run is not None:
        mlflow.MlflowClient().set_terminated(run.info.run_id, status)
        if (active := mlflow.active_run()) is not None and active.info.run_id == run.info.run_id:
            mlflow.end_run(status)


def log_figure(fig, name: str) -> None:
    """Log a matplotlib figure as ``name`` (e.g. ``figures/training.png``). medart's figures are made
    without pyplot (:mod:`medart.render`), so nothing keeps them alive afterwards."""
    mlflow.log_figure(fig, name)


def describe(markdown: str, run_id: str | None = None) -> None:
    """Make ``markdown`` the description of run ``run_id`` (default: the active run), which the
    MLflow UI's run page opens on; a text over MLflow's :data:`NOTE_LIMIT` is cut at a line, and
    says so."""
    if len(markdown) > NOTE_LIMIT:
        cut = "\n\n… (cut at MLflow's limit of a description: the run's tables hold the rest)\n"
        markdown = markdown[: NOTE_LIMIT - len(cut)].rsplit("\n", 1)[0] + cut
    if run_id is None:
        mlflow.set_tag(NOTE_TAG, markdown)
    else:
        mlflow.MlflowClient().set_tag(run_id, NOTE_TAG, markdown)
