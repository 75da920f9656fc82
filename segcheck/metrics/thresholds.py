"""Pixel precision, recall and F1 of the positive (OOD) class at thresholds, from pooled counts.

Convention: a pixel is *predicted positive* when ``score >= threshold`` (higher score = more
anomalous), as ``sklearn.metrics.precision_recall_curve``. precision = TP / (TP + FP) (NaN
when nothing is predicted positive), recall = TP / P (NaN without positives),
F1 = 2 TP / (2 TP + FP + FN) (NaN when that is 0 / 0).

Input is a *table*: ``edges`` (ascending), ``neg``, ``pos``, where level ``i`` holds the
pixels with ``edges[i] <= score < edges[i + 1]``.

- Exact mode: the levels are the distinct scores, so every count is exact and the best F1
  over all real thresholds is attained at one of them.
- Histogram mode: the levels are the histogram's bins and ``edges`` their lower edges (and
  -inf, +inf). A bin lies wholly on one side of its own lower edge, so the counts *at a bin
  edge* are exact; a requested threshold is therefore rounded down to the lower edge of its
  bin, and every returned :class:`OperatingPoint` states the edge it used. The best F1 over
  the edges can miss a better threshold inside a bin: inside bin b (``tp0``/``fp0`` pixels in
  higher bins, ``p_b`` positives in b), F1 = 2 TP / (TP + FP + P) is at most
  ``2 (tp0 + p_b) / (tp0 + p_b + fp0 + P)``; the largest such bound minus the best F1 found
  is reported as ``f1_error``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from segcheck import SegcheckError

DEFAULT_RECALL_OFFSETS = (-0.2, -0.1, -0.05, 0.05, 0.1, 0.2)


@dataclass(frozen=True)
class OperatingPoint:
    """Pixel counts and rates at one threshold (predicted positive = ``score >= threshold``).

    The counts are exact for ``threshold`` in both modes (in histogram mode it is a bin edge,
    or a requested threshold outside every bin).
    ``selected_by`` says how the point was chosen (``"best F1"``, ``"threshold 0.5"``,
    ``"recall >= 0.8"``, ...). ``f1_error`` is set by ``best_f1`` only: the best F1 over all
    real thresholds lies in ``[f1, f1 + f1_error]`` (0.0 when exact).
    """

    threshold: float
    precision: float
    recall: float
    f1: float
    tp: int
    fp: int
    fn: int
    selected_by: str
    exact: bool
    f1_error: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)


class Table:
    """Cumulative counts from the highest level down, over the non-empty levels only.

    ``snap`` maps a requested threshold to the threshold whose counts are exact (identity in
    exact mode, the lower edge of its bin in histogram mode).
    """

    def __init__(self, edges, neg, pos, exact: bool, snap: Callable[[float], float] | None = None):
        edges = np.asarray(edges, np.float64)
        neg, pos = np.asarray(neg, np.int64), np.asarray(pos, np.int64)
        used = (neg + pos) > 0
        self.edges = edges[used][::-1]  # descending
        self.level_pos = pos[used][::-1]
        self.level_neg = neg[used][::-1]
        self.tp = np.cumsum(self.level_pos)  # TP when the threshold is edges[i]
        self.fp = np.cumsum(self.level_neg)
        self.positives = int(self.tp[-1]) if self.tp.size else 0
        self.exact = exact
        self.snap = snap if snap is not None else (lambda t: t)

    def point(self, i: int | None, threshold: float, selected_by: str, f1_error: float = 0.0) -> OperatingPoint:
        """The point at ``threshold`` whose counts are those of level ``i`` (None: no pixel above)."""
        tp, fp = (0, 0) if i is None else (int(self.tp[i]), int(self.fp[i]))
        fn = self.positives - tp
        return OperatingPoint(
            float(threshold),
            tp / (tp + fp) if tp + fp else math.nan,
            tp / self.positives if self.positives else math.nan,
            2 * tp / (2 * tp + fp + fn) if 2 * tp + fp + fn else math.nan,
            tp,
            fp,
            fn,
            selected_by,
            self.exact,
            f1_error,
        )

    def nan_point(self, selected_by: str) -> OperatingPoint:
        return OperatingPoint(math.nan, math.nan, math.nan, math.nan, 0, 0, 0, selected_by, self.exact)

    def lowest_level_at_or_above(self, threshold: float) -> int | None:
        """Index (in the descending arrays) of the last level whose edge is >= threshold."""
        count = int(np.searchsorted(-self.edges, -threshold, side="right"))  # edges >= threshold
        return count - 1 if count else None


def _real(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise SegcheckError(f"{what} must be a real number, got {value!r}")
    value = float(value)
    if math.isnan(value):
        raise SegcheckError(f"{what} must not be NaN; pass a real threshold (±inf allowed)")
    return value


def best_f1(table: Table) -> OperatingPoint:
    """The threshold of highest F1 (the highest such threshold on ties); NaN without positives."""
    if table.positives == 0:
        return table.nan_point("best F1")
    f1 = 2 * table.tp / (table.tp + table.fp + table.positives)
    i = int(np.argmax(f1))  # first = highest threshold among ties
    error = 0.0
    if not table.exact:
        finite = np.isfinite(table.edges)
        tp_end = table.tp[finite].astype(np.float64)  # all positives of the bin above the threshold
        fp0 = (table.fp - table.level_neg)[finite]  # none of its negatives
        if tp_end.size:
            bound = float(np.max(2 * tp_end / (tp_end + fp0 + table.positives)))
            error = max(bound - float(f1[i]), 0.0)
    return table.point(i, table.edges[i], "best F1", error)


def at_thresholds(table: Table, thresholds) -> tuple[OperatingPoint, ...]:
    """Points at the given thresholds (each snapped to a bin edge in histogram mode)."""
    out = []
    for t in np.atleast_1d(np.asarray(thresholds, dtype=object)).tolist():
        asked = _real(t, "threshold")
        used = table.snap(asked)
        out.append(table.point(table.lowest_level_at_or_above(used), used, f"threshold {asked:g}"))
    return tuple(out)


def at_recalls(table: Table, recalls, label: Callable[[float], str] | None = None) -> tuple[OperatingPoint, ...]:
    """For each recall r in (0, 1]: the highest level edge whose recall is >= r.

    In histogram mode the recall there can exceed r by up to that bin's positives / P.
    """
    out = []
    for r in np.atleast_1d(np.asarray(recalls, dtype=object)).tolist():
        r = _real(r, "recall")
        if not 0.0 < r <= 1.0:
            raise SegcheckError(f"recall targets must be in (0, 1], got {r!r}")
        selected_by = label(r) if label else f"recall >= {r:g}"
        if table.positives == 0:
            out.append(table.nan_point(selected_by))
            continue
        i = min(int(np.searchsorted(table.tp / table.positives, r, side="left")), table.tp.size - 1)
        out.append(table.point(i, table.edges[i], selected_by))
    return tuple(out)


def sensitivity(table: Table, recall_offsets=DEFAULT_RECALL_OFFSETS) -> tuple[OperatingPoint, ...]:
    """The best-F1 point and, for each offset d (recall units: 0.05 = 5 percentage points) with
    ``0 < best.recall + d <= 1``, the point of :func:`at_recalls` at ``best.recall + d``;
    sorted by threshold, highest first (recall ascending)."""
    offsets = [_real(d, "recall offset") for d in np.atleast_1d(np.asarray(recall_offsets, dtype=object)).tolist()]
    if any(not -1.0 <= d <= 1.0 for d in offsets):
        raise SegcheckError(f"recall offsets are in recall units within [-1, 1] (0.05 = 5 points), got {offsets}")
    best = best_f1(table)
    if math.isnan(best.f1):
        return (best,)
    points = [best]
    for d in offsets:
        target = best.recall + d
        if 0.0 < target <= 1.0:
            name = f"recall >= {target:.3f} (best {'+' if d >= 0 else '-'} {abs(d) * 100:g} pp)"
            points += at_recalls(table, [target], lambda _, name=name: name)
    return tuple(sorted(points, key=lambda p: -p.threshold))
