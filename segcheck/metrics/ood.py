"""Pixel-level out-of-distribution metrics: AUROC, AUPR and FPR at 95% TPR, streaming.

Conventions (all stated once, here):

- OOD pixels are the *positive* class; a higher score means "more OOD" (negate MSP first).
- AUROC = P(s+ > s-) + 0.5 P(s+ = s-), as ``sklearn.metrics.roc_auc_score``.
- AUPR is the step-wise average precision of ``sklearn.metrics.average_precision_score``:
  sum over distinct thresholds of (recall increase) x precision; tied scores form one step.
- FPR95 = the false-positive rate at the first threshold, going down from the highest score,
  where TP / P >= ``tpr_level`` (0.95), i.e. ``fpr[searchsorted(tpr, 0.95)]`` on
  ``sklearn.metrics.roc_curve(..., drop_intermediate=False)``.
- AUROC and FPR are NaN when either class is absent; AUPR is NaN without OOD pixels.

Modes: ``exact=True`` keeps every score (memory O(pixels)) and reproduces scikit-learn.
``exact=False`` counts scores in a histogram of ``bins`` power-of-two-wide bins whose range
adapts to the data (``segcheck.metrics._histogram``): memory O(bins) for any number of
pixels, results that are the exact metrics of the binned scores, plus an error bound
(``auroc_error``, ``aupr_error``, ``fpr_error``) computed from the counts: the metric of
the unbinned scores is guaranteed within ± that bound (see ``segcheck.metrics._ranking``).
``exact=None`` (default) is exact until ``exact_limit`` pixels, then switches to the
histogram. ``average="pooled"`` ranks all pixels together; ``average="per_image"`` computes
the metrics per image (leading axis of each batch) and averages them over the images that
contain both classes.

Pixel thresholds (pooled only): ``best_f1()``, ``operating_points(thresholds)``,
``recall_points(recalls)`` and ``threshold_sensitivity()`` give precision/recall/F1 of the OOD
class with predicted positive = ``score >= threshold`` (``segcheck.metrics.thresholds``); in
histogram mode their thresholds are bin edges, where the counts are exact.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from segcheck import SegcheckError
from segcheck.metrics import _arrays, thresholds
from segcheck.metrics._histogram import ScoreHistogram
from segcheck.metrics._ranking import ranking_metrics
from segcheck.metrics.thresholds import DEFAULT_RECALL_OFFSETS, OperatingPoint

DEFAULT_BINS = 1 << 16
DEFAULT_EXACT_LIMIT = 1 << 20


@dataclass(frozen=True)
class OODResult:
    """OOD metrics with their worst-case approximation error (0.0 when exact).

    For ``average="per_image"`` the metrics and errors are means over ``images`` images,
    ``positives``/``negatives`` are totals over them, and ``skipped_images`` had only one class.
    """

    auroc: float
    aupr: float
    fpr: float
    tpr_level: float
    auroc_error: float
    aupr_error: float
    fpr_error: float
    positives: int
    negatives: int
    exact: bool
    average: str = "pooled"
    images: int | None = None
    skipped_images: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


class _Exact:
    """Keeps every (score, label); levels are the distinct scores."""

    def __init__(self):
        self.scores: list[np.ndarray] = []
        self.labels: list[np.ndarray] = []
        self.size = 0
        self._table: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # until the next update

    def update(self, scores: np.ndarray, positive: np.ndarray) -> None:
        nan = np.isnan(scores)
        if nan.any():
            raise SegcheckError(
                f"scores contain {int(nan.sum())} NaN values; NaN has no rank: "
                "fix the model output or mask those pixels out"
            )
        self.scores.append(np.array(scores, dtype=np.float64))
        self.labels.append(np.array(positive, dtype=bool))
        self.size += scores.size
        self._table = None

    def levels(self) -> tuple[np.ndarray, np.ndarray]:
        return self.table()[1:]

    def table(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(distinct scores ascending, neg, pos counts per distinct score), kept until the next update."""
        if self._table is not None:
            return self._table
        if not self.size:
            return np.zeros(0), np.zeros(0, np.int64), np.zeros(0, np.int64)
        x = np.concatenate(self.scores)
        y = np.concatenate(self.labels)
        order = np.argsort(x)  # ties are summed below, so their order does not matter (no stable sort)
        x, y = x[order], y[order]
        starts = np.flatnonzero(np.r_[True, x[1:] != x[:-1]])
        sizes = np.diff(np.r_[starts, x.size])
        pos = np.add.reduceat(y.astype(np.int64), starts)
        self._table = (x[starts], sizes - pos, pos)
        return self._table


