"""Unit tests of the IoU family: NaN semantics, per-image vs dataset-level, binary thresholds."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from segcheck import SegcheckError
from segcheck.metrics import (
    binary_dice,
    binary_iou,
    confusion_matrices,
    confusion_matrix,
    dice,
    iou,
    miou,
    per_class_iou,
    per_image_miou,
    pixel_accuracy,
    precision,
    recall,
)

# rows = target: class 0 has TP 3, FN 1, FP 0; class 1 TP 2, FN 0, FP 1; class 2 absent
MATRIX = np.array([[3, 1, 0], [0, 2, 0], [0, 0, 0]])


def test_known_values_and_absent_class_is_nan():
    np.testing.assert_allclose(iou(MATRIX), [3 / 4, 2 / 3, np.nan])
    np.testing.assert_allclose(dice(MATRIX), [6 / 7, 4 / 5, np.nan])
    np.testing.assert_allclose(recall(MATRIX), [3 / 4, 1.0, np.nan])
    np.testing.assert_allclose(precision(MATRIX), [1.0, 2 / 3, np.nan])
    assert miou(MATRIX) == pytest.approx((3 / 4 + 2 / 3) / 2)  # the absent class is left out, not a 0
    assert pixel_accuracy(MATRIX) == pytest.approx(5 / 6)


def test_nothing_counted_is_nan_not_zero():
    empty = np.zeros((3, 3), np.int64)
    assert np.isnan(iou(empty)).all()
    assert math.isnan(miou(empty)) and math.isnan(pixel_accuracy(empty))
    assert math.isnan(per_image_miou(np.zeros((2, 3, 3))))


def test_class_only_predicted_counts_as_zero():
    """A class predicted but absent from the target is present: IoU 0, pulling mIoU down."""
    m = np.array([[2, 1], [0, 0]])
    np.testing.assert_allclose(iou(m), [2 / 3, 0.0])
    assert math.isnan(recall(m)[1])


def test_per_image_differs_from_dataset_level():
    pred = np.array([[[0, 0, 0, 0]], [[1, 1, 1, 1]]])
    target = np.array([[[0, 0, 0, 0]], [[0, 0, 0, 1]]])
    stack = confusion_matrices(pred, target, 2)
    assert per_image_miou(stack) == pytest.approx((1.0 + (0 + 1 / 4) / 2) / 2)
    assert miou(stack.sum(0)) == pytest.approx((4 / 7 + 1 / 4) / 2)


def test_per_image_leaves_out_images_with_nothing_counted():
    pred = np.zeros((2, 1, 2), np.int64)
    target = np.array([[[0, 0]], [[255, 255]]])
    assert per_image_miou(confusion_matrices(pred, target, 2)) == 1.0


@pytest.mark.parametrize(
    "bad",
    [np.zeros((2, 3)), np.zeros((3,)), np.array([[1, -1], [0, 0]]), np.array([[np.nan, 0], [0, 0]]), np.zeros((0, 0))],
)
def test_malformed_matrices_are_rejected(bad):
    with pytest.raises(SegcheckError, match="confusion matrix"):
        iou(bad)


def test_miou_and_per_image_take_the_shapes_they_name():
    with pytest.raises(SegcheckError, match="per_image_miou"):
        miou(np.zeros((2, 3, 3)))
    with pytest.raises(SegcheckError, match=r"\(N, C, C\)"):
        per_image_miou(MATRIX)


def test_stacks_give_per_image_values():
    assert iou(np.stack([MATRIX, MATRIX.T])).shape == (2, 3)


def test_per_class_iou_is_the_registered_reference():
    from segcheck.plugins import METRIC_META
    from segcheck.registry import Registry
    from segcheck_plugins.reference_metrics import segcheck_register_metrics

    registry = Registry("metric", METRIC_META)
    segcheck_register_metrics(registry=registry)
    entry = registry.get("segcheck")
    assert entry.obj is per_class_iou and entry.meta == {"kind": "per_class_iou"}
    np.testing.assert_allclose(per_class_iou(np.array([0, 1, 1]), np.array([0, 1, 255]), 3, 255), [1, 1, np.nan])


def test_binary_threshold_is_strictly_above():
    scores = np.array([0.2, 0.5, 0.7, 0.9])
    target = np.array([0, 1, 1, 0])
    assert binary_iou(scores, target) == pytest.approx(1 / 3)  # 0.5 is not above 0.5
    assert binary_iou(scores, target, threshold=0.4) == pytest.approx(2 / 3)
    assert binary_dice(scores, target, threshold=0.4) == pytest.approx(4 / 5)
    assert binary_iou(torch.tensor(scores), torch.tensor(target), threshold=0.4) == pytest.approx(2 / 3)


def test_binary_empty_prediction_and_empty_target():
    assert binary_iou(np.zeros(4), np.array([0, 1, 0, 0])) == 0.0  # model predicts only background
    assert math.isnan(binary_iou(np.zeros(4), np.zeros(4, np.int64)))  # nothing to find, nothing found
    assert binary_dice(np.ones(4), np.zeros(4, np.int64)) == 0.0


def test_binary_masks_stored_as_0_255_raise():
    with pytest.raises(SegcheckError, match=r"target labels \[255\] outside 0\.\.1"):
        binary_iou(np.array([0.9, 0.1]), np.array([255, 0], np.uint8))
    # declaring 255 as ignore_index is accepted, and then the foreground silently disappears
    assert math.isnan(binary_iou(np.array([0.9, 0.1]), np.array([255, 0], np.uint8), ignore_index=255))


def test_binary_nan_scores_raise():
    with pytest.raises(SegcheckError, match="NaN"):
        binary_iou(np.array([np.nan, 0.3]), np.array([1, 0]))


def test_confusion_matrix_feeds_the_family():
    pred = np.array([0, 0, 0, 1, 1, 1])
    target = np.array([0, 0, 0, 0, 1, 1])
    assert (confusion_matrix(pred, target, 3) == MATRIX).all()
