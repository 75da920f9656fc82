"""mypkg's model: a small fully convolutional net (``build``), and the trained one the package ships (``trained``)."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

#: the weights the package ships, trained with ``segcheck train`` (its sidecar beside it)
WEIGHTS = Path(__file__).resolve().parent / "weights" / "terrain.safetensors"


class TerrainNet(nn.Module):
    """Three convolutions (5x5 receptive field): logits (B, num_classes, H, W) at input size."""

    def __init__(self, num_classes: int, width: int = 16):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, num_classes, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def build(num_classes: int, width: int = 16) -> nn.Module:
    """A new, untrained TerrainNet (``width`` via ``--model-arg width=N``)."""
    return TerrainNet(num_classes, width)


def trained(num_classes: int = 8) -> nn.Module:
    """The TerrainNet with the weights the package ships (trained on ``mypkg-terrain``)."""
    model = TerrainNet(num_classes)
    model.load_state_dict(load_file(WEIGHTS))
    return model.eval()
