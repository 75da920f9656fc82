"""Hypothesis strategies and assertion helpers for property-testing segmentation metrics.

Used by ``suites/metrics``; importable by anyone who wants the same checks in their own
tests. Every drawn case has a compact, readable ``repr`` (it is what hypothesis prints as
the shrunk counterexample), and :func:`label_case` / :func:`label_scores` record what kind
of input was drawn with ``hypothesis.note`` and ``hypothesis.event``.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from hypothesis import event, note
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

LABEL_DTYPES = (np.uint8, np.int16, np.int32, np.int64)


@contextmanager
def overridden(owner, **values):
    """Run with attributes of a kernel module or class replaced, restored after: smaller chunk
    constants (e.g. ``CHUNK=3``) so that tiny drawn inputs cross the chunk boundaries that
    real, large inputs cross, or another kernel (e.g. ``PAIRS=TorchPairs``)."""
    previous = {name: getattr(owner, name) for name in values}
    for name, value in values.items():
        setattr(owner, name, value)
    try:
        yield
    finally:
        for name, value in previous.items():
            setattr(owner, name, value)


def _grid(a: np.ndarray) -> str:
    return np.array2string(np.asarray(a), separator=", ", threshold=400, max_line_width=100)


@dataclass(frozen=True, repr=False)
class SegCase:
    """Class maps ``pred``/``target`` of one shape, with their ``num_classes`` and ``ignore_index``."""

    pred: np.ndarray
    target: np.ndarray
    num_classes: int
    ignore_index: int | None

    def __repr__(self) -> str:
        return (
            f"SegCase(num_classes={self.num_classes}, ignore_index={self.ignore_index}, "
            f"dtype={self.target.dtype}, shape={self.target.shape},\n"
            f"  target=\n{_grid(self.target)},\n  pred=\n{_grid(self.pred)})"
        )

    def _repr_pretty_(self, printer, cycle) -> None:  # hypothesis prints counterexamples with this
        printer.text(repr(self))

    @property
    def counted(self) -> np.ndarray:
        return self.target != self.ignore_index if self.ignore_index is not None else np.ones(self.target.shape, bool)

    def absent_classes(self) -> list[int]:
        """Classes in neither the prediction nor the target (on counted pixels)."""
        seen = set(np.unique(self.target[self.counted]).tolist()) | set(np.unique(self.pred[self.counted]).tolist())
        return [c for c in range(self.num_classes) if c not in seen]


@st.composite
def seg_cases(
    draw,
    max_classes: int = 6,
    max_images: int = 3,
    max_side: int = 6,
    ignore_values: tuple[int | None, ...] = (255, 100, -1, None),
) -> SegCase:
    """Random class maps: some classes absent, some pixels ignored, varied dtypes and shapes.

    ``ignore_index`` is drawn from ``ignore_values`` (each must lie outside 0..max_classes-1).
    """
    num_classes = draw(st.integers(1, max_classes), label="num_classes")
    ignore_index = draw(st.sampled_from(ignore_values), label="ignore_index")
    dtypes = [d for d in LABEL_DTYPES if ignore_index is None or np.iinfo(d).min <= ignore_index <= np.iinfo(d).max]
    dtype = draw(st.sampled_from(dtypes), label="dtype")
    shape = draw(
        st.tuples(st.integers(1, max_images), st.integers(1, max_side), st.integers(1, max_side)), label="shape"
    )  # empty inputs have their own tests
    classes = st.sets(st.integers(0, num_classes - 1), min_size=1)
    in_target = sorted(draw(classes, label="classes in target"))
    in_pred = sorted(draw(classes, label="classes in prediction"))
    target_values = in_target + ([ignore_index] if ignore_index is not None else [])
    target = draw(hnp.arrays(dtype, shape, elements=st.sampled_from(target_values)), label="target")
    pred = draw(hnp.arrays(dtype, shape, elements=st.sampled_from(in_pred)), label="pred")
    return SegCase(pred, target, num_classes, ignore_index)


def label_case(case: SegCase) -> None:
    """Record the drawn case (``note``) and what kind of case it is (``event``)."""
    note(repr(case))
    counted = case.counted
    event(f"num_classes={case.num_classes}")
    event(f"ignore_index={case.ignore_index}")
    event(
        "empty input"
        if case.target.size == 0
        else "all pixels ignored"
        if not counted.any()
        else "some pixels ignored"
        if not counted.all()
        else "no pixel ignored"
    )
    event(f"absent classes: {min(len(case.absent_classes()), 3)}{'+' if len(case.absent_classes()) >= 3 else ''}")
    if counted.any():
        correct = case.pred[counted] == case.target[counted]
        event("all correct" if correct.all() else "fully disjoint" if not correct.any() else "partly correct")


@dataclass(frozen=True, repr=False)
class ScoreCase:
    """Pixel scores (higher = more OOD) and their OOD flags, one image per row."""

    scores: np.ndarray
    is_ood: np.ndarray

    def __repr__(self) -> str:
        return (
            f"ScoreCase(shape={self.scores.shape},\n  scores=\n{_grid(self.scores)},\n"
            f"  is_ood=\n{_grid(self.is_ood.astype(int))})"
        )

    def _repr_pretty_(self, printer, cycle) -> None:
        printer.text(repr(self))


def score_values(infinite: bool = False) -> st.SearchStrategy[float]:
    """Scores that tie often (a few small integers) or spread over every order of magnitude."""
    return st.one_of(
        st.integers(-3, 3).map(float),
        st.floats(-1e6, 1e6, allow_nan=False),
        st.floats(allow_nan=False, allow_infinity=infinite, width=32),
        st.floats(allow_nan=False, allow_infinity=infinite),
    )


@st.composite
def score_cases(draw, max_images: int = 3, max_pixels: int = 40, infinite: bool = False) -> ScoreCase:
    shape = draw(st.tuples(st.integers(1, max_images), st.integers(0, max_pixels)), label="shape")
    scores = draw(hnp.arrays(np.float64, shape, elements=score_values(infinite)), label="scores")
    is_ood = draw(hnp.arrays(np.bool_, shape), label="is_ood")
    return ScoreCase(scores, is_ood)


def label_scores(case: ScoreCase) -> None:
    """Record the drawn scores (``note``) and their kind (``event``)."""
    note(repr(case))
    y = case.is_ood
    event("no pixels" if y.size == 0 else "one class only" if y.all() or not y.any() else "both classes")
    x = case.scores.reshape(-1)
    ties = x.size - np.unique(x).size
    event("tied scores" if ties else "distinct scores")
    if np.isinf(x).any():
        event("infinite scores")


def _hint(observed: np.ndarray, expected: np.ndarray, case: SegCase | None) -> str:
    nan_scored = np.isnan(expected) & np.isfinite(observed)
    if case is not None and not case.counted.all():
        if nan_scored.any():
            return (
                "a class with no counted pixel must be NaN: are predictions on ignored pixels "
                "(target == ignore_index) counted, or are absent classes scored as 0?"
            )
        return "this input has ignored pixels (target == ignore_index): are they counted?"
    if (nan_scored & (observed == 0)).any():
        return "a class absent from both prediction and target must be NaN (left out of mIoU), not 0"
    if nan_scored.any():
        return "a class absent from both prediction and target must be NaN"
    return "per-class IoU differs from TP / (TP + FP + FN)"


def assert_per_class_equal(observed, expected, case: SegCase | None = None, what: str = "per-class IoU") -> None:
    """Equal per class, NaN matching NaN; the message lists each class observed vs expected.

    "Equal" is within rounding of the result's own precision: 4 ulp of a float32 result
    (a metric computed in float32 is not wrong for it; float16 gets no more), 1e-9 otherwise.
    """
    __tracebackhide__ = True
    expected = np.asarray(expected, np.float64)
    try:
        raw = np.asarray(observed)
        eps = float(np.finfo(raw.dtype).eps) if raw.dtype.kind == "f" else 0.0
        rtol = max(1e-9, 4 * min(eps, float(np.finfo(np.float32).eps)))  # never looser than float32's rounding
        observed = np.asarray(observed, np.float64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise AssertionError(f"{what}: result {observed!r} is not a numeric array ({exc})") from None
    if observed.shape != expected.shape:
        raise AssertionError(
            f"{what}: result has shape {observed.shape}, expected {expected.shape} (one value per class)"
        )
    both_nan = np.isnan(observed) & np.isnan(expected)
    close = np.isclose(observed, expected, rtol=rtol, atol=1e-12)
    if (both_nan | close).all():
        return
    lines = [f"{what} differs from the reference ({_hint(observed, expected, case)}):"]
    for c, (o, e) in enumerate(zip(observed, expected)):
        mark = "" if both_nan[c] or close[c] else "   <-- differs"
        lines.append(f"  class {c}: observed {o:.10g}  expected {e:.10g}{mark}")
    raise AssertionError("\n".join(lines))


def assert_close(observed: float, expected: float, tolerance: float, what: str) -> None:
    """|observed - expected| <= tolerance, NaN matching NaN, with both values in the message."""
    __tracebackhide__ = True
    if np.isnan(expected) and np.isnan(observed):
        return
    if not abs(observed - expected) <= tolerance:
        raise AssertionError(
            f"{what}: observed {observed!r}, expected {expected!r} "
            f"(difference {abs(observed - expected):.3g} > allowed {tolerance:.3g})"
        )
