"""Gates that train: overfit_tiny (can the loop learn at all?) and input_baseline (what do the
labels alone give?)."""

from __future__ import annotations

import numpy as np
import torch

from segcheck.gates.result import GateResult
from segcheck.hookspecs import hookimpl
from segcheck.target import Target
from segcheck.train.loop import fit


def _fresh(target: Target, seed: int):
    """A fresh model seeded by ``seed``, with the global RNG seeded too: training is reproducible."""
    torch.manual_seed(seed)
    return target.model.fresh(seed)


def _balanced_weights(masks: np.ndarray, spec) -> torch.Tensor:
    """Per-class weights ~ frequency^-1/2 over counted pixels (absent classes count 1), mean 1."""
    labelled = masks[spec.counted(masks)]
    counts = np.bincount(labelled, minlength=spec.num_classes).clip(1).astype(np.float64)
    weights = (counts / counts.sum()) ** -0.5
    return torch.tensor(weights / weights.mean(), dtype=torch.float32)


def overfit_tiny(target: Target, cfg: dict) -> GateResult:
    """A fresh model from the builder, trained on ``cfg["samples"]`` fixed training images for
    at most ``cfg["epochs"]`` epochs (mini-batches of ``cfg["batch_size"]``), must reach
    mIoU >= ``cfg["min_miou"]`` on them; evaluated after every epoch, stopping when it does.

    The cross-entropy is weighted by inverse square-root class frequency over the samples, so
    that a thin, rare class (poles: <1% of pixels) gets learned within the budget: the gate
    asks whether the model and loop can memorize every class, not how fast CE finds rare ones.
    """
    images, masks = target.data.sample("train", cfg["samples"], cfg["seed"])
    spec = target.data.spec
    model = _fresh(target, cfg["seed"])
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
        return history[-1] >= cfg["min_miou"]

    steps = fit(
        model,
        batch,
        cfg["epochs"] * per_epoch,
        cfg["lr"],
        spec,
        stop=reached,
        class_weights=_balanced_weights(masks, spec).to(model.device),
    )
    epochs = len(history)
    value = max(history)
    passed = value >= cfg["min_miou"]
    message = f"mIoU {value:.3f} on {len(images)} training images after {epochs} epochs ({steps} steps)"
    if passed:
        message += f" >= {cfg['min_miou']:.2f}: the training loop can learn"
    else:
        message += (
            f" < {cfg['min_miou']:.2f} (budget {cfg['epochs']} epochs): the model/loss/optimizer cannot even "
            "memorize ten samples; check the loss target format, the learning rate and that the head is trained"
        )
    return GateResult(
        "overfit_tiny",
        value,
        cfg["min_miou"],
        passed,
        message,
        rule="value >= threshold",
        details={"epochs": epochs, "steps": steps, "history": history},
    )


def input_baseline(target: Target, cfg: dict) -> GateResult:
    """Train the same architecture on noise inputs with the real training labels for
    ``cfg["steps"]`` steps; the real model's mIoU must beat this input-independent baseline
    (scored on fresh noise against the eval labels) by ``cfg["margin"]``."""
    spec = target.data.spec
    train_images, train_masks = target.data.sample("train", cfg["samples"], cfg["seed"])
    model = _fresh(target, cfg["seed"])
    rng = np.random.default_rng(cfg["seed"])
    gen = torch.Generator().manual_seed(cfg["seed"])
    shape = (cfg["batch_size"], 3, *train_images.shape[1:3])

    def batch(step: int):
        pick = rng.choice(len(train_masks), size=cfg["batch_size"], replace=len(train_masks) < cfg["batch_size"])
        x = torch.randn(shape, generator=gen).to(model.device)
        return x, torch.from_numpy(train_masks[pick]).to(model.device)

    fit(model, batch, cfg["steps"], cfg["lr"], spec)
    masks = target.data.masks
    noise = torch.randn((len(masks), *shape[1:]), generator=gen)
    baseline = target.data.score(model.predict(noise, target.data.batch_size)[0])
    real = target.predictions.miou
    threshold = baseline + cfg["margin"]
    passed = real >= threshold
    message = (
        f"real mIoU {real:.3f} vs input-independent baseline {baseline:.3f} (+{cfg['margin']:.2f} = {threshold:.3f})"
    )
    if not passed:
        message += (
            ": a model that never sees the image does about as well; the labels' layout explains the score, "
            "train with positional jitter and check the model reads its input"
        )
    return GateResult(
        "input_baseline",
        real,
        threshold,
        passed,
        message,
        rule="value >= threshold",
        details={"baseline_miou": baseline, "real_miou": real, "steps": cfg["steps"]},
    )


@hookimpl
def segcheck_register_gates(registry):
    needs = ("labels", "train_split", "fresh_model")
    registry.add("overfit_tiny", overfit_tiny, section="overfit_tiny", needs=needs, markers=("train",))
    needs += ("finite_logits",)  # it compares with the model under test's predictions
    registry.add("input_baseline", input_baseline, section="input_baseline", needs=needs, markers=("train",))