class _Accumulator:
    """Exact until ``exact_limit`` pixels (or always / never), then a :class:`ScoreHistogram`."""

    def __init__(self, exact: bool | None, bins: int, exact_limit: int):
        self.exact, self.bins, self.exact_limit = exact, bins, exact_limit
        self.store = _Exact() if exact is not False else None
        self.histogram = ScoreHistogram(bins) if exact is False else None

    def update(self, scores, positive) -> None:
        if self.store is not None and _arrays.is_device_tensor(scores):
            scores, positive = scores.cpu().numpy(), positive.cpu().numpy()
        if self.store is not None and self.exact is None and self.store.size + scores.size > self.exact_limit:
            self.histogram = ScoreHistogram(self.bins)  # switch before this batch is copied: memory stays bounded
            for x, y in zip(self.store.scores, self.store.labels):
                self.histogram.update(x, y)
            self.store = None
        if self.store is not None:
            self.store.update(scores, positive)
        else:
            self.histogram.update(scores, positive)

    def result(self, tpr_level: float) -> dict:
        if self.store is not None:
            return {**ranking_metrics(*self.store.levels(), tpr_level), "exact": True}
        return {**ranking_metrics(*self.histogram.levels(), tpr_level, bounds=True), "exact": False}

    def table(self) -> thresholds.Table:
        if self.store is not None:
            return thresholds.Table(*self.store.table(), exact=True)
        h = self.histogram
        return thresholds.Table(h.edges(), *h.levels(), exact=False, snap=h.floor_edge)


def _check_options(average: str, bins: int, exact_limit: int, tpr_level: float) -> None:
    if average not in ("pooled", "per_image"):
        raise SegcheckError(f"average must be 'pooled' or 'per_image', got {average!r}")
    if not 0.0 < tpr_level <= 1.0:
        raise SegcheckError(f"tpr_level must be in (0, 1], got {tpr_level!r}")
    _arrays.check_whole(bins, "bins", 2)
    _arrays.check_whole(exact_limit, "exact_limit", 0)


