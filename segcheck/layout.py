"""The positional prior of a dataset: the majority training class at each pixel position, as
positional_prior scores it and its figure draws it. Training masks are counted one at a time
(read without their images where the dataset can), so memory is the counts, not the masks."""

from __future__ import annotations

import numpy as np

from segcheck import SegcheckError
from segcheck.data import DatasetSpec, eval_indices, read_mask


class PositionCounts:
    """Per-class pixel counts (C, H, W) of masks added one at a time (ignore and anomaly pixels
    not counted), and the majority class at each position."""

    def __init__(self, spec: DatasetSpec, size: tuple[int, int], masks: int):
        self.spec, self.size = spec, size
        self.counts = np.zeros((spec.num_classes, *size), np.uint16 if masks < 1 << 16 else np.int32)
        self._positions = np.arange(size[0] * size[1]).reshape(size)

    def add(self, mask: np.ndarray) -> None:
        mask = np.asarray(mask)
        if mask.shape != self.size:
            raise SegcheckError(
                f"training masks differ in size ({mask.shape[0]}x{mask.shape[1]} after {self.size[0]}x{self.size[1]}); "
                "set an eval.resize policy (e.g. --eval-resize 512x512)"
            )
        counted = self.spec.counted(mask) & (mask >= 0) & (mask < self.spec.num_classes)  # a wrong label: no class
        flat = self.counts.reshape(self.spec.num_classes, -1)
        flat[mask[counted].astype(np.intp), self._positions[counted]] += 1  # each position once per mask

    def majority(self) -> np.ndarray:
        """The most frequent class (H, W) at each position; a position with no counted pixel gets
        the most frequent class overall. Ties go to the lower class id."""
        prior = self.counts.argmax(0)
        empty = self.counts.sum(0) == 0
        if empty.any():
            prior[empty] = int(self.counts.sum((1, 2), dtype=np.int64).argmax())
        return prior


def majority_map(masks: np.ndarray, spec: DatasetSpec) -> np.ndarray:
    """The most frequent class (H, W) at each position of ``masks`` (N, H, W) (:class:`PositionCounts`)."""
    counts = PositionCounts(spec, masks.shape[1:3], len(masks))
    for mask in masks:
        counts.add(mask)
    return counts.majority()


def resize_nearest(label_map: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``label_map`` (h, w) resampled to ``size`` (H, W) by nearest neighbour on relative position."""
    h, w = label_map.shape
    rows = np.minimum(((np.arange(size[0]) + 0.5) * h / size[0]).astype(np.int64), h - 1)
    cols = np.minimum(((np.arange(size[1]) + 0.5) * w / size[1]).astype(np.int64), w - 1)
    return label_map[rows][:, cols]


def training_prior(target, samples: int, seed: int) -> tuple[np.ndarray, int]:
    """The majority map of a fixed, seeded sample of ``samples`` training masks, and the count used."""
    train = target.data.dataset("train")
    indices = eval_indices(len(train), samples, seed)
    counts = None
    for i in indices:
        mask = read_mask(train, i)
        if counts is None:
            counts = PositionCounts(target.data.spec, np.shape(mask), len(indices))
        counts.add(mask)
    return counts.majority(), len(indices)


def prior_map(target, cfg: dict) -> tuple[np.ndarray, int]:
    """:func:`training_prior` of ``cfg``'s sample at the eval masks' size, computed once per
    target (the report's figure of the map reuses it), and the count of masks used."""

    def compute():
        prior, used = training_prior(target, cfg["train_samples"], cfg["seed"])
        size = target.data.images.shape[1:3]
        return (resize_nearest(prior, size) if prior.shape != size else prior), used

    return target.model.memo(f"positional_prior:{cfg['train_samples']}:{cfg['seed']}", target.data, compute)
