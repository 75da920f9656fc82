"""AUROC, average precision and FPR at a TPR level from counts per ordered score level.

Input: ``neg[i]``, ``pos[i]`` = number of negative / positive pixels whose score is the
i-th level, levels in ascending score order. Pixels on one level are *tied*. With exact
levels (every distinct score) the results equal scikit-learn's ``roc_auc_score``,
``average_precision_score`` and ``roc_curve``; with histogram bins as levels they are the
exact metrics of the binned scores, and :func:`ranking_metrics` also returns the largest
possible difference from the metrics of the unbinned scores, whatever the order inside bins:

- AUROC: a positive-negative pair in the same bin counts 1/2; unbinned it counts 0, 1/2 or 1,
  so the error is at most ``0.5 * sum_b pos_b * neg_b / (P * N)``.
- AP: each positive adds precision/P at the threshold that first includes it. Inside bin b
  (``tp0``/``fp0`` pixels in higher bins) that precision lies between
  ``(tp0 + j) / (tp0 + fp0 + n_b + j)`` for its rank j (all negatives first) and
  ``(tp0 + p_b) / (tp0 + fp0 + p_b)`` (all positives first, as one tie); summing both gives
  lower and upper bounds on the unbinned AP.
- FPR at TPR >= level: the first bin whose cumulative TPR reaches the level holds the
  unbinned threshold too, so the unbinned FPR lies in ``[fp0, fp0 + n_b] / N``.
"""

from __future__ import annotations

import numpy as np


def _dot(a: np.ndarray, b: np.ndarray) -> float:
    """Pairwise-summed dot product (no BLAS: its threads stall on a busy machine for 64k values)."""
    return float(np.sum(a * b))


def _harmonic_difference(a: np.ndarray, p: np.ndarray) -> np.ndarray:
    """H(a + p) - H(a) for integer a >= 0, p >= 0 (H = harmonic numbers), accurate for large a."""
    from scipy.special import digamma

    a = a.astype(np.float64)
    p = p.astype(np.float64)
    x, y = a + 1.0, a + p + 1.0  # H(m) = digamma(m + 1) + Euler's gamma
    small = x < 1e4
    out = np.empty_like(x)
    out[small] = digamma(y[small]) - digamma(x[small])
    xl, yl, pl = x[~small], y[~small], p[~small]
    # digamma(y) - digamma(x) by its asymptotic series; the next term is O(p / x**7)
    out[~small] = (
        np.log1p(pl / xl)
        + pl / (2 * xl * yl)
        + pl * (xl + yl) / (12 * xl**2 * yl**2)
        - (yl**4 - xl**4) / (120 * xl**4 * yl**4)
    )
    return out


def ranking_metrics(neg: np.ndarray, pos: np.ndarray, tpr_level: float = 0.95, bounds: bool = False) -> dict:
    """Metrics of the positive (OOD) class, higher score = more positive.

    Returns ``auroc``, ``aupr`` (step-wise average precision), ``fpr`` (false-positive rate at
    the first threshold, from the highest, where TP/P >= ``tpr_level``), ``positives``,
    ``negatives`` and, with ``bounds``, ``auroc_error``, ``aupr_error``, ``fpr_error`` as
    described in the module docstring (else 0.0). AUROC and FPR are NaN unless both classes
    are present; AP is NaN without positives.
    """
    pos = np.asarray(pos, np.int64)[::-1]
    neg = np.asarray(neg, np.int64)[::-1]
    used = (pos + neg) > 0
    pos, neg = pos[used], neg[used]
    n_pos, n_neg = int(pos.sum()), int(neg.sum())
    out = {
        "positives": n_pos,
        "negatives": n_neg,
        "auroc": float("nan"),
        "aupr": float("nan"),
        "fpr": float("nan"),
        "auroc_error": 0.0,
        "aupr_error": 0.0,
        "fpr_error": 0.0,
    }
    if n_pos == 0:
        return out
    tp = np.cumsum(pos)
    fp = np.cumsum(neg)
    tp0 = tp - pos
    fpos, fneg = pos.astype(np.float64), neg.astype(np.float64)
    hit = pos > 0
    precision = tp[hit] / (tp[hit] + fp[hit])
    out["aupr"] = float(_dot(fpos[hit], precision) / n_pos)
    if bounds:
        fp0 = (fp - neg)[hit]
        upper = _dot(fpos[hit], tp[hit] / (tp[hit] + fp0)) / n_pos
        # sum_{j=1..p} (tp0 + j) / (tp0 + fp + j) = p - fp * (H(tp0 + fp + p) - H(tp0 + fp))
        lower = np.sum(fpos[hit] - fp[hit] * _harmonic_difference(tp0[hit] + fp[hit], pos[hit])) / n_pos
        out["aupr_error"] = float(max(upper - out["aupr"], out["aupr"] - lower, 0.0))
    if n_neg == 0:
        return out
    pairs = float(n_pos) * float(n_neg)
    out["auroc"] = float((_dot(fneg, tp0.astype(np.float64)) + 0.5 * _dot(fneg, fpos)) / pairs)
    first = int(np.searchsorted(tp / n_pos, tpr_level, side="left"))
    first = min(first, len(tp) - 1)  # tpr_level > 1 is rejected by callers; guard the last level
    out["fpr"] = float(fp[first] / n_neg)
    if bounds:
        out["auroc_error"] = float(0.5 * _dot(fneg, fpos) / pairs)
        out["fpr_error"] = float(neg[first] / n_neg)
    return out
