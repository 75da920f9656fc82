"""``synthetic-drywall``: procedural drywall photos for text-prompted binary segmentation, the
embedded default of ``suites/prompted``.

Two concepts, asked for with the field report's prompts: ``crack`` (thin, gently jagged,
faintly darker lines) and ``taping`` (the taped and mudded seams between boards: straight
bands a little lighter and smoother than the board, about 8% of the pixels). Every image has
both masks, so each image is two samples, one per concept (``pair(i) -> (image_id,
concept)``); about one image in five has no crack and one in seven no seam (an empty mask is
a real answer). The wall carries what makes the task honest: per-image paint colour,
lighting and paper grain (as strong as a crack's contrast in some images, nearly none in
others), nail pops and faint straight pencil marks (unlabelled).

Cracks are labelled as annotators draw thin structures: a 3 px brush along the crack, up to
``label_offset`` (default 4) px off it in y and in x, about 2% of the pixels. Given the image,
no pixel is then a crack with probability much above 1/3, so plain BCE, the loss minimized
honestly, predicts background everywhere at threshold 0.5 (the field report's IoU 0.0 at 97%
pixel accuracy), while a loss that weighs the positives (or Dice) predicts the band where the
label may lie.

Generated on the fly from ``(seed, split, index)`` with the image's own generator.
"""

from __future__ import annotations

import operator
import zlib
from pathlib import Path

import numpy as np

from segcheck import SegcheckError
from segcheck.data import DatasetSpec
from segcheck.hookspecs import hookimpl

CONCEPTS = ("crack", "taping")
PROMPTS = {
    "crack": ("segment crack", "segment wall crack"),
    "taping": ("segment taping area", "segment joint/tape", "segment drywall seam"),
}
IMAGES = {"train": 512, "val": 64, "test": 64}  # images per split; each is one sample per concept
# Per-channel mean/std (pixel scale 0-1) of train images 0..255 at seed 0, 64x64, rounded to
# 3 decimals; re-measure with ``SyntheticDrywall.measure_mean_std()`` if the painter changes.
MEAN = (0.805, 0.776, 0.729)
STD = (0.078, 0.074, 0.076)


