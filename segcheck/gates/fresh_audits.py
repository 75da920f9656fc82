"""Audits of a fresh model from the builder: the loss at initialization, gradient coverage."""

from __future__ import annotations

import math

import numpy as np
import torch

from segcheck.gates.result import GateResult
from segcheck.hookspecs import hookimpl
from segcheck.model import seeded
from segcheck.target import Target
from segcheck.train.loop import criterion
from segcheck.train.recipes import get as get_recipe
from segcheck.wording import listed

#: a module output head -> the recipe ingredient that trains it, and a weight (any weight > 0:
#: gradient_coverage asks whether the head gets a gradient, not how much)
HEAD_LOSSES = {"recon": ("recon", 0.5), "embed": ("contrastive", 0.1)}


def _parts(target: Target, count: int, size: int) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """The first ``count`` eval images and masks in parts of ``size`` images, each with its
    share of their counted pixels (one part: share 1, the whole batch as it is)."""
    data = target.data
    parts = data.batches(count, size)
    if len(parts) == 1:
        return [(data.images[parts[0]], data.masks[parts[0]], 1.0)]
    weights = [int(data.spec.counted(data.masks[p]).sum()) for p in parts]
    total = max(sum(weights), 1)
    return [(data.images[p], data.masks[p], w / total) for p, w in zip(parts, weights)]


def _training_loss(target: Target, model, images: np.ndarray, masks: np.ndarray, seed: int, heads: bool = False):
    """The naive recipe's training loss of ``model.module`` (whatever mode it is in) on one
    batch, its random draws seeded with ``seed``; with ``heads``, plus the reconstruction
    loss when the module returns a ``"recon"`` head and the pixel-contrastive loss when it
    returns an ``"embed"`` head (the recipe that built them trains them)."""
    spec = target.data.spec
    x, y = model.pad(model.normalize(images), torch.from_numpy(masks).to(model.device), spec.ignore_index)
    with seeded(seed, model.device):  # dropout / drop-path: the same draw whichever gates ran before
        output = model.module(x)
        recipe = get_recipe("naive")
        if heads and isinstance(output, dict):
            present = {ingredient: w for head, (ingredient, w) in HEAD_LOSSES.items() if output.get(head) is not None}
            recipe = recipe.with_(**present)
        return criterion([output], x, y, recipe, spec, model.binary)


def loss_at_init(target: Target, cfg: dict) -> GateResult:
    """The loss of a fresh model from the builder is about ln(C) (ln 2 for binary models).

    A randomly initialized head gives near-uniform class probabilities, so the per-pixel
    cross-entropy starts near ln(C); logits with standard deviation s add about s^2/2.
    Passes when |loss - ln C| <= ``cfg["tolerance"]`` x ln C: the default 0.5 admits logit
    spreads up to about 1.4 (ordinary initializations give 0.3-1) and fails on inits whose
    logits are an order of magnitude too large (unnormalized 0-255 inputs, a head scaled
    up, no normalization layers) or on a loss far below chance before training (pretrained
    head weights loaded, labels leaking into the input). The module runs in train mode on
    the first ``cfg["images"]`` eval images, initialized under ``cfg["seed"]``.
    """
    segmodel = target.model.fresh(cfg["seed"])
    module = segmodel.module
    module.train()
    parts = _parts(target, cfg["images"], target.data.batch_size)
    with torch.no_grad():  # the mean over all counted pixels: each part's mean weighted by its share
        losses = [float(_training_loss(target, segmodel, images, masks, cfg["seed"])) for images, masks, _ in parts]
    loss = losses[0] if len(parts) == 1 else sum(v * share for v, (_, _, share) in zip(losses, parts))
    module.eval()
    images = [image for part in parts for image in part[0]]
    classes = 2 if segmodel.binary else target.data.spec.num_classes
    expected = math.log(classes)
    deviation = abs(loss - expected) if math.isfinite(loss) else float("inf")
    limit = cfg["tolerance"] * expected
    passed = deviation <= limit
    measured = (
        f"loss at initialization {loss:.3f} vs ln({classes}) = {expected:.3f}: |difference| {deviation:.3f} "
        f"(max {limit:.3f} = {cfg['tolerance']:g} x ln {classes})"
    )
    if passed:
        message = measured
    elif not math.isfinite(loss) or loss > expected:
        message = (
            f"{measured}: the fresh model is confidently wrong before training; its logits are far too large "
            "(inputs not normalized, a head initialized with large weights, missing normalization layers)"
        )
    else:
        message = (
            f"{measured}: the fresh model already beats chance before training; the builder loads trained head "
            "weights, or the labels leak into the input"
        )
    return GateResult(
        "loss_at_init",
        deviation,
        limit,
        passed,
        message,
        rule="value <= threshold",
        details={"loss": loss, "expected": expected, "classes": classes, "images": len(images)},
    )


