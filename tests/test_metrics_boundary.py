"""Boundary IoU (Cheng et al., CVPR 2021) against the authors' reference definition: numbers
worked out by hand on hand-made masks, and ``mask_to_boundary`` as bowenc0221/boundary-iou-api
writes it (a 1 px zero border, d 3x3 erosions) re-stated with scipy on random masks."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from segcheck import SegcheckError
from segcheck.metrics.boundary import BoundaryIoU, boundary_iou, boundary_width, inner_boundary


def mask_to_boundary(mask: np.ndarray, dilation_ratio: float = 0.02) -> np.ndarray:
    """The reference's mask_to_boundary: d = max(1, round(ratio * diagonal)); the mask, padded with
    one row/column of zeros, eroded d times by a 3x3 square; the mask minus the erosion."""
    h, w = mask.shape
    d = max(1, int(round(dilation_ratio * np.sqrt(h**2 + w**2))))
    padded = np.pad(mask.astype(np.uint8), 1)
    eroded = padded.astype(bool)
    for _ in range(d):  # cv2.erode(padded, ones(3x3), iterations=d): outside the padded image does not erode
        eroded = ndimage.binary_erosion(eroded, np.ones((3, 3), bool), border_value=1)
    return mask.astype(np.uint8) - eroded[1 : h + 1, 1 : w + 1].astype(np.uint8)


def reference_counts(pred: np.ndarray, target: np.ndarray, classes: int, ignore=None, ratio=0.02):
    """Per class: |G_b & P_b| and |G_b | P_b| summed over images, boundaries by the reference
    (pixels of ``ignore`` belong to no class and are not counted)."""
    inter, union = np.zeros(classes, np.int64), np.zeros(classes, np.int64)
    for p, t in zip(pred, target):
        counted = t != ignore if ignore is not None else np.ones(t.shape, bool)
        for c in range(classes):
            gb = mask_to_boundary(t == c, ratio).astype(bool) & counted
            pb = mask_to_boundary((p == c) & counted, ratio).astype(bool) & counted
            inter[c] += (gb & pb).sum()
            union[c] += (gb | pb).sum()
    return inter, union


def test_hand_made_squares_give_the_numbers_worked_out_by_hand():
    """10x10 (d = 1): a 6x6 square, predicted one column to the right. Class 1: two 20 px rings
    sharing 10 px (the top and bottom rows but one column) -> 10 / 30. Background: the image's
    36 px border ring plus a 28 px ring around each square (the predicted one meets the border
    on 8 px): 64 and 56 px, sharing the border ring and 14 px -> 50 / 70."""
    truth, pred = np.zeros((10, 10), np.int64), np.zeros((10, 10), np.int64)
    truth[2:8, 2:8] = 1
    pred[2:8, 3:9] = 1
    assert boundary_width(10, 10) == 1
    assert mask_to_boundary(truth == 1).sum() == 20 and mask_to_boundary(truth == 0).sum() == 64
    assert mask_to_boundary(pred == 0).sum() == 56
    np.testing.assert_allclose(boundary_iou(pred, truth, 2), [50 / 70, 10 / 30])
    np.testing.assert_allclose(boundary_iou(truth, truth, 2), [1.0, 1.0])


def test_a_thin_object_is_all_boundary_and_a_large_one_only_its_band():
    truth = np.zeros((50, 50), np.int64)  # diagonal 70.7: d = round(1.41) = 1
    truth[10:40, 10:40] = 1  # 30x30: its band is 30^2 - 28^2 = 116 px
    truth[45, 5:45] = 2  # a 1 px line: all boundary
    assert inner_boundary(truth, 1)[truth == 1].sum() == 116
    assert inner_boundary(truth, 1)[truth == 2].all()
    pred = truth.copy()
    pred[10:40, 10:40][1:-1, 1:-1] = 0  # the square's inside lost: its band is intact, its mask IoU is not
    values = boundary_iou(pred, truth, 3)
    assert values[1] == pytest.approx(116 / (116 + 0 + 0))  # pred band = the 1 px ring = truth band
    assert values[2] == 1.0


@pytest.mark.parametrize(("size", "d"), [((64, 128), 3), ((1024, 2048), 46), ((10, 10), 1), ((32, 32), 1)])
def test_the_band_is_two_percent_of_the_diagonal(size, d):
    assert boundary_width(*size) == d == max(1, round(0.02 * math.hypot(*size)))


@pytest.mark.parametrize("ratio", [0.02, 0.05])
def test_random_masks_match_the_reference_streamed_in_any_batches(ratio):
    rng = np.random.default_rng(0)
    truth = ndimage.zoom(rng.integers(0, 4, (5, 8, 12)), (1, 5, 5), order=0)  # blobs of 5 px and more
    pred = np.where(rng.random(truth.shape) < 0.1, rng.integers(0, 4, truth.shape), truth)
    inter, union = reference_counts(pred, truth, 4, ratio=ratio)
    expected = inter / union
    whole = BoundaryIoU(4, None, ratio).update(pred, truth)
    np.testing.assert_array_equal(whole.intersection, inter)
    np.testing.assert_array_equal(whole.union, union)
    parts = BoundaryIoU(4, None, ratio)
    for i in (3, 0, 4, 1, 2):  # any order, one image at a time
        parts.update(pred[i], truth[i])
    np.testing.assert_allclose(parts.iou(), expected)


def test_ignore_pixels_belong_to_no_class_and_are_not_counted():
    rng = np.random.default_rng(1)
    truth = ndimage.zoom(rng.integers(0, 3, (3, 6, 6)), (1, 6, 6), order=0)
    truth[:, 10:16, 5:20] = 255
    pred = np.where(rng.random(truth.shape) < 0.05, rng.integers(0, 3, truth.shape), np.where(truth == 255, 0, truth))
    inter, union = reference_counts(pred, truth, 3, ignore=255)
    np.testing.assert_allclose(boundary_iou(pred, truth, 3, 255), inter / union)


def test_an_absent_class_is_nan_and_bad_labels_are_errors():
    truth = np.zeros((1, 8, 8), np.int64)
    values = boundary_iou(truth, truth, 3)
    assert values[0] == 1.0 and np.isnan(values[1:]).all()
    with pytest.raises(SegcheckError, match=r"prediction labels \[5\] outside 0..2"):
        boundary_iou(np.full((8, 8), 5), np.zeros((8, 8), np.int64), 3)
    with pytest.raises(SegcheckError, match="dilation ratio must be > 0"):
        BoundaryIoU(3, 255, 0.0)
    with pytest.raises(SegcheckError, match="integer class ids"):
        boundary_iou(np.zeros((8, 8)), np.zeros((8, 8), np.int64), 3)
