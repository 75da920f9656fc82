"""SegmentMeIfYouCan (SMIYC) component-level metrics: sIoU, PPV and component F1, streamed.

Definitions follow the benchmark's own code (github.com/SegmentMeIfYouCan/road-anomaly-benchmark,
``road_anomaly_benchmark/metrics/instance_segmentation.py``: ``default_instancer``,
``segment_metrics``, ``MetricSegment.aggregate``). Per image, with ``valid`` = not void:

1. Predicted anomaly = ``score > threshold`` (strict, as SMIYC; ``inclusive=True`` gives
   ``score >= threshold``, the convention of :meth:`OODMetrics.best_f1`), on valid pixels only:
   void pixels are removed *before* labelling, so predictions never connect through void.
2. Predicted components = 8-connected components (``scipy.ndimage.label``, 3x3 structure);
   those with fewer than ``min_pred_size`` pixels are removed.
3. Ground-truth components = 8-connected components of ``is_ood & valid``; those with fewer
   than ``min_gt_size`` pixels become void: their pixels leave the region of interest (ROI)
   for every count below. Predicted components are not relabelled, and one lying wholly in
   such a region is not counted at all.
4. In the ROI: for a GT component k, K̂(k) = the union of predicted components meeting k and
   A(k) = the other GT components: ``sIoU(k) = |k ∩ K̂(k)| / |(k ∪ K̂(k)) \\ A(k)|``.
   For a predicted component k̂ (with ROI pixels), K(k̂) = the union of GT components meeting
   it: ``PPV(k̂) = |k̂ ∩ K(k̂)| / |k̂|``, and symmetrically ``sIoU_pred(k̂)``.
5. Over all images (components pooled, not averaged per image), for each tau:
   TP = #GT components with ``sIoU >= tau``, FN = #with ``sIoU < tau``, FP = #predicted
   components with ``PPV < tau``; ``F1(tau) = 2 TP / (2 TP + FN + FP)``; ``f1`` = the mean over
   the taus. ``siou``, ``ppv``, ``siou_pred`` = means over all components (SMIYC's
   ``sIoU_gt``, ``prec_pred``, ``sIoU_pred``; ``f1`` is its ``f1_mean``).

Defaults are SMIYC's ``SegEval``/``SegEval-AnomalyTrack`` (``min_gt_size=100``,
``min_pred_size=500``); :data:`SMIYC_OBSTACLE_TRACK` holds the obstacle track's (10, 50). The
taus are ``np.linspace(0.25, 0.75, 11)`` with its exact float values, so comparisons tie as in
SMIYC (an sIoU of exactly 0.6 is below ``taus[7] = 0.6000000000000001``). SMIYC takes the
threshold from its pixel-level best-F1 curve; :meth:`OODMetrics.best_f1` gives one (pass
``inclusive=True`` with it, since that threshold is a score value counted as positive).

Deliberate differences from SMIYC's code: its GT size filter also visits label 0 (all
non-anomaly pixels) and voids it in an image with fewer than ``min_gt_size`` such pixels;
here only anomaly components are filtered. Empty sets give NaN where SMIYC divides by zero.
NaN scores on valid pixels raise (SMIYC counts them as not anomalous). SMIYC stores each
anomaly map as float16 before it is scored (``process_frame`` takes ``anomaly_p: HxW float16``),
so its threshold and comparisons act on scores rounded to 11 significant bits; here the scores
are compared as given (float32, float16 and bfloat16 widened): a pixel within one float16 step
of the threshold can fall on the other side.

Memory: per component, a few integers (image, size, intersection, adjusted union); never maps.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import asdict, dataclass
from types import MappingProxyType

import numpy as np

from segcheck import SegcheckError
from segcheck.metrics import _arrays

SMIYC_TAUS = tuple(float(t) for t in np.linspace(0.25, 0.75, 11, endpoint=True))
SMIYC_ANOMALY_TRACK = MappingProxyType({"min_gt_size": 100, "min_pred_size": 500})
SMIYC_OBSTACLE_TRACK = MappingProxyType({"min_gt_size": 10, "min_pred_size": 50})
STRUCTURE = np.ones((3, 3), dtype=bool)  # 8-connectivity


@dataclass(frozen=True)
class ComponentResult:
    """Component-level metrics over ``images`` images (see the module docstring).

    ``tp``, ``fn``, ``fp`` and ``f1_per_tau`` are per tau of ``taus``; NaN marks an empty
    mean (no GT component: ``siou``; no predicted one: ``ppv``, ``siou_pred``; neither: F1).
    """

    siou: float
    ppv: float
    f1: float
    siou_pred: float
    f1_per_tau: tuple[float, ...]
    tp: tuple[int, ...]
    fn: tuple[int, ...]
    fp: tuple[int, ...]
    taus: tuple[float, ...]
    gt_components: int
    pred_components: int
    images: int
    threshold: float
    inclusive: bool
    min_gt_size: int
    min_pred_size: int

    def as_dict(self) -> dict:
        return asdict(self)


def _check_threshold(threshold) -> float:
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.integer, np.floating)):
        raise SegcheckError(f"threshold must be a real number, got {threshold!r}")
    if math.isnan(threshold):
        raise SegcheckError("threshold must not be NaN; pass the score above which a pixel is anomalous")
    return float(threshold)


def _check_taus(taus) -> tuple[float, ...]:
    try:
        values = tuple(np.asarray(taus, dtype=np.float64).reshape(-1).tolist())
    except (TypeError, ValueError):
        values = ()
    if not values or any(not 0.0 <= t <= 1.0 for t in values):
        raise SegcheckError(f"taus must be a non-empty sequence of values in [0, 1], got {taus!r}")
    return values


def _host(x):
    return x.cpu().numpy() if _arrays.is_device_tensor(x) else x


class ComponentMetrics:
    """Streaming SMIYC component metrics: ``update(scores, is_ood, valid=None)``, then ``compute()``.

    :param threshold: pixels with ``score > threshold`` (``>=`` with ``inclusive``) are predicted
        anomalous; higher score = more anomalous.
    :param min_gt_size: GT components with fewer pixels become void (SMIYC ``thresh_instsize``).
    :param min_pred_size: predicted components with fewer pixels are removed (``thresh_segsize``).
    :param taus: the sIoU/PPV thresholds that F1 is averaged over.
    """

    def __init__(
        self,
        threshold: float,
        *,
        min_gt_size: int = SMIYC_ANOMALY_TRACK["min_gt_size"],
        min_pred_size: int = SMIYC_ANOMALY_TRACK["min_pred_size"],
        taus=SMIYC_TAUS,
        inclusive: bool = False,
    ):
        self.threshold = _check_threshold(threshold)
        _arrays.check_whole(min_gt_size, "min_gt_size", 0)
        _arrays.check_whole(min_pred_size, "min_pred_size", 0)
        self.min_gt_size, self.min_pred_size = int(min_gt_size), int(min_pred_size)
        self.taus = _check_taus(taus)
        self.inclusive = bool(inclusive)
        self.images = 0
        # per component: (image, size, intersection, adjusted union), one int64 array per image
        self._gt: list[np.ndarray] = []
        self._pred: list[np.ndarray] = []

    def update(self, scores, is_ood, valid=None) -> ComponentMetrics:
        """Add one image (H, W) or a batch (N, H, W): float ``scores``, boolean (or 0/1)
        ``is_ood`` and an optional ``valid`` mask (False = void, e.g. ``label == 255``).
        numpy or torch; a tensor on an accelerator is copied to the host (labelling runs there)."""
        x, y, keep = _arrays.ood_inputs(scores, is_ood, valid)
        x, y = _host(x), _host(y)
        keep = np.ones(x.shape, bool) if keep is None else _host(keep)
        if x.ndim not in (2, 3):
            raise SegcheckError(
                f"scores must be one image (H, W) or a batch (N, H, W), got shape {tuple(x.shape)}; "
                "drop channel axes first"
            )
        if x.ndim == 2:
            x, y, keep = x[None], y[None], keep[None]
        nan = np.isnan(x) & keep
        if nan.any():
            raise SegcheckError(
                f"scores contain {int(nan.sum())} NaN values on valid pixels; fix the model output or mark them void"
            )
        gts = ground_truth(y, keep, self.min_gt_size)
        records = [self._image(x[i], gts[i], keep[i], self.images + i) for i in range(x.shape[0])]
        for gt, pred in records:  # only after every image passed: a failing batch adds nothing
            self._gt.append(gt)
            self._pred.append(pred)
        self.images += x.shape[0]
        return self

    def _image(self, score, gt: GroundTruth, valid, image: int) -> tuple[np.ndarray, np.ndarray]:
        from scipy import ndimage

        t = np.float64(self.threshold)  # a strong float64: compared exactly, not rounded to the score dtype
        predicted = (score >= t if self.inclusive else score > t) & valid
        pred, n_pred = ndimage.label(predicted, STRUCTURE)
        pred_size = np.bincount(pred.reshape(-1), minlength=n_pred + 1)
        g, n_gt = gt.labels, gt.count
        p = pred[gt.roi].astype(np.int64)
        small_pred = pred_size < self.min_pred_size  # sizes before the small GT components left the ROI
        small_pred[0] = True
        p[small_pred[p]] = 0
        size_g = np.bincount(g, minlength=n_gt + 1)[1:]
        size_p = np.bincount(p, minlength=n_pred + 1)[1:]
        both = (g > 0) & (p > 0)
        pairs, overlap = np.unique(g[both] * (n_pred + 1) + p[both], return_counts=True)
        gi, pi = pairs // (n_pred + 1) - 1, pairs % (n_pred + 1) - 1  # 0-based component ids
        # float64 bincount sums of integers stay exact below 2**53
        cover_g = np.bincount(gi, overlap, minlength=n_gt).astype(np.int64)  # |k ∩ K̂(k)|
        cover_p = np.bincount(pi, overlap, minlength=n_pred).astype(np.int64)  # |k̂ ∩ K(k̂)|
        # |(k ∪ K̂(k)) \ A(k)| = |k| + the pixels of K̂(k) outside every GT component
        union_g = size_g + np.bincount(gi, (size_p - cover_p)[pi], minlength=n_gt).astype(np.int64)
        union_p = size_p + np.bincount(pi, (size_g - cover_g)[gi], minlength=n_pred).astype(np.int64)
        at_g, at_p = size_g > 0, size_p > 0  # components with ROI pixels (not filtered)
        gt_rows = np.stack([np.full(at_g.sum(), image), size_g[at_g], cover_g[at_g], union_g[at_g]], 1)
        pred_rows = np.stack([np.full(at_p.sum(), image), size_p[at_p], cover_p[at_p], union_p[at_p]], 1)
        return gt_rows.astype(np.int64), pred_rows.astype(np.int64)

    def gt_components(self) -> dict[str, np.ndarray]:
        """Per GT component: ``image``, ``size``, ``intersection`` |k ∩ K̂(k)|, ``union``
        |(k ∪ K̂(k)) \\ A(k)| (ints, ROI pixels) and ``siou`` = intersection / union."""
        rows = np.concatenate(self._gt) if self._gt else np.zeros((0, 4), np.int64)
        out = dict(zip(("image", "size", "intersection", "union"), rows.T))
        return {**out, "siou": out["intersection"] / out["union"]}

    def pred_components(self) -> dict[str, np.ndarray]:
        """Per predicted component: ``image``, ``size`` |k̂| (ROI pixels), ``intersection``
        |k̂ ∩ K(k̂)|, ``union`` |(k̂ ∪ K(k̂)) \\ Â(k̂)|, ``ppv`` = intersection / size and
        ``siou`` = intersection / union."""
        rows = np.concatenate(self._pred) if self._pred else np.zeros((0, 4), np.int64)
        out = dict(zip(("image", "size", "intersection", "union"), rows.T))
        return {**out, "ppv": out["intersection"] / out["size"], "siou": out["intersection"] / out["union"]}

    def compute(self) -> ComponentResult:
        gt, pred = self.gt_components(), self.pred_components()
        siou, ppv = gt["siou"], pred["ppv"]
        tp = tuple(int(np.count_nonzero(siou >= t)) for t in self.taus)
        fn = tuple(int(np.count_nonzero(siou < t)) for t in self.taus)
        fp = tuple(int(np.count_nonzero(ppv < t)) for t in self.taus)
        f1 = tuple(2 * a / (2 * a + b + c) if 2 * a + b + c else math.nan for a, b, c in zip(tp, fn, fp))
        return ComponentResult(
            _mean(siou, gt["image"]),
            _mean(ppv, pred["image"]),
            sum(f1) / len(f1),
            _mean(pred["siou"], pred["image"]),
            f1,
            tp,
            fn,
            fp,
            self.taus,
            int(siou.size),
            int(ppv.size),
            self.images,
            self.threshold,
            self.inclusive,
            self.min_gt_size,
            self.min_pred_size,
        )


@dataclass(frozen=True)
class GroundTruth:
    """One image's GT components as every threshold and scorer sees them: ``roi`` (valid pixels
    outside the GT components too small to count, which become void), the component id of each
    ROI pixel (``labels``, 0 outside every component) and how many components were labelled."""

    roi: np.ndarray
    labels: np.ndarray
    count: int


_LAST_GT: list = []  # [(weak references to the batch's is_ood and valid, min_gt_size, [GroundTruth])]


def ground_truth(anomaly: np.ndarray, valid: np.ndarray, min_gt_size: int) -> list[GroundTruth]:
    """:class:`GroundTruth` of each image of a batch (N, H, W), labelled once per batch and
    shared by the metrics of every scorer that is given the same arrays."""
    if _LAST_GT:
        a, v, size, found = _LAST_GT[0]
        if a() is anomaly and v() is valid and size == min_gt_size:
            return found
    from scipy import ndimage

    found = []
    for y, keep in zip(anomaly, valid):
        gt, n_gt = ndimage.label(y & keep, STRUCTURE)
        small_gt = np.bincount(gt.reshape(-1), minlength=n_gt + 1) < min_gt_size
        small_gt[0] = False
        roi = keep & ~small_gt[gt]
        found.append(GroundTruth(roi, gt[roi].astype(np.int64), n_gt))
    try:
        _LAST_GT[:] = [(weakref.ref(anomaly), weakref.ref(valid), min_gt_size, found)]
    except TypeError:  # an array that takes no weak reference: nothing shared
        _LAST_GT.clear()
    return found


def _mean(values: np.ndarray, image: np.ndarray) -> float:
    """The mean summed as SMIYC's aggregate does (per image, then over images): equal bits."""
    if not values.size:
        return math.nan
    per_image = np.split(values, np.flatnonzero(image[1:] != image[:-1]) + 1)
    return float(sum(np.sum(v) for v in per_image) / values.size)


def component_metrics(
    scores,
    is_ood,
    valid=None,
    *,
    threshold: float,
    min_gt_size: int = SMIYC_ANOMALY_TRACK["min_gt_size"],
    min_pred_size: int = SMIYC_ANOMALY_TRACK["min_pred_size"],
    taus=SMIYC_TAUS,
    inclusive: bool = False,
) -> ComponentResult:
    """One-shot :class:`ComponentMetrics` over one image (H, W) or a batch (N, H, W)."""
    metrics = ComponentMetrics(
        threshold, min_gt_size=min_gt_size, min_pred_size=min_pred_size, taus=taus, inclusive=inclusive
    )
    return metrics.update(scores, is_ood, valid).compute()
