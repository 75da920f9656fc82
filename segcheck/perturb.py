"""Deterministic image corruptions and shifts, for the stability and equivariance gates.

Every corruption is a pure function ``corrupt(images, severity, seed) -> images``: ``images``
is uint8 (N, H, W, 3), the result is a new uint8 array of the same shape, and the same
arguments always give the same bytes. Corruptions that draw no random numbers accept ``seed``
and ignore it. ``severity`` is 0 (:data:`MILD`, the level perturbation_stability judges by
default) or 1..5 (:data:`IMAGENET_C`); ``SEVERITIES[name][severity]`` is the parameter.

Severities 1-5 are ImageNet-C's (Hendrycks & Dietterich, "Benchmarking Neural Network
Robustness to Common Corruptions and Perturbations", ICLR 2019; the constants of their
``imagenet_c`` code and of the ``imagecorruptions`` package, Michaelis et al. 2019, which
Cityscapes-C (Kamann & Rother, CVPR 2020) applies to Cityscapes), pixel scale 0-1:

- ``gaussian_noise``: add N(0, c^2) per pixel and channel, c = .08 / .12 / .18 / .26 / .38;
- ``brightness``: add c = .1 / .2 / .3 / .4 / .5 to V in HSV (clipped at 1), hue and
  saturation kept: every channel scaled by min(V + c, 1) / V (black pixels become grey c);
- ``contrast``: scale each image's deviation from its own per-channel mean by
  c = .4 / .3 / .2 / .1 / .05;
- ``gaussian_blur``: Gaussian of sigma = 1 / 2 / 3 / 4 / 6 px, truncated at 4 sigma, borders
  repeating the edge pixel (``skimage.filters.gaussian``'s defaults, mode ``nearest``);
- ``jpeg``: encode and decode with Pillow at quality 25 / 18 / 15 / 10 / 7.

The sigmas are pixels and are *not* scaled to the image: ImageNet-C applies them at 224 px,
Cityscapes-C at 2048x1024, and a result compares with the literature only at the same
parameters. On segcheck's 64x128 synthetic scenes the blur is therefore far stronger relative
to the objects than on Cityscapes (sigma 6 px is a tenth of the image height); the mild level
is the one scaled to small images.

How segcheck's severities 1-5 differ from the reference code, and why:

- results are 8-bit as the reference's are, but rounded to the nearest level
  (``np.rint``) where the reference truncates (``np.uint8`` of a float): the reference's
  outputs are on average half a grey level darker; segcheck's are unbiased;
- noise comes from numpy's seeded ``default_rng`` (float32 draws, per ``seed`` and severity),
  not the unseeded global ``np.random.normal`` (float64): the same distribution, other
  draws, and the same bytes on every run;
- brightness is the closed form of skimage's ``rgb2hsv`` / ``hsv2rgb`` round trip (V is the
  largest channel, and V + c with the hue and saturation kept scales every channel by
  (V + c) / V): equal up to float rounding, without scikit-image;
- blur, contrast and noise are computed in float32 (the reference: float64): at most one
  grey level apart after rounding;
- JPEG is the reference's own call (Pillow ``save(quality=c)``, default chroma subsampling).

Severity 0, the mild level (:data:`MILD`), is segcheck's own: meant to be mild *at the
image's own scale*, it is what perturbation_stability gates by default, so that a model
trained with ordinary augmentation passes it: gaussian noise sigma 0.05; brightness +0.10 on
every channel (not V: a plain shift, clipped); contrast 0.70; blur sigma 0.5 px (radius
ceil(3 sigma), borders reflected; about ImageNet-C's severity 1 scaled from 224 px to 64 px
tall images); JPEG quality 75 (Pillow's default: on small images an 8x8 DCT block spans a
large part of an object, and quality 25, ImageNet-C's severity 1, already erases 2 px poles).
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Iterator

import numpy as np
from PIL import Image

from segcheck import SegcheckError

#: severity 0: the mild level perturbation_stability judges by default (segcheck's own)
MILD: dict[str, float] = {
    "gaussian_noise": 0.05,
    "brightness": 0.10,
    "contrast": 0.70,
    "gaussian_blur": 0.5,
    "jpeg": 75,
}
#: severities 1-5: ImageNet-C's constants (Hendrycks & Dietterich 2019; ``imagecorruptions``)
IMAGENET_C: dict[str, tuple[float, ...]] = {
    "gaussian_noise": (0.08, 0.12, 0.18, 0.26, 0.38),
    "brightness": (0.1, 0.2, 0.3, 0.4, 0.5),
    "contrast": (0.4, 0.3, 0.2, 0.1, 0.05),
    "gaussian_blur": (1, 2, 3, 4, 6),
    "jpeg": (25, 18, 15, 10, 7),
}
#: the parameter of each corruption per severity: index 0 the mild level, 1..5 ImageNet-C's
SEVERITIES: dict[str, tuple[float, ...]] = {name: (MILD[name], *IMAGENET_C[name]) for name in MILD}
#: the ImageNet-C severities (the robustness ladder)
LADDER = (1, 2, 3, 4, 5)


def level_name(severity: int) -> str:
    """How reports name a severity: ``mild level`` (0) or ``ImageNet-C severity k``."""
    return "mild level" if severity == 0 else f"ImageNet-C severity {severity}"


def _check(images: np.ndarray, severity: int, name: str) -> float:
    """The parameter of ``name`` at ``severity``, after checking the image array."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise SegcheckError(f"{name} takes uint8 images (N, H, W, 3), got {images.dtype} {images.shape}")
    levels = SEVERITIES[name]
    if isinstance(severity, bool) or not isinstance(severity, (int, np.integer)) or not 0 <= severity < len(levels):
        raise SegcheckError(
            f"{name} severity must be an integer 0..{len(levels) - 1} (0 the mild level, 1-5 ImageNet-C's), "
            f"got {severity!r}"
        )
    return levels[severity]


