"""The anomaly suite's gates: detection per scorer, and audits of the head, the training split
and the known classes on the anomaly split. They share one evaluation (``segcheck.anomaly``)."""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
from tqdm import tqdm

from segcheck import SegcheckError, gate_figures
from segcheck.anomaly import anomaly_split, evaluate
from segcheck.data import read_mask
from segcheck.gates import diagnosis
from segcheck.gates.audits import head_matches_classes
from segcheck.gates.registered import NotApplicable
from segcheck.gates.result import GateResult
from segcheck.hookspecs import hookimpl
from segcheck.target import Target

FPR95_CONVENTION = (
    "FPR95 is read at the first threshold, from the highest score down, whose TPR reaches 0.95 "
    "(StreetHazards' code takes the ROC point closest to 0.95 instead)"
)


def anomaly_detection(target: Target, cfg: dict, scorer: str = "max_logit") -> GateResult:
    """``scorer`` separates anomaly pixels from the rest: pooled AUROC and FPR95 over every
    valid pixel of the anomaly split (per-image means and component metrics reported)."""
    ev = evaluate(target, cfg)
    if scorer in ev.unavailable:
        raise NotApplicable(ev.unavailable[scorer])
    if scorer in ev.failed:
        raise SegcheckError(ev.failed[scorer])
    if scorer not in ev.scorers:
        raise NotApplicable(f"scorer {scorer!r} is not among this run's scorers ({', '.join(ev.scorers)})")
    r = ev.scorers[scorer]
    pooled, per_image, comp = r.pooled, r.per_image, r.components
    passed = pooled.auroc >= cfg["min_auroc"] and pooled.fpr <= cfg["max_fpr95"]
    measured = (
        f"AUROC {pooled.auroc:.3f} (>= {cfg['min_auroc']}), FPR95 {pooled.fpr:.3f} (<= {cfg['max_fpr95']}), "
        f"AUPR {pooled.aupr:.3f}, pooled over {ev.pixels} pixels of {ev.images} {ev.split!r} images "
        f"({ev.anomaly_pixels} anomalous); per image AUROC {per_image.auroc:.3f}, FPR95 {per_image.fpr:.3f}"
    )
    if passed:
        message = f"{measured}: {scorer} detects the anomalies"
    else:
        cause = diagnosis.random_init_clause(target) or (
            "the model is as sure on objects it never saw (train with outlier exposure, e.g. segcheck train "
            "--outlier-paste 0.03)"
        )
        message = f"{measured}: {scorer} does not separate anomaly pixels from known ones; {cause}"
    details = {
        "scorer": scorer,
        "split": ev.split,
        "pooled": pooled.as_dict(),
        "per_image": per_image.as_dict(),
        "best_f1": r.best_f1.as_dict(),
        "sensitivity": [p.as_dict() for p in r.sensitivity],
        "components": comp.as_dict(),
        "fpr95_convention": FPR95_CONVENTION,
        "passes": ev.passes,
    }
    if scorer == "sml" and ev.class_stats is not None and ev.class_stats.fallback:
        spec = target.data.spec
        details["sml_fallback_classes"] = [spec.classes[c] for c in ev.class_stats.fallback]
    return GateResult(
        f"anomaly_detection[{scorer}]",
        pooled.auroc,
        cfg["min_auroc"],
        passed,
        message,
        rule=f"value >= threshold and FPR95 <= {cfg['max_fpr95']}",
        details=details,
    )


def anomaly_head(target: Target, cfg: dict) -> GateResult:
    """The head has one channel per known class: the anomaly is not a class the model predicts
    (``head_matches_classes``, with the anomaly's own explanation of one channel too many)."""
    head = head_matches_classes(target)
    channels, known = int(head.value), target.data.spec.num_classes
    message = f"head has {channels} channels for {known} known classes"
    if channels == known + 1:
        message += (
            f": one channel too many, as when a {known + 1}-class checkpoint is evaluated as {known} known classes "
            "plus the anomaly (or loaded with strict=False); anomaly scores must come from the known classes' logits"
        )
    elif not head.passed:
        message += ": the checkpoint was trained for another label set; evaluate on the classes it was trained on"
    return dataclasses.replace(head, name="anomaly_head", message=message)