class OODMetrics:
    """Streaming OOD metrics: ``update(scores, is_ood, valid=None)`` per batch, then ``compute()``.

    :param average: ``"pooled"`` (all pixels ranked together) or ``"per_image"`` (leading
        axis of each batch = images; mean over images containing both classes).
    :param exact: True = exact (keeps all scores), False = histogram, None = exact up to
        ``exact_limit`` pixels (per image, for per-image averaging), histogram beyond.
    :param bins: histogram bins; the error bound shrinks roughly in proportion to 1/bins.
    :param tpr_level: the TPR at which ``fpr`` is read (0.95 for FPR95).
    """

    def __init__(
        self,
        *,
        average: str = "pooled",
        exact: bool | None = None,
        bins: int = DEFAULT_BINS,
        exact_limit: int = DEFAULT_EXACT_LIMIT,
        tpr_level: float = 0.95,
    ):
        _check_options(average, bins, exact_limit, tpr_level)
        self.average, self.exact, self.bins = average, exact, int(bins)
        self.exact_limit, self.tpr_level = int(exact_limit), float(tpr_level)
        self.pooled = _Accumulator(exact, self.bins, self.exact_limit) if average == "pooled" else None
        self.per_image: list[dict] = []

    def update(self, scores, is_ood, valid=None) -> OODMetrics:
        """Add a batch: ``scores`` (float, higher = more OOD), ``is_ood`` (bool or 0/1) and an
        optional ``valid`` mask (pixels to count, e.g. ``mask != ignore_index``), same shape."""
        x, y, keep = _arrays.ood_inputs(scores, is_ood, valid)
        if self.average == "pooled":
            self.pooled.update(*_flat(x, y, keep))
            return self
        if len(x.shape) < 2:
            raise SegcheckError(f"per-image averaging needs a leading image axis, got scores of shape {tuple(x.shape)}")
        for i in range(x.shape[0]):
            image = _Accumulator(self.exact, self.bins, self.exact_limit)
            image.update(*_flat(x[i], y[i], None if keep is None else keep[i]))
            self.per_image.append(image.result(self.tpr_level))
        return self

    def compute(self) -> OODResult:
        if self.average == "pooled":
            r = self.pooled.result(self.tpr_level)
            return OODResult(
                r["auroc"],
                r["aupr"],
                r["fpr"],
                self.tpr_level,
                r["auroc_error"],
                r["aupr_error"],
                r["fpr_error"],
                r["positives"],
                r["negatives"],
                r["exact"],
            )
        used = [r for r in self.per_image if r["positives"] and r["negatives"]]
        mean = {
            k: float(np.mean([r[k] for r in used])) if used else math.nan
            for k in ("auroc", "aupr", "fpr", "auroc_error", "aupr_error", "fpr_error")
        }
        return OODResult(
            mean["auroc"],
            mean["aupr"],
            mean["fpr"],
            self.tpr_level,
            mean["auroc_error"],
            mean["aupr_error"],
            mean["fpr_error"],
            sum(r["positives"] for r in used),
            sum(r["negatives"] for r in used),
            all(r["exact"] for r in used),
            "per_image",
            len(used),
            len(self.per_image) - len(used),
        )

    # --- pixel thresholds (pooled only; see segcheck.metrics.thresholds) ---------------------
    def _table(self) -> thresholds.Table:
        if self.average != "pooled":
            raise SegcheckError(
                "threshold helpers need the pooled counts, which average='per_image' does not keep; "
                "use OODMetrics(average='pooled')"
            )
        return self.pooled.table()

    def best_f1(self) -> OperatingPoint:
        """The threshold maximizing pixel F1 of the OOD class (positive = ``score >= threshold``),
        with precision, recall, F1 there. Exact mode: a score value, exactly the best. Histogram
        mode: the best bin edge; the best over all thresholds is within ``f1_error`` above."""
        return thresholds.best_f1(self._table())

    def operating_points(self, at) -> tuple[OperatingPoint, ...]:
        """Precision/recall/F1 at each threshold of ``at``. In histogram mode each threshold is
        rounded down to the lower edge of its bin (the point's ``threshold``), where the counts
        are exact."""
        return thresholds.at_thresholds(self._table(), at)

    def recall_points(self, recalls) -> tuple[OperatingPoint, ...]:
        """For each recall r in (0, 1], the point at the highest threshold (score, or bin edge)
        whose recall is >= r."""
        return thresholds.at_recalls(self._table(), recalls)

    def threshold_sensitivity(self, recall_offsets=DEFAULT_RECALL_OFFSETS) -> tuple[OperatingPoint, ...]:
        """A threshold-sensitivity table: the best-F1 point and the points whose recall is
        ``best.recall + d`` for each offset d (recall units, 0.05 = 5 points; offsets that leave
        (0, 1] are dropped), highest threshold first."""
        return thresholds.sensitivity(self._table(), recall_offsets)

    def curves(self, points: int = 200) -> dict[str, list[float]]:
        """ROC (``fpr``, ``tpr``) and precision-recall (``recall``, ``precision``) points of the
        pooled counts, from the highest threshold down, thinned to about ``points`` per axis
        (for plots; the metrics themselves come from :meth:`compute`)."""
        table = self._table()
        tp, fp = table.tp.astype(np.float64), table.fp.astype(np.float64)
        if not tp.size or not tp[-1] or not fp[-1]:
            return {"fpr": [], "tpr": [], "recall": [], "precision": []}
        tpr, fpr = tp / tp[-1], fp / fp[-1]
        grid = np.linspace(0, 1, max(int(points), 2))
        keep = np.unique(np.r_[np.searchsorted(tpr, grid), np.searchsorted(fpr, grid), tp.size - 1])
        keep = keep[keep < tp.size]
        precision = tp[keep] / np.maximum(tp[keep] + fp[keep], 1)
        return {
            "fpr": [0.0, *fpr[keep].tolist()],
            "tpr": [0.0, *tpr[keep].tolist()],
            "recall": tpr[keep].tolist(),
            "precision": precision.tolist(),
        }


def _flat(x, y, keep):
    x, y = x.reshape(-1), y.reshape(-1)
    if keep is not None:
        keep = keep.reshape(-1)
        x, y = x[keep], y[keep]
    return x, y


def ood_metrics(
    scores,
    is_ood,
    valid=None,
    *,
    average: str = "pooled",
    exact: bool | None = None,
    bins: int = DEFAULT_BINS,
    exact_limit: int = DEFAULT_EXACT_LIMIT,
    tpr_level: float = 0.95,
) -> OODResult:
    """One-shot :class:`OODMetrics` over ``scores``/``is_ood`` (see the module conventions)."""
    metrics = OODMetrics(average=average, exact=exact, bins=bins, exact_limit=exact_limit, tpr_level=tpr_level)
    return metrics.update(scores, is_ood, valid).compute()
