"""perturbation_stability: a mild corruption must not change the prediction (one result per
corruption); corruption_robustness: mIoU under ImageNet-C's corruptions at severities 1-5 and
the mean relative robustness, reported as the literature reports them.

The corruptions and their severities are :mod:`segcheck.perturb`'s: severity 0 is segcheck's
mild level, 1-5 are ImageNet-C's constants (Hendrycks & Dietterich, ICLR 2019), with every
difference from the reference code listed there. Each (corruption, severity) is one forward
pass over the eval images, made and scored a batch at a time, computed once per target and
shared by both gates (its agreement with the clean prediction and its mIoU; no label map is
kept).
"""

from __future__ import annotations

import functools
import math

from segcheck import SegcheckError, gate_figures, perturb
from segcheck.gates import diagnosis
from segcheck.gates.result import GateResult
from segcheck.hookspecs import hookimpl
from segcheck.metrics import agreement as pixel_agreement
from segcheck.target import Target

CORRUPTIONS = tuple(perturb.CORRUPTIONS)


def corruption_scores(target: Target, corruption: str, severity: int, seed: int) -> dict[str, float]:
    """``{"agreement", "miou"}`` of the prediction on the eval images corrupted by ``corruption``
    at ``severity`` (seed ``seed``): the share of pixels whose class is the clean prediction's,
    and the dataset-level mIoU against the eval masks. One forward pass, shared by every gate of
    the target (computed once per weights)."""
    if corruption not in perturb.CORRUPTIONS:
        raise SegcheckError(f"unknown corruption {corruption!r}; known: {', '.join(perturb.CORRUPTIONS)}")
    data, model = target.data, target.model

    def measure() -> dict[str, float]:
        batches = perturb.corrupted_batches(corruption, data.images, severity, seed, data.batch_size)
        pred, _ = model.predict_batches(batches, len(data.images))
        agreement = pixel_agreement(pred, target.predictions.labels, data.batch_size)
        return {"agreement": agreement, "miou": data.score(pred)}

    return model.memo(f"corruption:{corruption}:{severity}:{seed}", data, measure)


