"""Confusion-matrix counting kernels: one ``bincount`` over a fused index, per chunk.

Fast path (host): labels that fit in uint8 are counted as (target, prediction) byte pairs
into a table with a row per target value and a column per prediction value, so labels
outside ``[0, C)`` (other than an ignored target) are found in the table, not by another
pass. Two pair counters give the same (C, C) counts: the C extension ``_pairs`` (built at
install when a C compiler and the Python headers exist; it fuses the index in L1-sized
steps, and regions of one class do not slow it) and, without it, ``torch.bincount`` over a
16-bit ``target * C + pred`` buffer, one cache-sized chunk at a time. Wider integer inputs
whose values fit are converted to uint8 one cache-sized chunk at a time. Labels that do not
fit in uint8 (``C > 256``, ``ignore_index=-1``, ...) take the wide path: drop ignored
pixels, check ranges, count an int64 fused index. Device tensors are counted on their
device with ``torch.bincount``. All paths return the same exact int64 counts; pixels whose
target is ``ignore_index`` never matter, whatever their prediction.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from segcheck import SegcheckError
from segcheck.metrics import _arrays

try:
    from segcheck.metrics import _pairs
except ImportError:  # not compiled (no C compiler at install): the torch.bincount counter runs
    _pairs = None

CHUNK = 1 << 18  # host pixels per step: a 16-bit fused index or a uint8 copy stays in L2
DEVICE_CHUNK = 1 << 24  # pixels per device chunk: bounds the int64 temporaries on the GPU
THREAD_PART = 1 << 18  # fewest pixels worth a thread of their own
SIDE = 256  # uint8 labels: one table row per target value, one column per prediction value


def out_of_range(num_classes: int, ignore_index: int | None, bad_target=(), bad_pred=()) -> SegcheckError:
    """The error for labels outside ``[0, num_classes)``, naming (up to 10 of) the values."""
    parts = []
    if len(bad_target):
        parts.append(f"target labels {sorted(int(v) for v in bad_target)[:10]}")
    if len(bad_pred):
        parts.append(f"prediction labels {sorted(int(v) for v in bad_pred)[:10]}")
    ignore = f" (ignore_index {ignore_index} is only allowed in the target)" if ignore_index is not None else ""
    return SegcheckError(
        f"{' and '.join(parts)} outside 0..{num_classes - 1}{ignore}; check num_classes, the label encoding "
        "(e.g. 1-indexed labels, 0/255 masks) and ignore_index"
    )


def _torch():
    import torch

    return torch


class CPairs:
    """Counts uint8 pairs with the C extension into a table of the values seen."""

    ANY_LENGTH = True  # uint8 arrays go to the kernel whole: it works in L1-sized steps itself

    def __init__(self, num_classes: int, ignore_index: int | None):
        self.counts = np.zeros(SIDE * SIDE, np.int64)
        self.rows = self.cols = 0  # counts outside [0, rows) x [0, cols) are zero

    def add(self, target: np.ndarray, pred: np.ndarray) -> None:
        rows, cols = _pairs.count_pairs(np.ascontiguousarray(target), np.ascontiguousarray(pred), self.counts)
        self.rows, self.cols = max(self.rows, rows), max(self.cols, cols)

    def table(self) -> np.ndarray:
        return self.counts.reshape(SIDE, SIDE)[: self.rows, : self.cols]


class TorchPairs:
    """Counts uint8 pairs with ``torch.bincount`` over ``target * C + pred`` in a 16-bit buffer."""

    ANY_LENGTH = False  # at most CHUNK pixels per add: the size of the fused-index buffer

    def __init__(self, num_classes: int, ignore_index: int | None):
        self.c = num_classes
        self.ignore = ignore_index
        self.size = SIDE * num_classes
        self.buffer = np.empty(CHUNK, np.uint16)
        torch = _torch()
        # int16 holds the index when 256 * C <= 32768; torch then counts without widening.
        self.counter = torch.from_numpy(self.buffer.view(np.int16)) if self.size <= 1 << 15 else None
        self.counts = torch.zeros(self.size, dtype=torch.int64)

    def add(self, target: np.ndarray, pred: np.ndarray) -> None:
        n = target.size
        if pred.max() >= self.c:
            pred = self._clean_pred(target, pred)
        fused = self.buffer[:n]
        np.multiply(target, np.uint16(self.c), out=fused)
        np.add(fused, pred, out=fused)
        if self.counter is not None:
            self.counts += _torch().bincount(self.counter[:n], minlength=self.size)
        else:
            self.counts += _torch().from_numpy(np.bincount(fused, minlength=self.size))

    def _clean_pred(self, target: np.ndarray, pred: np.ndarray) -> np.ndarray:
        """Raise for out-of-range predictions on counted pixels; zero them on ignored ones."""
        counted = target != self.ignore if self.ignore is not None else np.ones(target.shape, bool)
        bad = counted & (pred >= self.c)
        if bad.any():
            bad_t = target[counted & (target >= self.c)]
            raise out_of_range(self.c, self.ignore, np.unique(bad_t), np.unique(pred[bad]))
        return np.where(counted, pred, 0).astype(np.uint8)

    def table(self) -> np.ndarray:
        return self.counts.numpy().reshape(SIDE, self.c)


AVAILABLE_PAIRS = (CPairs, TorchPairs) if _pairs is not None else (TorchPairs,)
PAIRS = AVAILABLE_PAIRS[0]  # the uint8 pair counter in use: the fastest available


def pair_counter_name() -> str:
    """Which uint8 pair counter runs: the C extension, or the torch.bincount fallback."""
    return "C extension (segcheck.metrics._pairs)" if PAIRS is CPairs else "torch.bincount"


def _table_matrix(table: np.ndarray, num_classes: int, ignore_index: int | None) -> np.ndarray:
    """The (C, C) counts of a pair table (row = target value, column = prediction value; cells
    beyond its shape are zero); raises for labels >= C on counted pixels."""
    c = num_classes
    per_target, high_preds = table.sum(1), table[:, c:].sum(0)  # pixels per target; per prediction >= C
    if ignore_index is not None and 0 <= ignore_index < len(table):  # an ignored target's prediction is free
        per_target[ignore_index] = 0
        high_preds -= table[ignore_index, c:]
    bad_t = np.flatnonzero(per_target[c:]) + c
    bad_p = np.flatnonzero(high_preds) + c
    if len(bad_t) or len(bad_p):
        raise out_of_range(num_classes, ignore_index, bad_t, bad_p)
    matrix = np.zeros((c, c), np.int64)
    known = table[:c, :c]
    matrix[: known.shape[0], : known.shape[1]] = known
    return matrix


def _wide(target: np.ndarray, pred: np.ndarray, num_classes: int, ignore_index: int | None) -> np.ndarray:
    """(C, C) counts of one chunk of any integer dtype: drop ignored pixels, check, count int64."""
    if ignore_index is not None:
        counted = target != ignore_index
        target, pred = target[counted], pred[counted]
    bad_t = (target < 0) | (target >= num_classes)
    bad_p = (pred < 0) | (pred >= num_classes)
    if bad_t.any() or bad_p.any():
        raise out_of_range(num_classes, ignore_index, np.unique(target[bad_t]), np.unique(pred[bad_p]))
    fused = target.astype(np.int64) * num_classes + pred.astype(np.int64)
    return np.bincount(fused, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def _fits_uint8(a: np.ndarray) -> bool:
    return a.dtype == np.uint8 or (a.size > 0 and a.min() >= 0 and a.max() <= 255)


def _host_part(target: np.ndarray, pred: np.ndarray, num_classes: int, ignore_index: int | None) -> np.ndarray:
    pairs = PAIRS(num_classes, ignore_index) if num_classes <= SIDE else None
    if pairs is not None and pairs.ANY_LENGTH and target.dtype == pred.dtype == np.uint8:
        pairs.add(target, pred)
        return _table_matrix(pairs.table(), num_classes, ignore_index)
    wide = np.zeros((num_classes, num_classes), np.int64)
    for start in range(0, target.size, CHUNK):
        t, p = target[start : start + CHUNK], pred[start : start + CHUNK]
        if pairs is not None and _fits_uint8(t) and _fits_uint8(p):
            pairs.add(t.astype(np.uint8, copy=False), p.astype(np.uint8, copy=False))
        else:
            wide += _wide(t, p, num_classes, ignore_index)
    return wide + _table_matrix(pairs.table(), num_classes, ignore_index) if pairs is not None else wide


def host_counts(
    pred: np.ndarray, target: np.ndarray, num_classes: int, ignore_index: int | None, threads: int = 1
) -> np.ndarray:
    """(C, C) int64 counts of flat numpy label arrays; ``threads`` contiguous parts in parallel."""
    if threads <= 1 or target.size < 2 * THREAD_PART:
        return _host_part(target, pred, num_classes, ignore_index)
    bounds = np.linspace(0, target.size, threads + 1).astype(np.int64)
    parts = [(target[a:b], pred[a:b]) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
    with ThreadPoolExecutor(len(parts)) as pool:  # the pair counters and numpy release the GIL
        results = list(pool.map(lambda tp: _host_part(*tp, num_classes, ignore_index), parts))
    return sum(results[1:], results[0])


def device_counts(pred, target, num_classes: int, ignore_index: int | None) -> np.ndarray:
    """(C, C) int64 counts of flat torch tensors, counted on their device (any device works)."""
    torch = _torch()
    c = num_classes
    total = torch.zeros(c * c + 1, dtype=torch.int64, device=target.device)
    for start in range(0, target.numel(), DEVICE_CHUNK):
        t = target[start : start + DEVICE_CHUNK].long()
        p = pred[start : start + DEVICE_CHUNK].long()
        counted = t != ignore_index if ignore_index is not None else torch.ones_like(t, dtype=torch.bool)
        bad_t = counted & ((t < 0) | (t >= c))
        bad_p = counted & ((p < 0) | (p >= c))
        if bool((bad_t | bad_p).any()):
            raise out_of_range(c, ignore_index, torch.unique(t[bad_t]).tolist(), torch.unique(p[bad_p]).tolist())
        total += torch.bincount(torch.where(counted, t * c + p, c * c), minlength=c * c + 1)
    return total[: c * c].cpu().numpy().reshape(c, c)


def check_classes(num_classes: int, ignore_index: int | None) -> None:
    """num_classes must be a positive int; ignore_index None or outside [0, num_classes)."""
    _arrays.check_whole(num_classes, "num_classes", 1)
    if ignore_index is not None:
        if isinstance(ignore_index, bool) or not isinstance(ignore_index, (int, np.integer)):
            raise SegcheckError(f"ignore_index must be an integer or None, got {ignore_index!r}")
        if 0 <= ignore_index < num_classes:
            raise SegcheckError(
                f"ignore_index {ignore_index} is a class id (0..{num_classes - 1}); use a value outside the "
                "classes (default 255) or None"
            )
