"""``cityscapes``: the Cityscapes dataset (fine annotations) in its official layout.

Cityscapes (Cordts et al., "The Cityscapes Dataset for Semantic Urban Scene Understanding";
https://www.cityscapes-dataset.com) as extracted from ``leftImg8bit_trainvaltest.zip`` and
``gtFine_trainvaltest.zip`` (``root`` is ``--data-root``, the folder holding both)::

    root/leftImg8bit/<split>/<city>/<name>_leftImg8bit.png        split train, val or test
    root/gtFine/<split>/<city>/<name>_gtFine_labelIds.png         the official label ids (0..33)
    root/gtFine/<split>/<city>/<name>_gtFine_labelTrainIds.png    or: already train ids (0..18, 255)

Image and mask are paired by ``<city>/<name>``; the other ``gtFine`` files (``_color.png``,
``_instanceIds.png``, ``_polygons.json``) are not read. A ``_labelIds.png`` goes through
the official labelId -> trainId table (``LABEL_IDS``, from cityscapesScripts
``cityscapesscripts/helpers/labels.py``, https://github.com/mcordts/cityscapesScripts): the
19 train classes road (7 -> 0) .. bicycle (33 -> 18), every other id (0 unlabeled, 1 ego
vehicle, ..., 29 caravan, 30 trailer) -> 255, ignored. License plate (id -1) is never drawn
in the label images (``json2labelImg.py`` skips negative ids), so a value outside 0..33 is
an error naming the file. A ``_labelTrainIds.png`` (made by cityscapesScripts'
``createTrainIdLabelImgs.py``) is read as is: 0..18 and 255, any other value an error.

When both exist for one image, the ``_labelIds.png`` wins: it is the official annotation,
while train-id files are derived from it with a trainId column that cityscapesScripts
invites users to change ("Feel free to modify these IDs"), so only the labelIds file
mapped through the official table is known to hold the 19 classes below.

Split ``test`` is unlabelled (``spec.unlabelled_splits``): Cityscapes does not publish its
test annotations (the ``gtFine/test`` files are void placeholders), so its masks are not
read and its samples are ``(image, None)``; gates that need labels skip it. Cityscapes
declares no normalization (mean/std None: the ImageNet default applies).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from segcheck import SegcheckError
from segcheck.data import DatasetSpec
from segcheck.hookspecs import hookimpl
from segcheck_plugins.folder import MASK_SUFFIXES, MappedPairs, check_paired, files_by_path

__all__ = [
    "CLASSES",
    "LABEL_IDS",
    "LABEL_NAMES",
    "SPLITS",
    "TRAIN_IDS",
    "Cityscapes",
    "segcheck_register_datasets",
]

IGNORE_INDEX = 255
SPLITS = ("train", "val", "test")
UNLABELLED_SPLITS = ("test",)
IMAGE_SUFFIX = "_leftImg8bit"
LABEL_IDS_SUFFIX = "_gtFine_labelIds"
TRAIN_IDS_SUFFIX = "_gtFine_labelTrainIds"

#: cityscapesScripts helpers/labels.py ``labels``: (name, id, trainId) of every label with an id >= 0
#: (license plate, id -1 and trainId -1, is left out: it is never drawn in the label images)
_OFFICIAL = (
    ("unlabeled", 0, 255),
    ("ego vehicle", 1, 255),
    ("rectification border", 2, 255),
    ("out of roi", 3, 255),
    ("static", 4, 255),
    ("dynamic", 5, 255),
    ("ground", 6, 255),
    ("road", 7, 0),
    ("sidewalk", 8, 1),
    ("parking", 9, 255),
    ("rail track", 10, 255),
    ("building", 11, 2),
    ("wall", 12, 3),
    ("fence", 13, 4),
    ("guard rail", 14, 255),
    ("bridge", 15, 255),
    ("tunnel", 16, 255),
    ("pole", 17, 5),
    ("polegroup", 18, 255),
    ("traffic light", 19, 6),
    ("traffic sign", 20, 7),
    ("vegetation", 21, 8),
    ("terrain", 22, 9),
    ("sky", 23, 10),
    ("person", 24, 11),
    ("rider", 25, 12),
    ("car", 26, 13),
    ("truck", 27, 14),
    ("bus", 28, 15),
    ("caravan", 29, 255),
    ("trailer", 30, 255),
    ("train", 31, 16),
    ("motorcycle", 32, 17),
    ("bicycle", 33, 18),
)
#: labelId -> name, for the 34 label ids 0..33
LABEL_NAMES = tuple(name for name, _, _ in _OFFICIAL)
#: the 19 train classes, in trainId order (road .. bicycle)
CLASSES = tuple(name for name, _, train_id in sorted(_OFFICIAL, key=lambda r: r[2]) if train_id != IGNORE_INDEX)


def _readonly(table: np.ndarray) -> np.ndarray:
    table.setflags(write=False)
    return table


#: on-disk labelId -> segcheck label (trainId, 255 ignored); indexed by labelId 0..33
LABEL_IDS = _readonly(np.array([train_id for _, _, train_id in _OFFICIAL], dtype=np.int64))
#: on-disk trainId -> segcheck label: 0..18 and 255 unchanged, any other value may not occur (-1)
TRAIN_IDS = _readonly(np.array([*range(len(CLASSES))] + [-1] * (255 - len(CLASSES)) + [IGNORE_INDEX], dtype=np.int64))
_EXPECTED_IDS = "Cityscapes labelIds 0..33 (gtFine *_gtFine_labelIds.png)"
_EXPECTED_TRAIN = f"Cityscapes trainIds 0..{len(CLASSES) - 1} and {IGNORE_INDEX} (gtFine *_gtFine_labelTrainIds.png)"
_LAYOUT = (
    f"leftImg8bit/<split>/<city>/<name>{IMAGE_SUFFIX}.png and gtFine/<split>/<city>/<name>{LABEL_IDS_SUFFIX}.png "
    f"(or {TRAIN_IDS_SUFFIX}.png)"
)


def _suffixed(folder: Path, suffix: str, what: str) -> dict[str, Path]:
    """``{"<city>/<name>": path}`` of the PNGs under ``folder`` named ``<name><suffix>.png``."""
    return {
        key[: -len(suffix)]: path
        for key, path in files_by_path(folder, MASK_SUFFIXES, what).items()
        if key.endswith(suffix) and len(key.rsplit("/", 1)[-1]) > len(suffix)
    }


class Cityscapes(MappedPairs):
    """One split of Cityscapes (fine annotations); satisfies ``segcheck.data.SegDataset``.

    :param root: the folder holding ``leftImg8bit/`` and ``gtFine/`` (see the module docstring).
    :param split: ``"train"``, ``"val"`` or ``"test"`` (unlabelled: samples are ``(image, None)``).

    Construction lists the split's images and (train, val) pairs them with their masks (a
    missing folder, an empty split or an image without a mask is a ``SegcheckError``);
    ``dataset[i]`` reads one pair and maps its labels, raising ``SegcheckError`` for an
    unreadable file, a size mismatch or a value outside the table of its file kind.
    """

    def __init__(self, root: Path | str, split: str = "train"):
        root = Path(root)
        if split not in SPLITS:
            raise SegcheckError(f"unknown split {split!r} for cityscapes; known splits: {', '.join(SPLITS)}")
        if not root.is_dir():
            raise SegcheckError(
                f"dataset root {root} does not exist or is not a folder; pass --data-root pointing at the folder "
                f"that holds Cityscapes' leftImg8bit/ and gtFine/ ({_LAYOUT})"
            )
        if not (root / "leftImg8bit").is_dir():
            raise SegcheckError(
                f"no Cityscapes dataset at {root}: it holds no leftImg8bit/ folder; pass --data-root pointing at the "
                f"folder that holds leftImg8bit/ and gtFine/ (expected {_LAYOUT})"
            )
        self.spec = DatasetSpec(
            classes=CLASSES, ignore_index=IGNORE_INDEX, splits=SPLITS, unlabelled_splits=UNLABELLED_SPLITS
        )
        self.root, self.split = root, split
        self.identity = f"cityscapes:{root.resolve()}"
        images_dir, masks_dir = root / "leftImg8bit" / split, root / "gtFine" / split
        labelled = self.spec.labelled(split)
        for folder, what, archive in (
            (images_dir, "images", "leftImg8bit_trainvaltest.zip"),
            *([(masks_dir, "masks", "gtFine_trainvaltest.zip")] if labelled else []),
        ):
            if not folder.is_dir():
                raise SegcheckError(
                    f"{what} folder {folder} is missing for split {split!r}; extract {archive} into {root} "
                    f"(expected {_LAYOUT})"
                )
        images = _suffixed(images_dir, IMAGE_SUFFIX, "image")
        if not images:
            raise SegcheckError(
                f"no images under {images_dir} (looked for <city>/<name>{IMAGE_SUFFIX}.png); expected {_LAYOUT}"
            )
        if not labelled:
            self.pairs = tuple((images[key], None) for key in sorted(images))
            return
        # labelIds win over labelTrainIds (see the module docstring)
        masks = {**_suffixed(masks_dir, TRAIN_IDS_SUFFIX, "mask"), **_suffixed(masks_dir, LABEL_IDS_SUFFIX, "mask")}
        check_paired(
            images,
            masks,
            root,
            f"each leftImg8bit/{split}/<city>/<name>{IMAGE_SUFFIX}.png needs gtFine/{split}/<city>/"
            f"<name>{LABEL_IDS_SUFFIX}.png (or {TRAIN_IDS_SUFFIX}.png)",
        )
        self.pairs = tuple((images[key], masks[key]) for key in sorted(images))

    def labels_of(self, mask_path: Path) -> tuple[np.ndarray, str]:
        if mask_path.stem.endswith(LABEL_IDS_SUFFIX):
            return LABEL_IDS, _EXPECTED_IDS
        return TRAIN_IDS, _EXPECTED_TRAIN

    def __repr__(self) -> str:
        return f"Cityscapes(root={str(self.root)!r}, split={self.split!r}, len={len(self)})"


def _factory(root: Path | None, split: str) -> Cityscapes:
    """Registry factory: Cityscapes at ``root`` (required)."""
    if root is None:
        raise SegcheckError(
            "dataset 'cityscapes' needs --data-root pointing at the folder that holds leftImg8bit/ and gtFine/"
        )
    return Cityscapes(root, split)


@hookimpl
def segcheck_register_datasets(registry):
    registry.add(
        "cityscapes",
        _factory,
        description="Cityscapes (leftImg8bit/ + gtFine/ labelIds or labelTrainIds): 19 train classes, test unlabelled",
        needs_root=True,
    )