def anomaly_free_training(target: Target, cfg: dict) -> GateResult:
    """No training mask holds anomaly pixels (an anomaly seen in training is not an anomaly)."""
    data, spec = target.data, target.data.spec
    if spec.anomaly_index is None:
        raise NotApplicable("the dataset declares no anomaly_index")
    if not data.has_split("train"):
        raise NotApplicable("this data has no 'train' split to audit")
    if not spec.labelled("train"):
        raise NotApplicable("the 'train' split is unlabelled: no masks to audit")
    dataset = data.dataset("train")
    if not len(dataset):
        raise NotApplicable("the 'train' split is empty: nothing to audit")
    hits, pixels = [], 0
    for i in tqdm(range(len(dataset)), desc="anomaly_free_training: train masks", delay=2, leave=False, disable=None):
        count = int(np.count_nonzero(np.asarray(read_mask(dataset, i)) == spec.anomaly_index))
        if count:
            hits.append(i)
            pixels += count
    passed = not hits
    message = f"{len(dataset)} training masks read, {len(hits)} hold anomaly pixels (label {spec.anomaly_index})"
    if not passed:
        message += (
            f", {pixels} in all (e.g. train[{hits[0]}]): the model may have learnt the anomalies; "
            "keep them out of training or use another split"
        )
    return GateResult(
        "anomaly_free_training",
        len(hits),
        0,
        passed,
        message,
        rule="value == threshold",
        details={"masks": len(dataset), "masks_with_anomaly": hits[:100], "anomaly_pixels": pixels},
    )


def known_class_miou(target: Target, cfg: dict) -> GateResult:
    """Known-class mIoU on the anomaly split (anomaly pixels out) stays within
    ``max_known_miou_drop`` of the eval split's: the anomalies do not wreck the rest of the scene."""
    ev = evaluate(target, cfg)
    reference = target.predictions.miou
    floor = reference - cfg["max_known_miou_drop"]
    passed = ev.known_miou >= floor
    message = (
        f"known-class mIoU {ev.known_miou:.3f} on {ev.images} {ev.split!r} images (anomaly pixels out) vs "
        f"{reference:.3f} on the eval split {target.data.split!r} (floor {floor:.3f})"
    )
    if not passed:
        message += (
            ": the anomaly split is scored differently (another label mapping?) or the anomalies disturb the "
            "prediction around them"
        )
    return GateResult(
        "known_class_miou",
        ev.known_miou,
        floor,
        passed,
        message,
        rule="value >= threshold",
        details={"eval_miou": reference, "split": ev.split},
    )


def _needs_anomaly_split(function):
    """Run ``function`` only on data with an anomaly split (a SKIP saying why otherwise)."""

    @functools.wraps(function)
    def gate(target: Target, cfg: dict, **kwargs) -> GateResult:
        split = anomaly_split(target.data.spec, cfg, target.data.split)
        if not target.data.has_split(split):
            raise NotApplicable(f"the anomaly split {split!r} cannot be read here; set anomaly.split")
        if not target.data.spec.labelled(split):
            raise NotApplicable(f"the anomaly split {split!r} is unlabelled (no masks to score); set anomaly.split")
        return function(target, cfg, **kwargs)

    return gate


@hookimpl
def segcheck_register_gates(registry, scorers):
    for name in scorers.names():
        registry.add(
            f"anomaly_detection[{name}]",
            functools.partial(_needs_anomaly_split(anomaly_detection), scorer=name),
            section="anomaly",
            suite="anomaly",
            description=f"{name} separates anomaly pixels: pooled AUROC, FPR95 (AUPR, per image, components)",
            figures=gate_figures.anomaly_detection,
        )
    registry.add("anomaly_head", _needs_anomaly_split(anomaly_head), section="anomaly", suite="anomaly")
    registry.add("anomaly_free_training", anomaly_free_training, section="anomaly", suite="anomaly")
    registry.add(
        "known_class_miou",
        _needs_anomaly_split(known_class_miou),
        section="anomaly",
        suite="anomaly",
        needs=("labels", "finite_logits"),
    )
