"""medart: adversarial attacks on medical image classifiers, and their detection (Ma et al. 2021)."""

__version__ = "0.1.0"

from medart.data import load_dataset  # noqa: E402
from medart.models.registry import load_model  # noqa: E402
from medart.models.resnet import MedResNet, build_model  # noqa: E402

__all__ = ["MedResNet", "__version__", "build_model", "load_dataset", "load_model"]
