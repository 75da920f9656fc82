"""positional_prior: the model must beat predicting the usual class at each pixel position."""

from __future__ import annotations

import numpy as np

from segcheck import data as segdata
from segcheck import gate_figures
from segcheck.data import DatasetSpec
from segcheck.gates.result import GateResult
from segcheck.hookspecs import hookimpl
from segcheck.target import Target


def majority_map(masks: np.ndarray, spec: DatasetSpec) -> np.ndarray:
    """The most frequent class (H, W) at each position of ``masks`` (N, H, W).

    Ignore and anomaly pixels are not counted; a position with no counted pixel gets the
    most frequent class overall. Ties go to the lower class id.
    """
    counted = spec.counted(masks)
    counts = np.stack([((masks == c) & counted).sum(0) for c in range(spec.num_classes)])
    prior = counts.argmax(0)
    empty = counts.sum(0) == 0
    if empty.any():
        prior[empty] = int(counts.sum((1, 2)).argmax())
    return prior


def resize_nearest(label_map: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``label_map`` (h, w) resampled to ``size`` (H, W) by nearest neighbour on relative position."""
    h, w = label_map.shape
    rows = np.minimum(((np.arange(size[0]) + 0.5) * h / size[0]).astype(np.int64), h - 1)
    cols = np.minimum(((np.arange(size[1]) + 0.5) * w / size[1]).astype(np.int64), w - 1)
    return label_map[rows][:, cols]


def training_prior(target: Target, samples: int, seed: int) -> tuple[np.ndarray, int]:
    """The majority map of a fixed, seeded sample of ``samples`` training masks, and the count used."""
    train = target.data.dataset("train")
    indices = segdata.eval_indices(len(train), samples, seed)
    masks = np.stack([np.asarray(train[i][1]) for i in indices])
    return majority_map(masks, target.data.spec), len(indices)


def prior_map(target: Target, cfg: dict) -> tuple[np.ndarray, int]:
    """:func:`training_prior` of ``cfg``'s sample at the eval masks' size, computed once per
    target (the report's figure of the map reuses it), and the count of masks used."""

    def compute():
        prior, used = training_prior(target, cfg["train_samples"], cfg["seed"])
        size = target.data.images.shape[1:3]
        return (resize_nearest(prior, size) if prior.shape != size else prior), used

    return target.model.memo(f"positional_prior:{cfg['train_samples']}:{cfg['seed']}", target.data, compute)


def positional_prior(target: Target, cfg: dict) -> GateResult:
    """Real mIoU vs the mIoU of the training data's per-position majority class.

    The prior map comes from ``cfg["train_samples"]`` training masks (seeded by
    ``cfg["seed"]``), resized to the eval size if the sizes differ, and is scored on the
    eval masks. Passes when real mIoU >= prior mIoU + ``cfg["margin"]``.
    """
    masks = target.data.masks
    prior, used = prior_map(target, cfg)
    prior_miou = target.data.score(np.broadcast_to(prior, masks.shape))
    real = target.predictions.miou
    threshold = prior_miou + cfg["margin"]
    passed = bool(real >= threshold)
    measured = (
        f"real mIoU {real:.3f} vs positional prior {prior_miou:.3f} "
        f"(majority training class per pixel, {used} train masks)"
    )
    if passed:
        message = f"{measured}: {real - prior_miou:+.3f} >= margin {cfg['margin']:.2f}"
    else:
        message = (
            f"{measured}: {real:.3f} < {threshold:.3f} (prior + margin {cfg['margin']:.2f}): the model does not "
            "clearly beat knowing where classes usually are; it has learnt the layout, not the appearance "
            "(train with flips/rolls/crops, check that inputs reach the model)"
        )
    details = {"real_miou": real, "prior_miou": prior_miou, "margin": cfg["margin"], "train_samples": used}
    return GateResult("positional_prior", real, threshold, passed, message, rule="value >= threshold", details=details)


@hookimpl
def segcheck_register_gates(registry):
    registry.add(
        "positional_prior",
        positional_prior,
        section="positional_prior",
        needs=("labels", "train_split", "finite_logits"),
        figures=gate_figures.positional_prior,
    )
