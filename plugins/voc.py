"""``voc``: PASCAL VOC 2012 segmentation in its official layout.

The PASCAL VOC 2012 challenge (Everingham et al.; http://host.robots.ox.ac.uk/pascal/VOC/voc2012/)
as extracted from ``VOCtrainval_11-May-2012.tar``; ``--data-root`` is ``VOCdevkit/VOC2012``,
``VOCdevkit`` or the folder holding ``VOCdevkit``::

    VOC2012/ImageSets/Segmentation/train.txt     the ids of split train (one a line; 1464)
    VOC2012/ImageSets/Segmentation/val.txt       the ids of split val (1449)
    VOC2012/JPEGImages/<id>.jpg
    VOC2012/SegmentationClass/<id>.png           palette (mode P) PNG: palette index = class id

The masks' palette index is the label: 0 background .. 20 tvmonitor (``CLASSES``), 255 the
void border around objects (ignored); any other value is an error naming the file. Any
single-channel PNG of those values is read the same way (e.g. a mode L copy); an RGB PNG,
the colour rendering of the labels, is an error that says so (the indices are lost).
``JPEGImages`` holds many images without a mask (detection only): only the ids of the
split's list are read, each needing its image and its mask (a missing one is an error
naming it). Images come in many sizes: set ``eval.resize`` (e.g. ``--eval-resize 512x512``).

The splits are ``train`` and ``val``: the test images (a separate archive) have no public
masks, and ``trainval.txt`` is train and val together, so neither is a split here; a gate
comparing with a held-out ``test`` split (generalization) skips with that reason (set its
``split`` to ``train`` to compare with the training split). SBD's ``SegmentationClassAug``
is another layout and is not read. VOC declares no normalization (mean/std None: the
ImageNet default applies).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from segcheck import SegcheckError
from segcheck.data import DatasetSpec
from segcheck.hookspecs import hookimpl
from segcheck_plugins.folder import MappedPairs, shown

__all__ = ["CLASSES", "LABELS", "SPLITS", "VOC", "dataset_folder", "segcheck_register_datasets"]

#: the 21 classes, label = palette index
CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip
IGNORE_INDEX = 255
SPLITS = ("train", "val")
#: palette index -> segcheck label: 0..20 unchanged, 255 (void) ignored, any other index may not occur (-1)
LABELS = np.array([*range(len(CLASSES))] + [-1] * (255 - len(CLASSES)) + [IGNORE_INDEX], dtype=np.int64)
LABELS.setflags(write=False)
_EXPECTED = f"VOC palette indices 0..{len(CLASSES) - 1} (0 background .. 20 tvmonitor) and 255 (void)"
_MASK_ADVICE = (
    "VOC masks are palette (mode P) PNGs whose palette index is the class id; use SegmentationClass/ from "
    "VOCtrainval_11-May-2012.tar (an RGB colour rendering has lost the indices)"
)
_LAYOUT = (
    "VOC2012/ImageSets/Segmentation/{train,val}.txt, VOC2012/JPEGImages/<id>.jpg, VOC2012/SegmentationClass/<id>.png"
)


def dataset_folder(root: Path) -> Path:
    """The ``VOC2012`` folder: ``root`` itself, ``root/VOC2012`` or ``root/VOCdevkit/VOC2012``,
    whichever holds ``ImageSets/Segmentation``; a ``SegcheckError`` naming the layout otherwise."""
    if not root.is_dir():
        raise SegcheckError(
            f"dataset root {root} does not exist or is not a folder; pass --data-root pointing at VOCdevkit/VOC2012, "
            f"VOCdevkit or the folder holding it (expected {_LAYOUT})"
        )
    candidates = (root, root / "VOC2012", root / "VOCdevkit" / "VOC2012")
    for base in candidates:
        if (base / "ImageSets" / "Segmentation").is_dir():
            return base
    raise SegcheckError(
        f"no VOC 2012 dataset at {root}: none of {', '.join(str(c) for c in candidates)} holds ImageSets/Segmentation; "
        f"pass --data-root pointing at VOCdevkit/VOC2012, VOCdevkit or the folder holding it (expected {_LAYOUT})"
    )


def read_ids(path: Path) -> list[str]:
    """The image ids listed in ``path`` (one a line, blank lines skipped)."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise SegcheckError(f"cannot read the split list {path}: {exc}; replace it (one image id a line)") from None
    return [line.strip() for line in text.splitlines() if line.strip()]


class VOC(MappedPairs):
    """One split of PASCAL VOC 2012 segmentation; satisfies ``segcheck.data.SegDataset``.

    :param root: ``VOCdevkit/VOC2012``, ``VOCdevkit`` or the folder holding it (see the module docstring).
    :param split: ``"train"`` or ``"val"``.

    Construction reads the split's id list and checks that each id has its image and mask
    (a missing list, an empty list or a missing file is a ``SegcheckError``); ``dataset[i]``
    reads one pair and maps its labels through ``LABELS``, raising ``SegcheckError`` for an
    unreadable file, an RGB mask, a size mismatch or an index outside 0..20 and 255.
    """

    EXPECTED = _EXPECTED
    MASK_ADVICE = _MASK_ADVICE
    table = LABELS

    def __init__(self, root: Path | str, split: str = "train"):
        root = Path(root)
        if split not in SPLITS:
            raise SegcheckError(
                f"unknown split {split!r} for voc; known splits: {', '.join(SPLITS)} (VOC's test masks are not "
                "public; trainval is train and val together)"
            )
        base = dataset_folder(root)
        self.spec = DatasetSpec(classes=CLASSES, ignore_index=IGNORE_INDEX, splits=SPLITS)
        self.root, self.split = base, split
        self.identity = f"voc:{base.resolve()}"
        listing = base / "ImageSets" / "Segmentation" / f"{split}.txt"
        if not listing.is_file():
            raise SegcheckError(
                f"split list {listing} is missing; extract VOCtrainval_11-May-2012.tar completely (expected {_LAYOUT})"
            )
        ids = sorted(set(read_ids(listing)))
        if not ids:
            raise SegcheckError(f"the split list {listing} lists no image id; it should hold one id a line")
        pairs = [(base / "JPEGImages" / f"{i}.jpg", base / "SegmentationClass" / f"{i}.png") for i in ids]
        for side, folder, suffix in ((0, "JPEGImages", "jpg"), (1, "SegmentationClass", "png")):
            missing = [i for i, pair in zip(ids, pairs) if not pair[side].is_file()]
            if missing:
                raise SegcheckError(
                    f"{len(missing)} ids of {listing} have no {folder}/<id>.{suffix} in {base}: [{shown(missing)}]; "
                    f"restore those files or remove the ids from {listing.name}"
                )
        self.pairs = tuple(pairs)

    def __repr__(self) -> str:
        return f"VOC(root={str(self.root)!r}, split={self.split!r}, len={len(self)})"


def _factory(root: Path | None, split: str) -> VOC:
    """Registry factory: VOC 2012 at ``root`` (required)."""
    if root is None:
        raise SegcheckError("dataset 'voc' needs --data-root pointing at VOCdevkit/VOC2012, VOCdevkit or its parent")
    return VOC(root, split)


@hookimpl
def segcheck_register_datasets(registry):
    registry.add(
        "voc",
        _factory,
        description="PASCAL VOC 2012 segmentation (VOCdevkit/VOC2012, palette PNGs): 21 classes, splits train and val",
        needs_root=True,
    )
