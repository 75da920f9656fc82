"""Boundary IoU (Cheng, Girshick, Dollar, Berg & Kirillov, "Boundary IoU: Improving
Object-Centric Image Segmentation Evaluation", CVPR 2021), per class, streamed over batches.

The authors' definition (``boundary_iou.utils.boundary_utils.mask_to_boundary`` of
bowenc0221/boundary-iou-api): the boundary of a binary mask M is M minus its erosion by a
3x3 square repeated d times, with zeros outside the image (a mask cut by the image border has
a boundary there), ``d = max(1, round(dilation_ratio * image diagonal))`` and dilation ratio
0.02; Boundary IoU of ground truth G and prediction P is
``|(G_d & G) & (P_d & P)| / |(G_d & G) | (P_d & P)|`` with X_d & X that inner boundary band.

For semantic segmentation segcheck applies it to every class c (G = mask == c, P = prediction
== c) and counts like the IoU family (:mod:`segcheck.metrics.iou`): intersections and unions
are summed over the images of the dataset before dividing (dataset-level), and a class with
nothing in either is absent (NaN), left out of the mean. Pixels no metric counts
(``ignore_index``) belong to no class in either map, so a class region that meets them has a
boundary there in both, and they are never counted themselves; without such pixels this is
the authors' definition exactly.

d repeated 3x3 erosions are one erosion by a (2d+1) square, and a pixel of class c lies on
c's boundary exactly when its (2d+1) window holds another label or leaves the image: one
minimum and one maximum filter per image give every class's boundary at once (scipy.ndimage;
no OpenCV).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from segcheck import SegcheckError
from segcheck.metrics import _arrays, _counting

#: the authors' dilation ratio (fraction of the image diagonal)
DILATION_RATIO = 0.02


def boundary_width(height: int, width: int, dilation_ratio: float = DILATION_RATIO) -> int:
    """d of an image of ``height`` x ``width``: ``max(1, round(dilation_ratio * diagonal))``
    (Python's round, as the reference's ``int(round(...))``)."""
    if not dilation_ratio > 0:
        raise SegcheckError(f"the boundary dilation ratio must be > 0, got {dilation_ratio!r}")
    return max(1, int(round(dilation_ratio * math.hypot(height, width))))


def inner_boundary(labels: np.ndarray, d: int) -> np.ndarray:
    """Boolean (H, W): the pixels of ``labels`` (one int map) within ``d`` pixels (Chebyshev)
    of another label or of the image border, i.e. each pixel of its own label's mask M that
    ``M - erode(M)`` keeps (zeros outside the image)."""
    labels = np.asarray(labels, dtype=np.int64)
    size = 2 * d + 1
    low = ndimage.minimum_filter(labels, size=size, mode="constant", cval=-1)
    high = ndimage.maximum_filter(labels, size=size, mode="constant", cval=-1)
    return low != high


class BoundaryIoU:
    """Accumulates per-class boundary intersections and unions of class maps over batches.

    ``update(pred, target)`` takes (N, H, W) (or one (H, W)) integer maps; target pixels equal
    to ``ignore_index`` are not counted and belong to no class; any other target, and any
    prediction on a counted pixel, outside ``[0, num_classes)`` raises. d is computed from each
    image's own size (:func:`boundary_width`). :meth:`iou` gives the per-class Boundary IoU.
    """

    def __init__(self, num_classes: int, ignore_index: int | None = 255, dilation_ratio: float = DILATION_RATIO):
        _counting.check_classes(num_classes, ignore_index)
        boundary_width(1, 1, dilation_ratio)  # checks the ratio
        self.num_classes, self.ignore_index, self.dilation_ratio = int(num_classes), ignore_index, dilation_ratio
        self.intersection = np.zeros(self.num_classes, np.int64)
        self.union = np.zeros(self.num_classes, np.int64)

    def update(self, pred, target) -> BoundaryIoU:
        """Add a batch of class maps; returns self so that calls chain (all-or-nothing)."""
        pred, target = _arrays.labels(np.asarray(pred), "prediction"), _arrays.labels(np.asarray(target), "target")
        _arrays.same_shape(pred, target, "prediction", "target")
        if target.ndim == 2:
            pred, target = pred[None], target[None]
        if target.ndim != 3:
            raise SegcheckError(f"BoundaryIoU takes class maps (N, H, W) or (H, W), got shape {target.shape}")
        c = self.num_classes
        inter, union = np.zeros(c, np.int64), np.zeros(c, np.int64)
        for p, t in zip(pred, target):
            counted = t != self.ignore_index if self.ignore_index is not None else np.ones(t.shape, bool)
            _check_range(p, t, counted, c, self.ignore_index)
            truth = np.where(counted, t, c).astype(np.int64)  # uncounted pixels: a label of no class
            guess = np.where(counted, p, c).astype(np.int64)
            d = boundary_width(*t.shape, self.dilation_ratio)
            gb = inner_boundary(truth, d) & counted
            pb = inner_boundary(guess, d) & counted
            both = gb & pb & (truth == guess)
            hit = np.bincount(truth[both], minlength=c + 1)[:c]
            inter += hit
            union += np.bincount(truth[gb], minlength=c + 1)[:c] + np.bincount(guess[pb], minlength=c + 1)[:c] - hit
        self.intersection += inter
        self.union += union
        return self

    def iou(self) -> np.ndarray:
        """Per-class Boundary IoU (num_classes,) float64: intersection / union, NaN where the
        union is empty (the class is in neither map: absent)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.union > 0, self.intersection / np.maximum(self.union, 1), np.nan)


def _check_range(pred: np.ndarray, target: np.ndarray, counted: np.ndarray, c: int, ignore_index) -> None:
    """Raise (:func:`_counting.out_of_range`) for a counted label outside ``[0, c)``."""
    bad = [np.unique(v[(v < 0) | (v >= c)]) for v in (target[counted], pred[counted])]
    if any(len(b) for b in bad):
        raise _counting.out_of_range(c, ignore_index, *bad)


def boundary_iou(pred, target, num_classes: int, ignore_index: int | None = 255, dilation_ratio=DILATION_RATIO):
    """Per-class Boundary IoU (num_classes,) of class maps (N, H, W) or (H, W): :class:`BoundaryIoU` of one batch."""
    return BoundaryIoU(num_classes, ignore_index, dilation_ratio).update(pred, target).iou()
