"""prediction_collapse: the predicted class histogram must resemble the ground truth's.

Multi-class models: at least ``min_class_fraction`` of the classes present in the eval
masks must be predicted somewhere, and the most frequent predicted class may cover at most
``max_dominance_excess`` more of the pixels than the most frequent true class.
Binary (one sigmoid channel) models additionally: some positives must be predicted when the
masks have positives; the probability range and a threshold sweep are reported.
"""

from __future__ import annotations

import copy

import numpy as np
import torch

from segcheck import gate_figures
from segcheck.gates import diagnosis
from segcheck.gates.result import GateResult
from segcheck.hookspecs import hookimpl
from segcheck.metrics import binary_iou
from segcheck.model import seeded
from segcheck.target import Target

SWEEP = tuple(round(0.1 * i, 1) for i in range(1, 10))


def class_fractions(labels: np.ndarray, counted: np.ndarray, num_classes: int) -> np.ndarray:
    """Fraction (num_classes,) of the ``counted`` pixels that carry each label."""
    counts = np.bincount(labels[counted].ravel(), minlength=num_classes)[:num_classes]
    return counts / max(int(counts.sum()), 1)


def fractions(data, labels: np.ndarray) -> np.ndarray:
    """:func:`class_fractions` of label maps ``labels`` (N, H, W) over the eval masks' counted
    pixels, counted a batch at a time."""
    c = data.spec.num_classes
    counts = np.zeros(c, np.int64)
    for part in data.batches():
        counted = data.spec.counted(data.masks[part])
        counts += np.bincount(labels[part][counted].ravel(), minlength=c)[:c]
    return counts / max(int(counts.sum()), 1)


def probabilities(target: Target) -> np.ndarray:
    """Sigmoid probabilities (N, H, W) float32 of a binary model on the eval images, in batches."""
    return target.model.probabilities(target.data.images, target.data.batch_size)


def threshold_sweep(probs: np.ndarray, masks: np.ndarray, ignore_index: int, thresholds=SWEEP) -> dict[float, float]:
    """Foreground IoU of ``probs > t`` against 0/1 ``masks`` (or ``ignore_index``) for each t."""
    return {t: binary_iou(probs, masks, t, ignore_index) for t in thresholds}


def prediction_collapse(target: Target, cfg: dict) -> GateResult:
    """Compare predicted and true class histograms over the eval set's counted pixels.

    Counted pixels are those whose label is a class (not ignore, not anomaly). Passes when
    the fraction of present classes that are predicted is >= ``cfg["min_class_fraction"]``,
    the dominant predicted fraction is <= the dominant true fraction +
    ``cfg["max_dominance_excess"]``, and (binary models) positives are predicted wherever
    the masks hold positives.
    """
    # measuring and explaining in one place: the message names every number the verdict used
    data, spec, model = target.data, target.data.spec, target.model
    masks, pred = data.masks, target.predictions.labels
    truth = fractions(data, masks)
    predicted = fractions(data, pred)
    present = np.flatnonzero(truth > 0)
    missing = [spec.classes[c] for c in present if predicted[c] == 0]
    coverage = 1 - len(missing) / max(len(present), 1)
    dominant, true_dominant = int(predicted.argmax()), int(truth.argmax())
    excess = float(predicted[dominant] - truth[true_dominant])
    problems = []
    if coverage < cfg["min_class_fraction"]:
        problems.append(f"only {len(present) - len(missing)} of {len(present)} present classes predicted")
    if excess > cfg["max_dominance_excess"]:
        problems.append(
            f"{spec.classes[dominant]!r} covers {predicted[dominant]:.0%} of predicted pixels vs "
            f"{truth[true_dominant]:.0%} for the largest true class {spec.classes[true_dominant]!r} "
            f"(excess {excess:.2f} > {cfg['max_dominance_excess']:.2f})"
        )
    details = {
        "true_fractions": dict(zip(spec.classes, truth.tolist())),
        "predicted_fractions": dict(zip(spec.classes, predicted.tolist())),
        "never_predicted": missing,
        "dominance_excess": excess,
    }
    binary_note = ""
    if model.binary:
        binary_note, binary_problem = _binary_checks(target, masks, truth, predicted, details)
        if binary_problem:
            problems.append(binary_problem)
    measured = (
        f"{len(present) - len(missing)}/{len(present)} present classes predicted ({coverage:.2f}, min "
        f"{cfg['min_class_fraction']:.2f}); dominant predicted {spec.classes[dominant]!r} "
        f"{predicted[dominant]:.2f} "
        f"vs true {spec.classes[true_dominant]!r} {truth[true_dominant]:.2f} (max excess "
        f"{cfg['max_dominance_excess']:.2f})" + binary_note
    )
    if missing:
        measured += f"; never predicted: {', '.join(missing)}"
    passed = not problems
    modes = None if passed or diagnosis.random_init(target) else train_mode_difference(target)
    if modes:
        details["train_mode_classes"], details["eval_mode_classes"] = modes
    if passed:
        message = measured
    elif modes:
        message = (
            f"{measured}: {'; '.join(problems)}: in train mode the same weights predict {modes[0]} classes on the "
            f"first eval images, in eval mode {modes[1]}: its BatchNorm running statistics (or dropout) are not "
            "what it was trained with; re-estimate them (more training steps, a pass over training data in train "
            "mode, or a smaller BatchNorm momentum), and check that training calls model.eval() before evaluating"
        )
    else:
        cause = diagnosis.random_init_clause(target) or (
            "the model collapses towards few classes (class imbalance without weighting, wrong label mapping, a "
            "threshold/sigmoid mix-up)"
        )
        message = f"{measured}: {'; '.join(problems)}: {cause}"
    return GateResult(
        "prediction_collapse",
        coverage,
        cfg["min_class_fraction"],
        passed,
        message,
        rule=f"value >= threshold, excess <= {cfg['max_dominance_excess']}",
        details=details,
    )


