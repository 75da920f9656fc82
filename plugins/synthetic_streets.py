"""``synthetic-streets``: procedural street scenes, segcheck's embedded default dataset.

Every image is generated on the fly from ``(seed, split, index)`` with its own
``numpy.random.Generator``; the global RNG is never touched, so an image is the same in every
process and every order of access. The scenes carry a **strong positional label prior on
purpose** (sky on top, buildings and trees at the horizon, road and sidewalks at the bottom)
so that a model can score well without reading the image; the gates must catch that. Each
class also has its own colour family and texture, jittered per image, so a model that does
read the image can beat the prior by a wide margin.

Classes, in label order: road, sidewalk, building, vegetation, sky, car, person, pole.
The ``anomaly`` split (128 images; ``anomalies=True`` gives any split the same) pastes 1-3
out-of-distribution objects (striped animals, blobs in unusual colours) on the ground,
labelled ``ANOMALY_INDEX`` (8); everything else is drawn like the other splits. No other split
holds anomaly pixels, so a model trained on ``train`` has never seen them.

``look=Look(...)`` (registered as ``synthetic-streets-shortcut``) keeps every layout as it is
and takes the appearance cues away: surfaces share one palette per image whatever their class,
unlabelled clutter covers any class, the light changes per image and sensor noise is added (``synthetic_scene.Look``
has the knobs). There a model that learns where classes usually are scores nearly as well as
one that reads the image, which is the field reports' shortcut at full strength.
"""

from __future__ import annotations

import operator
import zlib
from pathlib import Path

import numpy as np

from segcheck import SegcheckError
from segcheck.data import DatasetSpec
from segcheck.hookspecs import hookimpl
from segcheck_plugins.synthetic_scene import (
    ANOMALY_INDEX,
    CLASSES,
    Look,
    _draw_anomalies,
    _draw_buildings,
    _draw_clutter,
    _draw_ground,
    _draw_objects,
    _draw_sky,
    _draw_vegetation,
    _photometric_jitter,
    _Scene,
    _Street,
)

__all__ = [
    "ANOMALY_INDEX",
    "CLASSES",
    "MEAN",
    "SHORTCUT",
    "SPLIT_LENGTHS",
    "STD",
    "Look",
    "SyntheticStreets",
    "segcheck_register_datasets",
]

SPLIT_LENGTHS = {"train": 1024, "val": 128, "test": 128, "anomaly": 128}

# Per-channel mean/std (pixel scale 0-1) of the generated train images, measured once over
# train indices 0..255 at seed=0, size 64x128, anomalies off (all pixels pooled), rounded to
# 3 decimals. Re-measure with ``SyntheticStreets.measure_mean_std()`` if the generator changes.
MEAN = (0.400, 0.456, 0.398)
STD = (0.202, 0.182, 0.270)
#: the ``synthetic-streets-shortcut`` look, and its mean/std measured the same way
SHORTCUT = Look()
SHORTCUT_MEAN = (0.431, 0.434, 0.432)
SHORTCUT_STD = (0.257, 0.254, 0.252)


