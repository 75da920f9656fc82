"""Deterministic image corruptions and shifts, for the stability and equivariance gates.

Every corruption is a pure function ``corrupt(images, severity, seed) -> images``: ``images``
is uint8 (N, H, W, 3), the result is a new uint8 array of the same shape, ``severity`` is
1 (mild) .. 3 (strong), and the same arguments always give the same bytes. Corruptions that
draw no random numbers accept ``seed`` and ignore it. Parameters per severity are listed in
``SEVERITIES`` (pixel scale 0-1 where a value is an intensity):

- ``gaussian_noise``: additive N(0, sigma^2) per pixel and channel, sigma 0.05 / 0.08 / 0.12;
- ``brightness``: add 0.10 / 0.20 / 0.30 to every channel;
- ``contrast``: scale each image's deviation from its own mean colour by 0.70 / 0.50 / 0.30;
- ``gaussian_blur``: separable Gaussian kernel, sigma 0.5 / 1.0 / 1.5 px, reflected borders;
- ``jpeg``: encode and decode with Pillow at quality 75 / 50 / 25.

Severity 1 is meant to be mild *at the image's own scale*: blur sigmas are about ImageNet-C's
severity 1-3 scaled from 224 px to 64 px tall images; JPEG starts at Pillow's default quality
75, because on small images an 8x8 DCT block spans a large part of an object (quality 50
erases 2 px poles even for a model trained on it) and severity 3 equals ImageNet-C's
severity 1 (quality 25).
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Iterator

import numpy as np
from PIL import Image

from segcheck import SegcheckError

SEVERITIES: dict[str, tuple[float, ...]] = {
    "gaussian_noise": (0.05, 0.08, 0.12),
    "brightness": (0.10, 0.20, 0.30),
    "contrast": (0.70, 0.50, 0.30),
    "gaussian_blur": (0.5, 1.0, 1.5),
    "jpeg": (75, 50, 25),
}


def _check(images: np.ndarray, severity: int, name: str) -> float:
    """The parameter of ``name`` at ``severity``, after checking the image array."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise SegcheckError(f"{name} takes uint8 images (N, H, W, 3), got {images.dtype} {images.shape}")
    levels = SEVERITIES[name]
    if isinstance(severity, bool) or not isinstance(severity, (int, np.integer)) or not 1 <= severity <= len(levels):
        raise SegcheckError(f"{name} severity must be an integer 1..{len(levels)}, got {severity!r}")
    return levels[severity - 1]


def _to_uint8(pixels: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


def gaussian_noise(images: np.ndarray, severity: int, seed: int = 0) -> np.ndarray:
    """Additive Gaussian pixel noise; the noise depends only on ``(seed, severity)`` and the shape."""
    sigma = _check(images, severity, "gaussian_noise")
    rng = np.random.default_rng([seed, severity])
    noise = rng.standard_normal(images.shape, dtype=np.float32) * np.float32(sigma * 255)
    return _to_uint8(images.astype(np.float32) + noise)


def brightness(images: np.ndarray, severity: int, seed: int = 0) -> np.ndarray:
    """Every channel raised by a constant (clipped at 255). ``seed`` is unused."""
    delta = _check(images, severity, "brightness")
    return _to_uint8(images.astype(np.float32) + np.float32(delta * 255))


def contrast(images: np.ndarray, severity: int, seed: int = 0) -> np.ndarray:
    """Each image's deviation from its own mean colour scaled down. ``seed`` is unused."""
    factor = _check(images, severity, "contrast")
    x = images.astype(np.float32)
    mean = x.mean(axis=(1, 2), keepdims=True)
    return _to_uint8(mean + (x - mean) * np.float32(factor))


def gaussian_kernel(sigma: float) -> np.ndarray:
    """Normalized 1-D Gaussian kernel of radius ceil(3 sigma) (float32, sums to 1)."""
    radius = max(1, math.ceil(3 * sigma))
    t = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-0.5 * (t / sigma) ** 2)
    return (kernel / kernel.sum()).astype(np.float32)


def gaussian_blur(images: np.ndarray, severity: int, seed: int = 0) -> np.ndarray:
    """Separable Gaussian blur of rows then columns, borders reflected. ``seed`` is unused."""
    sigma = _check(images, severity, "gaussian_blur")
    kernel = gaussian_kernel(sigma)
    r = len(kernel) // 2
    x = images.astype(np.float32)
    for axis in (1, 2):
        if x.shape[axis] <= r:
            raise SegcheckError(
                f"gaussian_blur severity {severity} needs images larger than {r} px, got {x.shape[1:3]}"
            )
        pad = [(0, 0)] * 4
        pad[axis] = (r, r)
        padded = np.pad(x, pad, mode="reflect")
        n = x.shape[axis]
        x = sum(w * np.take(padded, np.arange(k, k + n), axis=axis) for k, w in enumerate(kernel))
    return _to_uint8(x)


