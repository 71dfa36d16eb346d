"""Why medical models are easy to attack and easy to detect: the paper's analysis figures and the
numbers behind them (ε curves, saliency, stage activations, loss landscape, t-SNE, Grad-CAM),
and an HTML report of a run."""

from medart.analysis.gradcam import cam_overlap, grad_cam
from medart.analysis.landscape import loss_grid, sharpness, surrogate_direction
from medart.analysis.saliency import high_saliency_fraction, input_gradient, saliency_maps
from medart.analysis.stages import relative_change, stage_maps

__all__ = ["cam_overlap", "grad_cam", "high_saliency_fraction", "input_gradient", "loss_grid", "relative_change",
           "saliency_maps", "sharpness", "stage_maps", "surrogate_direction"]
