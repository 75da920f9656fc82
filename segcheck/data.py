"""The dataset protocol, its description (``DatasetSpec``) and eval-set sampling."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np

from segcheck import SegcheckError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class DatasetSpec:
    """What a dataset's labels mean and how its images are normalized.

    ``mean``/``std`` are per channel in pixel scale 0-1 (the image is divided by 255 first).
    ``ignore_index`` marks pixels that no metric counts. ``anomaly_index``, when set, is the
    label of out-of-distribution pixels (not one of ``classes``).
    """

    classes: tuple[str, ...]
    ignore_index: int = 255
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    splits: tuple[str, ...] = ("train", "val", "test")
    anomaly_index: int | None = None

    def __post_init__(self):
        if len(self.classes) < 2:
            raise SegcheckError(f"a dataset needs at least 2 classes, got {list(self.classes)}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise SegcheckError(f"mean and std need 3 values with std > 0, got mean={self.mean} std={self.std}")
        if 0 <= self.ignore_index < len(self.classes):
            raise SegcheckError(
                f"ignore_index {self.ignore_index} collides with class {self.classes[self.ignore_index]!r}; "
                f"use a value outside 0..{len(self.classes) - 1} (default 255)"
            )
        if self.anomaly_index is not None and (self.anomaly_index < len(self.classes)
                                               or self.anomaly_index == self.ignore_index):
            raise SegcheckError(
                f"anomaly_index {self.anomaly_index} collides with a class id (0..{len(self.classes) - 1}) or "
                f"ignore_index {self.ignore_index}; choose another value"
            )

    @property
    def num_classes(self) -> int:
        return len(self.classes)


class SegDataset(Protocol):
    """A split of a dataset: ``len()`` samples, each ``(image, mask)``.

    ``image`` is uint8 (H, W, 3); ``mask`` is int64 (H, W) with values in
    ``range(spec.num_classes)``, ``spec.ignore_index`` or ``spec.anomaly_index``.
    ``identity`` is a short string that names the data (e.g. ``"synthetic-streets:seed=0"``).
    """

    spec: DatasetSpec
    split: str
    identity: str

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]: ...


def eval_indices(length: int, size: int, seed: int) -> list[int]:
    """A fixed, seeded, sorted sample of ``size`` indices out of ``length`` (all if fewer)."""
    if length == 0:
        raise SegcheckError("the dataset split is empty; check --data-root and the split's files")
    if size >= length:
        return list(range(length))
    rng = np.random.default_rng(seed)
    return sorted(rng.choice(length, size=size, replace=False).tolist())


def stack(dataset: SegDataset, indices: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, H, W, 3) uint8 and masks (N, H, W) int64 of ``indices``; sizes must agree."""
    images, masks = zip(*(dataset[i] for i in indices))
    shapes = {im.shape for im in images}
    if len(shapes) != 1:
        raise SegcheckError(
            f"eval images have different sizes {sorted(shapes)}; segcheck batches them, so resize the data "
            "to one size (or register a dataset that does)"
        )
    return np.stack(images).astype(np.uint8, copy=False), np.stack(masks).astype(np.int64, copy=False)
