"""Deliberately defective (and honest) modules that the gates must judge correctly."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from segcheck_plugins.synthetic_streets import SyntheticStreets


def majority_label_map(num_images: int = 64) -> torch.Tensor:
    """The most frequent training class at each pixel position (H, W)."""
    train = SyntheticStreets(split="train")
    masks = np.stack([train[i][1] for i in range(num_images)])
    counts = np.stack([(masks == c).sum(0) for c in range(len(train.spec.classes))])
    return torch.from_numpy(counts.argmax(0))


class PositionalModel(nn.Module):
    """Ignores its input: outputs the majority label map of the training data."""

    def __init__(self, num_classes: int = 8):
        super().__init__()
        self.register_buffer("labels", majority_label_map())
        self.num_classes = num_classes
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        onehot = nn.functional.one_hot(self.labels, self.num_classes).permute(2, 0, 1).float()
        return (onehot * 10 + self.bias).expand(len(x), -1, -1, -1)


class ConstantModel(nn.Module):
    """Predicts ``channels`` logits that do not depend on the input, at ``stride`` resolution."""

    def __init__(self, channels: int = 8, value: float = 0.0, stride: int = 1, aspect_bug: bool = False):
        super().__init__()
        self.channels, self.value, self.stride, self.aspect_bug = channels, value, stride, aspect_bug
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        h, w = x.shape[-2] // self.stride, x.shape[-1] // self.stride
        if self.aspect_bug:
            w = h
        return torch.full((len(x), self.channels, h, w), self.value) + self.weight


class DictOutput(nn.Module):
    """Wraps a module so that it returns torchvision's ``{"out": ...}``."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return {"out": self.inner(x)}
