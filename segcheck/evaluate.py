"""The scores of predictions that need no model: what predicting one class everywhere scores."""

from __future__ import annotations

import numpy as np

from segcheck.metrics import miou


def constant_class_floor(counts: np.ndarray, classes: tuple[str, ...]) -> tuple[float, str]:
    """The best mIoU of predicting one class everywhere, and that class's name, from the counted
    pixels of each class (``counts``, e.g. ``EvalData.class_counts``): the confusion matrix of
    such a prediction is the counts in one column."""
    floors = []
    for c in range(len(classes)):
        matrix = np.zeros((len(classes), len(classes)), np.int64)
        matrix[:, c] = counts
        floors.append(miou(matrix))
    best = int(np.argmax(floors))
    return floors[best], classes[best]
