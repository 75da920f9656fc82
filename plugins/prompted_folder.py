"""``prompted-folder``: images and one mask PNG per (image, concept) on disk, for text-prompted models.

Layout (``root`` is ``--data-root``; splits as in the ``folder`` layout)::

    root/dataset.yaml                          required: the prompts, optional settings (below)
    root/<split>/images/<id>.jpg               per-split folders (train/, val/, test/, any name) ...
    root/<split>/masks/<id>__<concept>.png     one mask per image and concept it is annotated for
    root/images/ and root/masks/               ... or, without split folders, one flat pair that
                                                   serves every split (train, val, test)

``dataset.yaml`` keys (safe-loaded; unknown keys are an error)::

    prompts:                         # required: concept -> its prompts (>= 1), the first the canonical one
      crack: [segment crack, segment wall crack]
      taping: [segment taping area, segment joint/tape]
    mask_values: [0, 255]            # background, foreground as stored: [0, 255] (default) or [0, 1]
    ignore_index: 128                # optional: the on-disk value of pixels no metric counts; only a
                                     #   declared one may appear in the masks (not one of mask_values)
    mean: [0.485, 0.456, 0.406]      # optional normalization, both or neither, as in folder
    std: [0.229, 0.224, 0.225]

Images are what ``folder`` reads (.png .jpg .jpeg .bmp .tif .tiff, converted to RGB uint8);
masks are single-channel PNGs. A sample is an (image, concept) pair that has a mask file,
sorted by (image id, concept): ``dataset[i]`` is ``(image, mask)`` with the mask 0/1 int64
(``ignore_index`` kept) and ``pair(i)`` is ``(image_id, concept)``. An image may be annotated
for some concepts only, or for none: then it is no sample, but :meth:`PromptedFolder.image_ids`
lists it and ``segcheck predict`` predicts it. The ``masks/`` folder may be missing (a split
with no annotation at all). Concept names are letters, digits, ``-`` and ``_`` (they are part
of file names). A mask naming a concept ``prompts`` does not declare, a mask without its image,
and (when the sample is read) a mask that is not single-channel, not the image's size or holds
a value outside ``mask_values`` and ``ignore_index`` are one-line errors naming the file.
"""

from __future__ import annotations

import operator
import re
from pathlib import Path
from typing import Any

import numpy as np

from segcheck import SegcheckError
from segcheck.data import DatasetSpec
from segcheck.hookspecs import hookimpl
from segcheck_plugins.folder import (
    IMAGE_SUFFIXES,
    check_index,
    dataset_root,
    declared_settings,
    files_by_stem,
    map_labels,
    mask_files,
    read_config,
    read_image,
    read_normalization,
    read_pair,
    shown,
    split_folder,
)

__all__ = ["PromptedFolder", "load_config", "segcheck_register_datasets"]

CONFIG_NAME = "dataset.yaml"
CONFIG_KEYS = ("prompts", "mask_values", "ignore_index", "mean", "std", "segcheck")
MASK_VALUES = ([0, 255], [0, 1])
SEPARATOR = "__"  # between the image id and the concept in a mask's file name
_CONCEPT = re.compile(r"[A-Za-z0-9_-]+")  # the whole name (fullmatch: no trailing newline slips through)
_EXAMPLE = (
    "e.g. 'prompts: {crack: [segment crack, segment wall crack]}' (optional: mask_values, ignore_index, mean, std)"
)
_MASK_ADVICE = "save each mask as a single-channel (mode L) PNG holding the declared mask_values"


