"""The report stage: a self-contained HTML page of a run (with all its descendant runs, at any
depth, and the attack runs it used) or of an experiment's newest top-level runs (``medart report``).

Everything is read back through ``MlflowClient`` — metrics, params, ``*.md`` tables and
``figures/*.png`` — so the page shows what was logged, nothing recomputed;
:mod:`medart.render.report` draws it. The page lives in the run: attached as ``report.html``,
tagged ``medart.report_uri`` and linked from the run's description; a local file only where one
is asked for.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import mlflow
from mlflow.entities import Run
from mlflow.exceptions import MlflowException

from medart import tracking
from medart.attacks.specs import ATTACK_ENTRIES
from medart.detectors import DETECTORS
from medart.errors import ConfigError
from medart.render.explain import Glossary, how_to_read
from medart.render.notes import note, report_link, with_report
from medart.render.report import RunView, experiment_page, run_page

REPORT_TAG = "medart.report"  # on the run `report_experiment` makes to hold an experiment's page
REPORT_ARTIFACT = "report.html"
REPORT_URI_TAG = "medart.report_uri"  # on a run with its report attached: runs:/<run id>/report.html
# On a run that used attack runs: medart.attack_run (detect's per-attack runs) or medart.attack_run.<attack>.
ATTACK_RUN_TAG = "medart.attack_run"
GLOSSARY = Glossary(ATTACK_ENTRIES, DETECTORS)  # what the page says each attack and detector is
_SKIPPED = ("model", "adversarial")  # artifact folders of weights and examples: not for a page


def _search(client: mlflow.MlflowClient, experiment_id: str, query: str, order: str) -> list[Run]:
    """Every run of the experiment that matches ``query``, page after page."""
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], query, order_by=[order], max_results=1000, page_token=token)
        runs += page
        token = page.token
        if not token:
            return runs


def _artifacts(client: mlflow.MlflowClient, run_id: str, path: str = "") -> list[str]:
    files = []
    for item in client.list_artifacts(run_id, path or None):
        if not item.is_dir:
            files.append(item.path)
        elif item.path.split("/")[0] not in _SKIPPED:
            files += _artifacts(client, run_id, item.path)
    return files


def _view(client: mlflow.MlflowClient, run: Run, folder: Path | None) -> RunView:
    """One run's record; with ``folder`` (where artifacts are downloaded) its tables and figures too."""
    info, data = run.info, run.data
    view = RunView(info.run_id, info.run_name, info.status, info.start_time, dict(data.params), dict(data.metrics),
                   dict(data.tags))
    if folder is not None:
        files = _artifacts(client, info.run_id)
        view.tables = [(path, Path(client.download_artifacts(info.run_id, path, str(folder))).read_text())
                       for path in files if path.endswith(".md")]
        view.figures = [(path, Path(client.download_artifacts(info.run_id, path, str(folder))).read_bytes())
                        for path in files if path.startswith("figures/") and path.endswith(".png")]
    return view


def _tree(client: mlflow.MlflowClient, run: Run, folder: Path | None, descendants_folder: Path | None,
          seen: set[str] | None = None) -> RunView:
    """``run``'s record with its children's, theirs, and so on at any depth (oldest first); artifacts
    of the run read into ``folder``, of its descendants into ``descendants_folder`` (None: not read)."""
    seen = set() if seen is None else seen
    seen.add(run.info.run_id)
    view = _view(client, run, folder)
    children = _search(client, run.info.experiment_id, f"tags.mlflow.parentRunId = '{run.info.run_id}'",
                       "attributes.start_time ASC")
    view.children = [_tree(client, child, descendants_folder, descendants_folder, seen)
                     for child in children if child.info.run_id not in seen]
    return view


def _linked(client: mlflow.MlflowClient, views: list[RunView], folder: Path) -> list[RunView]:
    """The attack runs that ``views`` name in their ``medart.attack_run…`` tags but do not hold (a
    ``detect`` run attacks before its own run starts), oldest first, their artifacts read into
    ``folder``; one deleted since is left out."""
    inside = {v.run_id for v in views}
    named = dict.fromkeys(value for v in views for key, value in sorted(v.tags.items())
                          if key == ATTACK_RUN_TAG or key.startswith(f"{ATTACK_RUN_TAG}."))
    runs = []
    for run_id in named:
        if run_id not in inside:
            try:
                runs.append(client.get_run(run_id))
            except MlflowException:
                continue
    return [_view(client, r, folder) for r in sorted(runs, key=lambda r: r.info.start_time or 0)]