def gradient_coverage(target: Target, cfg: dict) -> GateResult:
    """Every trainable parameter of a fresh model receives a non-zero gradient from one batch.

    The model is built fresh (with ``aux_loss=True`` when the model's meta has an
    ``aux_prefix``, so an auxiliary head exists), run in train mode on the first
    ``cfg["images"]`` eval images, and the training loss (``train.loop.criterion``: CE +
    0.5 x aux CE, + the reconstruction MSE when the module has a ``"recon"`` head, + the
    pixel-contrastive loss when it has an ``"embed"`` head) is
    differentiated. Parameters whose gradient is missing or all zero are named, except those
    under a prefix of the model's ``frozen`` metadata or of ``cfg["allow"]`` (meant to get
    none: a frozen backbone, encoder stages a shallow depth leaves unused), which are counted.
    """
    kwargs = {"aux_loss": True} if target.model.meta.get("aux_prefix") else {}
    segmodel = target.model.fresh(cfg["seed"], **kwargs)
    module = segmodel.module
    module.train()
    named = [(name, p) for name, p in module.named_parameters() if p.requires_grad]
    grads = [None] * len(named)
    for images, masks, share in _parts(target, cfg["images"], target.data.backward_batch):
        loss = _training_loss(target, segmodel, images, masks, cfg["seed"], heads=True)
        if not loss.requires_grad:
            continue
        found = torch.autograd.grad(loss, [p for _, p in named], allow_unused=True)
        grads = [g if f is None else (f * share if g is None else g + f * share) for g, f in zip(grads, found)]
        del loss, found  # one part's activations at a time
    module.eval()
    without = [name for (name, _), g in zip(named, grads) if g is None or not bool(torch.any(g != 0))]
    allowed_prefixes = tuple(target.model.meta.get("frozen", ())) + tuple(cfg["allow"])
    allowed = [name for name in without if name.startswith(allowed_prefixes)] if allowed_prefixes else []
    dead = [name for name in without if name not in allowed]
    passed = not dead
    measured = f"{len(named) - len(without)} of {len(named)} trainable parameter tensors receive a gradient"
    if allowed:
        measured += (
            f"; {len(allowed)} without one are meant to be (model metadata frozen / gradient_coverage.allow: "
            f"{', '.join(allowed_prefixes)})"
        )
    if passed:
        message = measured
    else:
        shown = listed(dead)
        message = (
            f"{measured}; none reaches {shown}: these weights never train; a head or branch that the forward "
            "pass or the loss does not use (an auxiliary head left out of the loss), or a detached graph; "
            "if that is by design, list their prefixes in gradient_coverage.allow"
        )
    return GateResult(
        "gradient_coverage",
        float(len(dead)),
        0.0,
        passed,
        message,
        rule="value <= threshold",
        details={
            "without_gradient": dead,
            "allowed_without_gradient": allowed,
            "trainable": len(named),
            "builder_kwargs": kwargs,
        },
    )


@hookimpl
def segcheck_register_gates(registry):
    for audit in (loss_at_init, gradient_coverage):
        registry.add(audit.__name__, audit, section=audit.__name__, needs=("labels", "fresh_model"))
