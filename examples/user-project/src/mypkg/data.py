"""mypkg's data: procedural terrain maps, generated on the fly (no files).

Each 64x64 map is a Voronoi tiling of 10 cells, each cell one of eight terrain classes drawn
at random, painted in its class colour under a per-image light and with sensor noise. Classes
are told apart by colour, and have no preferred position. ``load(root, split)`` is the dataset
callable segcheck takes (``--dataset mypkg.data:load``); ``root`` is not used.
"""

from __future__ import annotations

import zlib

import numpy as np
from segcheck.data import DatasetSpec

CLASSES = ("water", "grass", "sand", "rock", "snow", "lava", "forest", "ice")
PALETTE = np.array(
    [(40, 90, 200), (90, 180, 60), (225, 205, 130), (125, 125, 125), (245, 245, 250), (220, 60, 30), (20, 90, 40),
     (150, 220, 235)],
    dtype=np.float64,
)  # fmt: skip
SPLITS = {"train": 256, "val": 64, "test": 64}
SIZE, CELLS = 64, 10
# per-channel mean/std (0-1 scale) of the train split, as measure_mean_std() gives them
MEAN = (0.538, 0.591, 0.531)
STD = (0.319, 0.26, 0.319)


class Terrain:
    """One split of the terrain maps: ``len()`` samples, ``terrain[i]`` is ``(image uint8 (64, 64, 3),
    mask int64 (64, 64))``, the same in every process (segcheck's dataset protocol)."""

    def __init__(self, split: str = "val", seed: int = 0):
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; the splits are {', '.join(SPLITS)}")
        self.split, self.seed = split, seed
        self.spec = DatasetSpec(classes=CLASSES, mean=MEAN, std=STD, splits=tuple(SPLITS))
        self.identity = f"mypkg-terrain:seed={seed}"

    def __len__(self) -> int:
        return SPLITS[self.split]

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for the {self.split} split of {len(self)} maps")
        rng = np.random.default_rng([self.seed, zlib.crc32(self.split.encode()), index])
        centres = rng.uniform(0, SIZE, size=(CELLS, 2))
        labels = rng.integers(0, len(CLASSES), size=CELLS)
        yy, xx = np.mgrid[0:SIZE, 0:SIZE]
        distance = (yy[..., None] - centres[:, 0]) ** 2 + (xx[..., None] - centres[:, 1]) ** 2
        mask = labels[distance.argmin(-1)]
        light = rng.uniform(0.85, 1.15)
        image = PALETTE[mask] * light + rng.normal(0, 12, size=(SIZE, SIZE, 3))
        return np.clip(image, 0, 255).astype(np.uint8), mask.astype(np.int64)


def load(root, split: str) -> Terrain:
    """segcheck's dataset callable: split ``split`` (``root``, ``--data-root``, is not used)."""
    return Terrain(split)


def measure_mean_std(count: int = 256) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std (0-1 scale) of the first ``count`` train maps."""
    train = Terrain("train")
    pixels = np.stack([train[i][0] for i in range(min(count, len(train)))]).reshape(-1, 3) / 255.0
    return tuple(pixels.mean(0).round(3).tolist()), tuple(pixels.std(0).round(3).tolist())
