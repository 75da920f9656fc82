"""The per-pixel training loss the audits and gradient checks use (CE, or BCE for binary models)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from segcheck.data import DatasetSpec


def pixel_loss(logits: torch.Tensor, masks: torch.Tensor, spec: DatasetSpec, binary: bool = False) -> torch.Tensor:
    """Mean loss over the counted pixels of ``masks`` (B, H, W) for ``logits`` (B, C, H, W).

    Multi-class: cross-entropy over ``spec.num_classes`` channels. Binary (one sigmoid
    channel): binary cross-entropy against mask values 0/1. Pixels labelled
    ``spec.ignore_index`` or ``spec.anomaly_index`` are not counted; with none counted the
    loss is 0 (still attached to the graph).
    """
    masks = masks.to(logits.device).long()
    counted = (masks >= 0) & (masks < spec.num_classes)
    if binary:
        target = masks.clamp(0, 1).to(logits.dtype)
        per_pixel = F.binary_cross_entropy_with_logits(logits[:, 0], target, reduction="none")
    else:
        per_pixel = F.cross_entropy(logits, torch.where(counted, masks, 0), reduction="none")
    return (per_pixel * counted).sum() / counted.sum().clamp(min=1)
