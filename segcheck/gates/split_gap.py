"""generalization: the eval split's mIoU must hold up on another split (val vs test)."""

from __future__ import annotations

import numpy as np

from segcheck import SegcheckError
from segcheck.config import DEFAULTS
from segcheck.data import eval_indices, stack
from segcheck.gates.registered import NotApplicable
from segcheck.gates.result import GateResult
from segcheck.hookspecs import hookimpl
from segcheck.metrics import ConfusionMatrix, miou
from segcheck.target import Target


class NoHeldOutSplit(NotApplicable):
    """The other split holds the eval images themselves (e.g. a folder dataset without split
    folders serves one image set as every split): there is nothing to compare."""


def generalization(target: Target, cfg: dict) -> GateResult:
    """|mIoU on the eval split - mIoU on split ``cfg["split"]``| <= ``cfg["max_gap"]``.

    The other split is sampled like the eval set (its size and seed). Raises
    ``SegcheckError`` when the data has no such split, it is unlabelled or it is the eval split itself, and
    :class:`NoHeldOutSplit` (a SKIP) when the default split holds the eval images
    themselves; a split configured explicitly is then an error.
    """
    data = target.data
    eval_split, other = data.split, cfg["split"]
    if not data.has_split(other):
        raise SegcheckError(
            f"the data has no {other!r} split (splits: {', '.join(data.spec.splits)}); set generalization.split"
        )
    if other == eval_split:
        raise SegcheckError(f"generalization.split {other!r} is the eval split itself; choose another split")
    if not data.spec.labelled(other):
        raise SegcheckError(
            f"generalization.split {other!r} is unlabelled (no masks to score); choose a labelled split"
        )
    second, count, same = _held_out_miou(target, other)
    if same:
        error = NoHeldOutSplit if other == DEFAULTS["generalization"]["split"] else SegcheckError
        raise error(
            f"split {other!r} holds the same images as the eval split {eval_split!r} (a folder "
            f"dataset without split folders serves one image set as every split); put held-out "
            f"images in DIR/{other}/images and DIR/{other}/masks to measure generalization"
        )
    first = target.predictions.miou
    gap = abs(first - second)
    passed = bool(gap <= cfg["max_gap"])
    measured = f"mIoU {eval_split} {first:.3f} vs {other} {second:.3f} ({count} images): gap {gap:.3f}"
    if passed:
        message = f"{measured} <= {cfg['max_gap']:.2f}"
    else:
        better = eval_split if first > second else other
        message = (
            f"{measured} > {cfg['max_gap']:.2f}: the model is much better on {better}; it was tuned or trained "
            f"on that split (leakage, checkpoint selection on it), or the splits differ in distribution"
        )
    details = {
        "eval_split": eval_split,
        "other_split": other,
        "eval_miou": first,
        "other_miou": second,
        "images": count,
    }
    return GateResult(
        "generalization", gap, cfg["max_gap"], passed, message, rule="value <= threshold", details=details
    )


def _held_out_miou(target: Target, split: str) -> tuple[float, int, bool]:
    """mIoU on ``split``'s sample (drawn like the eval sample), read and predicted a batch at a
    time; its image count; and whether it holds the eval images and masks themselves (then
    nothing is predicted: the batches equal to the eval sample's are scored only once one differs)."""
    data = target.data
    dataset = data.dataset(split)
    indices = eval_indices(len(dataset), data.size, data.seed)
    matrix = ConfusionMatrix(data.spec.num_classes, data.spec.ignore_index)
    starts = range(0, len(indices), data.batch_size)

    def read(start: int):
        return stack(dataset, indices[start : start + data.batch_size])

    def score(images, masks) -> None:
        data.confusion(target.model.predict_pixels(images, data.batch_size)[0], masks, matrix)

    equal = len(indices) == len(data.images)
    for k, start in enumerate(starts):
        images, masks = read(start)
        part = slice(start, start + len(images))
        if equal and images.shape == data.images[part].shape and np.array_equal(images, data.images[part]):
            if np.array_equal(masks, data.masks[part]):
                continue
        if equal:  # the batches before were the eval sample's own: score them now
            for earlier in starts[:k]:
                score(*read(earlier))
        equal = False
        score(images, masks)
    if equal:
        return float("nan"), len(indices), True
    return miou(matrix.matrix), len(indices), False


@hookimpl
def segcheck_register_gates(registry):
    # one image per split says nothing about either split
    needs = ("labels", "held_out_split", "finite_logits")
    registry.add("generalization", generalization, section="generalization", needs=needs, min_images=2)
