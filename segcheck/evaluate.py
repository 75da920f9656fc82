"""Scoring class maps against masks with a dataset's spec (the one way segcheck computes mIoU)."""

from __future__ import annotations

import numpy as np

from segcheck.data import DatasetSpec
from segcheck.metrics import ConfusionMatrix, miou


def score(pred: np.ndarray, masks: np.ndarray, spec: DatasetSpec) -> float:
    """Dataset-level mIoU of class maps ``pred`` against ``masks``: the pixels ``spec`` counts."""
    return miou(ConfusionMatrix(spec.num_classes, spec.ignore_index).update(pred, spec.closed_set(masks)).matrix)


def constant_class_floor(masks: np.ndarray, spec: DatasetSpec) -> tuple[float, str]:
    """The best mIoU of predicting one class everywhere, and that class's name."""
    floors = [score(np.full_like(masks, c), masks, spec) for c in range(spec.num_classes)]
    best = int(np.argmax(floors))
    return floors[best], spec.classes[best]
