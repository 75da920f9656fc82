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
    focal: float = 0.0,
) -> torch.Tensor:
    """Mean loss over the counted pixels of ``masks`` (B, H, W) for ``logits`` (B, C, H, W).

    Multi-class: cross-entropy over ``spec.num_classes`` channels. Binary (one sigmoid
    channel): binary cross-entropy against mask values 0/1. Pixels labelled
    ``spec.ignore_index`` or ``spec.anomaly_index`` are not counted (``spec.counted``; any other
    value outside the classes is an error of the loss, not dropped); with none counted the
    loss is 0 (still attached to the graph). ``weight`` (one per class) makes it the
    weighted mean, as ``F.cross_entropy(weight=...)`` defines it. ``focal`` > 0 multiplies
    each pixel's loss by ``(1 - p_true) ** focal`` (focal loss, Lin et al. 2017).
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
        per_pixel = F.binary_cross_entropy_with_logits(logits[:, 0], target, reduction="none")
    else:
        per_pixel = F.cross_entropy(
            logits, torch.where(counted, masks, NOT_COUNTED), ignore_index=NOT_COUNTED, reduction="none"
        )
    if focal:
        per_pixel = per_pixel * (1 - torch.exp(-per_pixel)).pow(focal)  # exp(-loss) is p of the true class
    return (per_pixel * pixel_weight).sum() / pixel_weight.sum().clamp(min=torch.finfo(logits.dtype).tiny)


def dice_loss(logits: torch.Tensor, masks: torch.Tensor, spec: DatasetSpec) -> torch.Tensor:
    """1 - soft Dice of a binary model's foreground (one sigmoid channel) over the counted
    pixels of the whole batch (smoothed by 1, so a batch without foreground gives a finite loss)."""
    masks = masks.to(logits.device).long()
    counted = spec.counted(masks).to(logits.dtype)
    prob = torch.sigmoid(logits[:, 0]) * counted
    target = masks.clamp(0, 1).to(logits.dtype) * counted
    return 1 - (2 * (prob * target).sum() + 1) / (prob.sum() + target.sum() + 1)
