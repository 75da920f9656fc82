"""segcheck's own confusion matrix and IoU family against the int64 ``np.bincount`` reference."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from hypothesis import event, given, note
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from segcheck import SegcheckError
from segcheck import metrics as M
from segcheck.metrics import _counting, reference
from segcheck.metrics.testing import assert_close, assert_per_class_equal, label_case, overridden, seg_cases

cases = seg_cases()
# Every uint8 pair counter built here (the C extension and the torch.bincount fallback).
each_pair_counter = pytest.mark.parametrize("pairs", _counting.AVAILABLE_PAIRS, ids=lambda c: c.__name__)


def ref_matrix(case):
    return reference.confusion_matrix(case.pred, case.target, case.num_classes, case.ignore_index)


def assert_matrix_equal(observed, expected, case):
    __tracebackhide__ = True
    if observed.dtype != np.int64 or observed.shape != expected.shape or not (observed == expected).all():
        raise AssertionError(
            f"confusion matrix differs from the reference (rows = target):\n"
            f"observed ({observed.dtype})\n{observed}\nexpected\n{expected}"
        )


@each_pair_counter
@given(case=cases, as_tensor=st.booleans())
def test_matrix_equals_reference(pairs, case, as_tensor):
    label_case(case)
    event(f"input as {'torch tensor' if as_tensor else 'numpy array'}")
    pred, tgt = (torch.from_numpy(case.pred), torch.from_numpy(case.target)) if as_tensor else (case.pred, case.target)
    with overridden(_counting, PAIRS=pairs):
        observed = M.confusion_matrix(pred, tgt, case.num_classes, case.ignore_index)
    assert_matrix_equal(observed, ref_matrix(case), case)


@given(case=cases)
def test_device_kernel_equals_reference(case):
    """The torch kernel that counts CUDA tensors on their device, run here on CPU tensors."""
    label_case(case)
    counts = _counting.device_counts(
        torch.from_numpy(case.pred).reshape(-1),
        torch.from_numpy(case.target).reshape(-1),
        case.num_classes,
        case.ignore_index,
    )
    assert_matrix_equal(counts, ref_matrix(case), case)


@each_pair_counter
@given(case=cases, chunk=st.integers(1, 9), threads=st.integers(1, 3), data=st.data())
def test_splitting_order_chunks_and_threads_do_not_matter(pairs, case, chunk, threads, data):
    """Any split into batches, in any order, counted in any chunk size by any number of threads."""
    label_case(case)
    flat_p, flat_t = case.pred.reshape(-1), case.target.reshape(-1)
    cuts = sorted(data.draw(st.lists(st.integers(0, flat_t.size), max_size=4), label="batch boundaries"))
    pieces = list(zip(np.split(flat_p, cuts), np.split(flat_t, cuts)))
    order = data.draw(st.permutations(range(len(pieces))), label="batch order")
    event(f"batches: {len(pieces)}")
    with overridden(_counting, PAIRS=pairs, THREAD_PART=1, CHUNK=chunk):
        stream = M.ConfusionMatrix(case.num_classes, case.ignore_index, threads=threads)
        for i in order:
            stream.update(*pieces[i])
    assert_matrix_equal(stream.matrix, ref_matrix(case), case)


@given(case=cases)
def test_iou_family_equals_formulas(case):
    label_case(case)
    m = ref_matrix(case).astype(np.float64)
    tp, fp, fn = np.diag(m), m.sum(0) - np.diag(m), m.sum(1) - np.diag(m)
    with np.errstate(invalid="ignore", divide="ignore"):
        want = {
            "iou": tp / (tp + fp + fn),
            "dice": 2 * tp / (2 * tp + fp + fn),
            "recall": tp / (tp + fn),
            "precision": tp / (tp + fp),
        }
    matrix = M.confusion_matrix(case.pred, case.target, case.num_classes, case.ignore_index)
    for name, values in want.items():
        assert_per_class_equal(getattr(M, name)(matrix), values, case, what=name)
    assert_close(
        M.miou(matrix), reference.miou(case.pred, case.target, case.num_classes, case.ignore_index), 1e-12, "miou"
    )
    accuracy = np.trace(m) / m.sum() if m.sum() else np.nan
    assert_close(M.pixel_accuracy(matrix), accuracy, 1e-12, "pixel_accuracy")
    assert_per_class_equal(
        M.per_class_iou(case.pred, case.target, case.num_classes, case.ignore_index), want["iou"], case
    )


@given(case=cases)
def test_miou_leaves_absent_classes_out(case):
    """mIoU over C classes equals mIoU over the same data declared with extra, unused classes."""
    wider = replace(case, num_classes=case.num_classes + 2)
    label_case(wider)
    narrow = M.miou(M.confusion_matrix(case.pred, case.target, case.num_classes, case.ignore_index))
    wide_m = M.confusion_matrix(wider.pred, wider.target, wider.num_classes, wider.ignore_index)
    assert np.isnan(M.iou(wide_m)[case.num_classes :]).all()
    assert_close(M.miou(wide_m), narrow, 1e-12, "mIoU with two extra absent classes")


@given(case=cases)
def test_per_image_miou_is_mean_of_image_mious(case):
    label_case(case)
    per_image = [reference.miou(p, t, case.num_classes, case.ignore_index) for p, t in zip(case.pred, case.target)]
    defined = [v for v in per_image if not np.isnan(v)]
    event(f"images with something counted: {len(defined)} of {len(per_image)}")
    expected = float(np.mean(defined)) if defined else float("nan")
    stack = M.confusion_matrices(case.pred, case.target, case.num_classes, case.ignore_index)
    assert_matrix_equal(stack.sum(0), ref_matrix(case), case)
    assert_close(M.per_image_miou(stack), expected, 1e-12, "per-image mIoU")


@each_pair_counter
@given(case=cases, data=st.data())
def test_out_of_range_raises_naming_the_value(pairs, case, data):
    if case.target.size == 0:
        case = replace(case, pred=np.zeros((1, 1), case.pred.dtype), target=np.zeros((1, 1), case.target.dtype))
    limit = np.iinfo(case.target.dtype).max
    bad = data.draw(
        st.integers(case.num_classes, min(case.num_classes + 40, limit)).filter(lambda v: v != case.ignore_index),
        label="out-of-range label",
    )
    where = data.draw(st.sampled_from(["target", "prediction"]), label="where")
    pred, tgt = case.pred.copy(), case.target.copy()
    (tgt if where == "target" else pred).reshape(-1)[0] = bad
    if where == "prediction":
        tgt.reshape(-1)[0] = 0
    label_case(replace(case, pred=pred, target=tgt))
    with overridden(_counting, PAIRS=pairs), pytest.raises(SegcheckError, match=rf"{where} labels \[.*\b{bad}\b"):
        M.confusion_matrix(pred, tgt, case.num_classes, case.ignore_index)


@each_pair_counter
@given(case=cases, data=st.data())
def test_predictions_on_ignored_pixels_never_matter(pairs, case, data):
    """Where the target is ignore_index, any prediction (even out of range) changes nothing."""
    ignore = case.ignore_index if case.ignore_index is not None else 255
    tgt = case.target.astype(np.int64)
    ignored = data.draw(hnp.arrays(np.bool_, tgt.shape), label="pixels to ignore") | (tgt == ignore)
    junk = data.draw(
        st.one_of(
            hnp.arrays(np.uint8, tgt.shape),  # fits the uint8 pair counters
            hnp.arrays(np.int64, tgt.shape, elements=st.integers(-5, 300)),
        ),
        label="junk predictions",
    )
    noisy = replace(
        case, ignore_index=ignore, target=np.where(ignored, ignore, tgt), pred=np.where(ignored, junk, case.pred)
    )
    label_case(noisy)
    clean = replace(noisy, pred=np.where(ignored, 0, case.pred))
    with overridden(_counting, PAIRS=pairs):
        counted = M.confusion_matrix(noisy.pred, noisy.target, case.num_classes, ignore)
    assert_matrix_equal(counted, ref_matrix(clean), noisy)


@given(case=cases, data=st.data())
def test_binary_iou_and_dice_at_threshold(case, data):
    """Foreground IoU/Dice of ``score > threshold`` equal the two-class reference."""
    n = case.target.shape
    tgt = data.draw(hnp.arrays(np.uint8, n, elements=st.integers(0, 1)), label="binary target")
    scores = data.draw(hnp.arrays(np.float32, n, elements=st.floats(0, 1, width=32)), label="scores")
    threshold = data.draw(st.sampled_from([0.0, 0.25, 0.5, 0.9]), label="threshold")
    note(f"target={tgt.tolist()}\nscores={scores.tolist()}\nthreshold={threshold}")
    event("empty prediction" if not (scores > threshold).any() else "some foreground predicted")
    event("empty target" if not tgt.any() else "some foreground in target")
    ref = reference.per_class_iou((scores > threshold).astype(np.uint8), tgt, 2, None)[1]
    assert_close(M.binary_iou(scores, tgt, threshold), ref, 1e-12, "binary IoU")
    iou = ref
    assert_close(
        M.binary_dice(scores, tgt, threshold),
        2 * iou / (1 + iou) if not np.isnan(iou) else iou,
        1e-12,
        "binary Dice (= 2 IoU / (1 + IoU))",
    )