def perturbation_stability(target: Target, cfg: dict, corruption: str) -> GateResult:
    """A mild corruption of the eval images must not change the prediction.

    **Measures** the pixel agreement between the prediction on the clean eval images and on the
    images corrupted by ``corruption`` (gaussian noise, brightness, contrast, gaussian blur,
    JPEG), and the drop of mIoU, at the level ``perturbation_stability.severity``: 0 (default)
    is segcheck's mild level (noise sigma 0.05, brightness +0.10, contrast 0.70, blur sigma
    0.5 px, JPEG quality 75: mild at 64 px as at 1024 px), 1-5 ImageNet-C's severities
    (:mod:`segcheck.perturb`). Results are 8-bit images, as a camera or a file gives them.

    **Rule**: passes when agreement >= ``min_agreement`` (0.90) and clean mIoU - corrupted mIoU
    <= ``max_miou_drop`` (0.05); ``seed`` seeds the noise.

    **Why**: a model that changes its answer under a change a person would not notice relies
    on fragile low-level cues (exact pixel values, JPEG-free textures) that real deployment
    data does not keep.

    **A failure** usually means training without photometric or noise augmentation, or a model
    that keys on compression artefacts or exact intensities of its training data.

    **Fixes**: train with photometric, blur, noise and JPEG augmentation (the bundled trainer's
    ``photometric`` ingredient) or an input-consistency loss; corruption_robustness shows how
    far the model holds at ImageNet-C's severities.
    """
    # measuring and explaining in one place: the message names every number the verdict used
    gated = cfg["severity"]
    if isinstance(gated, bool) or not isinstance(gated, int) or gated not in range(len(perturb.LADDER) + 1):
        raise SegcheckError(
            f"perturbation_stability.severity must be one of 0..5 (0 the mild level, 1-5 ImageNet-C's), got {gated!r}"
        )
    scores = corruption_scores(target, corruption, gated, cfg["seed"])
    clean = target.predictions.miou
    value, corrupted = scores["agreement"], scores["miou"]
    drop = clean - corrupted
    passed = bool(value >= cfg["min_agreement"] and drop <= cfg["max_miou_drop"])
    parameter = perturb.SEVERITIES[corruption][gated]
    level = perturb.level_name(gated)
    measured = (
        f"{corruption} ({parameter}, {level}): agreement with clean prediction {value:.3f} "
        f"(min {cfg['min_agreement']:.2f}), mIoU {clean:.3f} -> {corrupted:.3f}, drop {drop:.3f} "
        f"(max {cfg['max_miou_drop']:.2f})"
    )
    if passed:
        message = measured
    else:
        what = corruption.replace("_", " ")
        what = f"a mild {what}" if gated == 0 else f"{what} at {level}"
        cause = diagnosis.random_init_clause(target) or (
            "so the model relies on fragile low-level cues; train with photometric/noise augmentation or a "
            "consistency loss"
        )
        message = f"{measured}: {what} changes the prediction, {cause}"
    details = {
        "corruption": corruption,
        "severity": gated,
        "level": level,
        "parameter": parameter,
        "clean_miou": clean,
        "agreement": value,
        "miou": corrupted,
        "miou_drop": drop,
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


def corruption_robustness(target: Target, cfg: dict) -> GateResult:
    """mIoU under ImageNet-C's corruptions at severities 1-5, and the mean relative robustness.

    **Measures**, for each of the five corruptions (gaussian noise, brightness, contrast,
    gaussian blur, JPEG) at each ImageNet-C severity 1-5 (Hendrycks & Dietterich, ICLR 2019;
    the ``imagecorruptions`` constants Cityscapes-C uses, Kamann & Rother, CVPR 2020; every
    difference in :mod:`segcheck.perturb`): the dataset-level mIoU on the corrupted eval
    images (25 forward passes, a batch at a time) and the agreement with the clean prediction.
    Relative robustness of a corruption: the mean over severities of corrupted mIoU / clean
    mIoU; **mRR**, the value: its mean over the corruptions (equal to Michaelis et al.'s rPC,
    mean corrupted performance / clean performance, 2019). ``mPC``, the mean corrupted mIoU, is
    in the details.

    **Rule**: reported, never failed: how much robustness a deployment needs depends on its
    conditions, and the mild level is what perturbation_stability gates.

    **Why**: numbers computed with the literature's constants compare with published
    Cityscapes-C tables (mIoU per corruption and severity), which the mild gate's do not.

    **Reading it**: mRR near 1 holds under every corruption; a corruption whose mIoU falls at
    severity 1 already shows what augmentation to add; on small images (64x128) blur and JPEG
    are far harsher than at Cityscapes' 2048x1024, because the constants are not scaled.
    """
    clean = target.predictions.miou
    miou, agreement, relative = {}, {}, {}
    for corruption in CORRUPTIONS:
        miou[corruption], agreement[corruption] = {}, {}
        for severity in perturb.LADDER:
            scores = corruption_scores(target, corruption, severity, cfg["seed"])
            miou[corruption][severity], agreement[corruption][severity] = scores["miou"], scores["agreement"]
        mean = math.fsum(miou[corruption].values()) / len(perturb.LADDER)
        relative[corruption] = mean / clean if clean > 0 else float("nan")
    mrr = math.fsum(relative.values()) / len(relative)
    mpc = math.fsum(v for per in miou.values() for v in per.values()) / (len(CORRUPTIONS) * len(perturb.LADDER))
    worst = min(relative, key=lambda c: relative[c] if math.isfinite(relative[c]) else -math.inf)
    listed = ", ".join(f"{c} {relative[c]:.2f}" for c in CORRUPTIONS)
    message = (
        f"mean relative robustness (mRR) {mrr:.3f} over ImageNet-C severities 1-5 (clean mIoU {clean:.3f}, mean "
        f"corrupted mIoU {mpc:.3f}); per corruption: {listed}; weakest {worst} (severity 5 mIoU "
        f"{miou[worst][perturb.LADDER[-1]]:.3f}); reported, not gated"
    )
    details = {
        "clean_miou": clean,
        "miou": miou,
        "agreement": agreement,
        "relative_robustness": relative,
        "mrr": mrr,
        "mpc": mpc,
        "parameters": {c: list(perturb.IMAGENET_C[c]) for c in CORRUPTIONS},
    }
    return GateResult("corruption_robustness", mrr, 0.0, True, message, rule="reported", details=details)


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
    registry.add(
        "corruption_robustness",
        corruption_robustness,
        section="perturbation_stability",
        needs=("labels", "finite_logits"),
        description="mIoU under ImageNet-C's five corruptions at severities 1-5 and the mean relative robustness "
        "(reported)",
        figures=gate_figures.corruption_robustness,
    )
