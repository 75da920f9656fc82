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


class FrozenHead(nn.Module):
    """Wraps a module but detaches its logits, as a training loop with a broken graph would:
    no gradient reaches any weight, so it cannot learn anything."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x).detach() + 0 * self.inner.head.bias.sum()


# --- defective models for the content, stability, collapse, generalization and audit gates -----


class NumpyRoundTrip(nn.Module):
    """Wraps a module but sends its input through numpy first: predictions still follow the
    content, yet the autograd graph to the input is cut (as preprocessing outside torch does)."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(torch.from_numpy(x.detach().cpu().numpy()).to(x.device))


class LowBitsModel(nn.Module):
    """Reads its input, but only the lowest bits: class = red pixel value mod ``num_classes``.

    Register it with ``mean=(0, 0, 0), std=(1, 1, 1)`` so that its input is pixels / 255.
    Any small change of the pixel values (noise, brightness, blur, JPEG) changes the classes.
    """

    def __init__(self, num_classes: int = 8):
        super().__init__()
        self.num_classes = num_classes
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, x):
        values = torch.round(x[:, 0] * 255).long() % self.num_classes
        onehot = nn.functional.one_hot(values, self.num_classes).permute(0, 3, 1, 2).float()
        return onehot * 10 * self.scale


class LookupModel(nn.Module):
    """Memorizes (image -> mask) pairs and outputs the memorized mask for a known image, and
    the constant class ``fallback`` for any other: a model that has seen its eval split."""

    def __init__(self, num_classes: int = 8, fallback: int = 4):
        super().__init__()
        self.num_classes, self.fallback = num_classes, fallback
        self.table: dict[bytes, torch.Tensor] = {}
        self.bias = nn.Parameter(torch.zeros(1))

    @staticmethod
    def key(image: torch.Tensor) -> bytes:
        return torch.round(image.detach().cpu() * 64).to(torch.int32).numpy().tobytes()

    def memorize(self, normalized: torch.Tensor, masks: np.ndarray) -> None:
        for image, mask in zip(normalized, masks):
            labels = torch.from_numpy(np.asarray(mask, dtype=np.int64))
            self.table[self.key(image)] = labels.clamp(0, self.num_classes - 1)

    def forward(self, x):
        maps = [self.table.get(self.key(image), torch.full(x.shape[-2:], self.fallback)) for image in x]
        onehot = nn.functional.one_hot(torch.stack(maps), self.num_classes).permute(0, 3, 1, 2).float()
        return onehot.to(x.device) * 10 + self.bias


class HotHead(nn.Module):
    """A 1x1 convolution whose weights are initialized 100x too large: the loss at
    initialization is far above ln(C)."""

    def __init__(self, num_classes: int = 8, gain: float = 100.0):
        super().__init__()
        self.head = nn.Conv2d(3, num_classes, 1)
        with torch.no_grad():
            self.head.weight.mul_(gain)

    def forward(self, x):
        return self.head(x)


class AuxNet(nn.Module):
    """A small net with a torchvision-style auxiliary head (``aux.*``) when ``aux_loss``.

    With ``return_aux=False`` the head exists but ``forward`` never uses it, so it never trains.
    """

    def __init__(self, num_classes: int = 8, aux_loss: bool = False, return_aux: bool = True):
        super().__init__()
        self.body = nn.Conv2d(3, 8, 3, padding=1)
        self.head = nn.Conv2d(8, num_classes, 1)
        self.aux = nn.Conv2d(8, num_classes, 1) if aux_loss else None
        self.return_aux = return_aux

    def forward(self, x):
        features = torch.relu(self.body(x))
        out = {"out": self.head(features)}
        if self.aux is not None and self.return_aux:
            out["aux"] = self.aux(features)
        return out


class BatchStatsModel(nn.Module):
    """Normalizes with the statistics of the current batch even in eval mode
    (``BatchNorm2d(track_running_stats=False)``): predictions depend on the batch."""

    def __init__(self, num_classes: int = 8):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.norm = nn.BatchNorm2d(8, track_running_stats=False)
        self.head = nn.Conv2d(8, num_classes, 1)

    def forward(self, x):
        return self.head(torch.relu(self.norm(self.conv(x))))


class AlwaysDropout(nn.Module):
    """Uses ``F.dropout`` without ``training=self.training``: dropout stays on in eval mode."""

    def __init__(self, num_classes: int = 8):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.head = nn.Conv2d(16, num_classes, 1)

    def forward(self, x):
        return self.head(nn.functional.dropout(torch.relu(self.conv(x)), p=0.5))


class DeviceDependent(nn.Module):
    """Wraps a module but zeroes its input on CUDA: the CPU and CUDA predictions differ."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x * 0 if x.is_cuda else x)


class GrayRoadDetector(nn.Module):
    """A hand-made binary (one-logit) road detector for synthetic-streets: road is dark,
    unsaturated gray. Register it with ``mean=(0, 0, 0), std=(1, 1, 1)`` (input = pixels / 255).

    ``shift`` is added to the logit (negative values push every probability below 0.5);
    ``as_probability`` applies the sigmoid inside, the classic sigmoid-vs-logit mix-up.
    """

    def __init__(self, shift: float = 0.0, as_probability: bool = False):
        super().__init__()
        self.shift = nn.Parameter(torch.tensor(float(shift)))
        self.as_probability = as_probability

    def forward(self, x):
        chroma = x.amax(1, keepdim=True) - x.amin(1, keepdim=True)
        value = x.mean(1, keepdim=True)
        logit = 40 * (0.06 - chroma) + 30 * (0.12 - (value - 0.32).abs()) + self.shift
        return torch.sigmoid(logit) if self.as_probability else logit
