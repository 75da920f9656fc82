"""``streethazards``: the StreetHazards anomaly-segmentation dataset in its official layout.

StreetHazards (Hendrycks et al., "Scaling Out-of-Distribution Detection for Real-World
Settings"; https://github.com/hendrycks/anomaly-seg) is rendered with CARLA: 13 known
classes, and anomalous objects that appear only in the test towns. Layout (``root`` is
``--data-root``, the folder holding the two extracted archives)::

    root/train/images/training/<town>/<name>.png        split train
    root/train/annotations/training/<town>/<name>.png
    root/train/images/validation/<town>/<name>.png      split val
    root/train/annotations/validation/<town>/<name>.png
    root/test/images/test/<town>/<name>.png             split test (the only one with anomalies)
    root/test/annotations/test/<town>/<name>.png
    root/dataset.yaml                                   optional, see below

Image and annotation are paired by their path relative to ``images/<folder>`` and
``annotations/<folder>``; the ``.odgt`` lists of the official code are not read. Annotations
are single-channel PNGs holding 1..14 on disk; the official loader (``dataset.py``,
``segm_transform``) subtracts 1, and its OOD evaluation (``defaults.py``,
``OOD.out_labels``) takes 13 after the shift as the anomaly. segcheck maps the on-disk
values through a lookup table indexed by on-disk value (``LABELS``,
``LABELS_UNLABELED_AS_IGNORE``)::

    on disk          1          2..13                         14
    default          0          1..12                         13 (anomaly_index)
                     unlabeled  building .. traffic sign
    unlabeled_as_ignore:
                     255        0..11                         12 (anomaly_index)
                     (ignored)  building .. traffic sign

Any other on-disk value (0, 15, ...) is an error naming the file. By default the 13 classes
are the official ones, ``unlabeled`` included (class 0: the official shift keeps it a class);
``dataset.yaml`` with ``unlabeled_as_ignore: true`` (its only key) makes ``unlabeled``
ignored instead, for models trained on the 12 other classes (ids 0..11); the anomaly is
then 12, one past the last class. Only ``test`` is declared to hold anomalies
(``spec.anomaly_splits``); a train or val annotation holding 14 still loads, and it is for
the anomaly audits to report it. StreetHazards declares no normalization (mean/std None).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from segcheck import SegcheckError
from segcheck.data import DatasetSpec
from segcheck.hookspecs import hookimpl
from segcheck_plugins.folder import (
    IMAGE_SUFFIXES,
    MASK_SUFFIXES,
    MappedPairs,
    check_paired,
    declared_settings,
    files_by_path,
    read_config,
)

__all__ = [
    "CLASSES",
    "LABELS",
    "LABELS_UNLABELED_AS_IGNORE",
    "SPLIT_FOLDERS",
    "StreetHazards",
    "segcheck_register_datasets",
]

#: the 13 known classes, in the official order (on-disk value = index + 1)
CLASSES = (
    "unlabeled",
    "building",
    "fence",
    "other",
    "pedestrian",
    "pole",
    "road line",
    "road",
    "sidewalk",
    "vegetation",
    "car",
    "wall",
    "traffic sign",
)
IGNORE_INDEX = 255
#: segcheck split -> (archive folder under root, sub-folder of images/ and annotations/)
SPLIT_FOLDERS = {"train": ("train", "training"), "val": ("train", "validation"), "test": ("test", "test")}


def _table(values: list[int]) -> np.ndarray:
    table = np.array(values, dtype=np.int64)
    table.setflags(write=False)
    return table


#: on-disk value -> segcheck label (index = on-disk value; -1: the value may not occur):
#: the official shift by -1, the anomaly (14) becoming 13
LABELS = _table([-1, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13])
#: the same with ``unlabeled_as_ignore``: unlabeled (1) ignored, the others shifted by -2
LABELS_UNLABELED_AS_IGNORE = _table([-1, IGNORE_INDEX, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12])

CONFIG_NAME = "dataset.yaml"
CONFIG_KEYS = ("unlabeled_as_ignore", "segcheck")
_EXAMPLE = "e.g. 'unlabeled_as_ignore: true' (the only key; default false)"
_EXPECTED = "StreetHazards' on-disk labels 1..14 (1 unlabeled .. 13 traffic sign, 14 anomaly)"


def read_options(root: Path) -> bool:
    """``unlabeled_as_ignore`` from the optional ``root/dataset.yaml`` (False without one)."""
    path = root / CONFIG_NAME
    if not path.is_file():
        return False
    value = read_config(path, CONFIG_KEYS, _EXAMPLE).get("unlabeled_as_ignore", False)
    if not isinstance(value, bool):
        raise SegcheckError(f"{path}: unlabeled_as_ignore must be true or false, got {value!r}")
    return value


class StreetHazards(MappedPairs):
    """One split of StreetHazards; satisfies ``segcheck.data.SegDataset``.

    :param root: the folder holding ``train/`` and ``test/`` (see the module docstring).
    :param split: ``"train"``, ``"val"`` or ``"test"``.

    Construction reads the optional ``dataset.yaml`` and pairs images with annotations (a
    missing folder, an empty split or an unpaired file is a ``SegcheckError``); ``dataset[i]``
    reads one pair and maps its labels through ``table``, raising ``SegcheckError`` for an
    unreadable file, a size mismatch or an on-disk value outside 1..14.
    """

    EXPECTED = _EXPECTED

    def __init__(self, root: Path | str, split: str = "train"):
        root = Path(root)
        if split not in SPLIT_FOLDERS:
            raise SegcheckError(f"unknown split {split!r} for streethazards; known splits: {', '.join(SPLIT_FOLDERS)}")
        if not root.is_dir():
            raise SegcheckError(
                f"dataset root {root} does not exist or is not a folder; pass --data-root pointing at the folder "
                "that holds StreetHazards' train/ and test/"
            )
        self.unlabeled_as_ignore = read_options(root)
        self.table = LABELS_UNLABELED_AS_IGNORE if self.unlabeled_as_ignore else LABELS
        classes = CLASSES[1:] if self.unlabeled_as_ignore else CLASSES
        self.spec = DatasetSpec(
            classes=classes,
            ignore_index=IGNORE_INDEX,
            splits=tuple(SPLIT_FOLDERS),
            anomaly_index=len(classes),
            anomaly_splits=("test",),
        )
        self.root, self.split = root, split
        self.identity = f"streethazards:{root.resolve()}" + (":unlabeled_as_ignore" if self.unlabeled_as_ignore else "")
        archive, sub = SPLIT_FOLDERS[split]
        images_dir, masks_dir = root / archive / "images" / sub, root / archive / "annotations" / sub
        for folder, what in ((images_dir, "images"), (masks_dir, "annotations")):
            if not folder.is_dir():
                raise SegcheckError(
                    f"{what} folder {folder} is missing for split {split!r}; extract streethazards_{archive}.tar "
                    f"into {root} (expected {archive}/images/{sub}/<town>/*.png and {archive}/annotations/{sub}/)"
                )
        images = files_by_path(images_dir, IMAGE_SUFFIXES, "image")
        if not images:
            raise SegcheckError(f"no images under {images_dir} (looked for {' '.join(IMAGE_SUFFIXES)}); add them there")
        masks = files_by_path(masks_dir, MASK_SUFFIXES, "annotation")
        check_paired(
            images,
            masks,
            root / archive,
            f"each image under images/{sub}/ needs the annotation PNG at the same path under annotations/{sub}/",
        )
        self.pairs = tuple((images[key], masks[key]) for key in sorted(images))

    def __repr__(self) -> str:
        return f"StreetHazards(root={str(self.root)!r}, split={self.split!r}, len={len(self)})"


def _factory(root: Path | None, split: str) -> StreetHazards:
    """Registry factory: StreetHazards at ``root`` (required)."""
    if root is None:
        raise SegcheckError(
            "dataset 'streethazards' needs --data-root pointing at the folder that holds StreetHazards' "
            "train/ and test/"
        )
    return StreetHazards(root, split)


@hookimpl
def segcheck_register_datasets(registry):
    registry.add(
        "streethazards",
        _factory,
        description="StreetHazards (official layout): 13 classes, anomalies (on disk 14) in the test split only",
        needs_root=True,
        settings=declared_settings,
    )
