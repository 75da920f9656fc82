"""calibration (closed-set models) and prompted_calibration (text-prompted binary models): can
the model's confidence be trusted? Pixel-level expected calibration error (ECE) with 15
equal-width bins and its reliability diagram (:mod:`segcheck.metrics.calibration`).
"""

from __future__ import annotations

import numpy as np
import torch

from segcheck import gate_figures
from segcheck.gates.prompted import by_concept, probabilities
from segcheck.gates.registered import NotApplicable
from segcheck.gates.result import GateResult
from segcheck.hookspecs import hookimpl
from segcheck.metrics.calibration import CalibrationBins
from segcheck.model import channel_argmax
from segcheck.target import Target


def _describe(binary: bool) -> tuple[str, str]:
    """(what the confidence is, what its event is), for messages."""
    if binary:
        return "foreground probability", "foreground frequency"
    return "top-1 confidence (max softmax)", "top-1 accuracy"


def calibration_bins(target: Target, bins: int) -> CalibrationBins:
    """The calibration counts of the model on the eval images' counted pixels, one forward pass
    streamed a batch at a time: a multi-class model's max softmax probability against "the
    arg-max is the true class", a binary model's foreground probability against "the pixel is
    foreground" (ignore and anomaly pixels out)."""
    data, model, spec = target.data, target.model, target.data.spec
    counts = CalibrationBins(bins)
    with torch.no_grad():
        for part in data.batches():
            logits = model.logits(model.normalize(data.images[part])).float()
            masks = torch.as_tensor(spec.closed_set(data.masks[part]).astype(np.int64), device=logits.device)
            keep = masks != spec.ignore_index
            if model.binary:
                confidence, outcome = torch.sigmoid(logits[:, 0]), masks == 1
            else:
                confidence, outcome = logits.softmax(1).amax(1), channel_argmax(logits) == masks
            counts.update(confidence[keep], outcome[keep])
            del logits
    return counts


def _result(name: str, counts: CalibrationBins, cfg: dict, binary: bool, extra: dict | None = None) -> GateResult:
    """The verdict on ``counts``: ECE <= ``max_ece``, with the reliability rows in the details."""
    if not counts.pixels:
        raise NotApplicable(f"{name} has no counted pixel to judge (every eval pixel is ignore or anomaly)")
    ece, worst = counts.ece(), counts.max_gap()
    confidence, event = _describe(binary)
    rows = counts.reliability()
    full = [r for r in rows if r["pixels"]]
    over = sum(r["pixels"] * (r["confidence"] - r["frequency"]) for r in full) / counts.pixels
    direction = "overconfident" if over > 0 else "underconfident"
    measured = (
        f"pixel ECE {ece:.4f} ({cfg['bins']} bins, {counts.pixels} pixels; {confidence} vs {event}), "
        f"max {cfg['max_ece']:.3f}; largest bin gap {worst:.3f}; on average {direction} by {abs(over):.4f}"
    )
    passed = bool(ece <= cfg["max_ece"])
    message = measured if passed else (
        f"{measured}: the model's confidence does not match how often it is right, so thresholds, MSP-based "
        "anomaly scores and any downstream use of its probabilities are off; calibrate it (temperature scaling on "
        "held-out data) or train with label smoothing / focal loss"
    )  # fmt: skip
    details = {
        "ece": ece,
        "max_gap": worst,
        "mean_overconfidence": over,
        "pixels": counts.pixels,
        "bins": cfg["bins"],
        "confidence": confidence,
        "event": event,
        "reliability": rows,
        **(extra or {}),
    }
    return GateResult(name, ece, cfg["max_ece"], passed, message, rule="value <= threshold", details=details)


