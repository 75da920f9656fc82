"""The per-pixel loss every training and gradient check uses (CE, or BCE for binary models)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from segcheck import SegcheckError
from segcheck.data import DatasetSpec

NOT_COUNTED = -100  # cross-entropy's default ignore_index; anomaly and ignore pixels are mapped to it


def pixel_loss(
    logits: torch.Tensor,
    masks: torch.Tensor,
    spec: DatasetSpec,
    binary: bool = False,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean loss over the counted pixels of ``masks`` (B, H, W) for ``logits`` (B, C, H, W).

    Multi-class: cross-entropy over ``spec.num_classes`` channels. Binary (one sigmoid
    channel): binary cross-entropy against mask values 0/1. Pixels labelled
    ``spec.ignore_index`` or ``spec.anomaly_index`` are not counted (``spec.counted``; any other
    value outside the classes is an error of the loss, not dropped); with none counted the
    loss is 0 (still attached to the graph). ``weight`` (one per class) makes it the
    weighted mean, as ``F.cross_entropy(weight=...)`` defines it.
    """
    masks = masks.to(logits.device).long()
    counted = spec.counted(masks)
    wrong = counted & ((masks < 0) | (masks >= spec.num_classes))
    if bool(wrong.any()):  # checked here: CE on CUDA would be a device-side assert, BCE would clamp it
        values = sorted(set(masks[wrong].unique().tolist()))[:10]
        raise SegcheckError(
            f"masks hold labels {values} outside 0..{spec.num_classes - 1}, ignore_index "
            f"{spec.ignore_index} and anomaly_index {spec.anomaly_index}; fix the labels or the classes"
        )
    pixel_weight = counted.to(logits.dtype)
    if weight is not None:
        pixel_weight = pixel_weight * weight.to(logits.device)[masks.clamp(0, spec.num_classes - 1)]
    if binary:
        target = masks.clamp(0, 1).to(logits.dtype)
        total = (F.binary_cross_entropy_with_logits(logits[:, 0], target, reduction="none") * pixel_weight).sum()
    else:
        total = F.cross_entropy(
            logits, torch.where(counted, masks, NOT_COUNTED), weight=weight, ignore_index=NOT_COUNTED, reduction="sum"
        )
    return total / pixel_weight.sum().clamp(min=torch.finfo(logits.dtype).tiny)
