"""Slow, obviously-correct reference metrics: what ``suites/metrics`` checks implementations against.

Written independently of the fast paths (no shared code with ``segcheck.metrics``): an int64
``np.bincount`` confusion matrix and ``np.nanmean`` for the IoU family, scikit-learn for
the ranking metrics, a pairwise count for AUROC, and explicit mask set operations for the
SMIYC component metrics. Inputs are numpy arrays.
"""

from __future__ import annotations

import numpy as np


def confusion_matrix(pred, target, num_classes: int, ignore_index: int | None) -> np.ndarray:
    """(C, C) int64, rows = target; ignored pixels dropped; ValueError for other out-of-range labels."""
    pred = np.asarray(pred).reshape(-1).astype(np.int64)
    target = np.asarray(target).reshape(-1).astype(np.int64)
    if ignore_index is not None:
        keep = target != ignore_index
        pred, target = pred[keep], target[keep]
    for name, values in (("target", target), ("prediction", pred)):
        if values.size and (values.min() < 0 or values.max() >= num_classes):
            raise ValueError(f"{name} label outside 0..{num_classes - 1}")
    return np.bincount(target * num_classes + pred, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes
    )


def per_class_iou(pred, target, num_classes: int, ignore_index: int | None) -> np.ndarray:
    """TP / (TP + FP + FN) per class, NaN when the class is in neither prediction nor target."""
    m = confusion_matrix(pred, target, num_classes, ignore_index).astype(np.float64)
    tp = np.diag(m)
    union = m.sum(0) + m.sum(1) - tp
    out = np.full(num_classes, np.nan)
    out[union > 0] = tp[union > 0] / union[union > 0]
    return out


def miou(pred, target, num_classes: int, ignore_index: int | None) -> float:
    """Dataset-level nanmean of :func:`per_class_iou` (NaN when no class is present)."""
    values = per_class_iou(pred, target, num_classes, ignore_index)
    return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")


def ranking(scores, is_ood, tpr_level: float = 0.95) -> dict:
    """scikit-learn's AUROC, average precision and FPR at the first threshold with TPR >= level.

    Scores are replaced by their dense ranks (the metrics depend only on the order), so that
    infinite scores are accepted.
    """
    from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

    x = np.asarray(scores, np.float64).reshape(-1)
    x = np.unique(x, return_inverse=True)[1].astype(np.float64)  # dense ranks: same metrics, and finite
    y = np.asarray(is_ood, bool).reshape(-1)
    out = {"auroc": float("nan"), "aupr": float("nan"), "fpr": float("nan")}
    if y.any():
        out["aupr"] = float(average_precision_score(y, x))
    if y.any() and not y.all():
        out["auroc"] = float(roc_auc_score(y, x))
        fpr, tpr, _ = roc_curve(y, x, drop_intermediate=False)
        out["fpr"] = float(fpr[np.searchsorted(tpr, tpr_level, side="left")])
    return out


def pairwise_auroc(scores, is_ood) -> float:
    """P(s+ > s-) + 0.5 P(s+ = s-) by comparing every positive with every negative (small inputs)."""
    x = np.asarray(scores, np.float64).reshape(-1)
    y = np.asarray(is_ood, bool).reshape(-1)
    pos, neg = x[y][:, None], x[~y][None, :]
    if pos.size == 0 or neg.size == 0:
        return float("nan")
    return float(((pos > neg).sum() + 0.5 * (pos == neg).sum()) / (pos.size * neg.size))


def components(scores, is_ood, valid, threshold: float, min_gt_size: int, min_pred_size: int) -> dict:
    """SMIYC's per-component values of one image (H, W) as exact fractions, by set operations.

    Predicted = ``score > threshold`` on valid pixels; 8-connected components; predicted ones
    smaller than ``min_pred_size`` dropped; GT ones smaller than ``min_gt_size`` made void.
    Returns ``siou`` (per GT component), ``ppv`` and ``siou_pred`` (per predicted component
    with pixels left in the region of interest) as lists of ``Fraction``.
    """
    from fractions import Fraction

    from scipy import ndimage

    eight = np.ones((3, 3), bool)
    valid = np.ones(np.shape(scores), bool) if valid is None else np.asarray(valid, bool)
    gt_map, n_gt = ndimage.label(np.asarray(is_ood, bool) & valid, eight)
    pred_map, n_pred = ndimage.label((np.asarray(scores, np.float64) > threshold) & valid, eight)
    roi = valid.copy()
    gts = []
    for i in range(1, n_gt + 1):
        if (gt_map == i).sum() < min_gt_size:
            roi &= gt_map != i
        else:
            gts.append(gt_map == i)
    preds = [pred_map == j for j in range(1, n_pred + 1) if (pred_map == j).sum() >= min_pred_size]
    gts = [g & roi for g in gts]
    preds = [p & roi for p in preds if (p & roi).any()]
    none = np.zeros(roi.shape, bool)

    def adjusted_iou(k, others, candidates):
        """|k ∩ K| / |(k ∪ K) \\ A|, K = union of candidates meeting k, A = union of others."""
        meets = [c for c in candidates if (c & k).any()]
        union_k = np.logical_or.reduce(meets) if meets else none
        rest = np.logical_or.reduce(others) if others else none
        return Fraction(int((k & union_k).sum()), int(((k | union_k) & ~rest).sum()))

    siou = [adjusted_iou(k, gts[:i] + gts[i + 1 :], preds) for i, k in enumerate(gts)]
    siou_pred = [adjusted_iou(k, preds[:i] + preds[i + 1 :], gts) for i, k in enumerate(preds)]
    all_gt = np.logical_or.reduce(gts) if gts else none
    ppv = [Fraction(int((k & all_gt).sum()), int(k.sum())) for k in preds]
    return {"siou": siou, "ppv": ppv, "siou_pred": siou_pred}
