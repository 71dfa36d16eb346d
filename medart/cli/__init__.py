"""``medart`` command line: the one face. Each command builds the stage's typed requests from its
options (named as the requests' fields) and calls the stage; the MLproject's entry points call these
same commands (:mod:`medart.mlproject`).

Nothing heavy is imported here: torch, MLflow and the stages load when a command runs, so
``medart --help`` answers at once.
"""

from __future__ import annotations

import logging
import re
import sys
import warnings

import click

from medart.errors import MedartError

_PARAMETER = re.compile(r"`([a-z][a-z0-9_]*)`")


_SWITCH = re.compile(r"`([a-z][a-z0-9_]*)`=(True|False)")


def spell_for_cli(message: str, command: click.Command | None) -> str:
    """A library message with each `` `parameter` `` of ``command`` written as its flag
    (``--max-examples``), and `` `flag`=True `` / ``=False`` as ``--flag`` / ``--no-flag``."""
    options = {p.name: p for p in (command.params if command else []) if isinstance(p, click.Option)}

    def switch(match: re.Match) -> str:
        option = options.get(match.group(1))
        if option is None:
            return match.group(0)
        on = match.group(2) == "True"
        return option.opts[0] if on or not option.secondary_opts else option.secondary_opts[0]

    message = _SWITCH.sub(switch, message)
    return _PARAMETER.sub(lambda m: options[m.group(1)].opts[0] if m.group(1) in options else m.group(0), message)


class ReportsUserErrors:
    """Mixin for click commands: reports :class:`MedartError` as one line (``Error: …``, exit 2),
    without a traceback, and an interrupt (Ctrl-C, SIGTERM, SIGHUP) as one line with exit 130, after
    the open MLflow runs have ended KILLED."""

    interrupted = ("open runs ended as KILLED; run the same command again to resume from the last completed stage "
                   "(trained model, cached adversarial examples)")

    def invoke(self, ctx: click.Context):
        from medart.interrupts import stop_on_signals

        stop_on_signals()
        status = "FAILED"
        try:
            result = super().invoke(ctx)
            status = "FINISHED"
            return result
        except MedartError as exc:
            click.echo(f"Error: {self.spell(ctx, str(exc))}", err=True)
            sys.exit(2)
        except KeyboardInterrupt as exc:
            status = "KILLED"
            click.echo(f"Interrupted ({exc or 'SIGINT'}): {self.interrupted}", err=True)
            sys.exit(130)
        finally:
            # A project run (`mlflow run`) is adopted by medart.tracking's start_run, so there is none to
            # end unless a stage imported it; importing it here would make `--help` wait for MLflow.
            if (tracking := sys.modules.get("medart.tracking")) is not None:
                tracking.end_project_run(status)


    @staticmethod
    def spell(ctx: click.Context, message: str) -> str:
        """``message`` with its `` `parameters` `` spelled for the face that runs: the MLproject passes its
        own speller as ``obj["spell"]``; otherwise they become the command's flags."""
        if isinstance(ctx.obj, dict) and "spell" in ctx.obj:
            return ctx.obj["spell"](message)
        command = ctx.command
        if isinstance(command, click.Group) and ctx.invoked_subcommand:
            command = command.get_command(ctx, ctx.invoked_subcommand)
        return spell_for_cli(message, command)


def run_line(kind: str, run_id: str, detail: str = "") -> str:
    """``<kind> run <id> in <tracking store>: <detail>``: the first line every command that logs a
    run prints, so the run can be found again (``mlflow ui``, ``medart report --run-id``)."""
    import mlflow

    return f"{kind} run {run_id} in {mlflow.get_tracking_uri()}" + (f": {detail}" if detail else "")


def attach_report(run_id: str, output: str | None = None, log: bool = True) -> str:
    """Attach run ``run_id``'s HTML report to it (with ``log``) and write it to ``output`` (when
    given); the line that says where it went."""
    from medart.stages.report import REPORT_ARTIFACT, report_run

    path = report_run(run_id, output, log)
    where = ([f"{REPORT_ARTIFACT} of run {run_id}"] if log else []) + ([str(path)] if path else [])
    return "report: " + ", and ".join(where)


class MedartGroup(ReportsUserErrors, click.Group):
    """The ``medart`` command group (see :class:`ReportsUserErrors`)."""


@click.group(cls=MedartGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
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
    # The stages' notes (which run made the cached examples; the degenerate-model guard's warning,
    # said by every run it tags) on stderr, each distinct line once: a detect command's attack runs
    # and its parent run say the same line.
    logging.getLogger("medart").handlers = [_OnceHandler()]
    logging.getLogger("medart").setLevel(logging.INFO)


class _OnceHandler(logging.Handler):
    """Each distinct message on stderr once, as it is (one handler per command invocation)."""

    def __init__(self) -> None:
        super().__init__()
        self.shown: set[str] = set()

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message not in self.shown:
            self.shown.add(message)
            click.echo(message, err=True)


from medart.cli import (  # noqa: E402, F401  (each module adds its command to `main`)
    ablate, analyze, attack, compare, datasets, detect, eps_curves, evaluate, harden, pipeline, register, report, sweep, train,
)

__all__ = ["ReportsUserErrors", "attach_report", "main", "run_line", "spell_for_cli"]