class SyntheticDrywall:
    """One split of ``synthetic-drywall``; a prompted ``segcheck.data.SegDataset``.

    :param split: ``"train"`` (512 images), ``"val"`` (64) or ``"test"`` (64).
    :param seed: non-negative integer; image ``i`` depends only on ``(seed, split, i)``.
    :param size: ``(height, width)``, at least 32 x 32.
    :param images: number of images (default from ``IMAGES``); the split has twice as many samples.
    :param label_offset: how far (px, in y and in x) a crack's label may lie off the crack:
        the annotation noise that makes plain BCE collapse (0: labels on the line).

    ``dataset[j]`` is ``(image uint8 (H, W, 3), mask int64 (H, W) of 0/1)`` of image ``j // 2``
    for concept ``CONCEPTS[j % 2]``; ``pair(j)`` names them.
    """

    def __init__(
        self,
        split: str = "train",
        *,
        seed: int = 0,
        size: tuple[int, int] = (64, 64),
        images: int | None = None,
        label_offset: int = 4,
    ):
        if split not in IMAGES:
            raise SegcheckError(f"unknown split {split!r} for synthetic-drywall; known splits: {', '.join(IMAGES)}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise SegcheckError(f"synthetic-drywall seed must be a non-negative integer, got {seed!r}")
        height, width = (int(v) for v in size)
        if height < 32 or width < 32:
            raise SegcheckError(f"synthetic-drywall size must be at least 32x32 (HxW), got {height}x{width}")
        if isinstance(label_offset, bool) or not isinstance(label_offset, (int, np.integer)) or label_offset < 0:
            raise SegcheckError(f"synthetic-drywall label_offset must be a whole number >= 0, got {label_offset!r}")
        self.split, self.seed, self.size, self.label_offset = split, int(seed), (height, width), int(label_offset)
        self.images = IMAGES[split] if images is None else int(images)
        self.spec = DatasetSpec(
            classes=("background", "foreground"), mean=MEAN, std=STD, splits=tuple(IMAGES), prompts=PROMPTS
        )
        self.identity = f"synthetic-drywall:seed={self.seed}:size={height}x{width}:label_offset={self.label_offset}"
        self._key = zlib.crc32(split.encode())

    def __len__(self) -> int:
        return self.images * len(CONCEPTS)

    def _index(self, index: int) -> int:
        index = operator.index(index)
        index += len(self) if index < 0 else 0
        if not 0 <= index < len(self):
            raise IndexError(f"index out of range for synthetic-drywall {self.split} split of {len(self)} samples")
        return index

    def pair(self, index: int) -> tuple[str, str]:
        """``(image_id, concept)`` of sample ``index``."""
        index = self._index(index)
        return f"{self.split}_{index // len(CONCEPTS):04d}", CONCEPTS[index % len(CONCEPTS)]

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        index = self._index(index)
        image, masks = self.paint(index // len(CONCEPTS))
        return image, masks[CONCEPTS[index % len(CONCEPTS)]]

    def paint(self, image_index: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Image ``image_index`` and its mask per concept."""
        rng = np.random.default_rng([self.seed, self._key, image_index])
        return _paint(rng, *self.size, self.label_offset)

    def __repr__(self) -> str:
        return f"SyntheticDrywall(split={self.split!r}, images={self.images}, identity={self.identity!r})"

    @staticmethod
    def measure_mean_std(count: int = 256, **kwargs) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel mean and std (0-1 scale) pooled over the first ``count`` train images."""
        data = SyntheticDrywall("train", **kwargs)
        pixels = np.stack([data.paint(i)[0] for i in range(min(count, data.images))]).reshape(-1, 3) / 255.0
        return tuple(pixels.mean(0).round(3).tolist()), tuple(pixels.std(0).round(3).tolist())


def _smooth_field(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """A smooth random field (H, W) in about -1..1: a coarse grid, bilinearly upsampled."""
    grid = rng.uniform(-1, 1, size=(cells + 1, cells + 1)).astype(np.float32)
    ys, xs = np.linspace(0, cells, h, dtype=np.float32), np.linspace(0, cells, w, dtype=np.float32)
    y0, x0 = np.minimum(ys.astype(int), cells - 1), np.minimum(xs.astype(int), cells - 1)
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
    top = grid[y0][:, x0] * (1 - fx) + grid[y0][:, x0 + 1] * fx
    bottom = grid[y0 + 1][:, x0] * (1 - fx) + grid[y0 + 1][:, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


def _seams(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Taping seams: the label (H, W) bool and a soft band profile (H, W) in 0..1."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    label, soft = np.zeros((h, w), bool), np.zeros((h, w), np.float32)
    count = 0 if rng.random() < 0.15 else (1 if rng.random() < 0.7 else 2)
    for _ in range(count):
        vertical = rng.random() < 0.5
        coord = xx if vertical else yy
        centre = rng.uniform(0.15, 0.85) * (w if vertical else h)
        half = rng.uniform(1.5, 3.0) * h / 64
        distance = np.abs(coord - centre)
        label |= distance <= half
        soft = np.maximum(soft, np.clip((half + 1.5 - distance) / 1.5, 0, 1))
    return label, soft


def _cracks(rng: np.random.Generator, h: int, w: int, offset: int) -> tuple[np.ndarray, np.ndarray]:
    """Cracks: long, gently jagged random walks, 1-2 px wide: what the image shows (H, W) bool,
    and the label (H, W) bool an annotator drew: a 3 px (cross-shaped) brush along each crack,
    off by up to ``offset`` px in y and in x (one random offset per crack), as hand-drawn
    polygons around thin structures are."""
    seen, label = np.zeros((h, w), bool), np.zeros((h, w), bool)
    count = 0 if rng.random() < 0.2 else (1 if rng.random() < 0.7 else 2)
    for _ in range(count):
        y, x = rng.uniform(0.1, 0.9) * h, rng.uniform(0.1, 0.9) * w
        angle, wide = rng.uniform(0, 2 * np.pi), rng.random() < 0.35
        dy, dx = rng.integers(-offset, offset + 1, size=2)
        for _ in range(int(rng.uniform(0.5, 0.9) * max(h, w))):
            angle += rng.normal(0, 0.15)
            y, x = y + np.sin(angle), x + np.cos(angle)
            iy, ix = int(round(y)), int(round(x))
            if not (0 <= iy < h and 0 <= ix < w):
                break
            seen[iy, ix] = True
            if wide:
                seen[iy, min(ix + 1, w - 1)] = True
            ly, lx = iy + dy, ix + dx
            for cy, cx in ((ly, lx), (ly - 1, lx), (ly + 1, lx), (ly, lx - 1), (ly, lx + 1)):
                if 0 <= cy < h and 0 <= cx < w:
                    label[cy, cx] = True
    return seen, label


def _paint(rng: np.random.Generator, h: int, w: int, offset: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    paint = np.array([205, 198, 186], np.float32) + rng.uniform(-22, 22, size=3).astype(np.float32)
    light = 1 + 0.10 * _smooth_field(rng, h, w, 2) + rng.uniform(-0.08, 0.08)
    grain = rng.normal(0, rng.uniform(2, 8), size=(h, w)).astype(np.float32)
    seam, soft = _seams(rng, h, w)
    crack, crack_label = _cracks(rng, h, w, offset)
    shade = grain * (1 - 0.3 * soft) + soft * rng.uniform(7, 13)  # mud: lighter, a little smoother
    shade -= crack * rng.uniform(10, 18)
    for _ in range(rng.integers(0, 4)):  # nail pops: small dark dots, unlabelled
        cy, cx = rng.integers(0, h), rng.integers(0, w)
        shade[max(cy - 1, 0) : cy + 1, max(cx - 1, 0) : cx + 1] -= rng.uniform(10, 25)
    if rng.random() < 0.4:  # a faint straight pencil mark, unlabelled
        y0, x0, y1, x1 = rng.uniform(0, 1, 4) * np.array([h, w, h, w])
        t = np.linspace(0, 1, 2 * max(h, w))
        shade[
            np.clip((y0 + (y1 - y0) * t).astype(int), 0, h - 1), np.clip((x0 + (x1 - x0) * t).astype(int), 0, w - 1)
        ] -= 9
    image = (paint[None, None, :] + shade[..., None]) * light[..., None]
    image = np.clip(image, 0, 255).astype(np.uint8)
    return image, {"crack": crack_label.astype(np.int64), "taping": seam.astype(np.int64)}


def _factory(root: Path | None, split: str, **options) -> SyntheticDrywall:
    """Registry factory; ``root`` is ignored, ``options`` go to ``SyntheticDrywall``."""
    return SyntheticDrywall(split, **options)


@hookimpl
def segcheck_register_datasets(registry):
    registry.add(
        "synthetic-drywall",
        _factory,
        description="procedural 64x64 drywall photos, prompted concepts crack and taping (seams), a few % foreground",
        needs_root=False,
    )
