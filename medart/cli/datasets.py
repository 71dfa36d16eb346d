"""``medart datasets``."""

from __future__ import annotations

import click

from medart.cli import main


@main.command()
def datasets() -> None:
    """List the named datasets, the sources each is read from, and what each layout reads, groups by and
    calls each class."""
    from medart.data.sources import LAYOUTS
    from medart.data.tasks import MEDMNIST_GROUPING, TASKS

    click.echo("Datasets (--dataset) and their sources (--source; 'original' is the first layout named):")
    for task in TASKS.values():
        click.echo(f"  {task.name:12s} {len(task.classes)} classes ({', '.join(task.classes)}) — {task.description}")
        click.echo(f"  {'':12s} sources: medmnist ({task.flag})" + "".join(f", {name}" for name in task.layouts))
    click.echo("\nLayouts (--source NAME --data-dir ROOT); every split keeps one group's images on one side:")
    click.echo(f"  {'medmnist':14s} MedMNIST .npz files\n  {'':14s} grouping: {MEDMNIST_GROUPING}")
    for layout in LAYOUTS.values():
        click.echo(f"  {layout.name:14s} {layout.title}: {layout.files}")
        click.echo(f"  {'':14s} columns: {layout.columns}")
        click.echo(f"  {'':14s} grouping: {layout.grouping}")
        click.echo(f"  {'':14s} official test split: {layout.official_test}")
        if layout.labels:  # what each of the task's class names is called in these files
            click.echo(f"  {'':14s} classes: " + ", ".join(f"{task} = {own}" for task, own in layout.labels.items()))
