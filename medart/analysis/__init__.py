"""Why medical models are easy to attack and easy to detect: the measurements behind the paper's
analysis figures (saliency, stage activations, loss landscape, t-SNE, Grad-CAM). The stage that
draws them is :mod:`medart.stages.analyze`, the figures are in :mod:`medart.render.analysis`."""

from medart.analysis.embedding import penultimate_features, tsne_embedding
from medart.analysis.gradcam import cam_overlap, grad_cam
from medart.analysis.landscape import loss_grid, sharpness, surrogate_direction
from medart.analysis.saliency import high_saliency_fraction, input_gradient, saliency_maps
from medart.analysis.stages import relative_change, stage_maps

__all__ = ["cam_overlap", "grad_cam", "high_saliency_fraction", "input_gradient", "loss_grid", "penultimate_features",
           "relative_change", "saliency_maps", "sharpness", "stage_maps", "surrogate_direction", "tsne_embedding"]
