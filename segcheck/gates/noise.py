"""noise_input: a model that scores on noise does not read its images."""

from __future__ import annotations

import numpy as np

from segcheck import gate_figures
from segcheck.evaluate import constant_class_floor
from segcheck.gates.result import GateResult
from segcheck.hookspecs import hookimpl
from segcheck.target import Target

NOISE_KINDS = ("gaussian", "uniform", "matched", "gray")


def noise_pixels(
    kind: str, shape: tuple[int, ...], mean, std, rng: np.random.Generator, data_mean=None, data_std=None
) -> np.ndarray:
    """Noise images (N, H, W, 3) in pixel scale 0..255 (float32).

    ``gaussian`` is N(0, 1) in the model's normalized space (``mean``/``std``, mapped back to
    pixels); ``uniform`` is U(0, 255) per pixel; ``matched`` has the eval data's own per-channel
    mean and std (``data_mean``/``data_std``, 0-1 scale; the model's when not given); ``gray``
    is the constant mean colour of the model's normalization.
    """
    mean, std = np.asarray(mean, np.float32) * 255, np.asarray(std, np.float32) * 255
    if kind == "gaussian":
        return rng.standard_normal(shape, dtype=np.float32) * std + mean
    if kind == "uniform":
        return rng.uniform(0, 255, size=shape).astype(np.float32)
    if kind == "matched":
        m = mean if data_mean is None else np.asarray(data_mean, np.float32) * 255
        s = std if data_std is None else np.asarray(data_std, np.float32) * 255
        return np.clip(rng.standard_normal(shape, dtype=np.float32) * s + m, 0, 255)
    if kind == "gray":
        return np.broadcast_to(mean, shape).astype(np.float32)
    raise ValueError(f"unknown noise kind {kind!r}; known: {NOISE_KINDS}")


def data_statistics(images: np.ndarray) -> dict[str, np.ndarray]:
    """The eval images' own per-channel mean and std (0-1 scale), as ``matched`` noise takes them."""
    pixels = images.reshape(-1, 3) / 255.0
    return {"data_mean": pixels.mean(0), "data_std": pixels.std(0)}


def noise_images(target: Target, seed: int):
    """``(kind, noise images)`` for each of :data:`NOISE_KINDS`, the shape of the eval images,
    drawn in this order from one generator seeded with ``seed`` (what noise_input scores)."""
    images, model = target.data.images, target.model
    rng = np.random.default_rng(seed)
    stats = data_statistics(images)
    normalization = model.mean.cpu().numpy().ravel(), model.std.cpu().numpy().ravel()
    for kind in NOISE_KINDS:
        yield kind, noise_pixels(kind, images.shape, *normalization, rng, **stats)


def noise_input(target: Target, cfg: dict) -> GateResult:
    """Feed each noise kind instead of the eval images and score it against the real labels.

    Passes when the worst kind's mIoU is < ``cfg["max_miou"]`` and < ``cfg["max_ratio"]``
    x the real mIoU. A failure is put down to the threshold, not the model, only when the
    constant-class floor reaches ``max_miou`` and the ratio rule holds (the model scores far
    better on images than on noise).
    """
    data, model = target.data, target.model
    masks, spec = data.masks, data.spec
    real = target.predictions.miou
    stats = data_statistics(data.images)
    per_kind = {}
    for kind, noise in noise_images(target, cfg["seed"]):
        per_kind[kind] = data.score(model.predict_pixels(noise, data.batch_size)[0])
    worst_kind = max(per_kind, key=per_kind.get)
    worst = per_kind[worst_kind]
    threshold = min(cfg["max_miou"], cfg["max_ratio"] * real)
    floor, floor_class = constant_class_floor(masks, spec)
    passed = bool(worst < threshold)
    details = {
        "real_miou": real,
        "noise_miou": per_kind,
        "worst_kind": worst_kind,
        "constant_class_floor": floor,
        "floor_class": floor_class,
        "data_mean": stats["data_mean"].tolist(),
        "data_std": stats["data_std"].tolist(),
    }
    measured = f"noise mIoU {worst:.3f} ({worst_kind}) vs real {real:.3f}"
    if passed:
        message = (
            f"{measured} < {threshold:.3f}: predictions depend on image content (constant-class floor {floor:.3f})"
        )
    elif floor >= cfg["max_miou"] and worst < cfg["max_ratio"] * real:  # only the unreachable absolute limit failed
        message = (
            f"{measured} >= {threshold:.3f}, but predicting {floor_class!r} everywhere already scores "
            f"{floor:.3f} on this data (constant-class floor), so the threshold cannot separate content from "
            f"prior here; set noise_input.max_miou above {worst:.2f} in segcheck.yaml"
        )
    elif worst >= cfg["max_miou"]:
        message = (
            f"{measured} >= {cfg['max_miou']:.2f}: predictions follow pixel position, not content "
            f"(constant-class floor {floor:.3f})"
        )
    else:
        message = (
            f"{measured}: noise reaches {worst / real if real else float('inf'):.0%} of the real mIoU "
            f"(limit {cfg['max_ratio']:.0%}): the model scores without reading the image"
        )
    return GateResult("noise_input", worst, threshold, passed, message, rule="value < threshold", details=details)


@hookimpl
def segcheck_register_gates(registry):
    registry.add(
        "noise_input",
        noise_input,
        section="noise_input",
        needs=("labels", "finite_logits"),
        figures=gate_figures.noise_input,
    )