def load_config(root: Path) -> dict[str, Any]:
    """Read and validate ``root/dataset.yaml``: ``{"prompts", "mask_values", "ignore_index",
    "mean", "std"}`` with defaults filled in; any problem is a one-line ``SegcheckError``."""
    path = root / CONFIG_NAME
    if not path.is_file():
        raise SegcheckError(f"{path} is missing; write it with each concept's prompts, {_EXAMPLE}")
    raw = read_config(path, CONFIG_KEYS, _EXAMPLE)
    prompts = raw.get("prompts")
    if not isinstance(prompts, dict) or not prompts:
        raise SegcheckError(f"{path} needs 'prompts', a mapping of each concept to its prompts, {_EXAMPLE}")
    for concept, listed in prompts.items():
        if not isinstance(concept, str) or not _CONCEPT.fullmatch(concept):
            raise SegcheckError(
                f"{path}: concept name {concept!r} is not file-name safe; use letters, digits, '-' and '_' "
                f"(masks are named <image id>{SEPARATOR}<concept>.png)"
            )
        if not isinstance(listed, list) or not listed or not all(isinstance(p, str) and p.strip() for p in listed):
            raise SegcheckError(
                f"{path}: concept {concept!r} has prompts {listed!r}; give a list of at least one non-empty "
                f"prompt, {_EXAMPLE}"
            )
    mask_values = raw.get("mask_values", [0, 255])
    if mask_values not in MASK_VALUES or not all(type(v) is int for v in mask_values):
        raise SegcheckError(
            f"{path}: mask_values must be [0, 255] or [0, 1] (background, foreground as the masks store them), "
            f"got {mask_values!r}"
        )
    ignore = check_index(raw.get("ignore_index"), "ignore_index", path)
    if ignore is not None and ignore in mask_values:
        raise SegcheckError(
            f"{path}: ignore_index {ignore} is one of mask_values {mask_values}; a pixel cannot be both, so "
            "pick an ignore value the masks do not use for background or foreground"
        )
    config = {"prompts": prompts, "mask_values": tuple(mask_values), "ignore_index": 255 if ignore is None else ignore}
    config["ignore_on_disk"] = ignore is not None  # only a declared ignore value may appear in the masks
    config.update(read_normalization(raw, path))
    return config