def jpeg_roundtrip(image: Image.Image, quality: int) -> np.ndarray:
    """``image`` encoded as JPEG at ``quality`` by Pillow and decoded again: (H, W, 3) uint8."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return np.asarray(decoded.convert("RGB"))


def jpeg(images: np.ndarray, severity: int, seed: int = 0) -> np.ndarray:
    """JPEG round trip through Pillow at the severity's quality. ``seed`` is unused."""
    quality = int(_check(images, severity, "jpeg"))
    out = np.empty_like(images)
    for i, image in enumerate(images):
        out[i] = jpeg_roundtrip(Image.fromarray(image), quality)
    return out


CORRUPTIONS: dict[str, Callable[[np.ndarray, int, int], np.ndarray]] = {
    "gaussian_noise": gaussian_noise,
    "brightness": brightness,
    "contrast": contrast,
    "gaussian_blur": gaussian_blur,
    "jpeg": jpeg,
}


def corrupt(name: str, images: np.ndarray, severity: int, seed: int = 0) -> np.ndarray:
    """Apply the corruption called ``name`` (one of ``CORRUPTIONS``)."""
    try:
        fn = CORRUPTIONS[name]
    except KeyError:
        raise SegcheckError(f"unknown corruption {name!r}; known: {', '.join(CORRUPTIONS)}") from None
    return fn(images, severity, seed)


def corrupted_batches(name: str, images: np.ndarray, severity: int, seed: int, batch: int) -> Iterator[np.ndarray]:
    """:func:`corrupt` of ``images``, ``batch`` images at a time, the same bytes as one call on
    all of them: the random draws of ``gaussian_noise`` come from one generator, in order."""
    if name not in CORRUPTIONS:
        raise SegcheckError(f"unknown corruption {name!r}; known: {', '.join(CORRUPTIONS)}")
    if name != "gaussian_noise":
        for start in range(0, len(images), batch):
            yield CORRUPTIONS[name](images[start : start + batch], severity, seed)
        return
    sigma = _check(images, severity, "gaussian_noise")
    rng = np.random.default_rng([seed, severity])
    for start in range(0, len(images), batch):
        part = images[start : start + batch]
        noise = rng.standard_normal(part.shape, dtype=np.float32) * np.float32(sigma * 255)
        yield _to_uint8(part.astype(np.float32) + noise)


# --- noise in place of the images (noise_input) ---------------------------------------------------
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


def channel_statistics(images: np.ndarray, batch: int = 8) -> dict[str, np.ndarray]:
    """Per-channel mean and std (0-1 scale) of uint8 images (N, H, W, 3), read ``batch`` images
    at a time: the very numbers of ``(images.reshape(-1, 3) / 255).mean(0)`` and ``.std(0)``
    (numpy sums rows in order; the running sums carry from batch to batch)."""
    n = images.shape[0] * images.shape[1] * images.shape[2]
    total = np.zeros(3)
    for start in range(0, len(images), batch):
        total = np.concatenate([total[None], images[start : start + batch].reshape(-1, 3) / 255.0]).sum(0)
    mean, squares = total / n, np.zeros(3)
    for start in range(0, len(images), batch):
        d = images[start : start + batch].reshape(-1, 3) / 255.0 - mean
        squares = np.concatenate([squares[None], d * d]).sum(0)
    return {"data_mean": mean, "data_std": np.sqrt(squares / n)}


def noise_batches(
    kind: str, shape: tuple[int, ...], mean, std, rng: np.random.Generator, batch: int, **stats
) -> Iterator[np.ndarray]:
    """:func:`noise_pixels` of ``shape`` (N, H, W, 3), ``batch`` images at a time, drawn in order
    from ``rng``: the same numbers as one draw of the whole shape."""
    for start in range(0, shape[0], batch):
        yield noise_pixels(kind, (min(batch, shape[0] - start), *shape[1:]), mean, std, rng, **stats)


def shift(array, offset: int, axis: int):
    """Translate ``array`` by ``offset`` px along ``axis`` without wrapping around.

    Content moves towards higher indices for ``offset > 0``; the ``|offset|`` rows (or
    columns) uncovered at the leading edge repeat the nearest original edge row (replicate
    fill), so the result has the input's shape and no content from the opposite border.
    Works on numpy arrays and torch tensors. ``valid_slices`` gives the region unaffected
    by the fill.
    """
    n = array.shape[axis]
    if not 0 < abs(offset) < n:
        raise SegcheckError(
            f"shift offset must be non-zero and smaller than the size {n} along axis {axis}, got {offset}"
        )
    if offset > 0:
        index = np.concatenate([np.zeros(offset, np.int64), np.arange(n - offset)])
    else:
        index = np.concatenate([np.arange(-offset, n), np.full(-offset, n - 1, np.int64)])
    if isinstance(array, np.ndarray):
        return np.take(array, index, axis=axis)
    import torch

    return array.index_select(axis, torch.as_tensor(index, device=array.device))


def valid_slices(ndim: int, offset: int, axis: int) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
    """Index tuples ``(shifted, original)`` so that ``shift(a, offset, axis)[shifted] == a[original]``.

    Both exclude the replicate-filled edge: they cover the overlapping, genuinely shifted region.
    """
    shifted, original = [slice(None)] * ndim, [slice(None)] * ndim
    if offset > 0:
        shifted[axis], original[axis] = slice(offset, None), slice(None, -offset)
    else:
        shifted[axis], original[axis] = slice(None, offset), slice(-offset, None)
    return tuple(shifted), tuple(original)
