"""A streaming score histogram for two labels with no assumed score range.

Bins have width ``w = 2**k`` and start at ``origin * w`` (integers ``k``, ``origin``):
bin ``i`` holds the scores ``x`` with ``floor(x / w) - origin == i``. The width is the
smallest power of two whose ``bins`` bins cover every finite score seen so far. When a new
batch falls outside, the width doubles as often as needed and the old counts are merged
pairwise into the new bins; because widths are powers of two and origins multiples of the
width, every old bin lies inside exactly one new bin, so re-binning is exact. The final
state therefore depends only on the multiset of (score, label) pairs, never on batching or
order. ``+inf`` and ``-inf`` get bins of their own; NaN raises.

Binning is exact arithmetic: ``x * 2**-k`` is a power-of-two scaling and ``floor`` of a float
is exact, so the bin of a score never depends on rounding. The one place where the scaling
can round, a tiny negative float64 score whose product underflows to -0.0 (possible only
when ``w >= 2``), is corrected to bin -1 explicitly. The width is kept >= ``max|x| * 2**-50``
so that bin numbers fit in float64 integers exactly.

Host arrays are binned in cache-sized chunks whose bin indices collect in a buffer that one
``bincount`` counts per block; the buffer is counted early whenever the bins must grow,
because an index is only valid for the bins it was computed against.
"""

from __future__ import annotations

import math

import numpy as np

from segcheck import SegcheckError
from segcheck.metrics import _arrays

CHUNK = 1 << 18  # scores binned per step: the float temporaries stay in L2
BLOCK = 1 << 20  # bin indices counted per bincount call: fewer output allocations and merges
MIN_EXPONENT = -1000  # 2**-1000: scales by 2**1000 stay finite in float64


def _torch():
    import torch

    return torch


def scaled_floor(x: float, k: int) -> int:
    """floor(x / 2**k) exactly, also when the quotient underflows to -0.0."""
    q = math.floor(math.ldexp(x, -k))
    return -1 if q == 0 and x < 0 else q


def exponent_for(lo: float, hi: float, bins: int, at_least: int | None) -> int:
    """Smallest k (>= ``at_least``) whose ``bins`` power-of-two bins of width 2**k cover [lo, hi].

    Also k >= exponent(max|x|) - 50, so that bin numbers x / 2**k stay below 2**50 (exact).
    """
    maxabs = max(abs(lo), abs(hi))
    k = max(math.frexp(maxabs)[1] - 50, MIN_EXPONENT) if maxabs > 0 else MIN_EXPONENT
    half_span = hi / 2 - lo / 2  # never overflows
    if half_span > 0:
        # covering needs span / 2**k < bins + 1, so 2**k > span / (2 * bins) >= 2**(e - 1)
        k = max(k, math.frexp(half_span / bins)[1])
    if at_least is not None:
        k = max(k, at_least)
    while scaled_floor(hi, k) - scaled_floor(lo, k) >= bins:
        k += 1  # a width that covers stays covering when doubled, so the first fit is the smallest
    return k


def rebin(counts: np.ndarray, k_old: int, origin_old: int, k_new: int, origin_new: int) -> np.ndarray:
    """Counts (labels, bins) at (k_old, origin_old) merged exactly into bins at (k_new, origin_new)."""
    shift = min(k_new - k_old, 62)  # |origin + i| < 2**53, so shifting by 62 is already "all the way"
    edges = (np.int64(origin_old) + np.arange(counts.shape[-1], dtype=np.int64)) >> np.int64(shift)
    index = edges - np.int64(origin_new)
    used = counts.any(0)
    out = np.zeros_like(counts)
    if not used.any():
        return out
    index = index[used]  # non-decreasing: old bins map in order onto new bins
    if index[0] < 0 or index[-1] >= counts.shape[-1]:
        raise AssertionError("internal error: re-binning left the covered range")
    starts = np.flatnonzero(np.r_[True, index[1:] != index[:-1]])
    out[:, index[starts]] = np.add.reduceat(counts[:, used], starts, axis=1)
    return out