def train_mode_difference(target: Target, images: int = 4) -> tuple[int, int] | None:
    """(classes predicted in train mode, in eval mode) on the first ``images`` eval images when
    train mode predicts clearly more of them (one class in eval mode, or at least twice as many:
    BatchNorm statistics, dropout), else None; also None when a train-mode pass cannot run (a
    BatchNorm after global pooling on one image). Run on a copy: a train-mode pass updates
    BatchNorm's running statistics."""
    model = target.model
    if model.binary or model.prompted:
        return None
    x = model.normalize(target.data.images[:images])
    copy_ = copy.deepcopy(model.module).train()
    try:
        with torch.no_grad(), seeded(0, model.device):
            trained = len(torch.unique(model.labels(model.logits(x, module=copy_))))
    except (RuntimeError, ValueError):  # e.g. "Expected more than 1 value per channel when training"
        return None
    evaluated = len(np.unique(target.predictions.labels[:images]))
    return (trained, evaluated) if trained > evaluated and (evaluated == 1 or trained >= 2 * evaluated) else None


def _binary_checks(
    target: Target, masks: np.ndarray, truth: np.ndarray, predicted: np.ndarray, details: dict
) -> tuple[str, str | None]:
    """Probability range, positives and the threshold sweep of a binary model: (note, problem or None)."""
    model, spec = target.model, target.data.spec
    probs = probabilities(target)
    masks = np.where(spec.counted(masks), masks, spec.ignore_index)
    sweep = threshold_sweep(probs, masks, spec.ignore_index)
    configured = threshold_sweep(probs, masks, spec.ignore_index, (model.threshold,))[model.threshold]
    scored = {t: v for t, v in sweep.items() if np.isfinite(v)}
    best = max(scored, key=scored.get) if scored else None
    if best is not None and np.isfinite(configured) and configured >= scored[best]:
        best = model.threshold  # the configured threshold is as good as any in the sweep
    low, high = float(probs.min()), float(probs.max())
    details.update(
        probability_range=[low, high],
        threshold=model.threshold,
        threshold_iou=configured,
        threshold_sweep=sweep,
        best_threshold=best,
    )
    note = f"; probabilities {low:.3f}..{high:.3f}, threshold {model.threshold:g}"
    if best is not None and abs(best - model.threshold) > 1e-9:
        note += f", best threshold {best:g} (IoU {sweep[best]:.3f} vs {configured:.3f})"
    if truth[1] > 0 and predicted[1] == 0:
        cause = "no positives predicted"
        if high <= model.threshold:
            cause += f": every probability is <= the threshold {model.threshold:g}"
            if best is not None and best != model.threshold and sweep[best] > 0:
                cause += f"; threshold {best:g} would give IoU {sweep[best]:.3f}"
        return note, cause
    if low >= 0.5 and high <= 1 / (1 + np.exp(-1)) + 1e-6:
        return note, (
            "probabilities all lie in 0.5..0.73, i.e. sigmoid of values in 0..1: the model already outputs "
            "probabilities and segcheck applies sigmoid again; return logits"
        )
    return note, None


@hookimpl
def segcheck_register_gates(registry):
    registry.add(
        "prediction_collapse",
        prediction_collapse,
        section="prediction_collapse",
        needs=("labels", "finite_logits"),
        figures=gate_figures.prediction_collapse,
    )
