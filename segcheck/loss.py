"""The per-pixel loss every training and gradient check uses (CE, or BCE for binary models), and
the trainer's extra terms on it (Dice, pixel contrast)."""

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


def dice_loss(logits: torch.Tensor, masks: torch.Tensor, spec: DatasetSpec, binary: bool = True) -> torch.Tensor:
    """1 - soft Dice over the counted pixels of the whole batch (smoothed by 1, so a batch
    without foreground gives a finite loss).

    Binary (one sigmoid channel): the foreground's Dice. Multi-class: the mean over the classes
    present in the batch's masks of each class's soft Dice of the softmax (the multi-class
    Dice loss of Milletari et al. 2016 / smp's ``DiceLoss``), which weighs a rare class as much
    as a frequent one, as mIoU does.
    """
    masks = masks.to(logits.device).long()
    counted = spec.counted(masks)
    if binary:
        weight = counted.to(logits.dtype)
        prob = torch.sigmoid(logits[:, 0]) * weight
        target = masks.clamp(0, 1).to(logits.dtype) * weight
        return 1 - (2 * (prob * target).sum() + 1) / (prob.sum() + target.sum() + 1)
    weight = counted.to(logits.dtype).unsqueeze(1)
    prob = logits.softmax(1) * weight
    target = F.one_hot(torch.where(counted, masks, 0), logits.shape[1]).permute(0, 3, 1, 2).to(logits.dtype) * weight
    dims = (0, 2, 3)
    dice = (2 * (prob * target).sum(dims) + 1) / (prob.sum(dims) + target.sum(dims) + 1)
    present = target.sum(dims) > 0
    if not bool(present.any()):
        return logits.sum() * 0.0
    return 1 - dice[present].mean()


def pixel_contrast_loss(
    embed: torch.Tensor, masks: torch.Tensor, spec: DatasetSpec, per_class: int = 64, temperature: float = 0.1
) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al. 2020) over pixels sampled across the batch.

    ``embed`` (B, D, H, W) at the masks' size is L2-normalized per pixel; up to ``per_class``
    counted pixels of each class present are drawn from the whole batch (global RNG), so most
    positive pairs are the same class in another image at another position (cross-image pixel
    contrast, Wang et al. 2021). Each anchor's loss is the mean over its positives of
    ``-log(exp(z_a.z_p / t) / sum_{k != a} exp(z_a.z_k / t))``; anchors without a positive are
    left out; 0 (attached) when none remain.
    """
    masks = masks.to(embed.device).long()
    labels = masks.flatten()
    counted = spec.counted(labels) & (labels >= 0) & (labels < spec.num_classes)
    picks = []
    for c in labels[counted].unique().tolist():
        where = torch.nonzero(counted & (labels == c)).flatten()
        picks.append(where[torch.randperm(len(where), device=where.device)[:per_class]])
    if not picks:
        return embed.sum() * 0.0
    picked = torch.cat(picks)
    z = F.normalize(embed.permute(0, 2, 3, 1).reshape(-1, embed.shape[1])[picked].float(), dim=1)
    cls = labels[picked]
    logits = z @ z.T / temperature
    self_pair = torch.eye(len(z), dtype=torch.bool, device=z.device)
    log_prob = logits - torch.logsumexp(logits.masked_fill(self_pair, float("-inf")), dim=1, keepdim=True)
    positive = (cls[:, None] == cls[None, :]) & ~self_pair
    has = positive.any(1)
    if not bool(has.any()):
        return embed.sum() * 0.0
    per_anchor = (log_prob * positive).sum(1)[has] / positive.sum(1)[has]
    return -per_anchor.mean()
