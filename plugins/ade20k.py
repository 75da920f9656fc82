"""``ade20k``: ADE20K as the SceneParsing benchmark (ADEChallengeData2016) lays it out.

The MIT Scene Parsing benchmark (Zhou et al., "Scene Parsing through ADE20K Dataset";
http://sceneparsing.csail.mit.edu, https://github.com/CSAILVision/sceneparsing) ships
``ADEChallengeData2016.zip``; ``--data-root`` is the folder holding ``ADEChallengeData2016/``
or that folder itself::

    ADEChallengeData2016/images/training/<name>.jpg            split train (20210 images)
    ADEChallengeData2016/annotations/training/<name>.png
    ADEChallengeData2016/images/validation/<name>.jpg          split val (2000 images)
    ADEChallengeData2016/annotations/validation/<name>.png

Image and annotation are paired by file stem. Annotations are single-channel PNGs holding
0..150: 0 is "other objects" (not one of the 150 classes) and becomes 255, ignored; 1..150
become 0..149 (the usual ``reduce_zero_label``, e.g. mmsegmentation's ADE20K config);
any other value is an error naming the file. The class names (``CLASSES``) are the first
names of ``objectInfo150.csv`` in that order (as in mmsegmentation's ``ADE20KDataset``).
Images come in many sizes: set ``eval.resize`` (e.g. ``--eval-resize short:512``).

ADE20K publishes no labelled test split (the 2016 challenge's test images have no public
annotations), so the splits are ``train`` and ``val`` only: a gate comparing with a
held-out ``test`` split (generalization) skips with that reason; set its ``split`` to
``train`` to compare with the training split instead. The full ADE20K release
(``ADE20K_2021_17_01``, 3000+ classes) is another layout and is not read. ADE20K declares
no normalization (mean/std None: the ImageNet default applies).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from segcheck import SegcheckError
from segcheck.data import DatasetSpec
from segcheck.hookspecs import hookimpl
from segcheck_plugins.folder import IMAGE_SUFFIXES, MASK_SUFFIXES, MappedPairs, check_paired, files_by_stem

__all__ = ["CLASSES", "FOLDER", "LABELS", "SPLIT_FOLDERS", "ADE20K", "segcheck_register_datasets"]

FOLDER = "ADEChallengeData2016"
IGNORE_INDEX = 255
#: segcheck split -> the sub-folder of images/ and annotations/
SPLIT_FOLDERS = {"train": "training", "val": "validation"}
#: the 150 classes, label i = on-disk value i + 1 (objectInfo150.csv order, first name of each)
CLASSES = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass", "cabinet",
    "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair", "car", "water",
    "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field", "armchair", "seat", "fence", "desk",
    "rock", "wardrobe", "lamp", "bathtub", "railing", "cushion", "base", "box", "column", "signboard",
    "chest of drawers", "counter", "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand", "path",
    "stairs", "runway", "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge", "bookcase",
    "blind", "coffee table", "toilet", "flower", "book", "hill", "bench", "countertop", "stove", "palm",
    "kitchen island", "computer", "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus", "towel", "light",
    "truck", "tower", "chandelier", "awning", "streetlight", "booth", "television receiver", "airplane",
    "dirt track", "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle", "buffet", "poster",
    "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer", "plaything", "swimming pool", "stool",
    "barrel", "basket", "waterfall", "tent", "bag", "minibike", "cradle", "oven", "ball", "food", "step", "tank",
    "trade name", "microwave", "pot", "animal", "bicycle", "lake", "dishwasher", "screen", "blanket", "sculpture",
    "hood", "sconce", "vase", "traffic light", "tray", "ashcan", "fan", "pier", "crt screen", "plate", "monitor",
    "bulletin board", "shower", "radiator", "glass", "clock", "flag",
)  # fmt: skip
#: on-disk value -> segcheck label: 0 (other) -> 255, 1..150 -> 0..149; indexed by on-disk value 0..150
LABELS = np.array([IGNORE_INDEX, *range(len(CLASSES))], dtype=np.int64)
LABELS.setflags(write=False)
_EXPECTED = f"ADE20K's on-disk labels 0..{len(CLASSES)} (0 other, 1 wall .. {len(CLASSES)} flag)"
_LAYOUT = f"{FOLDER}/images/training|validation/<name>.jpg and {FOLDER}/annotations/training|validation/<name>.png"


def dataset_folder(root: Path) -> Path:
    """``root/ADEChallengeData2016`` or ``root`` itself, whichever holds ``images/`` and
    ``annotations/``; a ``SegcheckError`` naming the layout otherwise."""
    if not root.is_dir():
        raise SegcheckError(
            f"dataset root {root} does not exist or is not a folder; pass --data-root pointing at {FOLDER}/ or "
            f"the folder holding it (expected {_LAYOUT})"
        )
    for base in (root / FOLDER, root):
        if (base / "images").is_dir() and (base / "annotations").is_dir():
            return base
    raise SegcheckError(
        f"no ADE20K dataset at {root}: neither it nor {root / FOLDER} holds images/ and annotations/; pass "
        f"--data-root pointing at {FOLDER}/ or the folder holding it (expected {_LAYOUT})"
    )


class ADE20K(MappedPairs):
    """One split of ADE20K (SceneParsing, 150 classes); satisfies ``segcheck.data.SegDataset``.

    :param root: ``ADEChallengeData2016/`` or the folder holding it (see the module docstring).
    :param split: ``"train"`` or ``"val"``.

    Construction pairs the split's images with annotations (a missing folder, an empty split
    or an unpaired file is a ``SegcheckError``); ``dataset[i]`` reads one pair and maps its
    labels through ``LABELS``, raising ``SegcheckError`` for an unreadable file, a size
    mismatch or an on-disk value above 150.
    """

    EXPECTED = _EXPECTED
    table = LABELS

    def __init__(self, root: Path | str, split: str = "train"):
        root = Path(root)
        if split not in SPLIT_FOLDERS:
            raise SegcheckError(
                f"unknown split {split!r} for ade20k; known splits: {', '.join(SPLIT_FOLDERS)} (ADE20K publishes "
                "no labelled test split)"
            )
        base = dataset_folder(root)
        self.spec = DatasetSpec(classes=CLASSES, ignore_index=IGNORE_INDEX, splits=tuple(SPLIT_FOLDERS))
        self.root, self.split = base, split
        self.identity = f"ade20k:{base.resolve()}"
        sub = SPLIT_FOLDERS[split]
        images_dir, masks_dir = base / "images" / sub, base / "annotations" / sub
        for folder in (images_dir, masks_dir):
            if not folder.is_dir():
                raise SegcheckError(
                    f"folder {folder} is missing for split {split!r}; extract {FOLDER}.zip completely (expected "
                    f"{_LAYOUT})"
                )
        images = files_by_stem(images_dir, IMAGE_SUFFIXES, "image")
        if not images:
            raise SegcheckError(
                f"no images in {images_dir} (looked for {' '.join(IMAGE_SUFFIXES)}); expected {_LAYOUT}"
            )
        masks = files_by_stem(masks_dir, MASK_SUFFIXES, "annotation")
        check_paired(
            images, masks, base, f"each images/{sub}/<name>.jpg needs its annotation annotations/{sub}/<name>.png"
        )
        self.pairs = tuple((images[stem], masks[stem]) for stem in sorted(images))

    def __repr__(self) -> str:
        return f"ADE20K(root={str(self.root)!r}, split={self.split!r}, len={len(self)})"


def _factory(root: Path | None, split: str) -> ADE20K:
    """Registry factory: ADE20K at ``root`` (required)."""
    if root is None:
        raise SegcheckError(f"dataset 'ade20k' needs --data-root pointing at {FOLDER}/ or the folder holding it")
    return ADE20K(root, split)


@hookimpl
def segcheck_register_datasets(registry):
    registry.add(
        "ade20k",
        _factory,
        description=f"ADE20K SceneParsing ({FOLDER}/): 150 classes (0 'other' ignored), splits train and val",
        needs_root=True,
    )
