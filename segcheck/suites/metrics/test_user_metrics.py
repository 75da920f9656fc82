"""Property tests of every registered ``per_class_iou`` metric (yours via ``--plugin``) against
the reference: an int64 ``np.bincount`` confusion matrix, IoU = TP / (TP + FP + FN), NaN for
classes absent from both prediction and target.

A metric is called as ``metric(pred, target, num_classes, ignore_index)`` with integer numpy
arrays of one shape and an int ``ignore_index`` outside ``0..num_classes-1``; it returns one
IoU per class. A failure prints the shrunk input (``SegCase``) and each class observed vs
expected.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import assume, event, given, note, target
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from segcheck.metrics import reference
from segcheck.metrics.testing import SegCase, assert_per_class_equal, label_case, seg_cases

USER_IGNORE = (255, -1)  # user metrics always get an int ignore_index
cases = seg_cases(ignore_values=USER_IGNORE)


def run(user_metric, case: SegCase):
    """The user's metric on ``case``; a case outside its declared domain (``min_classes``) is not drawn."""
    assume(case.num_classes >= user_metric.meta.get("min_classes", 1))
    return user_metric.obj(case.pred.copy(), case.target.copy(), case.num_classes, case.ignore_index)


def expected(case: SegCase, user_metric=None) -> np.ndarray:
    """The reference per-class IoU, absent classes NaN, or 0 where the metric declares ``absent="zero"``."""
    iou = reference.per_class_iou(case.pred, case.target, case.num_classes, case.ignore_index)
    zero = user_metric is not None and user_metric.meta.get("absent", "nan") == "zero"
    return np.nan_to_num(iou, nan=0.0) if zero else iou


@given(case=cases)
def test_agrees_with_reference(user_metric, case):
    label_case(case)
    assert_per_class_equal(run(user_metric, case), expected(case, user_metric), case)


@given(case=cases)
def test_inputs_are_left_unchanged(user_metric, case):
    """The metric reads the caller's arrays and leaves them as they were (an evaluation loop
    goes on using them: a metric that edits them in place corrupts what is scored next)."""
    assume(case.num_classes >= user_metric.meta.get("min_classes", 1))
    label_case(case)
    pred, tgt = case.pred.copy(), case.target.copy()
    user_metric.obj(pred, tgt, case.num_classes, case.ignore_index)
    for name, given_array, after in (("prediction", case.pred, pred), ("target", case.target, tgt)):
        changed = int(np.sum(given_array != after))
        assert changed == 0, f"the metric changed {changed} of the {given_array.size} values of its {name} array"


@given(case=cases, extra=st.integers(1, 3))
def test_absent_classes_are_nan(user_metric, case, extra):
    """Classes that appear nowhere are NaN, not 0 (which would drag mIoU down) and not 1."""
    case = replace(case, num_classes=case.num_classes + extra)
    label_case(case)
    target(float(len(case.absent_classes())), label="absent classes")
    result = run(user_metric, case)
    observed = np.asarray(result, np.float64).reshape(-1)
    absent = case.absent_classes()
    assert_per_class_equal(result, expected(case, user_metric), case)
    if user_metric.meta.get("absent", "nan") == "zero":  # the metric's declared convention
        assert (observed[absent] == 0).all(), f"absent classes {absent} declared 0, got {observed[absent]}"
    else:
        assert np.isnan(observed[absent]).all(), f"absent classes {absent} must be NaN, got {observed[absent]}"


@given(case=cases, data=st.data())
def test_ignored_pixels_never_matter(user_metric, case, data):
    """Marking pixels as ignored removes them entirely, whatever was predicted there."""
    ignored = data.draw(hnp.arrays(np.bool_, case.target.shape), label="pixels to ignore")
    junk = data.draw(
        hnp.arrays(case.pred.dtype, case.pred.shape, elements=st.integers(0, case.num_classes - 1)),
        label="predictions on ignored pixels",
    )
    noisy = replace(
        case,
        target=np.where(ignored, case.ignore_index, case.target).astype(case.target.dtype),
        pred=np.where(ignored, junk, case.pred).astype(case.pred.dtype),
    )
    label_case(noisy)
    event(f"ignored pixels added: {int(ignored.sum() > 0)}")
    keep = noisy.counted
    clean = replace(case, pred=case.pred[keep], target=case.target[keep])  # the counted pixels only
    assert_per_class_equal(
        run(user_metric, noisy),
        expected(clean, user_metric),
        noisy,
        what="per-class IoU with ignored pixels (should equal IoU without them)",
    )


