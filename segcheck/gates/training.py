"""input_baseline, a gate that trains: what do the labels alone give, without the image?"""

from __future__ import annotations

import numpy as np
import torch

from segcheck.gates import diagnosis
from segcheck.gates.result import GateResult
from segcheck.hookspecs import hookimpl
from segcheck.target import Target
from segcheck.train.loop import fit


def _balanced_weights(masks: np.ndarray, spec, power: float) -> torch.Tensor:
    """Per-class weights ~ frequency^-power over counted pixels (absent classes count 1), mean 1
    (power 0: uniform, 0.5: inverse square root, 1: inverse frequency)."""
    labelled = masks[spec.counted(masks)]
    counts = np.bincount(labelled, minlength=spec.num_classes).clip(1).astype(np.float64)
    weights = (counts / counts.sum()) ** -power
    return torch.tensor(weights / weights.mean(), dtype=torch.float32)


def input_baseline(target: Target, cfg: dict) -> GateResult:
    """Train the same architecture on noise inputs with the real training labels for
    ``cfg["steps"]`` steps; the real model's mIoU must beat this input-independent baseline
    (scored on fresh noise against the eval labels) by ``cfg["margin"]``."""
    spec = target.data.spec
    train_masks = target.data.sample_masks("train", cfg["samples"], cfg["seed"])  # the images are not needed
    model = target.model.fresh(cfg["seed"])
    rng = np.random.default_rng(cfg["seed"])
    gen = torch.Generator().manual_seed(cfg["seed"])
    shape = (cfg["batch_size"], 3, *train_masks.shape[1:3])

    def batch(step: int):
        pick = rng.choice(len(train_masks), size=cfg["batch_size"], replace=len(train_masks) < cfg["batch_size"])
        x = torch.randn(shape, generator=gen).to(model.device)
        return x, torch.from_numpy(train_masks[pick]).to(model.device)

    fit(model, batch, cfg["steps"], cfg["lr"], spec, seed=cfg["seed"])
    data = target.data
    noise = (torch.randn((len(data.images[part]), *shape[1:]), generator=gen) for part in data.batches())
    baseline = data.score(np.concatenate([model.predict(x, data.batch_size)[0] for x in noise]))
    real = target.predictions.miou
    threshold = baseline + cfg["margin"]
    passed = real >= threshold
    message = (
        f"real mIoU {real:.3f} vs input-independent baseline {baseline:.3f} (+{cfg['margin']:.2f} = {threshold:.3f})"
    )
    if not passed:
        message += ": " + (
            diagnosis.state(target)
            or "a model that never sees the image does about as well; the labels' layout explains the score, "
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
    needs += ("finite_logits",)  # it compares with the model under test's predictions
    registry.add("input_baseline", input_baseline, section="input_baseline", needs=needs, markers=("train",))
