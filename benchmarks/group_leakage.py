"""How many patients the protocol's splits put on two sides, on an NIH-like ``Data_Entry_2017.csv``.

Writes a synthetic ``Data_Entry_2017.csv`` of ``--rows`` rows in NIH's layout (real header, rows
sorted by patient as NIH's are, empty placeholder images: the splits read only the CSV) and loads
``chestxray2`` from it with ``source="original"`` (no ``test_list.txt``), for each seed. Patients
are counted from the CSV's ``Patient ID`` by image file name, not from medart's own groups, so the
same script measures any medart version: run it once with ``PYTHONPATH`` at a checkout of main
(per-image splits) and once at this one (patient-wise splits).

The cohort: images per patient ``ceil(lognormal(0.55, 1.05))``, capped at 184 (NIH's mean is
3.6 images per patient, its largest 184); 4 % of patients are prone to pneumothorax and have
twice the images, each a single-label ``Pneumothorax`` with probability 0.3, ``No Finding`` 0.15,
else another finding; every other patient's image is ``No Finding`` with probability 0.6.

    PYTHONPATH=$PWD python benchmarks/group_leakage.py --rows 40000 --seeds 0,1,2
"""

from __future__ import annotations

import csv
import math
import tempfile
import time
from pathlib import Path

import click
import numpy as np

HEADER = ["Image Index", "Finding Labels", "Follow-up #", "Patient ID", "Patient Age", "Patient Gender",
          "View Position", "OriginalImage[Width", "Height]", "OriginalImagePixelSpacing[x", "y]"]


def write_cohort(root: Path, rows: int, seed: int = 0) -> dict[str, str]:
    """``root/Data_Entry_2017.csv`` and empty ``root/images/*.png``; returns image name → Patient ID."""
    rng = np.random.default_rng(seed)
    patient_of, lines, patient = {}, [], 0
    while len(lines) < rows:
        patient += 1
        prone = rng.random() < 0.04
        n = min(184, math.ceil(rng.lognormal(0.55, 1.05)) * (2 if prone else 1))
        for k in range(n):
            u = rng.random()
            if prone:
                finding = "Pneumothorax" if u < 0.3 else "No Finding" if u < 0.45 else "Effusion|Pneumothorax"
            else:
                finding = "No Finding" if u < 0.6 else "Infiltration"
            name = f"{patient:08d}_{k:03d}.png"
            patient_of[name] = str(patient)
            lines.append([name, finding, str(k), str(patient), "50", "M", "PA", "2500", "2048", "0.143", "0.143"])
    lines = lines[:rows]
    (root / "images").mkdir(parents=True)
    with open(root / "Data_Entry_2017.csv", "w", newline="") as f:
        csv.writer(f).writerows([HEADER, *lines])
    for line in lines:
        (root / "images" / line[0]).touch()
    return {line[0]: patient_of[line[0]] for line in lines}


def patients(dataset, patient_of: dict[str, str]) -> set[str]:
    """The Patient IDs of ``dataset``'s images, read through the CSV (works for any medart version)."""
    parent, index = dataset, np.arange(len(dataset))
    while hasattr(parent, "parent"):  # a Subset of a Subset of the loaded files
        index, parent = parent.indices[index], parent.parent
    return {patient_of[Path(parent.paths[i]).name] for i in index}


@click.command()
@click.option("--rows", type=click.IntRange(min=100), default=40_000, show_default=True, help="CSV rows to write.")
@click.option("--seeds", default="0,1,2", show_default=True, help="Split seeds, comma-separated.")
def main(rows: int, seeds: str) -> None:
    """Print, per seed, the patients found on two sides of the protocol's splits."""
    from medart.data import load_dataset

    with tempfile.TemporaryDirectory() as folder:
        patient_of = write_cohort(Path(folder), rows)
        click.echo(f"{rows} rows, {len(set(patient_of.values()))} patients")
        click.echo("| seed | images kept (no finding : pneumothorax) | patients | test patients | test patients also "
                   "in Train + Val | patients in both AdvTrain and AdvTest | Val patients also in Train | load (s) |")
        click.echo("|---:" * 8 + "|")
        for seed in (int(s) for s in seeds.split(",")):
            start = time.perf_counter()
            splits = load_dataset("chestxray2", folder, source="original", seed=seed)
            seconds = time.perf_counter() - start
            who = {part: patients(getattr(splits, part), patient_of) for part in ("train", "val", "adv_train", "adv_test")}
            test = who["adv_train"] | who["adv_test"]
            counts = np.bincount(np.concatenate([getattr(splits, p).targets for p in who]), minlength=2)
            click.echo(f"| {seed} | {counts.sum()} ({counts[0]} : {counts[1]}) | {len(set().union(*who.values()))} | "
                       f"{len(test)} | {len(test & (who['train'] | who['val']))} | "
                       f"{len(who['adv_train'] & who['adv_test'])} | {len(who['val'] & who['train'])} | {seconds:.1f} |")


if __name__ == "__main__":
    main()
