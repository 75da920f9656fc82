"""``eval.resize``: one image size for datasets whose images differ in size (ADE20K, VOC).

Policies (a string):

- ``""`` (default): images are used at their own size; an eval sample of mixed sizes is an
  error that names this setting;
- ``"HxW"`` (e.g. ``"512x512"``): every image resized to H x W (bilinear, antialiased),
  every mask with nearest neighbour (label values are kept, none is invented);
- ``"short:S"`` (e.g. ``"short:512"``): the short side resized to S with the aspect ratio
  kept (image bilinear, mask nearest), then the centre S x S crop.

Every split a target reads (eval, train, held-out, anomaly) goes through the same policy, and
through one size limit (``eval.max_megapixels``): a policy, or an image, larger than that is
one line naming the setting, before anything that size is allocated.
"""

from __future__ import annotations

import re

import numpy as np
from PIL import Image

from segcheck import SegcheckError

_FIXED = re.compile(r"^(\d+)x(\d+)$")
_SHORT = re.compile(r"^short:(\d+)$")


def parse(policy: str) -> tuple[str, tuple[int, ...]]:
    """``("none", ())``, ``("fixed", (h, w))`` or ``("short", (s,))``; anything else is one line."""
    text = str(policy or "").strip()
    if not text:
        return "none", ()
    if match := _FIXED.match(text):
        h, w = int(match[1]), int(match[2])
        if h > 0 and w > 0:
            return "fixed", (h, w)
    if (match := _SHORT.match(text)) and int(match[1]) > 0:
        return "short", (int(match[1]),)
    raise SegcheckError(
        f"eval.resize {policy!r} is not a resize policy; use '' (own sizes), 'HxW' (e.g. '512x512') "
        "or 'short:S' (short side S, then the centre SxS crop, e.g. 'short:512')"
    )


#: the default of ``eval.max_megapixels``: 32 images of 64 Mpx are 6 GiB as uint8 already
MAX_MEGAPIXELS = 64.0


def check_policy(policy: str, max_megapixels: float = MAX_MEGAPIXELS) -> None:
    """A fixed or ``short:S`` policy whose output exceeds ``max_megapixels`` is one line, up front."""
    kind, args = parse(policy)
    if kind == "none":
        return
    h, w = args if kind == "fixed" else (args[0], args[0])
    if h * w > max_megapixels * 1e6:
        raise SegcheckError(
            f"eval.resize {policy!r} makes images of {h}x{w} = {h * w / 1e6:.0f} Mpx, above eval.max_megapixels "
            f"{max_megapixels:g}; choose a smaller size (e.g. --eval-resize short:1024) or raise eval.max_megapixels "
            "in segcheck.yaml"
        )


def check_image(image: np.ndarray, max_megapixels: float, where: str) -> None:
    """An image of more than ``max_megapixels`` is one line naming ``where`` and the setting."""
    h, w = image.shape[:2]
    if h * w > max_megapixels * 1e6:
        raise SegcheckError(
            f"{where} is {h}x{w} = {h * w / 1e6:.0f} Mpx, above eval.max_megapixels {max_megapixels:g}; resize the "
            "data (--eval-resize, e.g. short:1024) or raise eval.max_megapixels in segcheck.yaml"
        )


def output_size(policy: str, height: int, width: int) -> tuple[int, int, tuple[int, int] | None]:
    """(resized height, resized width, crop offset (top, left) or None) of an image under ``policy``."""
    kind, args = parse(policy)
    if kind == "none":
        return height, width, None
    if kind == "fixed":
        return args[0], args[1], None
    side = args[0]
    scale = side / min(height, width)
    h, w = max(side, round(height * scale)), max(side, round(width * scale))
    return h, w, ((h - side) // 2, (w - side) // 2)


def apply(policy: str, image: np.ndarray, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """``image`` (H, W, 3) uint8 and ``mask`` (H, W) or None under ``policy``."""
    h, w, crop = output_size(policy, *image.shape[:2])
    if (h, w) != image.shape[:2]:
        image = np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))
    if crop is not None:
        side = parse(policy)[1][0]
        image = image[crop[0] : crop[0] + side, crop[1] : crop[1] + side]
    return np.ascontiguousarray(image), None if mask is None else apply_mask(policy, mask)


def apply_mask(policy: str, mask: np.ndarray) -> np.ndarray:
    """``mask`` (H, W) under ``policy``: nearest neighbour (no label is invented), then the crop."""
    h, w, crop = output_size(policy, *np.shape(mask)[:2])
    if (h, w) != np.shape(mask)[:2]:
        labels = Image.fromarray(np.asarray(mask, dtype=np.int32), mode="I")
        mask = np.asarray(labels.resize((w, h), Image.NEAREST), dtype=np.int64)
    if crop is not None:
        side = parse(policy)[1][0]
        mask = mask[crop[0] : crop[0] + side, crop[1] : crop[1] + side]
    return np.ascontiguousarray(mask)


class Resized:
    """A dataset split whose samples come out under ``policy`` (none larger than
    ``max_megapixels``, when given); everything else is the split's."""

    def __init__(self, dataset, policy: str, max_megapixels: float | None = None):
        check_policy(policy, max_megapixels or float("inf"))
        self.dataset, self.policy, self.max_megapixels = dataset, policy, max_megapixels

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        image, mask = self.dataset[index]
        image = np.asarray(image)
        if self.max_megapixels is not None:
            check_image(image, self.max_megapixels, f"image {index} of {getattr(self.dataset, 'identity', 'the data')}")
        return apply(self.policy, image, mask)

    def mask(self, index: int):
        """Sample ``index``'s mask alone under ``policy`` (its image not decoded where the split can)."""
        mask = self.dataset.mask(index) if hasattr(self.dataset, "mask") else self.dataset[index][1]
        if mask is None:
            return None
        mask = np.asarray(mask)
        if self.max_megapixels is not None:
            check_image(mask, self.max_megapixels, f"mask {index} of {getattr(self.dataset, 'identity', 'the data')}")
        return apply_mask(self.policy, mask)

    def __getattr__(self, name: str):
        if name in ("dataset", "policy", "max_megapixels"):  # not set yet (e.g. while unpickling)
            raise AttributeError(name)
        return getattr(self.dataset, name)


def resized(dataset, policy: str, max_megapixels: float | None = None):
    """``dataset`` itself when ``policy`` is empty and no size limit is given, else its
    :class:`Resized` view."""
    if parse(policy)[0] == "none" and max_megapixels is None:
        return dataset
    return Resized(dataset, policy, max_megapixels)
