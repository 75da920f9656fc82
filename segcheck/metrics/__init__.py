"""Segmentation metrics: a streaming confusion matrix, the IoU family, and OOD curves.

- :mod:`~segcheck.metrics.confusion`: ``ConfusionMatrix``, ``confusion_matrix``,
  ``confusion_matrices`` (numpy or torch on CPU/CUDA, exact int64, rows = target).
- :mod:`~segcheck.metrics.iou`: ``iou``, ``miou`` (dataset-level nanmean), ``per_image_miou``,
  ``dice``, ``recall``, ``precision``, ``pixel_accuracy``, ``per_class_iou``; ``agreement`` of
  two label maps.
- :mod:`~segcheck.metrics.binary`: ``binary_iou``/``binary_dice`` at a threshold.
- :mod:`~segcheck.metrics.ood`: ``OODMetrics``/``ood_metrics`` (AUROC, AUPR, FPR95), exact
  or streaming histograms with a stated error bound; pixel thresholds (``best_f1``,
  ``operating_points``, ``threshold_sensitivity``) returning ``OperatingPoint``
  (:mod:`~segcheck.metrics.thresholds`).
- :mod:`~segcheck.metrics.components`: ``ComponentMetrics``/``component_metrics``, the
  SegmentMeIfYouCan component metrics (sIoU, PPV, mean F1 over 8-connected components).
- :mod:`~segcheck.metrics.reference`: slow, obviously-correct references for tests.
"""

from segcheck.metrics.binary import binary_confusion, binary_dice, binary_iou
from segcheck.metrics.components import (
    SMIYC_ANOMALY_TRACK,
    SMIYC_OBSTACLE_TRACK,
    SMIYC_TAUS,
    ComponentMetrics,
    ComponentResult,
    component_metrics,
)
from segcheck.metrics.confusion import ConfusionMatrix, confusion_matrices, confusion_matrix
from segcheck.metrics.iou import (
    agreement,
    dice,
    iou,
    miou,
    per_class_iou,
    per_image_miou,
    pixel_accuracy,
    precision,
    recall,
)
from segcheck.metrics.ood import OODMetrics, OODResult, ood_metrics
from segcheck.metrics.thresholds import OperatingPoint

__all__ = [
    "agreement",
    "ConfusionMatrix",
    "confusion_matrix",
    "confusion_matrices",
    "iou",
    "miou",
    "per_image_miou",
    "per_class_iou",
    "dice",
    "recall",
    "precision",
    "pixel_accuracy",
    "binary_confusion",
    "binary_iou",
    "binary_dice",
    "OODMetrics",
    "OODResult",
    "ood_metrics",
    "OperatingPoint",
    "ComponentMetrics",
    "ComponentResult",
    "component_metrics",
    "SMIYC_TAUS",
    "SMIYC_ANOMALY_TRACK",
    "SMIYC_OBSTACLE_TRACK",
]