class SyntheticStreets:
    """One split of ``synthetic-streets``; satisfies ``segcheck.data.SegDataset``.

    :param split: ``"train"`` (1024 images), ``"val"`` (128), ``"test"`` (128) or ``"anomaly"`` (128).
    :param seed: non-negative integer; image ``i`` of a split depends only on
        ``(seed, split, i)`` and the size.
    :param size: ``(height, width)``, at least 16 x 16.
    :param length: number of images in the split (default from ``SPLIT_LENGTHS``).
    :param anomalies: paste out-of-distribution objects labelled ``ANOMALY_INDEX`` (default:
        only in the ``anomaly`` split). The spec's ``anomaly_index`` is 8 either way.
    :param look: the appearance knobs (``synthetic_scene.Look``); None is the standard look,
        ``SHORTCUT`` the ``synthetic-streets-shortcut`` one. A look's images have their own
        identity (``...:look=cue=0,clutter=12,...``) and, for ``SHORTCUT``, their own mean/std.

    ``dataset[i]`` returns ``(image uint8 (H, W, 3), mask int64 (H, W))``, generated on the fly.
    """

    def __init__(
        self,
        split: str = "train",
        *,
        seed: int = 0,
        size: tuple[int, int] = (64, 128),
        length: int | None = None,
        anomalies: bool | None = None,
        look: Look | None = None,
    ):
        if split not in SPLIT_LENGTHS:
            raise SegcheckError(
                f"unknown split {split!r} for synthetic-streets; known splits: {', '.join(SPLIT_LENGTHS)}"
            )
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise SegcheckError(f"synthetic-streets seed must be a non-negative integer, got {seed!r}")
        height, width = (int(v) for v in size)
        if height < 16 or width < 16:
            raise SegcheckError(f"synthetic-streets size must be at least 16x16 (HxW), got {height}x{width}")
        length = SPLIT_LENGTHS[split] if length is None else int(length)
        anomalies = split == "anomaly" if anomalies is None else bool(anomalies)
        if length < 0:
            raise SegcheckError(f"synthetic-streets length must be >= 0, got {length}")
        if look is not None and not isinstance(look, Look):
            raise SegcheckError(f"synthetic-streets look must be a synthetic_scene.Look or None, got {look!r}")
        self.split, self.seed, self.size, self.length, self.anomalies, self.look = (
            split,
            int(seed),
            (height, width),
            length,
            anomalies,
            look,
        )
        mean, std = (SHORTCUT_MEAN, SHORTCUT_STD) if look == SHORTCUT else (MEAN, STD)
        self.spec = DatasetSpec(
            classes=CLASSES,
            ignore_index=255,
            mean=mean,
            std=std,
            splits=tuple(SPLIT_LENGTHS),
            anomaly_index=ANOMALY_INDEX,
            anomaly_splits=(
                "anomaly",
                *(s for s in SPLIT_LENGTHS if s != "anomaly" and anomalies and split != "anomaly"),
            ),
        )
        self.identity = (
            f"synthetic-streets:seed={self.seed}:size={height}x{width}"
            + (f":look={look.describe()}" if look is not None else "")
            + (":anomalies" if anomalies and split != "anomaly" else "")
        )
        self._split_key = zlib.crc32(split.encode())

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        index = operator.index(index)
        if index < 0:
            index += self.length
        if not 0 <= index < self.length:
            raise IndexError(f"index out of range for synthetic-streets {self.split} split of length {self.length}")
        key = [self.seed, self._split_key, index]
        style = None if self.look is None else np.random.default_rng(key + [2])
        scene = _Scene(np.random.default_rng(key), *self.size, look=self.look, style=style)
        street = _Street(scene)
        for draw in (_draw_sky, _draw_buildings, _draw_vegetation, _draw_ground, _draw_objects):
            draw(scene, street)
        if self.look is not None:
            _draw_clutter(scene, street)
        if self.anomalies:
            _draw_anomalies(scene, street, np.random.default_rng(key + [1]))
        return _photometric_jitter(scene), scene.label

    def __repr__(self) -> str:
        return f"SyntheticStreets(split={self.split!r}, length={self.length}, identity={self.identity!r})"

    @staticmethod
    def measure_mean_std(count: int = 256, **kwargs) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel mean and std (0-1 scale) pooled over the first ``count`` train images."""
        data = SyntheticStreets("train", **kwargs)
        pixels = np.stack([data[i][0] for i in range(min(count, len(data)))]).reshape(-1, 3) / 255.0
        return tuple(pixels.mean(0).round(3).tolist()), tuple(pixels.std(0).round(3).tolist())


def _factory(root: Path | None, split: str, **options) -> SyntheticStreets:
    """Registry factory; ``root`` is ignored, ``options`` go to ``SyntheticStreets``."""
    return SyntheticStreets(split, **options)


def _shortcut_factory(root: Path | None, split: str, **options) -> SyntheticStreets:
    """``synthetic-streets-shortcut``: the ``SHORTCUT`` look unless ``options`` give another."""
    return SyntheticStreets(split, **{"look": SHORTCUT, **options})


#: what the shortcut variant declares: ten of its samples (no colour says a class, sensor noise
#: sigma 30) take a fresh unet about twice the default overfit budget (first >= 0.90 near epoch
#: 55 at lr 0.001 with inverse-frequency weights, 0.95 by epoch 99; docs/explanation/shortcut.md,
#: "overfit_tiny on the shortcut variant")
SHORTCUT_SETTINGS = {"overfit_tiny": {"epochs": 120, "lr": 0.001, "class_weight_power": 1}}


@hookimpl
def segcheck_register_datasets(registry):
    registry.add(
        "synthetic-streets",
        _factory,
        description="procedural 64x128 street scenes, 8 classes, strong positional prior; optional anomalies",
        needs_root=False,
    )
    registry.add(
        "synthetic-streets-shortcut",
        _shortcut_factory,
        description="synthetic-streets with weak, shared appearance cues (one palette, clutter, light): the "
        "positional shortcut at full strength",
        needs_root=False,
        settings=SHORTCUT_SETTINGS,
    )
