"""Unit tests of the OOD metrics: conventions, errors, the histogram's accuracy, memory and devices."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from segcheck import SegcheckError
from segcheck.metrics import OODMetrics, _histogram, ood_metrics, reference
from segcheck.metrics._histogram import ScoreHistogram


def gaussian_scores(n: int, seed: int = 0, dtype=np.float32):
    """OOD pixels (10%) score about 2 standard deviations higher than in-distribution ones."""
    rng = np.random.default_rng(seed)
    is_ood = rng.random(n) < 0.1
    return (rng.standard_normal(n) + 2 * is_ood).astype(dtype), is_ood


def test_hand_computed_example():
    scores = np.array([0.9, 0.8, 0.8, 0.3, 0.1])
    is_ood = np.array([1, 0, 1, 0, 0], bool)
    r = ood_metrics(scores, is_ood, exact=True)
    assert r.auroc == pytest.approx((3 + 2.5) / 6)  # 0.8 vs 0.8 is a tie: half a pair
    assert r.aupr == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)  # precision 1 at 0.9, 2/3 at 0.8
    assert r.fpr == pytest.approx(1 / 3)  # TPR reaches 0.95 at threshold 0.8, with one of 3 negatives
    assert (r.positives, r.negatives, r.exact) == (2, 3, True)


def test_histogram_meets_the_accuracy_targets_and_its_bound_holds():
    x, y = gaussian_scores(1_000_000)
    want = reference.ranking(x, y)
    r = ood_metrics(x, y, exact=False)
    assert abs(r.auroc - want["auroc"]) <= min(r.auroc_error, 1e-6)
    assert abs(r.aupr - want["aupr"]) <= min(r.aupr_error, 1e-4)
    assert abs(r.fpr - want["fpr"]) <= r.fpr_error
    assert r.auroc_error < 1e-4 and r.aupr_error < 1e-3  # the stated bounds are informative, too


def test_unknown_range_logits_and_energies():
    """No range is assumed: shifted and scaled scores give the same exact results."""
    x, y = gaussian_scores(50_000, seed=1, dtype=np.float64)
    base = ood_metrics(x, y, exact=True)
    for transformed in (x * 1e6 - 3e7, -np.logaddexp(0, -x) * 40, x * 1e-30):
        r = ood_metrics(transformed, y, exact=True)
        assert r.auroc == pytest.approx(base.auroc, abs=1e-12) and r.aupr == pytest.approx(base.aupr, abs=1e-12)
        h = ood_metrics(transformed, y, exact=False)
        assert abs(h.auroc - base.auroc) <= h.auroc_error + 1e-12


def test_nan_scores_raise_and_infinities_rank_at_the_ends():
    with pytest.raises(SegcheckError, match="1 NaN"):
        ood_metrics(np.array([0.1, np.nan]), np.array([True, False]), exact=False)
    with pytest.raises(SegcheckError, match="NaN"):
        ood_metrics(np.array([0.1, np.nan]), np.array([True, False]), exact=True)
    scores = np.array([-np.inf, 0.0, 1.0, np.inf])
    y = np.array([0, 0, 1, 1], bool)
    for exact in (True, False):
        assert ood_metrics(scores, y, exact=exact).auroc == 1.0


def test_valid_mask_excludes_pixels_even_nan():
    scores = np.array([0.2, np.nan, 0.9])
    assert ood_metrics(scores, np.array([0, 1, 1]), np.array([1, 0, 1]), exact=False).auroc == 1.0


def test_degenerate_inputs_are_nan():
    r = ood_metrics(np.array([0.3, 0.4]), np.array([False, False]))
    assert math.isnan(r.auroc) and math.isnan(r.aupr) and math.isnan(r.fpr)
    r = ood_metrics(np.array([0.3, 0.4]), np.array([True, True]))
    assert r.aupr == 1.0 and math.isnan(r.auroc)
    assert math.isnan(ood_metrics(np.zeros(0), np.zeros(0, bool)).auroc)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"average": "macro"}, "average must be"),
        ({"tpr_level": 0.0}, "tpr_level must be"),
        ({"bins": 1}, "bins must be"),
        ({"exact_limit": -1}, "exact_limit must be"),
    ],
)
def test_bad_options(kwargs, message):
    with pytest.raises(SegcheckError, match=message):
        OODMetrics(**kwargs)


def test_labels_must_be_boolean_or_0_1():
    with pytest.raises(SegcheckError, match=r"is_ood must be boolean or 0/1, found values \[255\]"):
        ood_metrics(np.array([0.1, 0.2]), np.array([0, 255]))
    with pytest.raises(SegcheckError, match="scores shape"):
        ood_metrics(np.zeros(3), np.zeros(2, bool))


def test_per_image_needs_an_image_axis_and_skips_one_class_images():
    with pytest.raises(SegcheckError, match="leading image axis"):
        ood_metrics(np.zeros(4), np.zeros(4, bool), average="per_image")
    scores = np.array([[0.1, 0.9], [0.5, 0.6], [0.9, 0.1]])
    is_ood = np.array([[0, 1], [0, 0], [0, 1]], bool)
    r = ood_metrics(scores, is_ood, average="per_image", exact=True)
    assert (r.auroc, r.images, r.skipped_images, r.average) == (0.5, 2, 1, "per_image")


def test_streaming_memory_does_not_grow_with_pixels():
    h = ScoreHistogram()
    for seed in range(3):
        h.update(*gaussian_scores(300_000, seed))
    assert h.total() == 900_000
    assert h.counts.nbytes == 2 * 8 * (1 << 16)


def test_auto_mode_switches_to_the_histogram_beyond_the_limit():
    metrics = OODMetrics(exact_limit=1000)
    metrics.update(*gaussian_scores(600, seed=1))
    assert metrics.compute().exact
    metrics.update(*gaussian_scores(600, seed=2))
    assert not metrics.compute().exact


def test_merge_rejects_different_bin_counts():
    with pytest.raises(SegcheckError, match="cannot merge"):
        ScoreHistogram(16).merge(ScoreHistogram(32))


def test_torch_kernel_matches_numpy():
    """The device path (torch ops, float64), run on CPU tensors, bins exactly like the host path."""
    x, y = gaussian_scores(100_000, seed=3)
    x[:3] = [np.inf, -np.inf, 0.0]
    host = ScoreHistogram(1 << 10).update(x, y)
    device = ScoreHistogram(1 << 10)
    device._update_torch(torch.from_numpy(x), torch.from_numpy(y))
    assert (device.k, device.origin) == (host.k, host.origin)
    assert (device.counts == host.counts).all() and (device.infinite == host.infinite).all()
    r = ood_metrics(torch.from_numpy(x), torch.from_numpy(y), exact=False, bins=1 << 10)
    assert r == ood_metrics(x, y, exact=False, bins=1 << 10)


@pytest.mark.gpu
def test_cuda_scores():
    x, y = gaussian_scores(100_000, seed=4)
    got = ood_metrics(torch.from_numpy(x).cuda(), torch.from_numpy(y).cuda(), exact=False)
    assert got == ood_metrics(x, y, exact=False)


def test_a_batch_with_nan_leaves_the_histogram_unchanged(monkeypatch):
    monkeypatch.setattr(_histogram, "CHUNK", 4)  # the NaN sits in a later chunk than counted scores
    monkeypatch.setattr(_histogram, "BLOCK", 4)
    h = ScoreHistogram(16).update(np.array([0.5, 1.5]), np.array([True, False]))
    before = (h.k, h.origin, h.counts.copy(), h.infinite.copy())
    with pytest.raises(SegcheckError, match="1 NaN"):
        h.update(np.array([-40.0, 9.0, np.inf, 1.0, 2.0, np.nan]), np.ones(6, bool))
    assert (h.k, h.origin) == before[:2]
    assert (h.counts == before[2]).all() and (h.infinite == before[3]).all()
