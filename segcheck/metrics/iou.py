"""The IoU family from a confusion matrix (rows = target, columns = prediction).

Per-class functions accept one matrix (C, C) or a stack (..., C, C) and return (..., C).
A class is *absent* when TP + FP + FN = 0 (in neither target nor prediction): its IoU and
Dice are NaN and :func:`miou` leaves it out (nanmean), instead of averaging it in as 0 or 1.
"""

from __future__ import annotations

import numpy as np

from segcheck import SegcheckError
from segcheck.metrics.confusion import confusion_matrix


def _counts(matrix) -> np.ndarray:
    m = np.asarray(matrix)
    if m.ndim < 2 or m.shape[-1] != m.shape[-2] or m.shape[-1] == 0:
        raise SegcheckError(f"a confusion matrix is (C, C) or (..., C, C) with C >= 1, got shape {m.shape}")
    if not (np.issubdtype(m.dtype, np.integer) or np.issubdtype(m.dtype, np.floating)):
        raise SegcheckError(f"a confusion matrix holds counts, got dtype {m.dtype}")
    if m.size and ((m.dtype.kind == "f" and np.isnan(m).any()) or (m < 0).any()):
        raise SegcheckError("a confusion matrix holds non-negative counts; found negative or NaN entries")
    return m.astype(np.float64)


def _parts(matrix):
    m = _counts(matrix)
    tp = np.diagonal(m, axis1=-2, axis2=-1)
    return tp, m.sum(-2) - tp, m.sum(-1) - tp


def _ratio(num, den):
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def iou(matrix) -> np.ndarray:
    """Per-class IoU = TP / (TP + FP + FN); NaN where TP + FP + FN = 0 (class absent from both)."""
    tp, fp, fn = _parts(matrix)
    return _ratio(tp, tp + fp + fn)


def miou(matrix) -> float:
    """Dataset-level mean IoU of one (C, C) matrix: nanmean over classes present in prediction
    or target; NaN if no class is present (nothing counted)."""
    if np.asarray(matrix).ndim != 2:
        raise SegcheckError("miou takes one (C, C) matrix; for per-image averaging use per_image_miou")
    values = iou(matrix)
    return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")


def per_image_miou(matrices) -> float:
    """Per-image mean IoU: the mean over images of each image's own mIoU.

    :param matrices: (N, C, C), one confusion matrix per image (:func:`confusion_matrices`).

    Each image's mIoU is the nanmean over the classes present in *that* image (prediction or
    target); images with nothing counted are left out; NaN if no image counts. This is not
    the dataset-level :func:`miou` of the summed matrix, and usually differs from it.
    """
    m = np.asarray(matrices)
    if m.ndim != 3:
        raise SegcheckError(f"per_image_miou takes (N, C, C) per-image matrices, got shape {m.shape}")
    values = iou(m)
    defined = np.isfinite(values).any(-1)
    if not defined.any():
        return float("nan")
    return float(np.mean(np.nanmean(values[defined], axis=-1)))


def per_class_iou(pred, target, num_classes: int, ignore_index: int | None = 255) -> np.ndarray:
    """Per-class IoU (num_classes,) of class maps: :func:`iou` of :func:`confusion_matrix`.

    The reference ``per_class_iou`` metric that ``suites/metrics`` tests user metrics against.
    """
    return iou(confusion_matrix(pred, target, num_classes, ignore_index))


def dice(matrix) -> np.ndarray:
    """Per-class Dice/F1 = 2TP / (2TP + FP + FN); NaN for absent classes."""
    tp, fp, fn = _parts(matrix)
    return _ratio(2 * tp, 2 * tp + fp + fn)


def recall(matrix) -> np.ndarray:
    """Per-class recall = TP / (TP + FN); NaN for classes absent from the target."""
    tp, _, fn = _parts(matrix)
    return _ratio(tp, tp + fn)


def precision(matrix) -> np.ndarray:
    """Per-class precision = TP / (TP + FP); NaN for classes never predicted."""
    tp, fp, _ = _parts(matrix)
    return _ratio(tp, tp + fp)


def pixel_accuracy(matrix) -> float:
    """Correct pixels / counted pixels of one (C, C) matrix (NaN if none counted)."""
    m = _counts(matrix)
    if m.ndim != 2:
        raise SegcheckError(f"pixel_accuracy takes one (C, C) matrix, got shape {m.shape}")
    total = m.sum()
    return float(np.trace(m) / total) if total else float("nan")


def agreement(a, b, batch: int = 8) -> float:
    """The share of pixels where label maps ``a`` and ``b`` (N, ...) agree, compared ``batch``
    images at a time (no whole-set temporary): the very number of ``(a == b).mean()``."""
    if np.shape(a) != np.shape(b):
        raise SegcheckError(f"label maps of shapes {np.shape(a)} and {np.shape(b)} cannot be compared")
    equal = sum(int(np.count_nonzero(a[i : i + batch] == b[i : i + batch])) for i in range(0, len(a), batch))
    return float(equal / np.size(a)) if np.size(a) else float("nan")