def calibration(target: Target, cfg: dict) -> GateResult:
    """Can the model's pixel confidences be trusted? Pixel-level expected calibration error.

    **Measures** the expected calibration error (Guo et al., ICML 2017) over the eval images'
    counted pixels (ignore and anomaly pixels out): confidences sorted into ``bins`` (15)
    equal-width bins, ECE = sum over bins of (pixels in bin / pixels) x |observed frequency -
    mean confidence|. A multi-class model's confidence is its largest softmax probability and
    the event "the arg-max class is the true class" (torchmetrics'
    ``MulticlassCalibrationError``); a binary model's is its foreground probability and the event
    "the pixel is foreground" (``BinaryCalibrationError``). Counts are streamed per batch (one
    forward pass); the report draws the reliability diagram.

    **Rule**: passes when ECE <= ``max_ece`` (default 0.05: five points of probability, on
    average, between what the model says and how often it is right. Guo et al. report about
    0.01 for classifiers after temperature scaling and several times that before; well-trained
    segmentation networks evaluated on their own domain are in the same range, most pixels
    being easy. 0.05 fails a model whose probabilities are clearly off, not one that merely
    was never temperature-scaled.)

    **Why**: anything that reads the probabilities (a threshold, MSP or entropy anomaly scores,
    label_quality's confident learning, a downstream fusion) assumes them meaningful; argmax
    metrics such as mIoU do not see a model that is right but 100% sure where it is wrong.

    **A failure** usually means overconfidence from long training without regularization
    (mean gap positive), a class-weighted or Dice loss that pushes probabilities away from
    frequencies, a softmax/sigmoid applied twice, or evaluation data unlike the training data.

    **Fixes**: temperature scaling on held-out data, label smoothing, focal loss, or fixing the
    loss/activation mix-up; the reliability diagram shows which confidences are off.
    """
    return _result("calibration", calibration_bins(target, cfg["bins"]), cfg, target.model.binary)


def prompted_calibration(target: Target, cfg: dict) -> GateResult:
    """Can a text-prompted binary model's foreground probability be trusted? Pixel ECE per concept.

    **Measures** the expected calibration error of the foreground probability against the
    foreground frequency (torchmetrics' ``BinaryCalibrationError``: 15 equal-width bins) over
    the counted pixels of every (image, concept) sample, the model asked with each concept's
    canonical prompt (the shared forward pass of the prompted gates); per concept too.

    **Rule**: passes when the worst concept's ECE <= ``max_ece`` (the calibration gate's
    setting, default 0.05).

    **Why**: a prompted model is used through a threshold on that probability, and "object
    not present" answers depend on it.

    **A failure** usually means a positive-weighted BCE or Dice loss (probabilities pushed up
    where the object may be) or a sigmoid applied twice; a collapsed model predicting
    background everywhere can still be well calibrated (see prompted_collapse).

    **Fixes**: temperature scaling per concept on held-out pairs, or a loss whose minimum is
    the true frequency (plain BCE) next to the one that fights the imbalance.
    """
    data, spec = target.data, target.data.spec
    probs = probabilities(target, data.prompts())
    per, total = {}, CalibrationBins(cfg["bins"])
    for concept, idx in by_concept(target).items():
        counts = CalibrationBins(cfg["bins"])
        for start in range(0, len(idx), data.batch_size):
            part = idx[start : start + data.batch_size]
            masks = spec.closed_set(data.masks[part])
            keep = masks != spec.ignore_index
            counts.update(probs[part][keep], masks[keep] == 1)
            total.update(probs[part][keep], masks[keep] == 1)
        if counts.pixels:
            per[concept] = counts
    if not per:
        raise NotApplicable("prompted_calibration has no counted pixel to judge")
    worst = max(per, key=lambda c: per[c].ece())
    extra = {
        "per_concept": {c: {"ece": b.ece(), "pixels": b.pixels} for c, b in per.items()},
        "worst_concept": worst,
        "pooled_ece": total.ece(),
    }
    result = _result("prompted_calibration", per[worst], cfg, True, extra)
    listed = ", ".join(f"{c} {b.ece():.4f}" for c, b in per.items())
    message = f"per concept (canonical prompt): {listed}; worst {worst!r}: {result.message}"
    return GateResult(result.name, result.value, result.threshold, result.passed, message, result.rule, result.details)


@hookimpl
def segcheck_register_gates(registry):
    registry.add(
        "calibration",
        calibration,
        section="calibration",
        needs=("labels", "finite_logits"),
        figures=gate_figures.calibration,
    )
    registry.add(
        "prompted_calibration",
        prompted_calibration,
        section="calibration",
        needs=("labels", "prompts"),
        suite="prompted",
        figures=gate_figures.calibration,
    )
