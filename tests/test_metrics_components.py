"""SMIYC component metrics (sIoU, PPV, component F1) and the pixel-threshold helpers of OODMetrics."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from segcheck import SegcheckError
from segcheck.metrics import SMIYC_TAUS, ComponentMetrics, OODMetrics, component_metrics, reference


def boxes(shape, *spans):
    """A boolean map with the boxes (rows a..b, cols c..d, inclusive) set."""
    out = np.zeros(shape, bool)
    for r0, r1, c0, c1 in spans:
        out[r0 : r1 + 1, c0 : c1 + 1] = True
    return out


def fractions(table: dict, numerator: str = "intersection", denominator: str = "union") -> list[Fraction]:
    return [Fraction(int(a), int(b)) for a, b in zip(table[numerator], table[denominator])]


def unsized(pred, gt, valid=None, **kwargs) -> ComponentMetrics:
    """ComponentMetrics without size filters, predicted = the map ``pred`` (scores 0/1, threshold 0.5)."""
    return ComponentMetrics(0.5, min_gt_size=0, min_pred_size=0, **kwargs).update(pred.astype(np.float32), gt, valid)


# ---------------------------------------------------------------------------------------------
# (1) A hand-worked example on a 12 x 16 grid.
#
#   GT  G1 = rows 2-5, cols 2-5   (4x4 = 16 px)      GT  G2 = rows 2-5, cols 10-13 (16 px)
#   P1 = rows 2-5, cols 2-6   (20 px): all of G1 plus column 6 (4 px outside)
#   P2 = rows 4-7, cols 10-13 (16 px): the lower half of G2 (8 px) plus 8 px below it
#   P3 = rows 9-10, cols 7-8  (4 px):  touches nothing
#
#   sIoU(G1) = |G1 ∩ P1| / |G1 ∪ P1| = 16 / 20 = 4/5      (no other GT under P1: A = ∅)
#   sIoU(G2) = 8 / (16 + 16 - 8)      = 8 / 24 = 1/3
#   PPV(P1) = 16/20 = 4/5,  PPV(P2) = 8/16 = 1/2,  PPV(P3) = 0/4 = 0
#
#   TP = #sIoU >= tau, FN = #sIoU < tau, FP = #PPV < tau (SMIYC's comparisons):
#   tau = 0.25, 0.30:          TP 2 (4/5, 1/3), FN 0, FP 1 (P3)    F1 = 4 / (4 + 0 + 1) = 4/5
#   tau = 0.35 .. 0.50:        TP 1, FN 1 (1/3), FP 1 (P3)         F1 = 2 / (2 + 1 + 1) = 1/2
#       (at 0.50, PPV(P2) = 1/2 is not < 0.50: P2 is no FP there)
#   tau = 0.55 .. 0.75:        TP 1, FN 1, FP 2 (P2, P3)           F1 = 2 / (2 + 1 + 2) = 2/5
#   mean F1 = (2 * 4/5 + 4 * 1/2 + 5 * 2/5) / 11 = 28/55
#   mean sIoU = (4/5 + 1/3) / 2 = 17/30,  mean PPV = (4/5 + 1/2 + 0) / 3 = 13/30
# ---------------------------------------------------------------------------------------------
HAND_GT = boxes((12, 16), (2, 5, 2, 5), (2, 5, 10, 13))
HAND_PRED = boxes((12, 16), (2, 5, 2, 6), (4, 7, 10, 13), (9, 10, 7, 8))


def test_hand_worked_example():
    m = unsized(HAND_PRED, HAND_GT)
    gt, pred = m.gt_components(), m.pred_components()
    assert fractions(gt) == [Fraction(4, 5), Fraction(1, 3)]
    assert fractions(pred, denominator="size") == [Fraction(4, 5), Fraction(1, 2), Fraction(0)]
    assert gt["size"].tolist() == [16, 16] and pred["size"].tolist() == [20, 16, 4]
    r = m.compute()
    assert r.tp == (2, 2, 1, 1, 1, 1, 1, 1, 1, 1, 1)
    assert r.fn == (0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1)
    assert r.fp == (1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2)
    want = [Fraction(4, 5)] * 2 + [Fraction(1, 2)] * 4 + [Fraction(2, 5)] * 5
    assert list(r.f1_per_tau) == [float(f) for f in want]
    assert r.f1 == pytest.approx(28 / 55, abs=1e-15)
    assert r.siou == pytest.approx(17 / 30, abs=1e-15) and r.ppv == pytest.approx(13 / 30, abs=1e-15)
    assert (r.gt_components, r.pred_components, r.images) == (2, 3, 1)
    assert r.taus == SMIYC_TAUS and len(SMIYC_TAUS) == 11


def test_hand_worked_example_matches_the_set_reference():
    want = reference.components(HAND_PRED.astype(float), HAND_GT, None, 0.5, 0, 0)
    m = unsized(HAND_PRED, HAND_GT)
    assert fractions(m.gt_components()) == want["siou"]
    assert fractions(m.pred_components(), denominator="size") == want["ppv"]
    assert fractions(m.pred_components()) == want["siou_pred"]


# (2) 8-connectivity: two 2x2 GT squares that touch only at a corner are one component of 8 px;
# a prediction covering just one square gives sIoU 4/8 (4-connectivity would give 1 and 0).
def test_a_diagonal_touch_joins_components():
    gt = boxes((6, 6), (0, 1, 0, 1), (2, 3, 2, 3))
    m = unsized(boxes((6, 6), (0, 1, 0, 1)), gt)
    assert m.gt_components()["size"].tolist() == [8]
    assert fractions(m.gt_components()) == [Fraction(1, 2)]
    pred = boxes((6, 6), (0, 0, 0, 0), (1, 1, 1, 1), (2, 2, 2, 2))  # a diagonal chain: one component
    assert unsized(pred, gt).pred_components()["size"].tolist() == [3]


# (3) The adjustment A(k). GT A = rows 1-3, cols 1-3 and GT B = rows 1-3, cols 7-9 (9 px each);
# one prediction P = rows 1-3, cols 1-9 (27 px) spans both.
#   sIoU(A) = |A ∩ P| / |(A ∪ P) \ B| = 9 / (27 - 9) = 1/2   (plain IoU would be 9/27 = 1/3)
#   sIoU(B) = 1/2 likewise;  PPV(P) = 18/27 = 2/3;  sIoU_pred(P) = 18 / |P ∪ A ∪ B| = 18/27 = 2/3
def test_adjustment_removes_the_other_gt_components_from_the_union():
    gt = boxes((5, 11), (1, 3, 1, 3), (1, 3, 7, 9))
    m = unsized(boxes((5, 11), (1, 3, 1, 9)), gt)
    assert fractions(m.gt_components()) == [Fraction(1, 2), Fraction(1, 2)]
    assert fractions(m.pred_components(), denominator="size") == [Fraction(2, 3)]
    assert fractions(m.pred_components()) == [Fraction(2, 3)]
    assert m.gt_components()["union"].tolist() == [18, 18]


# (4) Void, as SMIYC: predicted pixels in void are removed *before* labelling, GT pixels in void
# are not anomalies, and void pixels count in no size. On 6 x 12: GT = rows 1-4, cols 0-2 (12 px);
# the score is high on rows 1-4, cols 0-11, but cols 5-6 are void (and marked is_ood there too).
#   predicted: left L = rows 1-4, cols 0-4 (20 px) and right R = rows 1-4, cols 7-11 (20 px):
#   two components, not one of 40 px. sIoU(GT) = 12/20 = 3/5, PPV(L) = 12/20 = 3/5, PPV(R) = 0.
#   3/5 is 0.6, below SMIYC's taus[7] = 0.6000000000000001: an FN there, as in SMIYC.
def test_void_pixels_are_removed_before_labelling():
    valid = ~boxes((6, 12), (0, 5, 5, 6))
    gt = boxes((6, 12), (1, 4, 0, 2), (1, 4, 5, 6))
    m = unsized(boxes((6, 12), (1, 4, 0, 11)), gt, valid)
    assert m.gt_components()["size"].tolist() == [12]
    assert m.pred_components()["size"].tolist() == [20, 20]
    assert fractions(m.gt_components()) == [Fraction(3, 5)]
    assert fractions(m.pred_components(), denominator="size") == [Fraction(3, 5), Fraction(0)]
    assert SMIYC_TAUS[7] > 0.6 and m.compute().tp == (1,) * 7 + (0,) * 4


# (5) Size filters, on 12 x 12 with min_gt_size=10, min_pred_size=6 (components with *fewer*
# pixels are filtered):
#   GT  big = rows 0-3, cols 0-3 (16 px, kept); small1 = rows 6-7, cols 6-7 (4 px) and
#   small2 = rows 9-10, cols 8-10 (6 px) become void.
#   P2 = rows 0-3, cols 0-2 (12 px): sIoU(big) = 12/16 = 3/4, PPV = 1.
#   P1 = rows 6-7, cols 4-7 (8 px, kept: sized before the small GT leaves the ROI); 4 of its
#        pixels lie on small1, so it counts with 4 px and PPV 0/4.
#   P4 = exactly small2 (6 px, kept by the size filter): wholly void, so it is not counted.
#   P3 = rows 10-11, cols 0-1 (4 px): removed, < 6.
SIZE_GT = boxes((12, 12), (0, 3, 0, 3), (6, 7, 6, 7), (9, 10, 8, 10))
SIZE_PRED = boxes((12, 12), (0, 3, 0, 2), (6, 7, 4, 7), (9, 10, 8, 10), (10, 11, 0, 1))


def test_size_filters():
    m = ComponentMetrics(0.5, min_gt_size=10, min_pred_size=6).update(SIZE_PRED.astype(float), SIZE_GT)
    assert fractions(m.gt_components()) == [Fraction(3, 4)]
    assert m.pred_components()["size"].tolist() == [12, 4]
    assert fractions(m.pred_components(), denominator="size") == [Fraction(1), Fraction(0)]
    # a component of exactly the minimum size is kept: small1 (4 px) and P3 (4 px) come back
    m = ComponentMetrics(0.5, min_gt_size=4, min_pred_size=4).update(SIZE_PRED.astype(float), SIZE_GT)
    assert fractions(m.gt_components()) == [Fraction(3, 4), Fraction(1, 2), Fraction(1)]
    assert m.pred_components()["size"].tolist() == [12, 8, 6, 4]
    r = component_metrics(SIZE_PRED.astype(float), SIZE_GT, threshold=0.5, min_gt_size=0, min_pred_size=0)
    assert (r.gt_components, r.pred_components) == (3, 4)


def test_defaults_are_smiyc_anomaly_track_and_filter_small_maps():
    r = component_metrics(HAND_PRED.astype(float), HAND_GT, threshold=0.5)  # all components < 100 / 500 px
    assert (r.min_gt_size, r.min_pred_size, r.gt_components, r.pred_components) == (100, 500, 0, 0)
    assert math.isnan(r.siou) and math.isnan(r.ppv) and math.isnan(r.f1)


def test_threshold_is_strict_unless_inclusive_and_compared_exactly():
    scores = np.where(HAND_PRED, np.float32(0.5), np.float32(0.0))
    assert ComponentMetrics(0.5, min_gt_size=0, min_pred_size=0).update(scores, HAND_GT).compute().pred_components == 0
    m = ComponentMetrics(0.5, min_gt_size=0, min_pred_size=0, inclusive=True).update(scores, HAND_GT)
    assert m.compute().pred_components == 3
    # 0.1 is not a float32: float32(0.1) > 0.1 as real numbers, so every such pixel is predicted
    scores = np.where(HAND_PRED, np.float32(0.1), np.float32(0.0))
    assert ComponentMetrics(0.1, min_gt_size=0, min_pred_size=0).update(scores, HAND_GT).compute().pred_components == 3


def random_images(seed: int, n: int = 5, shape=(24, 32)):
    """Blobby GT masks, scores correlated with them, and a few void pixels."""
    rng = np.random.default_rng(seed)
    from scipy import ndimage

    def blobs():
        return ndimage.gaussian_filter(rng.random((n, *shape)), (0, 2, 2))

    gt = blobs() > 0.55
    scores = np.clip(0.5 * gt + blobs(), 0, 1)
    valid = rng.random((n, *shape)) > 0.05
    return scores, gt, valid


# (6) Streaming over images equals one call with all images, whatever the batching.
def test_streaming_equals_one_batch():
    scores, gt, valid = random_images(0)
    options = {"min_gt_size": 3, "min_pred_size": 2}
    whole = ComponentMetrics(0.8, **options).update(scores, gt, valid)
    streamed = ComponentMetrics(0.8, **options)
    for i in range(len(scores)):
        streamed.update(scores[i], gt[i], valid[i])
    chunked = (
        ComponentMetrics(0.8, **options).update(scores[:2], gt[:2], valid[:2]).update(scores[2:], gt[2:], valid[2:])
    )
    assert whole.compute().gt_components > 5 and whole.compute().pred_components > 5
    for other in (streamed, chunked):
        assert other.compute() == whole.compute()
        for a, b in (
            (other.gt_components(), whole.gt_components()),
            (other.pred_components(), whole.pred_components()),
        ):
            assert all(np.array_equal(a[k], b[k]) for k in a)


@settings(max_examples=60, deadline=None)
@given(
    pred=hnp.arrays(bool, st.tuples(st.integers(1, 9), st.integers(1, 9))),
    data=st.data(),
    sizes=st.tuples(st.integers(0, 4), st.integers(0, 4)),
)
def test_per_component_values_equal_the_set_reference(pred, data, sizes):
    gt = data.draw(hnp.arrays(bool, pred.shape))
    valid = data.draw(hnp.arrays(bool, pred.shape, elements=st.sampled_from([True, True, True, False])))
    want = reference.components(pred.astype(float), gt, valid, 0.5, *sizes)
    m = ComponentMetrics(0.5, min_gt_size=sizes[0], min_pred_size=sizes[1]).update(pred.astype(float), gt, valid)
    assert fractions(m.gt_components()) == want["siou"]
    assert fractions(m.pred_components(), denominator="size") == want["ppv"]
    assert fractions(m.pred_components()) == want["siou_pred"]


def test_torch_inputs_equal_numpy():
    scores, gt, valid = random_images(1, n=2)
    options = {"threshold": 0.8, "min_gt_size": 3, "min_pred_size": 2}
    want = component_metrics(scores, gt, valid, **options)
    assert component_metrics(torch.from_numpy(scores), torch.from_numpy(gt), torch.from_numpy(valid), **options) == want


def test_component_input_errors():
    with pytest.raises(SegcheckError, match=r"one image \(H, W\) or a batch"):
        component_metrics(np.zeros(5), np.zeros(5, bool), threshold=0.5)
    with pytest.raises(SegcheckError, match="4 NaN values on valid pixels"):
        component_metrics(np.full((2, 2), np.nan), np.zeros((2, 2), bool), threshold=0.5)
    nan_in_void = np.array([[np.nan, 1.0]])
    assert component_metrics(nan_in_void, np.ones((1, 2), bool), np.array([[0, 1]]), threshold=0.5).images == 1
    with pytest.raises(SegcheckError, match="scores shape"):
        component_metrics(np.zeros((2, 2)), np.zeros((2, 3), bool), threshold=0.5)
    with pytest.raises(SegcheckError, match="threshold must not be NaN"):
        ComponentMetrics(math.nan)
    with pytest.raises(SegcheckError, match="threshold must be a real number"):
        ComponentMetrics("0.5")
    with pytest.raises(SegcheckError, match="taus must be"):
        ComponentMetrics(0.5, taus=[0.5, 1.5])
    with pytest.raises(SegcheckError, match="min_pred_size must be a non-negative integer"):
        ComponentMetrics(0.5, min_pred_size=-1)


def test_a_failing_batch_adds_nothing():
    m = ComponentMetrics(0.5, min_gt_size=0, min_pred_size=0)
    scores = np.stack([HAND_PRED.astype(float), np.full(HAND_PRED.shape, np.nan)])
    with pytest.raises(SegcheckError, match="NaN"):
        m.update(scores, np.stack([HAND_GT, HAND_GT]))
    assert m.images == 0 and m.compute().gt_components == 0


# (7) Pixel thresholds of the pooled OOD accumulator against scikit-learn / numpy.
def pixel_scores(seed: int, n: int = 4000):
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.15
    return (rng.standard_normal(n) + 1.5 * y).astype(np.float32), y


def counts_at(x, y, t):
    """(TP, FP, FN) with predicted positive = x >= t, in float64 (exact for float32 scores)."""
    hit = np.asarray(x, np.float64) >= t
    return int((hit & y).sum()), int((hit & ~y).sum()), int((~hit & y).sum())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_best_f1_exact_equals_sklearn(seed):
    from sklearn.metrics import precision_recall_curve

    x, y = pixel_scores(seed)
    x[:40] = np.round(x[:40], 1)  # some ties
    precision, recall, thresholds = precision_recall_curve(y, x)
    with np.errstate(invalid="ignore"):
        f1 = (2 * precision * recall / (precision + recall))[:-1]  # the last point has no threshold
    best = OODMetrics(exact=True).update(x, y).best_f1()
    assert best.f1 == pytest.approx(np.nanmax(f1), rel=1e-12) and best.exact and best.f1_error == 0.0
    i = int(np.flatnonzero(thresholds == best.threshold)[0])
    assert (best.precision, best.recall) == (precision[i], recall[i])
    assert f1[i] == pytest.approx(np.nanmax(f1), rel=1e-12)
    assert (best.tp, best.fp, best.fn) == counts_at(x, y, best.threshold)


@pytest.mark.parametrize("bins", [16, 256, 1 << 16])
def test_best_f1_histogram_is_exact_at_its_edge_and_within_its_bound(bins):
    x, y = pixel_scores(3, 20000)
    exact = OODMetrics(exact=True).update(x, y).best_f1()
    best = OODMetrics(exact=False, bins=bins).update(x, y).best_f1()
    assert not best.exact
    assert (best.tp, best.fp, best.fn) == counts_at(x, y, best.threshold)  # exact counts at a bin edge
    assert best.f1 <= exact.f1 <= best.f1 + best.f1_error + 1e-15
    if bins == 1 << 16:
        assert best.f1_error < 1e-2


@pytest.mark.parametrize("exact", [True, False])
def test_operating_points_at_thresholds(exact):
    x, y = pixel_scores(4)
    m = OODMetrics(exact=exact, bins=64).update(x, y)
    asked = [-np.inf, -1.0, 0.0, 0.3, float(x[7]), 1.25, 100.0, np.inf]
    points = m.operating_points(asked)
    for t, p in zip(asked, points):
        assert p.threshold == t if exact else p.threshold <= t
        tp, fp, fn = counts_at(x, y, p.threshold)
        assert (p.tp, p.fp, p.fn) == (tp, fp, fn)
        assert p.recall == tp / (tp + fn) and p.f1 == 2 * tp / (2 * tp + fp + fn)
        assert p.precision == tp / (tp + fp) if tp + fp else math.isnan(p.precision)
    assert points[0].recall == 1.0 and points[-1].tp == 0 and points[-1].f1 == 0.0
    assert points[2].selected_by == "threshold 0"


def test_operating_points_in_exact_mode_equal_sklearn_precision_and_recall():
    from sklearn.metrics import precision_score, recall_score

    x, y = pixel_scores(5)
    for p in OODMetrics(exact=True).update(x, y).operating_points([-0.5, 0.5, 1.5]):
        assert p.precision == pytest.approx(precision_score(y, x >= p.threshold), abs=1e-15)
        assert p.recall == pytest.approx(recall_score(y, x >= p.threshold), abs=1e-15)


@pytest.mark.parametrize("exact", [True, False])
def test_recall_points_and_sensitivity_table(exact):
    x, y = pixel_scores(6)
    m = OODMetrics(exact=exact, bins=128).update(x, y)
    for r, p in zip([0.1, 0.5, 0.95, 1.0], m.recall_points([0.1, 0.5, 0.95, 1.0])):
        assert p.recall >= r and (p.tp, p.fp, p.fn) == counts_at(x, y, p.threshold)
        if exact:  # the highest such threshold: the next distinct score above falls short
            above = np.unique(x[x > p.threshold])
            assert not above.size or counts_at(x, y, above[0])[0] / y.sum() < r
    table = m.threshold_sensitivity((-0.2, -0.1, 0.1, 0.2))
    best = m.best_f1()
    assert best in table and len(table) == 5
    assert [p.threshold for p in table] == sorted((p.threshold for p in table), reverse=True)
    recalls = [p.recall for p in table]
    assert recalls == sorted(recalls)
    for p, d in zip(table, (-0.2, -0.1, 0.0, 0.1, 0.2)):
        assert p.recall >= best.recall + d - 1e-12
    assert table[0].selected_by.endswith("(best - 20 pp)")


def test_threshold_helper_errors_and_degenerate_inputs():
    with pytest.raises(SegcheckError, match="average='pooled'"):
        OODMetrics(average="per_image").best_f1()
    m = OODMetrics().update(*pixel_scores(7))
    with pytest.raises(SegcheckError, match=r"recall targets must be in \(0, 1\]"):
        m.recall_points([0.0])
    with pytest.raises(SegcheckError, match="must not be NaN"):
        m.operating_points([np.nan])
    with pytest.raises(SegcheckError, match="recall offsets"):
        m.threshold_sensitivity([2.0])
    empty = OODMetrics().update(np.array([0.1, 0.2]), np.array([False, False]))
    assert math.isnan(empty.best_f1().threshold) and len(empty.threshold_sensitivity()) == 1
    assert math.isnan(empty.recall_points([0.5])[0].recall)
    assert empty.operating_points([0.15])[0].fp == 1