def _get_run(client: mlflow.MlflowClient, run_id: str) -> Run:
    try:
        return client.get_run(run_id)
    except MlflowException:
        raise ConfigError(f"run '{run_id}' not found in {mlflow.get_tracking_uri()}; check `run_id` and `tracking_uri`") from None


def _write(page: str, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path


def _nowhere(output: str | Path | None, log: bool) -> None:
    if output is None and not log:
        raise ConfigError("the report would go nowhere: give `output` (a file), or let `log`=True attach it to the run")


def report_run(run_id: str, output: str | Path | None = None, log: bool = True) -> Path | None:
    """The page of run ``run_id``, all its descendant runs and the attack runs it used: with
    ``log``, attached to the run as ``report.html`` (:func:`_attach`); with ``output``, also
    written to that file. Returns the file's path (``None`` without ``output``)."""
    _nowhere(output, log)
    client = mlflow.MlflowClient()
    run = _get_run(client, run_id)
    experiment = client.get_experiment(run.info.experiment_id).name
    with tempfile.TemporaryDirectory() as tmp:
        tree = _tree(client, run, Path(tmp), Path(tmp))
        runs = [tree, *tree.descendants()]
        linked = _linked(client, runs, Path(tmp))
        page = run_page(tree, experiment, mlflow.get_tracking_uri(), how_to_read([*runs, *linked], GLOSSARY), linked)
        if log:
            _attach(client, run, _write(page, Path(tmp) / "upload" / REPORT_ARTIFACT))
    return None if output is None else _write(page, Path(output))


def _attach(client: mlflow.MlflowClient, run: Run, page: Path) -> None:
    """``page`` as ``run``'s ``report.html``, the run tagged with its URI and its description ending
    with a link to it; so is the description of the project run (``mlflow run``) whose stage it is."""
    run_id = run.info.run_id
    client.log_artifact(run_id, str(page))
    client.set_tag(run_id, REPORT_URI_TAG, f"runs:/{run_id}/{REPORT_ARTIFACT}")
    link = report_link(run.info.experiment_id, run_id)
    tracking.describe(with_report(run.data.tags.get(tracking.NOTE_TAG, ""), link), run_id)
    if parent_id := run.data.tags.get("mlflow.parentRunId"):
        parent = client.get_run(parent_id).data.tags
        if parent.get(tracking.STAGE_RUN_TAG) == run_id:
            tracking.describe(with_report(parent.get(tracking.NOTE_TAG, ""), link), parent_id)


def report_experiment(experiment: str, output: str | Path | None = None, max_runs: int = 20,
                      log: bool = True) -> tuple[Path | None, str | None]:
    """The page of ``experiment``'s ``max_runs`` newest top-level runs (the paper's numbers beside
    theirs and their descendants'): with ``log``, attached as ``report.html`` to a new run in that
    experiment (tagged, so later reports skip it); with ``output``, also written to that file.
    Returns the file's path and that run's id (each ``None`` where not asked for)."""
    _nowhere(output, log)
    client = mlflow.MlflowClient()
    found = client.get_experiment_by_name(experiment)
    if found is None:
        names = ", ".join(e.name for e in client.search_experiments(max_results=20))
        raise ConfigError(f"experiment '{experiment}' not found in {mlflow.get_tracking_uri()}; known: {names or 'none'}")
    runs = [r for r in client.search_runs([found.experiment_id], order_by=["attributes.start_time DESC"], max_results=1000)
            if "mlflow.parentRunId" not in r.data.tags and REPORT_TAG not in r.data.tags][:max_runs]
    if not runs:
        raise ConfigError(f"experiment '{experiment}' has no runs to report")
    with tempfile.TemporaryDirectory() as tmp:
        views = [_tree(client, r, Path(tmp), None) for r in runs]  # descendants: numbers only
        explanation = how_to_read([d for r in views for d in (r, *r.descendants())], GLOSSARY)
        page = experiment_page(experiment, views, mlflow.get_tracking_uri(), explanation)
    path = None if output is None else _write(page, Path(output))
    if not log:
        return path, None
    with tracking.start_run(experiment, "report") as run:
        mlflow.set_tags({REPORT_TAG: "true", REPORT_URI_TAG: f"runs:/{run.info.run_id}/{REPORT_ARTIFACT}"})
        mlflow.log_text(page, REPORT_ARTIFACT)
        tracking.describe(note(f"The page of the {len(runs)} newest top-level runs of {experiment}",
                               report_link(run.info.experiment_id, run.info.run_id)))
    return path, run.info.run_id
