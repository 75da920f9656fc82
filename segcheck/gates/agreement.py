"""Agreement audits of the model under test: batch independence, deterministic evaluation,
CPU vs CUDA."""

from __future__ import annotations

import copy

import torch

from segcheck import SegcheckError
from segcheck.gates.result import GateResult
from segcheck.hookspecs import hookimpl
from segcheck.model import SegModel, all_finite
from segcheck.target import Target


def _logit_tolerance(cfg: dict, logits: torch.Tensor) -> float:
    return cfg["atol"] + cfg["rtol"] * float(logits.abs().max())


def batch_independence(target: Target, cfg: dict) -> GateResult:
    """In eval mode an image's logits alone equal its logits inside a batch.

    Compares the first ``cfg["images"]`` eval images as one batch and one by one; passes
    when max |difference| <= ``cfg["atol"]`` + ``cfg["rtol"]`` x max |logit|.
    """
    model = target.model
    images = target.data.images[: _batched(target, cfg)]
    x = model.normalize(images)
    with torch.no_grad():
        together = model.logits(x)
        diff, labels = 0.0, []
        for i in range(len(x)):  # one image's logits at a time beside the batch's
            alone = model.logits(x[i : i + 1])
            diff = max(diff, _max_difference(together[i : i + 1], alone))
            labels.append(model.labels(alone))
    return _same_logits(
        "batch_independence",
        model,
        together,
        (diff, torch.cat(labels)),
        cfg,
        f"between a batch of {len(x)} and single images",
        "an image's prediction depends on the other images in its batch; normalization uses "
        "batch statistics in eval mode (BatchNorm left in train mode, track_running_stats=False)",
    )


def deterministic_eval(target: Target, cfg: dict) -> GateResult:
    """Two evaluation passes over the same images give the same logits.

    Runs the first ``cfg["images"]`` eval images twice in eval mode; passes when
    max |difference| <= ``cfg["atol"]`` + ``cfg["rtol"]`` x max |logit|.
    """
    model = target.model
    images = target.data.images[: _batched(target, cfg)]
    x = model.normalize(images)
    with torch.no_grad():
        first = model.logits(x)
        second = model.logits(x)
    return _same_logits(
        "deterministic_eval",
        model,
        first,
        (_max_difference(first, second), model.labels(second)),
        cfg,
        "between two eval passes",
        "evaluation is random; dropout or other sampling stays active in eval mode "
        "(F.dropout without training=self.training), or non-deterministic kernels",
    )


def _batched(target: Target, cfg: dict) -> int:
    """The images these audits compare: ``cfg["images"]``, no more than one forward batch (at
    least two: a batch of one is its own single pass)."""
    return min(cfg["images"], max(2, target.data.batch_size))


def _max_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b|, or inf when ``a`` is not finite."""
    return float((a - b).abs().max()) if all_finite(a) else float("inf")


def _same_logits(name: str, model, a: torch.Tensor, b: tuple, cfg: dict, between: str, cause: str) -> GateResult:
    """Pass when the max |a - b| of ``b`` = (that difference, b's labels) is <= the tolerance of
    ``cfg``; the message names ``cause`` on failure."""
    diff, b_labels = b
    limit = _logit_tolerance(cfg, a)
    changed = float((model.labels(a) != b_labels).float().mean())
    passed = diff <= limit
    measured = f"max |logit difference| {between} {diff:.3g} (max {limit:.3g}), {changed:.2%} of pixels change class"
    message = measured if passed else f"{measured}: {cause}"
    return GateResult(
        name,
        diff,
        limit,
        passed,
        message,
        rule="value <= threshold",
        details={"images": len(a), "changed_pixels": changed},
    )


def cpu_cuda_agreement(target: Target, cfg: dict, device: str = "cuda") -> GateResult:
    """The model predicts the same classes on the CPU and on ``device`` (CUDA by default).

    Copies of the module under test run the first ``cfg["images"]`` eval images on both;
    passes when the fraction of pixels with the same class is >= ``cfg["min_agreement"]``.
    The max |logit difference| is reported (TF32/cuDNN give small differences by design).
    Raises ``SegcheckError`` when ``device`` is CUDA and CUDA is not available.
    """
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SegcheckError("cpu_cuda_agreement needs CUDA, which is not available here (run it on a GPU machine)")
    base = target.model
    images = target.data.images[: _batched(target, cfg)]
    outputs = {}
    for where in ("cpu", device):
        model = SegModel(
            copy.deepcopy(base.module),
            mean=base.mean.flatten().tolist(),
            std=base.std.flatten().tolist(),
            binary=base.binary,
            divisible_by=base.divisible_by,
            device=where,
            threshold=base.threshold,
        )
        with torch.no_grad():
            outputs[where] = model.logits(model.normalize(images)).float().cpu()
    cpu, other = outputs["cpu"], outputs[device]
    agreement = float((base.labels(cpu) == base.labels(other)).float().mean())
    diff = float((cpu - other).abs().max())
    passed = agreement >= cfg["min_agreement"]
    measured = (
        f"class agreement cpu vs {device} {agreement:.4f} (min {cfg['min_agreement']:g}), "
        f"max |logit difference| {diff:.3g}"
    )
    if passed:
        message = measured
    else:
        message = (
            f"{measured}: the model computes something else on {device}; device-dependent code paths, "
            "half precision overflow, or uninitialized memory in a custom kernel"
        )
    return GateResult(
        "cpu_cuda_agreement",
        agreement,
        cfg["min_agreement"],
        passed,
        message,
        rule="value >= threshold",
        details={"images": len(images), "max_logit_difference": diff, "device": device},
    )


@hookimpl
def segcheck_register_gates(registry):
    # a batch of one image is its own single pass: batch independence needs two
    registry.add("batch_independence", batch_independence, section="batch_independence", needs=("finite_logits",),
                 min_images=2)  # fmt: skip
    registry.add("deterministic_eval", deterministic_eval, section="deterministic_eval", needs=("finite_logits",))
    needs = ("cuda", "finite_logits")
    registry.add("cpu_cuda_agreement", cpu_cuda_agreement, section="cpu_cuda_agreement", needs=needs, markers=("gpu",))
