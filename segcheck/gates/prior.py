"""positional_prior: the model must beat predicting the usual class at each pixel position."""

from __future__ import annotations

import numpy as np

from segcheck import gate_figures
from segcheck.gates import diagnosis
from segcheck.gates.result import GateResult
from segcheck.hookspecs import hookimpl
from segcheck.layout import prior_map
from segcheck.target import Target


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
    explained = None if passed else diagnosis.state(target)
    if passed:
        message = f"{measured}: {real - prior_miou:+.3f} >= margin {cfg['margin']:.2f}"
    elif explained:
        message = f"{measured}: {real:.3f} < {threshold:.3f} (prior + margin {cfg['margin']:.2f}): {explained}"
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