def _to_uint8(pixels: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


def _noise_rng(seed: int, severity: int) -> np.random.Generator:
    """The generator of ``gaussian_noise`` at ``severity``: the mild level keeps the key it has
    always had (``[seed, 1]``), each ImageNet-C severity has its own."""
    return np.random.default_rng([seed, 1] if severity == 0 else [seed, 1, severity])


def gaussian_noise(images: np.ndarray, severity: int, seed: int = 0) -> np.ndarray:
    """Additive Gaussian pixel noise; the noise depends only on ``(seed, severity)`` and the shape."""
    sigma = _check(images, severity, "gaussian_noise")
    noise = _noise_rng(seed, severity).standard_normal(images.shape, dtype=np.float32) * np.float32(sigma * 255)
    return _to_uint8(images.astype(np.float32) + noise)


def brightness(images: np.ndarray, severity: int, seed: int = 0) -> np.ndarray:
    """Brighter images (clipped at 255): the mild level adds a constant to every channel,
    ImageNet-C's severities add it to V in HSV (hue and saturation kept). ``seed`` is unused."""
    delta = _check(images, severity, "brightness")
    if severity == 0:
        return _to_uint8(images.astype(np.float32) + np.float32(delta * 255))
    x = images.astype(np.float32) / np.float32(255)
    value = x.max(axis=-1, keepdims=True)
    raised = np.minimum(value + np.float32(delta), np.float32(1))
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(value > 0, x * (raised / value), raised)
    return _to_uint8(out * np.float32(255))


def contrast(images: np.ndarray, severity: int, seed: int = 0) -> np.ndarray:
    """Each image's deviation from its own mean colour scaled down. ``seed`` is unused."""
    factor = _check(images, severity, "contrast")
    x = images.astype(np.float32)
    mean = x.mean(axis=(1, 2), keepdims=True)
    return _to_uint8(mean + (x - mean) * np.float32(factor))


def gaussian_kernel(sigma: float, radius: int | None = None) -> np.ndarray:
    """Normalized 1-D Gaussian kernel (float32, sums to 1) of ``radius`` (default ceil(3 sigma),
    at least 1)."""
    radius = max(1, math.ceil(3 * sigma)) if radius is None else int(radius)
    t = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-0.5 * (t / sigma) ** 2)
    return (kernel / kernel.sum()).astype(np.float32)


def gaussian_blur(images: np.ndarray, severity: int, seed: int = 0) -> np.ndarray:
    """Separable Gaussian blur of rows then columns. The mild level: radius ceil(3 sigma),
    borders reflected; ImageNet-C's severities: radius int(4 sigma + 0.5), borders repeating
    the edge pixel (scipy's ``gaussian_filter``, mode ``nearest``, as the reference). ``seed``
    is unused."""
    sigma = _check(images, severity, "gaussian_blur")
    if severity == 0:
        kernel, mode = gaussian_kernel(sigma), "reflect"
    else:
        kernel, mode = gaussian_kernel(sigma, int(4 * sigma + 0.5)), "edge"
    r = len(kernel) // 2
    x = images.astype(np.float32)
    for axis in (1, 2):
        if mode == "reflect" and x.shape[axis] <= r:
            raise SegcheckError(
                f"gaussian_blur severity {severity} needs images larger than {r} px, got {x.shape[1:3]}"
            )
        pad = [(0, 0)] * 4
        pad[axis] = (r, r)
        padded = np.pad(x, pad, mode=mode)
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
    rng = _noise_rng(seed, severity)
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
