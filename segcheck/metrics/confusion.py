"""Streaming confusion matrix: rows = target class, columns = predicted class, exact int64.

Contract, whatever the input type (numpy arrays, torch tensors on CPU or CUDA, any integer
or boolean dtype, any shape as long as prediction and target agree):

- pixels whose target is ``ignore_index`` are dropped, whatever their prediction;
- any other target, and any prediction on a counted pixel, outside ``[0, num_classes)``
  raises :class:`segcheck.SegcheckError` naming the offending values (never silently dropped);
- counts are exact int64, so the result does not depend on how the data was split into
  batches, in which order, or how many ``threads`` counted it.
"""

from __future__ import annotations

import numpy as np

from segcheck import SegcheckError
from segcheck.metrics import _arrays, _counting


def _check_threads(threads) -> None:
    _arrays.check_whole(threads, "threads", 1)


def confusion_matrix(pred, target, num_classes: int, ignore_index: int | None = 255, *, threads: int = 1) -> np.ndarray:
    """Confusion matrix (num_classes, num_classes) int64 of one batch; rows = target.

    :param pred: predicted class ids, same shape as ``target``.
    :param target: true class ids; ``ignore_index`` marks pixels that are not counted.
    :param num_classes: C; valid labels are ``0..C-1``.
    :param ignore_index: a value outside ``0..C-1``, or None to count every pixel.
    :param threads: split the batch over this many threads (host arrays only); same result.
    """
    _counting.check_classes(num_classes, ignore_index)
    _check_threads(threads)
    pred = _arrays.labels(pred, "prediction")
    target = _arrays.labels(target, "target")
    _arrays.same_shape(pred, target, "prediction", "target")
    _arrays.same_place(pred, target)
    if _arrays.is_device_tensor(target):
        return _counting.device_counts(pred.reshape(-1), target.reshape(-1), num_classes, ignore_index)
    return _counting.host_counts(pred.reshape(-1), target.reshape(-1), num_classes, ignore_index, threads)


def confusion_matrices(pred, target, num_classes: int, ignore_index: int | None = 255) -> np.ndarray:
    """One confusion matrix per image: (N, C, C) int64 for inputs of shape (N, ...).

    The input of :func:`segcheck.metrics.per_image_miou`; summing over axis 0 gives the
    dataset-level :func:`confusion_matrix`.
    """
    pred = _arrays.labels(pred, "prediction")
    target = _arrays.labels(target, "target")
    _arrays.same_shape(pred, target, "prediction", "target")
    if len(target.shape) < 1:
        raise SegcheckError("confusion_matrices needs inputs with a leading image axis, got a scalar")
    _counting.check_classes(num_classes, ignore_index)
    out = np.zeros((target.shape[0], num_classes, num_classes), np.int64)
    for i in range(target.shape[0]):
        out[i] = confusion_matrix(pred[i], target[i], num_classes, ignore_index)
    return out


class ConfusionMatrix:
    """Accumulates :func:`confusion_matrix` over batches in ``.matrix`` (int64, rows = target).

    ``update`` is all-or-nothing: a batch that raises leaves ``.matrix`` unchanged.
    """

    def __init__(self, num_classes: int, ignore_index: int | None = 255, *, threads: int = 1):
        _counting.check_classes(num_classes, ignore_index)
        _check_threads(threads)
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.threads = threads
        self.matrix = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    def update(self, pred, target) -> ConfusionMatrix:
        """Add one batch; returns self so that calls chain."""
        self.matrix += confusion_matrix(pred, target, self.num_classes, self.ignore_index, threads=self.threads)
        return self

    def reset(self) -> ConfusionMatrix:
        self.matrix[...] = 0
        return self