@given(case=cases, data=st.data())
def test_out_of_range_labels_raise(user_metric, case, data):
    """A label outside 0..C-1 (other than ignore_index in the target) is an error, not dropped."""
    if case.target.size == 0:
        case = replace(case, pred=np.zeros((1, 1), case.pred.dtype), target=np.zeros((1, 1), case.target.dtype))
    where = data.draw(st.sampled_from(["target", "prediction"]), label="where")
    limit = np.iinfo(case.target.dtype).max
    bad = data.draw(
        st.integers(case.num_classes, min(case.num_classes + 5, limit)).filter(lambda v: v != case.ignore_index),
        label="out-of-range label",
    )
    flat = data.draw(st.integers(0, case.target.size - 1), label="pixel")
    pred, tgt = case.pred.copy(), case.target.copy()
    if where == "target":
        tgt.reshape(-1)[flat] = bad
    else:
        pred.reshape(-1)[flat] = bad
        tgt.reshape(-1)[flat] = 0  # a counted pixel: predictions on ignored pixels do not matter
    run(user_metric, replace(case, target=tgt if where == "prediction" else case.target))  # valid: must not raise
    broken = replace(case, pred=pred, target=tgt)
    label_case(broken)
    event(f"out-of-range label in the {where}")
    note(f"label {bad} at flat index {flat} of the {where}")
    with pytest.raises(Exception):  # noqa: B017 -- any exception type is the contract (hookspecs)
        observed = run(user_metric, broken)
        note(f"returned instead of raising: {observed!r}")


@given(case=cases, data=st.data())
def test_permuting_class_ids_permutes_iou(user_metric, case, data):
    perm = np.array(data.draw(st.permutations(range(case.num_classes)), label="class permutation"))

    def lut(a):
        return np.where(a == case.ignore_index, a, perm[np.clip(a, 0, case.num_classes - 1)]).astype(a.dtype)

    permuted = replace(case, pred=lut(case.pred), target=lut(case.target))
    label_case(permuted)
    base = np.asarray(run(user_metric, case), np.float64).reshape(-1)
    moved = np.full(case.num_classes, np.nan)
    moved[perm] = base
    assert_per_class_equal(
        run(user_metric, permuted),
        moved,
        permuted,
        what="per-class IoU after renaming classes (should move with the class ids)",
    )


@given(case=cases, disjoint=st.booleans())
def test_all_correct_and_fully_disjoint(user_metric, case, disjoint):
    """Perfect prediction: IoU 1 for present classes; prediction never right: IoU 0."""
    counted = case.counted
    if disjoint:
        if case.num_classes < 2:
            case = replace(case, num_classes=2)
        pred = np.where(counted, (case.target.astype(np.int64) + 1) % case.num_classes, 0)
    else:
        pred = np.where(counted, case.target, 0)
    case = replace(case, pred=pred.astype(case.pred.dtype))
    label_case(case)
    result = run(user_metric, case)
    observed = np.asarray(result, np.float64).reshape(-1)
    assert_per_class_equal(result, expected(case, user_metric), case)
    present = ~np.isnan(expected(case))
    assert (observed[present] == (0.0 if disjoint else 1.0)).all()


@given(
    num_classes=st.integers(1, 6),
    ignore_index=st.sampled_from(USER_IGNORE),
    shape=st.sampled_from([(0,), (1, 0, 5), (2, 3, 3)]),
)
def test_nothing_counted_gives_all_nan(user_metric, num_classes, ignore_index, shape):
    """Empty input, or every pixel ignored: no class is present, so every IoU is NaN (or the
    declared ``absent`` value)."""
    tgt = np.full(shape, ignore_index, np.int64)
    case = SegCase(np.zeros(shape, np.int64), tgt, num_classes, ignore_index)
    label_case(case)
    assert_per_class_equal(run(user_metric, case), expected(case, user_metric), case)
