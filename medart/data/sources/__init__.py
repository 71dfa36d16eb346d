"""Lazy loaders for the public layouts users hold the paper's datasets in.

For users who hold the full datasets: they are too large for memory, so only the file list and
labels are read up front and each image is decoded from disk (with PIL) when it is indexed.
Every loader returns ``(train, test)``; ``test`` is ``None`` where the layout has no official
labelled test split, and the caller then makes its own seeded, stratified split. Loaders whose
files name a patient (or lesion) set ``groups`` on the datasets, so that every split keeps each
one on one side.

=================  ===============  ===================================  ==========================
``source``         loader           files                                grouped by
=================  ===============  ===================================  ==========================
``nih``            nih_chestxray14  ``Data_Entry_2017.csv`` + images/    ``Patient ID``
``chexpert``       chexpert         ``CheXpert-v1.0-small/train.csv``    patient folder in ``Path``
``kaggle-dr``      kaggle_dr        ``trainLabels.csv`` + ``train/``     patient in ``10_left``
``aptos``          aptos            ``train.csv`` + ``train_images/``    none
``isic``           isic             ``metadata.csv`` + ``images/``       ``patient_id``/``lesion_id``
``ham10000``       ham10000         ``HAM10000_metadata.csv`` + parts    ``lesion_id``
``class-folders``  class_folders    ``<class>/<image>``                  none
=================  ===============  ===================================  ==========================
"""

from medart.data.sources.chest import CHEXPERT_LAYOUT, NIH_LAYOUT, chexpert, nih_chestxray14
from medart.data.sources.files import ImageFileDataset, Layout
from medart.data.sources.folders import FOLDERS_LAYOUT, class_folders
from medart.data.sources.fundus import APTOS_LAYOUT, KAGGLE_DR_LAYOUT, aptos, kaggle_dr
from medart.data.sources.skin import HAM10000_LAYOUT, ISIC_LAYOUT, ham10000, isic

#: ``source`` name → how that layout lies on disk (what ``medart datasets`` prints)
LAYOUTS: dict[str, Layout] = {
    layout.name: layout
    for layout in (NIH_LAYOUT, CHEXPERT_LAYOUT, KAGGLE_DR_LAYOUT, APTOS_LAYOUT, ISIC_LAYOUT, HAM10000_LAYOUT,
                   FOLDERS_LAYOUT)
}

__all__ = ["LAYOUTS", "ImageFileDataset", "Layout", "aptos", "chexpert", "class_folders", "ham10000", "isic",
           "kaggle_dr", "nih_chestxray14"]
