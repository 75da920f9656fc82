"""Audits: cheap structural checks of the model and the data, each with its own verdict."""

from __future__ import annotations

import numpy as np
import torch

from segcheck.gates.result import GateResult
from segcheck.target import Target


def _probe(target: Target) -> torch.Tensor:
    images, _ = target.eval_set
    return target.model.normalize(images[:1])


def head_matches_classes(target: Target, cfg: dict | None = None) -> GateResult:
    """The model's output channels equal the dataset's classes (one channel for binary models)."""
    spec, model = target.spec, target.model
    with torch.no_grad():
        channels = model.logits(_probe(target)).shape[1]
    expected = 1 if model.binary else spec.num_classes
    passed = channels == expected
    message = f"head has {channels} channels, dataset has {spec.num_classes} classes (expected {expected} channels)"
    if not passed:
        message += (": the checkpoint was trained for another label set, or NUM_CLASSES is wrong; "
                    "evaluate with the dataset the model was trained on")
    return GateResult("head_matches_classes", channels, expected, passed, message, rule="value == threshold",
                      details={"classes": list(spec.classes)})


def output_size(target: Target, cfg: dict | None = None) -> GateResult:
    """Logits come out at input size, from a raw output that is the input or an integer downscale of it."""
    x = _probe(target)
    with torch.no_grad():
        raw = target.model.raw(x).shape[-2:]
        final = target.model.logits(x).shape[-2:]
    size = tuple(x.shape[-2:])
    stride = size[0] / raw[0] if raw[0] else float("inf")
    consistent = raw[0] <= size[0] and raw[1] <= size[1] and abs(size[1] / raw[1] - stride) / stride < 0.1
    passed = tuple(final) == size and consistent
    message = f"input {size}, raw output {tuple(raw)}, adapted logits {tuple(final)}"
    if not passed:
        message += (": the raw output is larger than the input or has another aspect ratio, so pixels cannot be "
                    "aligned with labels; check the decoder's strides and final upsampling")
    return GateResult("output_size", float(passed), 1.0, passed, message, rule="raw is a uniform downscale",
                      details={"input": size, "raw": tuple(raw), "stride": stride})


def finite_outputs(target: Target, cfg: dict | None = None) -> GateResult:
    """Every logit on the eval images and on uniform noise is finite (no NaN/inf)."""
    images, _ = target.eval_set
    _, clean_finite = target.clean
    noise = np.random.default_rng(0).uniform(0, 255, size=images[:4].shape).astype(np.float32)
    _, noise_finite = target.model.predict_pixels(noise, target.config["eval"]["batch_size"])
    passed = clean_finite and noise_finite
    message = f"logits finite on eval images: {clean_finite}, on uniform noise: {noise_finite}"
    if not passed:
        message += ": NaN/inf logits; check the checkpoint (diverged training), input normalization and fp16 overflow"
    return GateResult("finite_outputs", float(passed), 1.0, passed, message, rule="all finite")


def label_integrity(target: Target, cfg: dict | None = None) -> GateResult:
    """Eval masks hold only class ids, ignore_index or the anomaly id, and none is empty."""
    images, masks = target.eval_set
    spec = target.spec
    allowed = set(range(spec.num_classes)) | {spec.ignore_index}
    if spec.anomaly_index is not None:
        allowed.add(spec.anomaly_index)
    values = set(np.unique(masks).tolist())
    bad = sorted(values - allowed)
    labelled = (masks != spec.ignore_index).reshape(len(masks), -1).sum(1)
    empty = int((labelled == 0).sum())
    size_ok = images.shape[:3] == masks.shape
    passed = not bad and not empty and size_ok
    problems = []
    if bad:
        problems.append(f"labels {bad[:10]} outside 0..{spec.num_classes - 1}/ignore {spec.ignore_index} "
                        "(0/255 binary masks? 1-indexed labels? labelIds instead of trainIds?)")
    if empty:
        problems.append(f"{empty} masks have no labelled pixel")
    if not size_ok:
        problems.append(f"image size {images.shape[1:3]} != mask size {masks.shape[1:]}")
    message = (f"{len(masks)} masks, label values {sorted(values)[:12]}"
               + (": " + "; ".join(problems) if problems else ": all within the dataset's classes"))
    return GateResult("label_integrity", float(len(bad) + empty), 0.0, passed, message, rule="problems == 0",
                      details={"values": sorted(values), "empty_masks": empty})
