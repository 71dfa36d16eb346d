"""``medart datasets``."""

from __future__ import annotations

from pathlib import Path

import click
from click.core import ParameterSource

from medart.cli import main, options
from medart.data import DATA_DIR_ENV, resolve_data_dir

# where the data folder came from, as the user would change it
_FROM = {ParameterSource.COMMANDLINE: "--data-dir", ParameterSource.ENVIRONMENT: f"${DATA_DIR_ENV}"}


@main.command()
@options.data_dir
@click.pass_context
def datasets(ctx: click.Context, data_dir: str | None) -> None:
    """List the named datasets and their sources, and which of their files the data folder holds.

    For each layout: what it reads, groups by and calls each class. The data folder is --data-dir,
    else $MEDART_DATA_DIR, else ~/.medart/data; it is looked at, never created.
    """
    # the declarations only: no torch, scikit-learn or pandas, so the list answers at once
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

    folder = resolve_data_dir(data_dir)
    given = _FROM.get(ctx.get_parameter_source("data_dir"))
    origin = f"from {given}" if given else f"the default; set --data-dir or ${DATA_DIR_ENV}"
    click.echo(f"\nData folder: {folder} ({origin})")
    if not folder.is_dir():  # said, not created: only a download creates it
        click.echo(f"  no such folder{'; check the path' if given else ''}: a command that reads MedMNIST files "
                   "downloads them into it (unless --no-download)")
        return
    _medmnist_files(folder, TASKS)
    if given:  # a layout's root is always named; the default folder is MedMNIST's
        _layout_files(folder, LAYOUTS)


def _medmnist_files(folder: Path, tasks: dict) -> None:
    """Each MedMNIST file of each size: its size where ``folder`` holds it, else ``missing``."""
    from tqdm import tqdm

    from medart.data.medmnist import SIZES, filename

    click.echo("  MedMNIST files (<flag>.npz at --size 28, <flag>_<size>.npz at 64, 128, 224; a missing one is "
               "downloaded when first read, unless --no-download):")
    flags = {}
    for task in tasks.values():
        flags.setdefault(task.flag, []).append(task.name)
    for flag, names in flags.items():
        paths = {size: folder / filename(flag, size) for size in SIZES}
        cells = [f"{size} px: " + (tqdm.format_sizeof(path.stat().st_size, "B", 1000) if path.is_file() else "missing")
                 for size, path in paths.items()]
        click.echo(f"    {flag:15s} " + ", ".join(cells) + f"  ({', '.join(names)})")


def _layout_files(folder: Path, layouts: dict) -> None:
    """Whether ``folder``, as a layout's root, holds the label file each layout reads."""
    click.echo("  As a layout's root (--source NAME --data-dir that folder):")
    for layout in layouts.values():
        if layout.metadata:
            found = next((name for name in layout.metadata if (folder / name).is_file()), None)
            state = f"{found} present" if found else f"{' or '.join(layout.metadata)} missing"
        else:  # class folders: the sub-folders are the classes (or train/ and test/)
            subfolders = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith((".", "__")))
            state = f"sub-folders: {', '.join(subfolders)}" if subfolders else "no sub-folders"
        click.echo(f"    {layout.name:15s} {state}")
