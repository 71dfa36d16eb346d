"""``medart datasets``."""

from __future__ import annotations

import click

from medart.cli import main


@main.command()
def datasets() -> None:
    """List the named datasets and where each comes from."""
    from medart.data.tasks import TASKS

    for task in TASKS.values():
        origin = f"MedMNIST {task.flag}" + (", original layout" if task.original else "")
        click.echo(f"{task.name:12s} {len(task.classes)} classes ({', '.join(task.classes)}) — {task.description} [{origin}]")