class PromptedFolder:
    """One split of a prompted-folder dataset; a prompted ``segcheck.data.SegDataset``.

    :param root: the dataset folder (see the module docstring for the layout).
    :param split: a split folder name, or train/val/test for the flat layout.

    Construction reads ``dataset.yaml`` and pairs mask files with images and concepts;
    ``dataset[i]`` reads and checks one sample. :meth:`image_ids` and :meth:`image` list and
    read every image of the split, annotated or not.
    """

    def __init__(self, root: Path | str, split: str = "train"):
        root = dataset_root(root)
        config = load_config(root)
        self.mask_values = config.pop("mask_values")
        self.ignore_on_disk = config.pop("ignore_on_disk")
        splits, base = split_folder(root, split, "prompted-folder")
        try:
            self.spec = DatasetSpec(classes=("background", "foreground"), splits=splits, **config)
        except SegcheckError as exc:
            raise SegcheckError(f"{root / CONFIG_NAME}: {exc}") from None
        self.root, self.split = root, split
        self.identity = f"prompted-folder:{root.resolve()}"
        images_dir, masks_dir = base / "images", base / "masks"
        if not images_dir.is_dir():
            raise SegcheckError(f"images folder {images_dir} is missing; put the split's images there")
        self.images = files_by_stem(images_dir, IMAGE_SUFFIXES, "image")
        if not self.images:
            raise SegcheckError(
                f"no images in {images_dir} (looked for {' '.join(IMAGE_SUFFIXES)}); add image files there"
            )
        masks = mask_files(masks_dir) if masks_dir.is_dir() else {}
        self.samples = sorted(self._pair(stem, masks_dir) + (path,) for stem, path in masks.items())
        self.table, self.expected = self._table()

    def _pair(self, stem: str, masks_dir: Path) -> tuple[str, str]:
        """``(image_id, concept)`` of mask ``stem``: the longest declared concept it ends with
        (after the separator) whose image exists."""
        concepts = sorted(self.spec.concepts, key=len, reverse=True)
        found = [c for c in concepts if stem.endswith(SEPARATOR + c) and len(stem) > len(c) + len(SEPARATOR)]
        for concept in found:
            image_id = stem[: -len(concept) - len(SEPARATOR)]
            if image_id in self.images:
                return image_id, concept
        mask = masks_dir / f"{stem}.png"
        if found:
            image_id = stem[: -len(found[0]) - len(SEPARATOR)]
            raise SegcheckError(
                f"mask {mask} has no image: no {image_id}.* in {masks_dir.parent / 'images'} (its images: "
                f"{shown(sorted(self.images), 3)}); add the image or remove the mask"
            )
        if SEPARATOR not in stem:
            raise SegcheckError(
                f"mask {mask} is not named <image id>{SEPARATOR}<concept>.png; rename it, e.g. "
                f"{stem}{SEPARATOR}{self.spec.concepts[0]}.png"
            )
        concept = stem.rsplit(SEPARATOR, 1)[1]
        raise SegcheckError(
            f"mask {mask} is for concept {concept!r}, which {self.root / CONFIG_NAME} does not declare "
            f"(prompts for: {', '.join(self.spec.concepts)}); add its prompts there or remove the mask"
        )

    def _table(self) -> tuple[np.ndarray, str]:
        """The lookup from on-disk mask values to 0/1 and ``ignore_index``, and how errors describe them."""
        background, foreground = self.mask_values
        ignore = self.spec.ignore_index
        on_disk_ignore = self.ignore_on_disk
        table = np.full(max(foreground, ignore if on_disk_ignore else 0) + 1, -1, dtype=np.int64)
        table[background], table[foreground] = 0, 1
        expected = f"{background} (background) and {foreground} (foreground) (mask_values in {CONFIG_NAME})"
        if on_disk_ignore:
            table[ignore] = ignore
            expected += f" or {ignore} (ignore_index)"
        elif self.mask_values == (0, 1):
            expected += "; 255 in 0/1 masks: set mask_values: [0, 255] if they are 0/255, or declare ignore_index: 255"
        return table, expected

    def __len__(self) -> int:
        return len(self.samples)

    def pair(self, index: int) -> tuple[str, str]:
        """``(image_id, concept)`` of sample ``index``."""
        image_id, concept, _ = self.samples[operator.index(index)]
        return image_id, concept

    def image_ids(self) -> tuple[str, ...]:
        """Every image of the split (annotated or not), sorted: their file stems."""
        return tuple(sorted(self.images))

    def image(self, image_id: str) -> np.ndarray:
        """Image ``image_id`` as RGB uint8 (H, W, 3)."""
        if image_id not in self.images:
            raise SegcheckError(
                f"no image {image_id!r} in the {self.split} split of {self.root}; its images: "
                f"{shown(self.image_ids(), 3)}"
            )
        return read_image(self.images[image_id])

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        image_id, _, mask_path = self.samples[operator.index(index)]
        image, mask = read_pair(self.images[image_id], mask_path, _MASK_ADVICE)
        return image, map_labels(mask, self.table, mask_path, self.expected)

    def __repr__(self) -> str:
        return f"PromptedFolder(root={str(self.root)!r}, split={self.split!r}, len={len(self)})"


def _factory(root: Path | None, split: str) -> PromptedFolder:
    """Registry factory: the prompted-folder dataset at ``root`` (required)."""
    if root is None:
        raise SegcheckError(
            "dataset 'prompted-folder' needs --data-root pointing at a folder with dataset.yaml (prompts), "
            "images/ and masks/"
        )
    return PromptedFolder(root, split)


@hookimpl
def segcheck_register_datasets(registry):
    registry.add(
        "prompted-folder",
        _factory,
        description="images/<id>.* and masks/<id>__<concept>.png (optionally per split folder) plus dataset.yaml "
        "with each concept's prompts",
        needs_root=True,
        settings=declared_settings,
    )
