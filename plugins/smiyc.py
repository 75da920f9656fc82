"""``smiyc``: SegmentMeIfYouCan-style anomaly-only labels (RoadAnomaly21, RoadObstacle21, ...).

The layout of the SMIYC benchmark code (https://github.com/SegmentMeIfYouCan/road-anomaly-benchmark,
``road_anomaly_benchmark/datasets/tracks.py``; ``root`` is ``--data-root``, e.g. the
``dataset_AnomalyTrack`` or ``dataset_ObstacleTrack`` folder)::

    root/images/<name>.jpg                          .jpg .jpeg .png or .webp (ObstacleTrack: .webp)
    root/labels_masks/<name>_labels_semantic.png    single channel: 0 not anomaly, 1 anomaly, 255 void
    root/dataset.yaml                               optional, see below

SMIYC publishes labels for its validation frames only, so the one split is ``val``: the
images that have a ``<name>_labels_semantic.png``. Images without one (the hidden test
frames) are left out of the split and listed in ``unlabelled``; a label without its image,
or no label at all, is an error. Other files in ``labels_masks/`` (e.g. the
``*_labels_semantic_color.png`` renderings) are not read.

The masks name no class, so the spec's classes are those of the model under test, which
SMIYC models know from Cityscapes: by default the 19 Cityscapes trainId names
(``CITYSCAPES_CLASSES``). With C classes, the on-disk values map through a lookup table::

    on disk   0 (not anomaly)          1 (anomaly)           255 (void)
    label     C + 1 (inlier_index)     C (anomaly_index)     255 (ignore_index)

(C = 19: 20 and 19). Any other on-disk value is an error naming the file. Because the spec
has an ``inlier_index``, ``spec.class_labels`` is False: closed-set gates that need labels
skip this dataset, the anomaly gates take anomaly pixels as positives and inliers as
negatives.

``dataset.yaml`` keys (safe-loaded; unknown keys are an error)::

    classes: [road, sidewalk, ...]     # the model's known classes, in label order (default: Cityscapes' 19)
    mean: [0.485, 0.456, 0.406]        # the normalization the weights were trained with, 0-1 pixel scale
    std: [0.229, 0.224, 0.225]         # (both or neither; default: none declared)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from segcheck import SegcheckError
from segcheck.data import DatasetSpec
from segcheck.hookspecs import hookimpl
from segcheck_plugins.cityscapes import CLASSES as CITYSCAPES_CLASSES  # the 19 trainId classes
from segcheck_plugins.folder import (
    MASK_SUFFIXES,
    MappedPairs,
    check_classes,
    check_paired,
    declared_settings,
    files_by_stem,
    read_config,
    read_normalization,
)

__all__ = ["CITYSCAPES_CLASSES", "IMAGE_SUFFIXES", "SMIYC", "label_table", "segcheck_register_datasets"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
LABEL_SUFFIX = "_labels_semantic"
ON_DISK_INLIER, ON_DISK_ANOMALY, ON_DISK_VOID = 0, 1, 255
IGNORE_INDEX = 255
SPLITS = ("val",)
CONFIG_NAME = "dataset.yaml"
CONFIG_KEYS = ("classes", "mean", "std", "segcheck")
_EXAMPLE = "e.g. 'classes: [road, sidewalk, building]' (optional keys: classes, mean, std)"
_EXPECTED = "SMIYC's on-disk labels 0 (not anomaly), 1 (anomaly) and 255 (void)"


def label_table(num_classes: int) -> np.ndarray:
    """The lookup table (int64, indexed by on-disk value; -1: may not occur) for a model with
    ``num_classes`` known classes: 0 -> ``num_classes + 1``, 1 -> ``num_classes``, 255 -> 255."""
    table = np.full(256, -1, dtype=np.int64)
    table[[ON_DISK_INLIER, ON_DISK_ANOMALY, ON_DISK_VOID]] = [num_classes + 1, num_classes, IGNORE_INDEX]
    table.setflags(write=False)
    return table


def read_options(root: Path) -> dict:
    """``classes``, ``mean`` and ``std`` from the optional ``root/dataset.yaml`` (defaults:
    the Cityscapes classes, no normalization)."""
    path = root / CONFIG_NAME
    raw = read_config(path, CONFIG_KEYS, _EXAMPLE) if path.is_file() else {}
    classes = raw.get("classes")
    return {
        "classes": CITYSCAPES_CLASSES if classes is None else check_classes(classes, path),
        **read_normalization(raw, path),
    }


class SMIYC(MappedPairs):
    """The labelled (``val``) frames of an SMIYC-style dataset; satisfies ``segcheck.data.SegDataset``.

    :param root: the folder holding ``images/`` and ``labels_masks/`` (see the module docstring).
    :param split: ``"val"``, the only split.

    Construction reads the optional ``dataset.yaml`` and pairs labels with images (a missing
    folder, no label at all or a label without its image is a ``SegcheckError``);
    ``dataset[i]`` reads one pair and maps its labels through ``table``, raising
    ``SegcheckError`` for an unreadable file, a size mismatch or an on-disk value other than
    0, 1 and 255.
    """

    EXPECTED = _EXPECTED

    def __init__(self, root: Path | str, split: str = "val"):
        root = Path(root)
        if split not in SPLITS:
            raise SegcheckError(
                f"unknown split {split!r} for smiyc; known splits: {', '.join(SPLITS)} (SMIYC labels only its "
                "validation frames)"
            )
        if not root.is_dir():
            raise SegcheckError(
                f"dataset root {root} does not exist or is not a folder; pass --data-root pointing at an SMIYC "
                "dataset folder (e.g. dataset_AnomalyTrack) with images/ and labels_masks/"
            )
        options = read_options(root)
        num_classes = len(options["classes"])
        try:
            self.spec = DatasetSpec(
                ignore_index=IGNORE_INDEX,
                splits=SPLITS,
                anomaly_index=num_classes,
                anomaly_splits=SPLITS,
                inlier_index=num_classes + 1,
                **options,
            )
        except SegcheckError as exc:
            raise SegcheckError(f"{root / CONFIG_NAME}: {exc}") from None
        self.table = label_table(num_classes)
        self.root, self.split = root, split
        self.identity = f"smiyc:{root.resolve()}"
        images_dir, masks_dir = root / "images", root / "labels_masks"
        for folder, what in ((images_dir, "images"), (masks_dir, "labels_masks")):
            if not folder.is_dir():
                raise SegcheckError(
                    f"{what} folder {folder} is missing; an SMIYC dataset folder holds images/<name>.jpg|.webp and "
                    f"labels_masks/<name>{LABEL_SUFFIX}.png"
                )
        images = files_by_stem(images_dir, IMAGE_SUFFIXES, "image")
        masks = {
            stem[: -len(LABEL_SUFFIX)]: path
            for stem, path in files_by_stem(masks_dir, MASK_SUFFIXES, "label").items()
            if stem.endswith(LABEL_SUFFIX) and len(stem) > len(LABEL_SUFFIX)
        }
        if not masks:
            raise SegcheckError(
                f"no labels in {masks_dir} (looked for <name>{LABEL_SUFFIX}.png); SMIYC publishes labels for its "
                "validation frames only: download the dataset with them or point --data-root at another folder"
            )
        check_paired(
            {name: path for name, path in images.items() if name in masks},
            masks,
            root,
            f"each labels_masks/<name>{LABEL_SUFFIX}.png needs its image images/<name>.jpg|.jpeg|.png|.webp",
        )
        self.pairs = tuple((images[name], masks[name]) for name in sorted(masks))
        self.unlabelled = tuple(images[name] for name in sorted(set(images) - set(masks)))

    def __repr__(self) -> str:
        return (
            f"SMIYC(root={str(self.root)!r}, split={self.split!r}, len={len(self)}, unlabelled={len(self.unlabelled)})"
        )


def _factory(root: Path | None, split: str) -> SMIYC:
    """Registry factory: the SMIYC-style dataset at ``root`` (required)."""
    if root is None:
        raise SegcheckError(
            "dataset 'smiyc' needs --data-root pointing at an SMIYC dataset folder with images/ and labels_masks/"
        )
    return SMIYC(root, split)


@hookimpl
def segcheck_register_datasets(registry):
    registry.add(
        "smiyc",
        _factory,
        description="SegmentMeIfYouCan-style anomaly-only labels (0 usual, 1 anomaly, 255 void), split val",
        needs_root=True,
        settings=declared_settings,
    )
