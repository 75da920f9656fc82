"""Binary (one-channel) segmentation: IoU and Dice of the foreground at a score threshold.

A pixel is predicted foreground when ``score > threshold`` (pass ``threshold=0.0`` for
logits, ``0.5`` for sigmoid probabilities). Targets must be 0/1 (or ``ignore_index``): a
mask stored as 0/255 raises instead of being silently read as "255 = ignore" or "255 = 1",
which is one of the classic ways to get IoU 0.0 at 90% pixel accuracy.
"""

from __future__ import annotations

import numpy as np

from segcheck import SegcheckError
from segcheck.metrics import _arrays
from segcheck.metrics.confusion import confusion_matrix
from segcheck.metrics.iou import dice, iou


def binary_confusion(scores, target, threshold: float = 0.5, ignore_index: int | None = None) -> np.ndarray:
    """2x2 int64 confusion matrix (rows = target 0/1) of ``scores > threshold`` against ``target``."""
    s = _arrays.scores(scores, "binary scores")
    if _arrays.is_device_tensor(s):
        if bool(s.isnan().any()):
            raise SegcheckError("binary scores contain NaN; a NaN is neither above nor below a threshold")
    elif np.isnan(s).any():
        raise SegcheckError("binary scores contain NaN; a NaN is neither above nor below a threshold")
    return confusion_matrix(s > threshold, target, 2, ignore_index)


def binary_iou(scores, target, threshold: float = 0.5, ignore_index: int | None = None) -> float:
    """Foreground IoU at ``threshold``; NaN when neither prediction nor target has foreground."""
    return float(iou(binary_confusion(scores, target, threshold, ignore_index))[1])


def binary_dice(scores, target, threshold: float = 0.5, ignore_index: int | None = None) -> float:
    """Foreground Dice at ``threshold``; NaN when neither prediction nor target has foreground."""
    return float(dice(binary_confusion(scores, target, threshold, ignore_index))[1])
