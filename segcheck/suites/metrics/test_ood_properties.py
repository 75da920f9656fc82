"""segcheck's OOD metrics against scikit-learn, and the streaming histogram's stated error bound.

The histogram tests draw tiny bin counts (2..64) so that scores share bins often and the
error bounds are exercised, not trivially zero.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
from hypothesis import event, given, note, target
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from segcheck.metrics import OODMetrics, _histogram, ood_metrics, reference
from segcheck.metrics._histogram import ScoreHistogram
from segcheck.metrics._ranking import ranking_metrics
from segcheck.metrics.testing import assert_close, label_scores, overridden, score_cases, score_values

METRICS = ("auroc", "aupr", "fpr")
levels = st.sampled_from([0.95, 0.5, 0.8, 1.0, 0.01])
small_bins = st.integers(2, 64)
ROUNDING = 1e-9  # float64 summation slack on top of the stated bounds


def flat(case):
    return case.scores.reshape(-1), case.is_ood.reshape(-1)


def assert_same_result(got, want):
    __tracebackhide__ = True
    a, b = got.as_dict(), want.as_dict()
    differ = {k: (a[k], b[k]) for k in a if not (a[k] == b[k] or (a[k] != a[k] and b[k] != b[k]))}
    assert not differ, f"results differ (observed, expected): {differ}"


def binned(x: np.ndarray, h: ScoreHistogram) -> np.ndarray:
    """Each score replaced by its bin number floor(x / 2**k), in exact rational arithmetic
    (infinities kept): what the histogram ranks."""
    q = x.copy()
    for i in np.flatnonzero(np.isfinite(x)):
        q[i] = math.floor(Fraction(float(x[i])) / Fraction(2) ** h.k)
    return q


@given(case=score_cases(infinite=True), level=levels)
def test_exact_mode_equals_sklearn(case, level):
    label_scores(case)
    result = ood_metrics(case.scores, case.is_ood, exact=True, tpr_level=level)
    want = reference.ranking(case.scores, case.is_ood, level)
    for name in METRICS:
        assert_close(getattr(result, name), want[name], 1e-12, f"exact {name} vs scikit-learn")
    assert result.exact and result.auroc_error == result.aupr_error == result.fpr_error == 0.0


@given(case=score_cases(infinite=True))
def test_auroc_counts_ties_as_half(case):
    """AUROC = P(s+ > s-) + 0.5 P(s+ = s-); flipping the scores gives 1 - AUROC."""
    label_scores(case)
    x, y = flat(case)
    want = reference.pairwise_auroc(x, y)
    assert_close(ood_metrics(x, y, exact=True).auroc, want, 1e-12, "AUROC vs pairwise count")
    assert_close(ood_metrics(-x, y, exact=True).auroc, 1 - want, 1e-12, "AUROC of negated scores")


@given(value=score_values(infinite=True), case=score_cases(), bins=small_bins, exact=st.booleans())
def test_constant_score_gives_prevalence(value, case, bins, exact):
    """One score for every pixel: AP = fraction of OOD pixels, AUROC = 0.5, FPR = 1."""
    x = np.full(case.scores.shape, value)
    y = case.is_ood
    note(f"constant score {value!r}, is_ood={y.astype(int).tolist()}")
    event("one class only" if y.all() or not y.any() else "both classes")
    result = ood_metrics(x, y, exact=exact, bins=bins)
    prevalence = float(y.mean()) if y.any() else float("nan")
    assert_close(result.aupr, prevalence, 1e-12, "AP of a constant score")
    both = y.any() and not y.all()
    assert_close(result.auroc, 0.5 if both else float("nan"), 1e-12, "AUROC of a constant score")
    assert_close(result.fpr, 1.0 if both else float("nan"), 0.0, "FPR95 of a constant score")


@given(case=score_cases(infinite=True), bins=small_bins, level=levels)
def test_histogram_within_stated_error_bound(case, bins, level):
    label_scores(case)
    result = ood_metrics(case.scores, case.is_ood, exact=False, bins=bins, tpr_level=level)
    want = reference.ranking(case.scores, case.is_ood, level)
    for name in METRICS:
        bound = getattr(result, f"{name}_error")
        got = getattr(result, name)
        if not math.isnan(want[name]):
            target(abs(got - want[name]) - bound, label=f"{name} error beyond bound")
        assert_close(got, want[name], bound + ROUNDING, f"histogram {name} (stated error bound {bound:.3g})")


@given(case=score_cases(infinite=True), bins=small_bins, level=levels)
def test_histogram_is_exact_on_binned_scores(case, bins, level):
    """The histogram's metrics are exactly scikit-learn's on the scores rounded down to bins."""
    label_scores(case)
    x, y = flat(case)
    h = ScoreHistogram(bins).update(x, y)
    note(f"bin width 2**{h.k}, origin {h.origin}")
    got = ranking_metrics(*h.levels(), level)
    want = reference.ranking(binned(x, h), y, level)
    for name in METRICS:
        assert_close(got[name], want[name], 1e-12, f"histogram {name} vs scikit-learn on binned scores")


@given(
    case=score_cases(infinite=True), bins=small_bins, chunk=st.integers(1, 9), blocks=st.integers(1, 3), data=st.data()
)
def test_histogram_does_not_depend_on_batching(case, bins, chunk, blocks, data):
    """Any split, in any order, or two halves merged, binned in any chunk size and counted
    in any block size (the bins may grow in the middle of a block): the same bins, counts
    and results."""
    label_scores(case)
    x, y = flat(case)
    whole = ScoreHistogram(bins).update(x, y)
    cuts = sorted(data.draw(st.lists(st.integers(0, x.size), max_size=4), label="batch boundaries"))
    pieces = list(zip(np.split(x, cuts), np.split(y, cuts)))
    order = data.draw(st.permutations(range(len(pieces))), label="batch order")
    event(f"batches: {len(pieces)}")
    half = len(order) // 2
    with overridden(_histogram, CHUNK=chunk, BLOCK=chunk * blocks):
        stream = ScoreHistogram(bins)
        for i in order:
            stream.update(*pieces[i])
        left, right = ScoreHistogram(bins), ScoreHistogram(bins)
        for i in order[:half]:
            left.update(*pieces[i])
        for i in order[half:]:
            right.update(*pieces[i])
    merged = left.merge(right)
    for other, how in ((stream, "streamed"), (merged, "merged")):
        assert (other.k, other.origin) == (whole.k, whole.origin), f"{how}: bins differ"
        assert (other.counts == whole.counts).all(), f"{how}: counts differ"
        assert (other.infinite == whole.infinite).all(), f"{how}: infinite counts differ"


@given(case=score_cases(), level=levels)
def test_per_image_average_is_mean_over_images_with_both_classes(case, level):
    label_scores(case)
    result = ood_metrics(case.scores, case.is_ood, average="per_image", exact=True, tpr_level=level)
    per_image = [reference.ranking(s, y, level) for s, y in zip(case.scores, case.is_ood) if y.any() and not y.all()]
    event(f"images with both classes: {len(per_image)} of {len(case.scores)}")
    assert result.images == len(per_image) and result.skipped_images == len(case.scores) - len(per_image)
    for name in METRICS:
        want = float(np.mean([r[name] for r in per_image])) if per_image else float("nan")
        assert_close(getattr(result, name), want, 1e-12, f"per-image mean {name}")


@given(case=score_cases(), limit=st.integers(0, 60), bins=small_bins)
def test_auto_mode_exact_up_to_limit_then_histogram(case, limit, bins):
    label_scores(case)
    auto = OODMetrics(exact=None, exact_limit=limit, bins=bins)
    for s, y in zip(case.scores, case.is_ood):  # one image per batch
        auto.update(s, y)
    result = auto.compute()
    exact = case.scores.size <= limit
    event("stayed exact" if exact else "switched to histogram")
    want = ood_metrics(case.scores, case.is_ood, exact=exact, bins=bins)
    assert_same_result(result, want)


@given(case=score_cases(), data=st.data())
def test_valid_mask_drops_pixels(case, data):
    """Pixels outside ``valid`` do not count, even when their score is NaN."""
    label_scores(case)
    valid = data.draw(hnp.arrays(np.bool_, case.scores.shape), label="valid")
    scores = np.where(valid, case.scores, np.nan)
    event(f"valid pixels: {'all' if valid.all() else 'none' if not valid.any() else 'some'}")
    got = ood_metrics(scores, case.is_ood, valid, exact=True)
    want = ood_metrics(case.scores[valid], case.is_ood[valid], exact=True)
    assert_same_result(got, want)
