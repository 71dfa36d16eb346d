"""Medical image datasets in the paper's Train / AdvTrain / AdvTest protocol."""

from medart.data.base import MedicalImageDataset, resolve_data_dir
from medart.data.medmnist import MedMNIST
from medart.data.splits import ProtocolSplits, subsample
from medart.data.tasks import TASKS, load_dataset

__all__ = ["MedMNIST", "MedicalImageDataset", "ProtocolSplits", "TASKS", "load_dataset", "resolve_data_dir", "subsample"]
