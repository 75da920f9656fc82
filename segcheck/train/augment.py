"""Positional jitter applied jointly to a batch of images and masks (on any device)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageEnhance, ImageFilter

from segcheck import perturb


def flips(x: torch.Tensor, y: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Flip each sample horizontally and vertically, each with probability 1/2."""
    n = len(x)
    for dim in (-1, -2):
        flip = torch.rand(n, generator=g) < 0.5
        idx = flip.nonzero().flatten().to(x.device)
        if len(idx):
            x[idx] = x[idx].flip(dim)
            y[idx] = y[idx].flip(dim)
    return x, y


def rolls(x: torch.Tensor, y: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Circularly shift each sample by a random offset, vertically and horizontally."""
    h, w = x.shape[-2:]
    shifts = torch.stack([torch.randint(0, h, (len(x),), generator=g), torch.randint(0, w, (len(x),), generator=g)], 1)
    for i, (dy, dx) in enumerate(shifts.tolist()):
        x[i] = x[i].roll((dy, dx), dims=(-2, -1))
        y[i] = y[i].roll((dy, dx), dims=(-2, -1))
    return x, y


def shifts(
    x: torch.Tensor, y: torch.Tensor, g: torch.Generator, ignore_index: int, fraction: float = 0.25
) -> tuple[torch.Tensor, torch.Tensor]:
    """Translate each sample by a random offset of up to ``fraction`` of each side, vertically
    and horizontally, without wrap-around: the uncovered edge repeats the border
    (``perturb.shift``, the shift_equivariance gate's own operation) and its mask pixels become
    ``ignore_index``. Unlike ``rolls``, the layout stays roughly where it was."""
    h, w = x.shape[-2:]
    limits = (max(1, int(h * fraction)), max(1, int(w * fraction)))
    for i in range(len(x)):
        for axis, limit in zip((-2, -1), limits):
            offset = int(torch.randint(-limit, limit + 1, (1,), generator=g))
            if offset == 0:
                continue
            x[i] = perturb.shift(x[i], offset, x[i].ndim + axis)
            keep, source = perturb.valid_slices(2, offset, axis)
            shifted = torch.full_like(y[i], ignore_index)
            shifted[keep] = y[i][source]
            y[i] = shifted
    return x, y


def scale_crops(
    x: torch.Tensor, y: torch.Tensor, g: torch.Generator, ignore_index: int, scales: tuple[float, float] = (0.5, 2.0)
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rescale each sample by a factor in ``scales``, then crop or pad back to the input size.

    Padding is 0 in normalized space for images and ``ignore_index`` for masks.
    """
    h, w = x.shape[-2:]
    out_x, out_y = torch.empty_like(x), torch.full_like(y, ignore_index)
    for i in range(len(x)):
        s = float(torch.empty(1).uniform_(*scales, generator=g))
        sh, sw = max(1, round(h * s)), max(1, round(w * s))
        xi = F.interpolate(x[i : i + 1], size=(sh, sw), mode="bilinear", align_corners=False)[0]
        yi = F.interpolate(y[i : i + 1, None].float(), size=(sh, sw), mode="nearest")[0, 0].long()
        top = int(torch.randint(0, max(1, sh - h + 1), (1,), generator=g))
        left = int(torch.randint(0, max(1, sw - w + 1), (1,), generator=g))
        xi, yi = xi[:, top : top + h, left : left + w], yi[top : top + h, left : left + w]
        out_x[i].zero_()
        out_x[i, :, : xi.shape[1], : xi.shape[2]] = xi
        out_y[i, : yi.shape[0], : yi.shape[1]] = yi
    return out_x, out_y


def _jpeg_quality(u: float) -> int:
    """The JPEG quality 30-94 of a uniform draw ``u`` in [0, 1)."""
    return int(30 + 65 * u)


def photometric(images: torch.Tensor, g: torch.Generator, p: float = 0.5) -> torch.Tensor:
    """With probability ``p`` per uint8 image (B, H, W, 3), apply one random photometric change
    with a continuous random strength: brightness x0.7-1.3, contrast x0.6-1.4, Gaussian blur
    radius 0.2-1.2 px, JPEG quality 30-94, or pixel noise sigma 0-0.06 (Pillow/torch code of
    its own, with other parameters than the stability gate's fixed severities)."""
    out = images.clone()
    for i in range(len(out)):
        if float(torch.rand(1, generator=g)) >= p:
            continue
        kind = int(torch.randint(5, (1,), generator=g))
        u = float(torch.rand(1, generator=g))
        if kind == 4:
            noise = torch.randn(out[i].shape, generator=g) * (0.06 * u * 255)
            out[i] = (out[i].float() + noise).round().clamp(0, 255).to(torch.uint8)
            continue
        image = Image.fromarray(out[i].numpy())
        if kind == 0:
            image = ImageEnhance.Brightness(image).enhance(0.7 + 0.6 * u)
        elif kind == 1:
            image = ImageEnhance.Contrast(image).enhance(0.6 + 0.8 * u)
        elif kind == 2:
            image = image.filter(ImageFilter.GaussianBlur(radius=0.2 + u))
        else:
            image = perturb.jpeg_roundtrip(image, _jpeg_quality(u))
        out[i] = torch.from_numpy(np.array(image))
    return out


def jpeg_views(images: torch.Tensor, views: torch.Tensor, g: torch.Generator, p: float) -> torch.Tensor:
    """``views`` (B, H, W, 3 uint8) with each image's view replaced, with probability ``p``, by
    that image (from ``images``) after a JPEG round trip at a random quality 30-94. Given the
    views as ``images``, each chosen view is round-tripped itself."""
    out = views.clone()
    for i in range(len(out)):
        if float(torch.rand(1, generator=g)) < p:
            quality = _jpeg_quality(float(torch.rand(1, generator=g)))
            out[i] = torch.from_numpy(perturb.jpeg_roundtrip(Image.fromarray(images[i].numpy()), quality).copy())
    return out


def view_shift(size: tuple[int, int], g: torch.Generator, limit: int) -> tuple[int, int] | None:
    """A random translation ``(offset, axis)`` of at most ``limit`` px (never 0, smaller than the
    side) along a random image axis (-2 rows, -1 columns) of a batch of ``size`` (H, W); None when
    ``limit`` is 0."""
    if not limit:
        return None
    axis = -2 if float(torch.rand(1, generator=g)) < 0.5 else -1
    most = min(limit, size[axis] - 1)
    magnitude = int(torch.randint(1, most + 1, (1,), generator=g))
    return (magnitude if float(torch.rand(1, generator=g)) < 0.5 else -magnitude), axis


def paste_outliers(
    x: torch.Tensor, g: torch.Generator, mean: torch.Tensor, std: torch.Tensor, p: float = 0.5
) -> tuple[torch.Tensor, torch.Tensor]:
    """Paste one random ellipse of a random flat colour with pixel noise into each normalized
    sample with probability ``p`` (entropy maximization on pasted outliers, after Chan et al.
    2021, who paste COCO objects). Returns the batch and the pasted pixels (B, H, W) bool.

    ``mean``/``std`` (1, 3, 1, 1) are the batch's normalization, so the colour is drawn in pixel
    scale: uniform RGB, then per-pixel noise of sigma 0.02-0.12.
    """
    n, _, h, w = x.shape
    out, pasted = x.clone(), torch.zeros(n, h, w, dtype=torch.bool, device=x.device)
    rows = torch.arange(h, device=x.device).view(-1, 1).float()
    cols = torch.arange(w, device=x.device).view(1, -1).float()
    for i in range(n):
        u = torch.rand(7, generator=g).tolist()
        if u[0] >= p:
            continue
        cy, cx = u[1] * h, u[2] * w
        ry, rx = (0.06 + 0.14 * u[3]) * h, (0.04 + 0.11 * u[4]) * w
        shape = ((rows - cy) / ry) ** 2 + ((cols - cx) / rx) ** 2 <= 1.0
        colour = torch.rand(3, 1, 1, generator=g).to(x.device)
        noise = torch.randn(3, h, w, generator=g).to(x.device) * (0.02 + 0.1 * u[5])
        patch = ((colour + noise).clamp(0, 1) - mean[0]) / std[0]
        out[i] = torch.where(shape, patch, out[i])
        pasted[i] = shape
    return out, pasted
