"""content_sensitivity: the prediction must depend on the image's content, three ways.

- ``derangement_gap``: predictions scored against *other* images' labels must be clearly
  worse than against their own;
- ``shift_equivariance``: shifting the image shifts the prediction (vertical and horizontal);
- ``input_gradient``: the loss has a non-zero gradient with respect to the input pixels.

All three read their settings from the ``content_sensitivity`` config section.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from segcheck import SegcheckError, perturb
from segcheck.gates import diagnosis
from segcheck.gates.registered import NotApplicable
from segcheck.gates.result import GateResult
from segcheck.hookspecs import hookimpl
from segcheck.loss import pixel_loss
from segcheck.metrics import ConfusionMatrix, miou
from segcheck.metrics import agreement as pixel_agreement
from segcheck.target import Target

DIRECTIONS = {"down": (1, 1), "up": (1, -1), "right": (2, 1), "left": (2, -1)}  # name -> (axis of NHW(C), sign)


def derangement(n: int, seed: int) -> np.ndarray:
    """A seeded permutation of ``range(n)`` with no fixed point (Sattolo's algorithm: one n-cycle)."""
    if n < 2:
        raise SegcheckError(f"a derangement needs at least 2 eval images, got {n}; raise eval.size")
    rng = np.random.default_rng(seed)
    perm = np.arange(n)
    for i in range(n - 1, 0, -1):
        j = int(rng.integers(0, i))
        perm[i], perm[j] = perm[j], perm[i]
    return perm


def derangement_gap(target: Target, cfg: dict) -> GateResult:
    """mIoU against each image's own labels minus mIoU against another image's labels.

    The other image is fixed by a seeded derangement (``cfg["seed"]``). Passes when the gap
    is >= ``cfg["min_gap"]``.
    """
    data = target.data
    pred = target.predictions.labels
    perm = derangement(len(data.masks), cfg["seed"])
    matched = target.predictions.miou
    matrix = ConfusionMatrix(data.spec.num_classes, data.spec.ignore_index)
    for part in data.batches():  # masks[perm] a batch at a time: no whole-set copy
        data.confusion(pred[part], data.masks[perm[part]], matrix)
    deranged = miou(matrix.matrix)
    gap = matched - deranged
    passed = bool(gap >= cfg["min_gap"])
    measured = f"mIoU against own labels {matched:.3f}, against other images' labels {deranged:.3f}: gap {gap:.3f}"
    if passed:
        message = f"{measured} >= {cfg['min_gap']:.2f}"
    else:
        cause = diagnosis.state(target) or "so they barely depend on the image (positional prior or collapsed output)"
        message = (
            f"{measured} < {cfg['min_gap']:.2f}: predictions fit any image's labels about as well as their own, {cause}"
        )
    return GateResult(
        "derangement_gap",
        gap,
        cfg["min_gap"],
        passed,
        message,
        rule="value >= threshold",
        details={"matched_miou": matched, "deranged_miou": deranged, "permutation": perm.tolist()},
    )


def shift_pixels(requested: int, divisible_by: int) -> int:
    """``requested`` rounded up to a multiple of the model's ``divisible_by`` (pooling grid kept aligned)."""
    return max(1, math.ceil(requested / divisible_by)) * divisible_by


def shift_equivariance(target: Target, cfg: dict) -> GateResult:
    """Agreement of pred(shift(x)) with shift(pred(x)) on the region the shift keeps.

    Each eval image is translated by ``cfg["shift_px"]`` px (rounded up to a multiple of the
    model's ``divisible_by``) down, up, right and left, without wrap-around (the uncovered
    edge repeats the border and is left out of the comparison). Passes when the worst
    direction's pixel agreement is >= ``cfg["min_agreement"]``.
    """
    images = target.data.images
    model = target.model
    clean = target.predictions.labels
    px = shift_pixels(cfg["shift_px"], model.divisible_by)
    if px >= min(images.shape[1:3]):
        raise SegcheckError(
            f"shift of {px} px does not fit eval images of size {images.shape[1:3]}; lower content_sensitivity.shift_px"
        )
    batch = target.data.batch_size
    agreement = {}
    for name, (axis, sign) in DIRECTIONS.items():
        batches = (perturb.shift(images[part], sign * px, axis) for part in target.data.batches())
        pred, _ = model.predict_batches(batches, len(images))
        shifted, original = perturb.valid_slices(3, sign * px, axis)
        agreement[name] = pixel_agreement(pred[shifted], clean[original], batch)
    worst = min(agreement, key=agreement.get)
    value = agreement[worst]
    passed = bool(value >= cfg["min_agreement"])
    listed = ", ".join(f"{k} {v:.3f}" for k, v in agreement.items())
    measured = f"agreement of pred(shift(x)) with shift(pred(x)), shift {px} px: {listed}"
    if passed:
        message = f"{measured}; worst {value:.3f} >= {cfg['min_agreement']:.2f}"
    else:
        cause = diagnosis.state(target) or (
            "predictions stay where classes usually are instead of moving with the content (positional shortcut; "
            "train with flips/rolls/crops)"
        )
        message = f"{measured}; worst ({worst}) {value:.3f} < {cfg['min_agreement']:.2f}: {cause}"
    return GateResult(
        "shift_equivariance",
        value,
        cfg["min_agreement"],
        passed,
        message,
        rule="value >= threshold",
        details={"shift_px": px, "agreement": agreement, "worst_direction": worst},
    )


def input_gradient(target: Target, cfg: dict) -> GateResult:
    """L2 norm of d(loss)/d(input) over the first ``cfg["grad_images"]`` eval images.

    The loss is the mean per-pixel CE (BCE for binary models) against the eval masks, with
    the model in eval mode; parameters' ``.grad`` are not touched. A loss that does not
    depend on the input through autograd (input ignored, detached, or processed outside
    torch) has norm 0. Passes when the norm is > ``cfg["min_grad_norm"]``. A norm of 0 on a
    model whose metadata declares ``frozen`` parameters (a backbone under ``no_grad`` by
    design) is a SKIP that says so.
    """
    data, model = target.data, target.model
    count = min(cfg["grad_images"], len(data.images))
    loss, norm, connected = _input_gradient(data, model, count)
    finite = math.isfinite(norm)
    passed = finite and norm > cfg["min_grad_norm"]
    measured = f"input-gradient L2 norm of the loss {norm:.3g} over {count} images"
    if passed:
        message = f"{measured} > {cfg['min_grad_norm']:.0e}"
    elif not finite:
        message = f"{measured}: the gradient is not finite; check for NaN/inf in the model's forward pass"
    elif model.meta.get("frozen"):
        raise NotApplicable(
            f"{measured}: the model declares frozen parameters ({', '.join(model.meta['frozen'])}), so its "
            "backbone may run without gradient by design and no gradient reaches the pixels; noise_input, "
            "derangement_gap and shift_equivariance judge whether it reads its input"
        )
    else:
        message = (
            f"{measured} <= {cfg['min_grad_norm']:.0e}: the loss does not depend on the input pixels; the "
            "model ignores its input, or the forward pass cuts the graph (.detach(), torch.no_grad, "
            "numpy preprocessing)"
        )
    return GateResult(
        "input_gradient",
        norm,
        cfg["min_grad_norm"],
        passed,
        message,
        rule="value > threshold",
        details={"images": count, "loss": loss, "connected": connected},
    )


def _input_gradient(data, model, count: int) -> tuple[float, float, bool]:
    """The mean loss over the first ``count`` eval images, the L2 norm of its gradient with
    respect to their pixels, and whether any gradient reached them. One backward pass when
    they fit ``data.backward_batch``; else one per part, each part's gradient scaled by its
    share of the counted pixels (the mean's gradient is the sum of the parts')."""
    parts = data.batches(count, data.backward_batch)
    weights = [int(data.spec.counted(data.masks[p]).sum()) for p in parts] if len(parts) > 1 else [1]
    total, squares, loss_sum, connected = max(sum(weights), 1), 0.0, 0.0, False
    for part, weight in zip(parts, weights):
        x = model.normalize(data.images[part]).requires_grad_(True)
        loss = pixel_loss(model.logits(x), torch.from_numpy(data.masks[part]), data.spec, model.binary)
        grad = torch.autograd.grad(loss, x, allow_unused=True)[0] if loss.requires_grad else None
        share = weight / total
        if len(parts) == 1:  # the whole pass at once: the gradient's own norm
            return float(loss.detach()), float(grad.norm()) if grad is not None else 0.0, grad is not None
        loss_sum += float(loss.detach()) * share
        if grad is not None:
            connected = True
            squares += float((grad * share).norm()) ** 2
        del x, loss, grad  # one part's activations at a time
    return loss_sum, math.sqrt(squares), connected


@hookimpl
def segcheck_register_gates(registry):
    for gate in (derangement_gap, shift_equivariance, input_gradient):
        varied = ("varied_prediction",) if gate is shift_equivariance else ()  # an agreement of predictions
        least = 2 if gate is derangement_gap else 1  # a derangement moves every image's labels to another
        registry.add(
            gate.__name__,
            gate,
            section="content_sensitivity",
            needs=("labels", "finite_logits", *varied),
            min_images=least,
        )
