"""overfit_tiny: can the model, loss and loop memorize ten samples at all? A failure says which
classes stay below the bar, and whether their objects are smaller than the output stride."""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy import ndimage

from segcheck import gate_figures
from segcheck.gates.result import GateResult
from segcheck.gates.training import _balanced_weights
from segcheck.hookspecs import hookimpl
from segcheck.metrics import per_class_iou
from segcheck.target import Target
from segcheck.train.loop import fit


def overfit_tiny(target: Target, cfg: dict) -> GateResult:
    """A fresh model from the builder, trained on ``cfg["samples"]`` fixed training images for
    at most ``cfg["epochs"]`` epochs (mini-batches of ``cfg["batch_size"]``), must reach
    mIoU >= ``cfg["min_miou"]`` on them; evaluated after every epoch, stopping once it reaches
    ``cfg["stop_miou"]`` (above ``min_miou``: a pass then has room, whatever the thread count).
    The message gives the per-class IoU of classes below ``min_miou`` and, for each, whether its
    smallest object is narrower than the model's output stride (then the head cannot place it).

    The cross-entropy is weighted per class by frequency^-``cfg["class_weight_power"]`` over the
    samples (0.5: inverse square root), so that a thin, rare class (poles: <1% of pixels) gets
    learned within the budget: the gate asks whether the model and loop can memorize every
    class, not how fast CE finds rare ones.
    """
    images, masks = target.data.sample("train", cfg["samples"], cfg["seed"])
    spec = target.data.spec
    model = target.model.fresh(cfg["seed"])
    x = model.normalize(images)
    y = torch.from_numpy(masks).to(model.device)
    bs = cfg["batch_size"]
    per_epoch = -(-len(images) // bs)
    history: list[float] = []

    def batch(step: int):
        start = (step - 1) % per_epoch * bs
        return x[start : start + bs], y[start : start + bs]

    def reached(step: int) -> bool:
        if step % per_epoch:
            return False
        history.append(target.data.score(model.predict(x)[0], masks))
        return history[-1] >= max(cfg["stop_miou"], cfg["min_miou"])

    steps = fit(
        model,
        batch,
        cfg["epochs"] * per_epoch,
        cfg["lr"],
        spec,
        stop=reached,
        class_weights=_balanced_weights(masks, spec, cfg["class_weight_power"]).to(model.device),
        seed=cfg["seed"],
    )
    epochs = len(history)
    value = history[-1]  # the final weights: what the class report below describes too
    passed = value >= cfg["min_miou"]
    per_class, note = class_report(model, x, masks, spec, cfg["min_miou"])
    message = f"mIoU {value:.3f} on {len(images)} training images after {epochs} epochs ({steps} steps)"
    if passed:
        message += f" >= {cfg['min_miou']:.2f}: the training loop can learn"
    else:
        message += (
            f" < {cfg['min_miou']:.2f} (budget {cfg['epochs']} epochs): the model/loss/optimizer cannot even "
            "memorize ten samples; check the loss target format, the learning rate and that the head is trained"
        )
    message += note
    return GateResult(
        "overfit_tiny",
        value,
        cfg["min_miou"],
        passed,
        message,
        rule="value >= threshold",
        details={"epochs": epochs, "steps": steps, "history": history, "per_class_iou": per_class},
    )


def output_stride(model, x: torch.Tensor) -> float:
    """Input width over the width of the module's own (raw) output: how coarse its head is."""
    with torch.no_grad():
        raw = model.raw(x[:1])
    return model.pad(x[:1]).shape[-1] / raw.shape[-1]


def smallest_extent(present: np.ndarray) -> int:
    """The smallest object's narrower side in pixels, over the 8-connected components of ``present`` (N, H, W)."""
    sides = []
    for mask in present:
        labels, _ = ndimage.label(mask, structure=np.ones((3, 3)))
        sides += [min(s[0].stop - s[0].start, s[1].stop - s[1].start) for s in ndimage.find_objects(labels)]
    return min(sides) if sides else 0


def class_report(model, x: torch.Tensor, masks: np.ndarray, spec, threshold: float) -> tuple[dict, str]:
    """Per-class IoU on the samples, and a note naming each class below ``threshold`` with its
    smallest object against the output stride."""
    ious = per_class_iou(model.predict(x)[0], spec.closed_set(masks), spec.num_classes, spec.ignore_index)
    per_class = {name: float(v) for name, v in zip(spec.classes, ious) if math.isfinite(v)}
    low = [c for c, v in enumerate(ious) if math.isfinite(v) and v < threshold]
    if not low:
        return per_class, ""
    stride = output_stride(model, x)
    parts = []
    for c in low:
        side = smallest_extent(masks == c)
        where = "below" if side < stride else "above"
        parts.append(f"{spec.classes[c]} {ious[c]:.3f} (smallest object {side} px across, {where} the output stride "
                     f"{stride:g})")  # fmt: skip
    return per_class, f"; classes below {threshold:.2f}: " + ", ".join(parts)


@hookimpl
def segcheck_register_gates(registry):
    needs = ("labels", "train_split", "fresh_model")
    registry.add(
        "overfit_tiny",
        overfit_tiny,
        section="overfit_tiny",
        needs=needs,
        markers=("train",),
        figures=gate_figures.overfit_tiny,
    )
