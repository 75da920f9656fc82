"""Unit tests of the confusion matrix: input errors, dtypes, torch, chunking, threads, wide labels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from segcheck import SegcheckError
from segcheck.metrics import ConfusionMatrix, _counting, confusion_matrices, confusion_matrix, reference


@pytest.fixture(autouse=True, params=_counting.AVAILABLE_PAIRS, ids=lambda c: c.__name__)
def pairs(request, monkeypatch):
    """Every test here runs with each uint8 pair counter built on this machine."""
    monkeypatch.setattr(_counting, "PAIRS", request.param)
    return request.param


def labels(shape, high, seed, dtype=np.uint8):
    return np.random.default_rng(seed).integers(0, high, shape).astype(dtype)


@pytest.fixture
def batch():
    target = labels((2, 33, 47), 5, 0)
    target[:, :3] = 255
    return labels(target.shape, 5, 1), target


def test_known_matrix_rows_are_target():
    pred = np.array([[0, 1], [1, 1]])
    target = np.array([[0, 0], [1, 255]])
    assert confusion_matrix(pred, target, 2).tolist() == [[1, 1], [0, 1]]


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.uint16, np.int32, np.int64, np.uint64])
def test_every_integer_dtype_gives_the_same_counts(batch, dtype):
    pred, target = batch
    ignore = 255 if np.iinfo(dtype).max >= 255 else -1
    t = np.where(target == 255, ignore, target).astype(dtype)
    got = confusion_matrix(pred.astype(dtype), t, 5, ignore)
    assert got.dtype == np.int64
    assert (got == reference.confusion_matrix(pred, target, 5, 255)).all()


def test_bool_masks_are_two_class_labels():
    pred = np.array([True, False, True])
    target = np.array([True, True, False])
    assert confusion_matrix(pred, target, 2, None).tolist() == [[0, 1], [1, 1]]


def test_torch_cpu_tensors_and_argmax_output(batch):
    pred, target = batch
    logits = torch.nn.functional.one_hot(torch.from_numpy(pred).long(), 5).permute(0, 3, 1, 2).float()
    got = confusion_matrix(logits.argmax(1), torch.from_numpy(target), 5)
    assert (got == reference.confusion_matrix(pred, target, 5, 255)).all()


@pytest.mark.gpu
def test_cuda_tensors_are_counted_on_the_device(batch):
    pred, target = batch
    got = confusion_matrix(torch.from_numpy(pred).cuda(), torch.from_numpy(target).cuda(), 5)
    assert (got == reference.confusion_matrix(pred, target, 5, 255)).all()
    with pytest.raises(SegcheckError, match="different devices"):
        confusion_matrix(torch.from_numpy(pred).cuda(), torch.from_numpy(target), 5)
    with pytest.raises(SegcheckError, match=r"prediction labels \[7\]"):
        confusion_matrix(torch.full((4,), 7, device="cuda"), torch.zeros(4, dtype=torch.long, device="cuda"), 5)


def test_float_predictions_are_rejected_with_a_hint():
    with pytest.raises(SegcheckError, match=r"prediction has dtype float32.*argmax"):
        confusion_matrix(np.zeros((2, 2), np.float32), np.zeros((2, 2), np.int64), 3)
    with pytest.raises(SegcheckError, match=r"target has dtype float32"):
        confusion_matrix(torch.zeros(2, dtype=torch.long), torch.zeros(2), 3)


def test_shape_mismatch_is_an_error():
    with pytest.raises(SegcheckError, match=r"prediction shape \(2, 3\) != target shape \(3, 2\)"):
        confusion_matrix(np.zeros((2, 3), np.int64), np.zeros((3, 2), np.int64), 3)


@pytest.mark.parametrize(
    "num_classes, ignore_index, message",
    [
        (0, 255, "num_classes must be a positive integer"),
        (2.0, 255, "num_classes must be a positive integer"),
        (3, 1, "ignore_index 1 is a class id"),
        (3, "255", "ignore_index must be an integer or None"),
    ],
)
def test_bad_class_settings(num_classes, ignore_index, message):
    with pytest.raises(SegcheckError, match=message):
        ConfusionMatrix(num_classes, ignore_index)


def test_out_of_range_labels_are_named_not_dropped():
    target = np.array([0, 1, 7, 255, 9, 7], np.uint8)
    pred = np.array([0, 1, 0, 200, 0, 0], np.uint8)
    with pytest.raises(SegcheckError, match=r"^target labels \[7, 9\] outside 0\.\.2 \(ignore_index 255"):
        confusion_matrix(pred, target, 3)
    with pytest.raises(SegcheckError, match=r"^prediction labels \[3\] outside 0\.\.2"):
        confusion_matrix(np.array([3, 0]), np.array([0, 1]), 3)
    with pytest.raises(SegcheckError, match=r"^target labels \[255\]"):
        confusion_matrix(np.array([0]), np.array([255]), 3, ignore_index=None)


def test_predictions_on_ignored_pixels_may_be_anything():
    pred = np.array([0, 1, 250, -3])
    target = np.array([0, 1, 255, 255])
    assert confusion_matrix(pred, target, 2).tolist() == [[1, 0], [0, 1]]


def test_update_is_all_or_nothing(monkeypatch):
    monkeypatch.setattr(_counting, "CHUNK", 1 << 10)
    cm = ConfusionMatrix(3)
    cm.update(np.array([0, 1]), np.array([0, 1]))
    before = cm.matrix.copy()
    big = np.zeros(3 * _counting.CHUNK, np.uint8)
    big[-1] = 5  # the bad label sits in the last chunk, after good chunks were counted
    with pytest.raises(SegcheckError):
        cm.update(np.zeros_like(big), big)
    assert (cm.matrix == before).all()
    assert cm.reset().matrix.sum() == 0


def test_chunks_and_threads_give_identical_counts(monkeypatch):
    monkeypatch.setattr(_counting, "CHUNK", 1 << 16)
    target = labels((5 * _counting.CHUNK + 17,), 19, 2)
    target[::7] = 255
    pred = labels(target.shape, 19, 3)
    want = reference.confusion_matrix(pred, target, 19, 255)
    for threads in (1, 2, 4):
        assert (confusion_matrix(pred, target, 19, threads=threads) == want).all()
    stream = ConfusionMatrix(19, threads=2)
    for part in np.array_split(np.arange(target.size), 3):
        stream.update(pred[part], target[part])
    assert (stream.matrix == want).all()


@pytest.mark.parametrize("layout", ["reversed", "strided", "transposed"])
def test_non_contiguous_inputs_are_counted(layout):
    target = labels((40, 70), 19, 4)
    target[::5] = 255
    pred = labels(target.shape, 19, 5)
    view = {
        "reversed": lambda a: a.reshape(-1)[::-1],
        "strided": lambda a: a.reshape(-1)[::3],
        "transposed": lambda a: a.T,
    }[layout]
    want = reference.confusion_matrix(view(pred).copy(), view(target).copy(), 19, 255)
    assert (confusion_matrix(view(pred), view(target), 19) == want).all()


def test_wide_labels_take_the_general_path():
    """More than 256 classes, and a negative ignore_index, are counted exactly too."""
    target = labels((3000,), 300, 4, np.int16)
    target[::5] = -1
    pred = labels(target.shape, 300, 5, np.int16)
    want = reference.confusion_matrix(pred, target, 300, -1)
    assert (confusion_matrix(pred, target, 300, -1) == want).all()
    with pytest.raises(SegcheckError, match=r"target labels \[300\]"):
        confusion_matrix(pred, np.where(target == 0, 300, target), 300, -1)


def test_empty_input_counts_nothing():
    assert confusion_matrix(np.zeros((0, 4), np.uint8), np.zeros((0, 4), np.uint8), 3).sum() == 0
    stack = confusion_matrices(np.zeros((2, 0), np.int64), np.zeros((2, 0), np.int64), 3)
    assert stack.shape == (2, 3, 3) and stack.sum() == 0


def test_per_image_matrices_sum_to_the_dataset_matrix(batch):
    pred, target = batch
    stack = confusion_matrices(pred, target, 5)
    assert stack.shape == (2, 5, 5)
    assert (stack.sum(0) == confusion_matrix(pred, target, 5)).all()


@pytest.mark.parametrize("threads", [0, -2, 1.5, True])
def test_threads_must_be_a_positive_integer(threads):
    with pytest.raises(SegcheckError, match="threads must be a positive integer"):
        confusion_matrix(np.zeros(3, np.uint8), np.zeros(3, np.uint8), 2, threads=threads)
