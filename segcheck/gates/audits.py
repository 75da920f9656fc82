"""Audits of the model and the data under test: head, output size, finite logits, normalization."""

from __future__ import annotations

import numpy as np
import torch

from segcheck import perturb
from segcheck.gates.result import GateResult
from segcheck.hookspecs import hookimpl
from segcheck.target import Target


def probe(target: Target) -> torch.Tensor:
    """The first eval image, normalized: the input of the audits that look at the head."""
    return target.model.normalize(target.data.images[:1])


def head_matches_classes(target: Target, cfg: dict | None = None) -> GateResult:
    """The model's output channels equal the dataset's classes (one channel for binary models)."""
    spec, model = target.data.spec, target.model
    with torch.no_grad():
        channels = model.logits(probe(target)).shape[1]
    expected = 1 if model.binary else spec.num_classes
    passed = channels == expected
    message = f"head has {channels} channels, dataset has {spec.num_classes} classes (expected {expected} channels)"
    if not passed:
        message += (
            ": the checkpoint was trained for another label set, or NUM_CLASSES is wrong; "
            "evaluate with the dataset the model was trained on"
        )
    return GateResult(
        "head_matches_classes",
        channels,
        expected,
        passed,
        message,
        rule="value == threshold",
        details={"classes": list(spec.classes)},
    )


def output_size(target: Target, cfg: dict | None = None) -> GateResult:
    """Logits come out at input size, from a raw output that is the input or an integer downscale of it."""
    x = probe(target)
    with torch.no_grad():
        raw = target.model.raw(x).shape[-2:]
        final = target.model.logits(x).shape[-2:]
    size, fed = tuple(x.shape[-2:]), tuple(target.model.pad(x).shape[-2:])
    stride = fed[0] / raw[0] if raw[0] else float("inf")
    consistent = raw[0] <= fed[0] and raw[1] <= fed[1] and abs(fed[1] / raw[1] - stride) / stride < 0.1
    passed = tuple(final) == size and consistent
    padded = f" (padded to {fed}: divisible_by {target.model.divisible_by})" if fed != size else ""
    message = f"input {size}{padded}, raw output {tuple(raw)}, adapted logits {tuple(final)}"
    if not passed:
        message += (
            ": the raw output is larger than the input or has another aspect ratio, so pixels cannot be "
            "aligned with labels; check the decoder's strides and final upsampling"
        )
    return GateResult(
        "output_size",
        float(passed),
        1.0,
        passed,
        message,
        rule="raw is a uniform downscale",
        details={"input": size, "module_input": fed, "raw": tuple(raw), "stride": stride},
    )


def finite_outputs(target: Target, cfg: dict | None = None) -> GateResult:
    """Every logit on the eval images and on uniform noise is finite (no NaN/inf)."""
    data = target.data
    clean_finite = target.predictions.finite
    shape, rng = data.images[:4].shape, np.random.default_rng(0)
    noise = perturb.noise_batches("uniform", shape, (0.5,) * 3, (0.5,) * 3, rng, data.batch_size)
    _, noise_finite = target.model.predict_batches(noise, shape[0])
    passed = clean_finite and noise_finite
    message = f"logits finite on eval images: {clean_finite}, on uniform noise: {noise_finite}"
    if not passed:
        message += ": NaN/inf logits; check the checkpoint (diverged training), input normalization and fp16 overflow"
    return GateResult("finite_outputs", float(passed), 1.0, passed, message, rule="all finite")


def input_normalization(target: Target, cfg: dict) -> GateResult:
    """The normalized eval inputs have per-channel mean near 0 and standard deviation near 1.

    Correctly normalized data has mean 0 and std 1 per channel; other data normalized with
    ImageNet statistics stays within about +-0.7 and 0.5-1.5. Passes when every channel has
    |mean| <= ``cfg["max_abs_mean"]`` and ``cfg["min_std"]`` <= std <= ``cfg["max_std"]``:
    the defaults (1.0, 0.25, 4.0) leave room for such shifts but catch mistakes of a factor
    255 (mean/std given in 0-255 scale, or inputs normalized twice: std ~0.005; inputs fed
    in 0-255: std ~50+) and images stored as 0-1 values (std ~0).
    """
    images = target.data.images
    mean, std = _normalized_statistics(target)
    low, high = int(images.min()), int(images.max())
    worst_mean = float(np.abs(mean).max())
    ok_mean = worst_mean <= cfg["max_abs_mean"]
    ok_std = bool(np.all(std >= cfg["min_std"]) and np.all(std <= cfg["max_std"]))
    passed = ok_mean and ok_std
    fmt = lambda v: "(" + ", ".join(f"{a:.3g}" for a in v) + ")"  # noqa: E731
    measured = (
        f"normalized input mean {fmt(mean)}, std {fmt(std)} per channel (bounds |mean| <= "
        f"{cfg['max_abs_mean']:g}, std {cfg['min_std']:g}..{cfg['max_std']:g}); pixel range {low}..{high}"
    )
    if passed:
        message = measured
    elif high <= 1:
        message = (
            f"{measured}: the images hold only 0/1 values; they were stored as 0-1 floats and cast to uint8 "
            "(scale them to 0-255)"
        )
    elif np.any(std < cfg["min_std"]):
        message = (
            f"{measured}: inputs are squashed to a tiny range; mean/std were given in 0-255 scale while "
            "segcheck divides by 255 first, or the images were normalized twice"
        )
    else:
        message = (
            f"{measured}: inputs are far from zero mean/unit variance; the model gets 0-255 values or the "
            "mean/std do not belong to this data"
        )
    return GateResult(
        "input_normalization",
        worst_mean,
        cfg["max_abs_mean"],
        passed,
        message,
        rule=f"value <= threshold, std {cfg['min_std']}..{cfg['max_std']}",
        details={"mean": mean.tolist(), "std": std.tolist(), "pixel_range": [low, high]},
    )


def _normalized_statistics(target: Target) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and (unbiased) std of the normalized eval images, in double: over the
    whole sample at once when it fits ``data.chunk``, else chunk by chunk, combined exactly in
    the counts and to rounding in the moments (Chan et al.'s parallel variance)."""
    data, model = target.data, target.model
    n_total, mean_total, m2_total = 0, None, None
    for part in data.batches(size=data.chunk):
        x = model.normalize(data.images[part]).double()
        if part.stop - part.start == len(data.images):  # one chunk: the statistics as they are
            return x.mean(dim=(0, 2, 3)).cpu().numpy(), x.std(dim=(0, 2, 3)).cpu().numpy()
        n = x.shape[0] * x.shape[2] * x.shape[3]
        mean = x.mean(dim=(0, 2, 3))
        m2 = ((x - mean.view(1, -1, 1, 1)) ** 2).sum(dim=(0, 2, 3))
        if mean_total is None:
            n_total, mean_total, m2_total = n, mean, m2
            continue
        delta = mean - mean_total
        m2_total = m2_total + m2 + delta**2 * n_total * n / (n_total + n)
        mean_total = mean_total + delta * n / (n_total + n)
        n_total += n
    return mean_total.cpu().numpy(), (m2_total / max(n_total - 1, 1)).sqrt().cpu().numpy()


@hookimpl
def segcheck_register_gates(registry):
    for audit in (head_matches_classes, output_size, finite_outputs):
        registry.add(audit.__name__, audit)
    registry.add("input_normalization", input_normalization, section="input_normalization")
