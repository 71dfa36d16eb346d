"""A small VGG-style backbone (about 0.3 M parameters with the paper's head) for capacity ablations.

Ma et al. blame the ease of attacking medical models mainly on over-parameterised ImageNet
networks; this backbone is the other end of that axis. It is laid out like a torchvision ResNet —
a stem, four stages ``layer1`` … ``layer4`` of two blocks each, a 128-channel output — so
:class:`~medart.models.resnet.MedResNet` wraps it with the same head, normalisation and feature
taps (``layer2.0`` = ``res3a_relu``, ``layer4.1`` = ``res5b_relu``), and every detector and
analysis that runs on a ResNet runs on it.
"""

from __future__ import annotations

from torch import nn

WIDTHS = (16, 32, 64, 128)  # output channels of layer1 … layer4
MIN_SIDE = 2 ** len(WIDTHS)  # each stage halves the side with a 2×2 max-pool; below this layer4 is empty


def conv_block(in_channels: int, out_channels: int, pool: bool = False) -> nn.Sequential:
    """[2×2 max-pool →] 3×3 convolution → batch norm → ReLU."""
    layers: list[nn.Module] = [nn.MaxPool2d(2)] if pool else []
    layers += [nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels),
               nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


def small_cnn_backbone(widths: tuple[int, ...] = WIDTHS) -> tuple[nn.Sequential, list[nn.Sequential], int]:
    """``(stem, [layer1, …], out_channels)``: a full-resolution stem, then per stage a pooling
    block and a plain block. Inputs need a side of at least ``2 ** len(widths)`` pixels."""
    stem = conv_block(3, widths[0])
    stages, channels = [], widths[0]
    for width in widths:
        stages.append(nn.Sequential(conv_block(channels, width, pool=True), conv_block(width, width)))
        channels = width
    return stem, stages, channels
