"""perturbation_stability: mild corruptions must not change the prediction (one result per corruption)."""

from __future__ import annotations

import functools

import numpy as np

from segcheck import SegcheckError, gate_figures, perturb
from segcheck.gates import diagnosis
from segcheck.gates.result import GateResult
from segcheck.hookspecs import hookimpl
from segcheck.metrics import agreement as pixel_agreement
from segcheck.target import Target

CORRUPTIONS = tuple(perturb.CORRUPTIONS)


def perturbation_stability(target: Target, cfg: dict, corruption: str) -> GateResult:
    """Pixel agreement with the clean prediction and mIoU drop under ``corruption``.

    The eval images are corrupted at every severity 1..3 (seed ``cfg["seed"]``). The verdict
    uses severity ``cfg["severity"]``: passes when agreement >= ``cfg["min_agreement"]`` and
    clean mIoU - corrupted mIoU <= ``cfg["max_miou_drop"]``. ``details["relative_robustness"]``
    is the mean corrupted mIoU over all severities divided by the clean mIoU.
    """
    # measuring and explaining in one place: the message names every number the verdict used
    if corruption not in perturb.CORRUPTIONS:
        raise SegcheckError(f"unknown corruption {corruption!r}; known: {', '.join(perturb.CORRUPTIONS)}")
    data, model = target.data, target.model
    images = data.images
    clean_pred = target.predictions.labels
    clean = target.predictions.miou
    batch = data.batch_size
    levels = range(1, len(perturb.SEVERITIES[corruption]) + 1)
    gated = cfg["severity"]
    if gated not in levels:
        raise SegcheckError(f"perturbation_stability.severity must be one of {list(levels)}, got {gated!r}")
    agreement, mious = {}, {}
    for severity in levels:
        batches = perturb.corrupted_batches(corruption, images, severity, cfg["seed"], batch)
        pred, _ = model.predict_batches(batches, len(images))
        agreement[severity] = pixel_agreement(pred, clean_pred, batch)
        mious[severity] = data.score(pred)
    value, drop = agreement[gated], clean - mious[gated]
    relative = float(np.mean(list(mious.values())) / clean) if clean > 0 else float("nan")
    passed = bool(value >= cfg["min_agreement"] and drop <= cfg["max_miou_drop"])
    parameter = perturb.SEVERITIES[corruption][gated - 1]
    measured = (
        f"{corruption} ({parameter}, severity {gated}): agreement with clean prediction {value:.3f} "
        f"(min {cfg['min_agreement']:.2f}), mIoU {clean:.3f} -> {mious[gated]:.3f}, drop {drop:.3f} "
        f"(max {cfg['max_miou_drop']:.2f}); relative robustness over severities 1-{len(levels)} {relative:.2f}"
    )
    if passed:
        message = measured
    else:
        cause = diagnosis.random_init_clause(target) or (
            "so the model relies on fragile low-level cues; train with photometric/noise augmentation or a "
            "consistency loss"
        )
        message = f"{measured}: a mild {corruption.replace('_', ' ')} changes the prediction, {cause}"
    details = {
        "corruption": corruption,
        "severity": gated,
        "parameter": parameter,
        "clean_miou": clean,
        "agreement": agreement,
        "miou": mious,
        "miou_drop": drop,
        "relative_robustness": relative,
    }
    return GateResult(
        f"perturbation_stability[{corruption}]",
        value,
        cfg["min_agreement"],
        passed,
        message,
        rule=f"value >= threshold, drop <= {cfg['max_miou_drop']}",
        details=details,
    )


@hookimpl
def segcheck_register_gates(registry):
    for corruption in CORRUPTIONS:
        registry.add(
            f"perturbation_stability[{corruption}]",
            functools.partial(perturbation_stability, corruption=corruption),
            section="perturbation_stability",
            needs=("labels", "finite_logits", "varied_prediction"),
            description=f"a mild {corruption.replace('_', ' ')} must not change the prediction",
            figures=gate_figures.perturbation_stability,
        )
