"""generalization: the eval split's mIoU must hold up on another split (val vs test)."""

from __future__ import annotations

import numpy as np

from segcheck import SegcheckError
from segcheck.evaluate import score
from segcheck.gates.result import GateResult
from segcheck.target import Target


class NoHeldOutSplit(SegcheckError):
    """The other split holds the eval images themselves (e.g. a folder dataset without split
    folders serves one image set as every split): there is nothing to compare."""


def generalization(target: Target, cfg: dict) -> GateResult:
    """|mIoU on the eval split - mIoU on split ``cfg["split"]``| <= ``cfg["max_gap"]``.

    The other split is sampled with the eval set's size and seed. Raises ``SegcheckError``
    when the dataset has no such split or it is the eval split itself, and
    :class:`NoHeldOutSplit` when that split holds the eval images themselves.
    """
    eval_split, other = target.config["eval"]["split"], cfg["split"]
    if other not in target.spec.splits:
        raise SegcheckError(f"dataset {target.dataset_name!r} has no {other!r} split (splits: "
                            f"{', '.join(target.spec.splits)}); set generalization.split")
    if other == eval_split:
        raise SegcheckError(f"generalization.split {other!r} is the eval split itself; choose another split")
    ev = target.config["eval"]
    images_other, masks_other = target.sample(other, ev["size"], ev["seed"])
    images_eval, masks_eval = target.eval_set
    if images_other.shape == images_eval.shape and np.array_equal(images_other, images_eval) and np.array_equal(
            masks_other, masks_eval):
        raise NoHeldOutSplit(f"split {other!r} holds the same images as the eval split {eval_split!r} (a folder "
                             f"dataset without split folders serves one image set as every split); put held-out "
                             f"images in DIR/{other}/images and DIR/{other}/masks to measure generalization")
    first = target.clean_miou
    pred_other, _ = target.model.predict_pixels(images_other, ev["batch_size"])
    second = score(pred_other, masks_other, target.spec)
    gap = abs(first - second)
    passed = bool(gap <= cfg["max_gap"])
    measured = f"mIoU {eval_split} {first:.3f} vs {other} {second:.3f} ({len(masks_other)} images): gap {gap:.3f}"
    if passed:
        message = f"{measured} <= {cfg['max_gap']:.2f}"
    else:
        better = eval_split if first > second else other
        message = (f"{measured} > {cfg['max_gap']:.2f}: the model is much better on {better}; it was tuned or trained "
                   f"on that split (leakage, checkpoint selection on it), or the splits differ in distribution")
    details = {"eval_split": eval_split, "other_split": other, "eval_miou": first, "other_miou": second,
               "images": len(masks_other)}
    return GateResult("generalization", gap, cfg["max_gap"], passed, message, rule="value <= threshold",
                      details=details)