class ScoreHistogram:
    """Counts of (score bin, label) over any number of batches, label 0 = negative, 1 = positive.

    ``update(scores, positive)`` takes flat float arrays (numpy, or torch tensors on any
    device) and boolean labels; ``levels()`` returns (neg, pos) counts per ascending bin,
    ready for :func:`segcheck.metrics._ranking.ranking_metrics`.
    """

    def __init__(self, bins: int = 1 << 16):
        _arrays.check_whole(bins, "bins", 2)
        self.bins = int(bins)
        self.k: int | None = None
        self.origin = 0
        self.lo = math.inf
        self.hi = -math.inf
        self.counts = np.zeros((2, self.bins), np.int64)
        self.infinite = np.zeros((2, 2), np.int64)  # [label, (-inf, +inf)]
        self._buffers: tuple[np.ndarray, ...] | None = None

    def total(self) -> int:
        return int(self.counts.sum() + self.infinite.sum())

    def _cover(self, lo: float, hi: float, at_least: int | None = None) -> None:
        """Grow the bins (exactly) so that they cover [lo, hi] as well as everything seen."""
        lo, hi = min(lo, self.lo), max(hi, self.hi)
        floor_k = self.k if at_least is None else max(at_least, self.k if self.k is not None else at_least)
        k = exponent_for(lo, hi, self.bins, floor_k)
        origin = scaled_floor(lo, k)
        if self.k is not None and (k, origin) != (self.k, self.origin):
            self.counts = rebin(self.counts, self.k, self.origin, k, origin)
        self.k, self.origin, self.lo, self.hi = k, origin, lo, hi

    # --- host arrays ---------------------------------------------------------------------
    def update(self, scores, positive) -> ScoreHistogram:
        """Count flat ``scores`` (float) with flat boolean ``positive`` of the same length.

        All or nothing: a batch that raises (NaN scores) leaves the histogram unchanged.
        """
        saved = (self.k, self.origin, self.lo, self.hi, self.counts.copy(), self.infinite.copy())
        try:
            if isinstance(scores, np.ndarray):
                self._update_host(scores, positive)
            else:
                self._update_torch(scores, positive)
        except BaseException:
            self.k, self.origin, self.lo, self.hi, self.counts, self.infinite = saved
            raise
        return self

    def _update_host(self, scores: np.ndarray, positive: np.ndarray) -> None:
        pending = 0  # bin indices of the current (k, origin) waiting in the index buffer
        for start in range(0, scores.size, CHUNK):
            x, y = scores[start : start + CHUNK], positive[start : start + CHUNK]
            lo, hi = float(x.min()), float(x.max())
            if math.isnan(lo) or math.isnan(hi):
                raise SegcheckError(
                    f"scores contain {int(np.isnan(x).sum())} NaN values in one chunk; "
                    "NaN has no rank: fix the model output or mask those pixels out"
                )
            if math.isinf(lo) or math.isinf(hi):
                x, y = self._count_infinite(x, y)
                if x.size == 0:
                    continue
                lo, hi = float(x.min()), float(x.max())
            if self.k is None or lo < self.lo or hi > self.hi or pending + x.size > BLOCK:
                pending = self._count(pending)  # indices are only valid for the bins they were made for
                self._cover(lo, hi)
            self._bin_host(x, y, pending)
            pending += x.size
        self._count(pending)

    def _count(self, pending: int) -> int:
        """Add the first ``pending`` buffered bin indices to the counts; returns 0 (none pending)."""
        if pending:
            torch = _torch()
            index = torch.from_numpy(self._buffers[2][:pending])
            threads = torch.get_num_threads()
            torch.set_num_threads(1)  # torch's bincount into many bins is ~8x slower with 2 threads than with 1
            try:
                self.counts.reshape(-1)[:] += torch.bincount(index, minlength=2 * self.bins).numpy()
            finally:
                torch.set_num_threads(threads)
        return 0

    def _count_infinite(self, x, y):
        """Count the -inf/+inf scores of ``x`` (numpy or torch, no NaN); return the finite rest."""
        neg, pos = x == -math.inf, x == math.inf
        for column, mask in enumerate((neg, pos)):
            self.infinite[1, column] += int((mask & y).sum())
            self.infinite[0, column] += int((mask & ~y).sum())
        finite = ~(neg | pos)
        return x[finite], y[finite]

    def _bin_host(self, x: np.ndarray, y: np.ndarray, at: int) -> None:
        """Write the int32 index ``bin + bins * label`` of each pixel of one chunk to the index
        buffer, starting at position ``at``."""
        n = x.size
        if self._buffers is None:
            self._buffers = (
                np.empty(CHUNK, np.float32),
                np.empty(CHUNK, np.float64),
                np.empty(BLOCK, np.int32),
                np.empty(CHUNK, np.int32),
            )
        f32, f64, index, label = self._buffers
        # float32 arithmetic is exact when no product underflows (w <= 1) and bin numbers < 2**24
        narrow = x.dtype == np.float32 and -126 <= self.k <= 0 and abs(self.origin) + self.bins <= 1 << 24
        q = f32[:n] if narrow else f64[:n]
        np.multiply(x, q.dtype.type(math.ldexp(1.0, -self.k)), out=q)
        np.floor(q, out=q)
        if x.dtype == np.float64 and self.k >= 1:  # |x| <= 2**(k - 1075) underflows to -0.0
            q[(q == 0) & (x < 0)] = -1.0
        np.subtract(q, q.dtype.type(self.origin), out=q)
        out = index[at : at + n]
        np.copyto(out, q, casting="unsafe")
        np.multiply(y, np.int32(self.bins), out=label[:n])
        np.add(out, label[:n], out=out)

    # --- device tensors ------------------------------------------------------------------
    def _update_torch(self, scores, positive) -> None:
        torch = _torch()
        for start in range(0, scores.numel(), CHUNK * 64):
            x, y = scores[start : start + CHUNK * 64], positive[start : start + CHUNK * 64]
            lo, hi = (float(v) for v in torch.aminmax(x))
            if math.isnan(lo) or math.isnan(hi):
                raise SegcheckError(
                    f"scores contain {int(x.isnan().sum())} NaN values in one chunk; "
                    "NaN has no rank: fix the model output or mask those pixels out"
                )
            if math.isinf(lo) or math.isinf(hi):
                x, y = self._count_infinite(x, y)
                if x.numel() == 0:
                    continue
                lo, hi = (float(v) for v in torch.aminmax(x))
            self._cover(lo, hi)
            q = torch.floor(x.double() * math.ldexp(1.0, -self.k))
            if x.dtype == torch.float64 and self.k >= 1:  # |x| <= 2**(k - 1075) underflows to -0.0
                q = torch.where((q == 0) & (x < 0), -1.0, q)
            q -= float(self.origin)
            index = q.long() + y.long() * self.bins
            self.counts.reshape(-1)[:] += torch.bincount(index, minlength=2 * self.bins).cpu().numpy()

    # --- results -------------------------------------------------------------------------
    def merge(self, other: ScoreHistogram) -> ScoreHistogram:
        """Add ``other``'s counts (same ``bins``) to this histogram, exactly; returns self."""
        if other.bins != self.bins:
            raise SegcheckError(f"cannot merge histograms with {self.bins} and {other.bins} bins")
        self.infinite += other.infinite
        if other.k is None:
            return self
        self._cover(other.lo, other.hi, at_least=other.k)
        self.counts += rebin(other.counts, other.k, other.origin, self.k, self.origin)
        return self

    def edges(self) -> np.ndarray:
        """The lower edge of each level of :meth:`levels`: -inf, ``(origin + i) * 2**k``, +inf.

        A score is on a level iff it is >= that level's edge and < the next one (exactly: the
        edges are the multiples of the bin width that binning divides by).
        """
        if self.k is None:
            bins = np.full(self.bins, np.nan)  # no finite score yet: the bins are empty
        else:
            with np.errstate(over="ignore"):
                bins = np.ldexp((self.origin + np.arange(self.bins)).astype(np.float64), self.k)
        return np.concatenate([[-math.inf], bins, [math.inf]])

    def floor_edge(self, threshold: float) -> float:
        """The largest threshold <= ``threshold`` at which the counts are exact: the lower edge
        of the bin holding ``threshold``, or ``threshold`` itself outside the bins (or infinite)."""
        if self.k is None or not math.isfinite(threshold):
            return threshold
        i = scaled_floor(threshold, self.k) - self.origin
        if not 0 <= i < self.bins:
            return threshold
        with np.errstate(over="ignore"):  # only a bin reaching below -max(float64) overflows
            return float(np.ldexp(float(self.origin + i), self.k))

    def levels(self) -> tuple[np.ndarray, np.ndarray]:
        """(neg, pos) counts per level, ascending: -inf, the bins, +inf."""
        neg = np.concatenate([self.infinite[0, :1], self.counts[0], self.infinite[0, 1:]])
        pos = np.concatenate([self.infinite[1, :1], self.counts[1], self.infinite[1, 1:]])
        return neg, pos
