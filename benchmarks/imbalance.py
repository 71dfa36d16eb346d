"""Class imbalance: the real chest X-ray file with its Train split made 10 : 1, trained with each
``--balance``, scored on the untouched (balanced) test split.

The file's splits hold as many normal as pneumonia images; this keeps every pneumonia image of
Train (and, with ``--imbalanced train,val``, of Validation) and a seeded random tenth as many
normals, writes that file to a scratch folder, and runs
``medart train`` on it once per balance and seed (validation and test splits as they were). It
prints, per balance, the test accuracy, balanced accuracy and recall of each class (mean and
range over seeds), the numbers in docs/models-and-attacks.md.

    PYTHONPATH=$PWD python benchmarks/imbalance.py --data-dir ../shared/data
    PYTHONPATH=$PWD python benchmarks/imbalance.py --data-dir ../shared/data --imbalanced train,val
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import click
import numpy as np

from medart.catalog import BALANCES

MINORITY = 0  # normal


def imbalanced_copy(source: Path, folder: Path, ratio: int, splits: tuple[str, ...], seed: int) -> dict[str, dict[str, int]]:
    """``folder/pneumoniamnist.npz``: ``source`` with, in each of ``splits``, all normals dropped
    but ``1/ratio`` of the pneumonia count; returns those splits' class counts."""
    arrays, counts = dict(np.load(source)), {}
    rng = np.random.default_rng(seed)
    for split in splits:
        labels = arrays[f"{split}_labels"].ravel()
        minority, majority = np.flatnonzero(labels == MINORITY), np.flatnonzero(labels != MINORITY)
        keep_minority = rng.choice(minority, len(majority) // ratio, replace=False)
        keep = np.sort(np.r_[majority, keep_minority])
        for kind in ("images", "labels"):
            arrays[f"{split}_{kind}"] = arrays[f"{split}_{kind}"][keep]
        counts[split] = {"normal": len(keep_minority), "pneumonia": len(majority)}
    np.savez_compressed(folder / "pneumoniamnist.npz", **arrays)
    return counts


def train_once(folder: Path, balance: str, seed: int, args: list[str]) -> dict[str, float]:
    """One ``medart train`` on the imbalanced file; the test metrics its run logged."""
    import mlflow

    store = f"sqlite:///{folder / 'mlflow.db'}"
    command = ["train", "--dataset", "pneumonia", "--data-dir", str(folder), "--pretrained", "none", "--balance", balance,
               "--seed", str(seed), "--no-register", "--no-progress", "--no-download", *args]
    click.echo("medart " + " ".join(command).replace(str(folder), "<imbalanced copy>"), err=True)
    env = os.environ | {"MLFLOW_TRACKING_URI": store}
    done = subprocess.run([sys.executable, "-m", "medart.cli", *command], env=env, capture_output=True, text=True, cwd=folder)
    if done.returncode != 0:
        raise click.ClickException(done.stderr[-2000:])
    run_id = done.stdout.split()[1]
    return mlflow.MlflowClient(tracking_uri=store).get_run(run_id).data.metrics


@click.command()
@click.option("--data-dir", type=click.Path(file_okay=False, exists=True), required=True,
              help="Folder holding the real pneumoniamnist.npz.")
@click.option("--ratio", type=click.IntRange(min=2), default=10, show_default=True, help="pneumonia : normal in Train.")
@click.option("--imbalanced", type=click.Choice(["train", "train,val"]), default="train", show_default=True,
              help="Splits made 10 : 1; the test split stays as it is.")
@click.option("--seeds", default="0,1,2", show_default=True, help="Training seeds (the dropped normals stay the same).")
@click.option("--arch", default="smallcnn", show_default=True)
@click.option("--epochs", type=int, default=10, show_default=True)
@click.option("--monitor", default="val_acc", show_default=True, help="The checkpoint monitor of every run.")
def main(data_dir: str, ratio: int, imbalanced: str, seeds: str, arch: str, epochs: int, monitor: str) -> None:
    seeds_ = [int(s) for s in seeds.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        counts = imbalanced_copy(Path(data_dir) / "pneumoniamnist.npz", folder, ratio, tuple(imbalanced.split(",")), seed=0)
        kept = "; ".join(f"{split}: {c['normal']} normal, {c['pneumonia']} pneumonia" for split, c in counts.items())
        click.echo(f"{kept}; {arch}, {epochs} epochs, monitor {monitor}, seeds {seeds}; test split untouched\n")
        click.echo("| balance | test acc (%) | balanced acc (%) | recall normal (%) | recall pneumonia (%) |")
        click.echo("|---|---|---|---|---|")
        for balance in BALANCES:
            runs = [train_once(folder, balance, seed, ["--arch", arch, "--epochs", str(epochs), "--monitor", monitor]) for seed in seeds_]
            cells = []
            for key in ("test_acc", "test_balanced_acc", "test_recall_normal", "test_recall_pneumonia"):
                values = np.array([r[key] for r in runs]) * 100
                cells.append(f"{values.mean():.1f} ({values.min():.1f}–{values.max():.1f})")
            click.echo(f"| {balance} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
