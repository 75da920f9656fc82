"""``folder``: a dataset of image files and mask PNGs on disk.

Layout (``root`` is ``--data-root``)::

    root/dataset.yaml                 required: classes, optional settings (see below)
    root/<split>/images/<stem>.png    per-split folders (train/, val/, test/, any name) ...
    root/<split>/masks/<stem>.png
    root/images/<stem>.jpg            ... or, when no <split>/images folder exists, one flat
    root/masks/<stem>.png                 folder pair that serves every split (train, val, test)

Images may be .png .jpg .jpeg .bmp .tif .tiff (any mode; converted to RGB uint8). Masks are
single-channel PNGs (mode L, P, I, I;16 or 1) whose pixel values are class ids. Image and
mask are paired by file stem; pairing is checked when the split is opened, the masks'
sizes and label values when a sample is read.

``dataset.yaml`` keys (safe-loaded; unknown keys are an error)::

    classes: [background, road, car]   # required, label i is classes[i]
    ignore_index: 255                  # pixels no metric counts (default 255)
    mean: [0.485, 0.456, 0.406]        # the normalization the weights were trained with, 0-1 pixel scale
    std: [0.229, 0.224, 0.225]
    anomaly_index: 254                 # optional label of out-of-distribution pixels
    binary_255: true                   # masks stored as 0/255: 255 is read as class 1
    segcheck:                          # settings this data needs, as in segcheck.yaml (below it
      overfit_tiny: {epochs: 120}      #   and above the defaults; the report names this file)

The other on-disk dataset plugins (streethazards, smiyc, cityscapes, ade20k, voc) share this module's readers:
:func:`read_config`, :func:`check_classes`, :func:`check_index`, :func:`read_normalization`,
:func:`split_folder`, :func:`files_by_stem`, :func:`files_by_path`, :func:`mask_files`, :func:`shown`,
:func:`check_paired`, :func:`read_image`, :func:`read_mask`, :func:`read_pair`, :func:`map_labels` and
:class:`MappedPairs` (``prompted-folder`` too); each raises a one-line ``SegcheckError`` that names the file.
"""

from __future__ import annotations

import operator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from segcheck import SegcheckError
from segcheck.config import read_yaml
from segcheck.data import DatasetSpec
from segcheck.hookspecs import hookimpl

__all__ = [
    "IMAGE_SUFFIXES",
    "MASK_SUFFIXES",
    "FolderDataset",
    "MappedPairs",
    "check_classes",
    "check_index",
    "check_paired",
    "files_by_path",
    "files_by_stem",
    "load_config",
    "map_labels",
    "mask_files",
    "read_config",
    "declared_settings",
    "read_image",
    "read_mask",
    "read_normalization",
    "read_pair",
    "segcheck_register_datasets",
    "shown",
    "split_folder",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
MASK_SUFFIXES = (".png",)
DEFAULT_SPLITS = ("train", "val", "test")
CONFIG_NAME = "dataset.yaml"
CONFIG_KEYS = ("classes", "ignore_index", "mean", "std", "anomaly_index", "binary_255", "segcheck")
#: the key of ``dataset.yaml`` under which a dataset declares gate and eval settings
SETTINGS_KEY = "segcheck"
_MASK_MODES = ("L", "P", "I", "I;16", "1")
_MASK_ADVICE = "save masks as mode L or P PNGs whose pixel values are class ids"
_EXAMPLE = "e.g. 'classes: [background, road, car]' (optional: ignore_index, mean, std, anomaly_index, binary_255)"
_READ_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def read_config(path: Path, keys: tuple[str, ...], example: str) -> dict[str, Any]:
    """The mapping in the YAML file ``path`` (safe-loaded with ``segcheck.config.read_yaml``;
    an empty file is ``{}``).

    Raises ``SegcheckError`` when it is not YAML, not a mapping or has keys outside ``keys``;
    ``example`` (e.g. ``"e.g. 'classes: [a, b]'"``) ends those messages. The caller decides
    whether a missing file is an error.
    """
    raw = read_yaml(path, "dataset config", f"; fix it, {example}")
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise SegcheckError(f"{path} must be a mapping of settings, {example}")
    unknown = sorted(str(k) for k in raw if k not in keys)
    if unknown:
        raise SegcheckError(f"{path} has unknown keys {unknown}; allowed keys: {', '.join(keys)}")
    return raw


def declared_settings(root: Path | None) -> tuple[dict, str]:
    """The ``segcheck:`` mapping of ``root/dataset.yaml`` (the settings the data declares, checked
    later like ``segcheck.yaml``) and the file's path; ``({}, "")`` without one (registry meta
    ``settings`` of the file datasets)."""
    path = Path(root) / CONFIG_NAME if root is not None else None
    if path is None or not path.is_file():
        return {}, ""
    raw = read_yaml(path, "dataset config", "; fix it")
    declared = raw.get(SETTINGS_KEY) if isinstance(raw, dict) else None
    if declared is not None and not isinstance(declared, dict):
        raise SegcheckError(
            f"{path}: {SETTINGS_KEY} must be a mapping of settings sections, e.g. '{SETTINGS_KEY}: "
            f"{{overfit_tiny: {{epochs: 120}}}}', got {declared!r}"
        )
    return declared or {}, str(path)


def _bad(path: Path, key: str, value: object, expected: str) -> SegcheckError:
    return SegcheckError(f"{path}: {key} must be {expected}, got {value!r}")


def check_classes(value: object, path: Path) -> tuple[str, ...]:
    """``value`` (the ``classes`` of config file ``path``) as a tuple of distinct, non-empty names."""
    if not isinstance(value, list) or not all(isinstance(c, str) and c for c in value):
        raise _bad(path, "classes", value, "a list of class names (strings)")
    if len(set(value)) != len(value):
        raise _bad(path, "classes", value, "a list of distinct names")
    return tuple(value)


def check_index(value: object, key: str, path: Path) -> int | None:
    """``value`` (setting ``key`` of config file ``path``, e.g. ``ignore_index``): None or a non-negative integer."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise _bad(path, key, value, "a non-negative integer")
    return value


def read_normalization(raw: dict[str, Any], path: Path) -> dict[str, tuple[float, ...] | None]:
    """``{"mean": ..., "std": ...}`` from config mapping ``raw`` of file ``path``: 3 numbers
    each in 0-1 pixel scale, both or neither (None when not declared)."""
    out: dict[str, tuple[float, ...] | None] = {}
    for key in ("mean", "std"):
        value = raw.get(key)
        if value is not None and not (isinstance(value, list) and len(value) == 3 and all(map(_is_number, value))):
            raise _bad(path, key, value, "a list of 3 numbers in 0-1 pixel scale")
        out[key] = None if value is None else tuple(float(v) for v in value)
    if ("mean" in raw) != ("std" in raw):
        raise SegcheckError(
            f"{path}: declare both mean and std (the normalization the weights were trained with), or neither"
        )
    return out


def load_config(root: Path) -> dict[str, Any]:
    """Read and validate ``root/dataset.yaml``; return it with defaults filled in.

    Raises ``SegcheckError`` when the file is missing, not YAML, not a mapping, has unknown
    keys or values of the wrong type.
    """
    path = root / CONFIG_NAME
    if not path.is_file():
        raise SegcheckError(f"{path} is missing; write it with the class names in label order, {_EXAMPLE}")
    raw = read_config(path, CONFIG_KEYS, _EXAMPLE)
    classes = raw.get("classes")
    if classes is None:
        raise SegcheckError(f"{path} has no 'classes' list; add the class names in label order, {_EXAMPLE}")
    config: dict[str, Any] = {"classes": check_classes(classes, path)}
    ignore = check_index(raw.get("ignore_index"), "ignore_index", path)
    config["ignore_index"] = 255 if ignore is None else ignore
    config["anomaly_index"] = check_index(raw.get("anomaly_index"), "anomaly_index", path)
    config.update(read_normalization(raw, path))
    binary = raw.get("binary_255", False)
    if not isinstance(binary, bool):
        raise _bad(path, "binary_255", binary, "true or false")
    if binary and len(classes) != 2:
        raise _bad(path, "classes", classes, "exactly 2 names when binary_255 is true")
    config["binary_255"] = binary
    return config  # DatasetSpec checks how ignore_index and anomaly_index relate to the classes


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _split_dirs(root: Path) -> dict[str, Path]:
    """``{split: folder}`` of the sub-folders of ``root`` that hold an ``images/`` folder."""
    found = {d.name: d for d in sorted(root.iterdir()) if d.is_dir() and (d / "images").is_dir()}
    ordered = [s for s in DEFAULT_SPLITS if s in found] + [s for s in found if s not in DEFAULT_SPLITS]
    return {s: found[s] for s in ordered}


def dataset_root(root: Path | str) -> Path:
    """``root`` as a Path, once it is a folder (an error saying what it should hold otherwise)."""
    root = Path(root)
    if not root.is_dir():
        raise SegcheckError(
            f"dataset root {root} does not exist or is not a folder; pass --data-root pointing at a folder with "
            f"{CONFIG_NAME}, images/ and masks/"
        )
    return root


def split_folder(root: Path, split: str, dataset: str) -> tuple[tuple[str, ...], Path]:
    """The splits of the layout at ``root`` and the folder that holds ``split``'s ``images/``:
    ``root/<split>`` when some ``root/<name>/images/`` exists (those names are the splits, train,
    val, test first), else ``root`` itself for each of train, val and test. An unknown ``split``
    is a ``SegcheckError`` listing the known ones (``dataset`` names the layout in it)."""
    split_dirs = _split_dirs(root)
    splits = tuple(split_dirs) or DEFAULT_SPLITS
    if split not in splits:
        raise SegcheckError(f"unknown split {split!r} for {dataset} dataset {root}; known splits: {', '.join(splits)}")
    return splits, split_dirs.get(split, root)


def files_by_stem(folder: Path, suffixes: tuple[str, ...], what: str) -> dict[str, Path]:
    """``{stem: path}`` of the visible files in ``folder`` whose suffix (any case) is one of
    ``suffixes``; two such files with one stem are a ``SegcheckError`` naming both."""
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.is_file() or path.suffix.lower() not in suffixes:
            continue
        if path.stem in files:
            raise SegcheckError(
                f"two {what} files share the stem {path.stem!r} in {folder} ({files[path.stem].name}, {path.name}); "
                "keep one of them"
            )
        files[path.stem] = path
    return files


def files_by_path(folder: Path, suffixes: tuple[str, ...], what: str) -> dict[str, Path]:
    """``{"<sub/folders>/<stem>": path}`` of the files under ``folder`` (any depth; a file directly
    in ``folder`` is keyed by its stem) whose suffix is one of ``suffixes`` (:func:`files_by_stem`
    in each folder)."""
    files: dict[str, Path] = {}
    for sub in [folder, *sorted(d for d in folder.rglob("*") if d.is_dir())]:
        rel = sub.relative_to(folder).as_posix()
        for stem, path in files_by_stem(sub, suffixes, what).items():
            files[f"{rel}/{stem}" if rel != "." else stem] = path
    return files


def mask_files(folder: Path) -> dict[str, Path]:
    """``{stem: path}`` of the mask PNGs in ``folder`` (:func:`files_by_stem`); a mask saved as
    JPEG, BMP or TIFF is a ``SegcheckError`` naming it (lossy formats change label values)."""
    lossy = sorted(files_by_stem(folder, tuple(set(IMAGE_SUFFIXES) - set(MASK_SUFFIXES)), "mask"))
    if lossy:
        raise SegcheckError(
            f"masks [{shown(lossy)}] in {folder} are not PNG (JPEG/BMP/TIFF); label masks must be lossless "
            "PNGs whose pixel values are class ids (JPEG changes label values): convert or remove them"
        )
    return files_by_stem(folder, MASK_SUFFIXES, "mask")


def shown(names: list[str], limit: int = 5) -> str:
    """The first ``limit`` of ``names``, comma-separated, and how many more there are."""
    out = ", ".join(names[:limit])
    return out + (f" (+{len(names) - limit} more)" if len(names) > limit else "")


def check_paired(images: dict[str, Path], masks: dict[str, Path], where: Path, advice: str) -> None:
    """Raise one ``SegcheckError`` naming (up to 5 of) the keys of ``images`` without a mask
    and of ``masks`` without an image, found in ``where``; ``advice`` ends the message."""
    lonely_images = sorted(set(images) - set(masks))
    lonely_masks = sorted(set(masks) - set(images))
    if not (lonely_images or lonely_masks):
        return
    sides = []
    if lonely_images:
        sides.append(f"images without a mask: [{shown(lonely_images)}]")
    if lonely_masks:
        sides.append(f"masks without an image: [{shown(lonely_masks)}]")
    raise SegcheckError(f"unpaired files in {where}: {'; '.join(sides)}; {advice}")


class FolderDataset:
    """One split of a folder dataset; satisfies ``segcheck.data.SegDataset``.

    :param root: the dataset folder (see the module docstring for the layout).
    :param split: a split folder name, or train/val/test for the flat layout (all three
        read the same ``images/``/``masks/`` pair).

    Construction reads ``dataset.yaml`` and pairs image and mask stems; ``dataset[i]`` reads
    and validates one pair, raising ``SegcheckError`` for an unreadable file, a size
    mismatch or labels outside ``0..C-1``, ``ignore_index`` and ``anomaly_index``.
    """

    def __init__(self, root: Path | str, split: str = "train"):
        root = dataset_root(root)
        config = load_config(root)
        self.binary_255 = config.pop("binary_255")
        splits, base = split_folder(root, split, "folder")
        try:
            self.spec = DatasetSpec(splits=splits, **config)
        except SegcheckError as exc:
            raise SegcheckError(f"{root / CONFIG_NAME}: {exc}") from None
        self.root, self.split = root, split
        self.identity = f"folder:{root.resolve()}"
        images_dir, masks_dir = base / "images", base / "masks"
        for folder, what in ((images_dir, "images"), (masks_dir, "masks")):
            if not folder.is_dir():
                raise SegcheckError(
                    f"{what} folder {folder} is missing; put the {what} there (one mask PNG per image, same file stem)"
                )
        images = files_by_stem(images_dir, IMAGE_SUFFIXES, "image")
        masks = mask_files(masks_dir)
        if not images:
            raise SegcheckError(
                f"no images in {images_dir} (looked for {' '.join(IMAGE_SUFFIXES)}); add image files there"
            )
        check_paired(images, masks, base, "each image needs a mask PNG with the same file stem")
        self.pairs = [(images[stem], masks[stem]) for stem in sorted(images)]

    def __len__(self) -> int:
        return len(self.pairs)

    def image_id(self, index: int) -> str:
        """The file stem of sample ``index``'s image."""
        return self.pairs[operator.index(index)][0].stem

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        image_path, mask_path = self.pairs[operator.index(index)]
        image, mask = read_pair(image_path, mask_path)
        return image, self._labels(mask, mask_path)

    def mask(self, index: int) -> np.ndarray:
        """Sample ``index``'s mask alone (its image's size read from the file's header, not decoded)."""
        image_path, mask_path = self.pairs[operator.index(index)]
        return self._labels(read_mask_of(image_path, mask_path), mask_path)

    def _labels(self, mask: np.ndarray, mask_path: Path) -> np.ndarray:
        if self.binary_255:
            mask[mask == 255] = 1
        self._check_labels(mask, mask_path)
        return mask

    def _check_labels(self, mask: np.ndarray, path: Path) -> None:
        spec = self.spec
        values = np.unique(mask)
        allowed = np.isin(values, sorted(spec.label_values))
        if allowed.all():
            return
        bad = values[~allowed].tolist()
        shown = ", ".join(map(str, bad[:10])) + (f", ... ({len(bad)} values)" if len(bad) > 10 else "")
        extra = f", anomaly_index {spec.anomaly_index}" if spec.anomaly_index is not None else ""
        hint = " (binary_255 is on: masks may hold 0 and 255 only)" if self.binary_255 else ""
        raise SegcheckError(
            f"mask {path} has label values [{shown}] outside 0..{spec.num_classes - 1} (ignore_index "
            f"{spec.ignore_index}{extra}){hint}; fix the mask or the classes in {CONFIG_NAME}"
        )

    def __repr__(self) -> str:
        return f"FolderDataset(root={str(self.root)!r}, split={self.split!r}, len={len(self)})"


def _read(path: Path, what: str, convert) -> np.ndarray:
    """Open ``path`` with PIL, turn it as its EXIF orientation says (as viewers and labelling
    tools show it: a phone photo's pixels are often stored sideways) and ``convert`` it; any
    decoding failure becomes a SegcheckError."""
    try:
        with Image.open(path) as im:
            im.load()
            return convert(ImageOps.exif_transpose(im))
    except _READ_ERRORS as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise SegcheckError(f"cannot read {what} {path}: {reason}; replace or remove the file") from None


def read_image(path: Path) -> np.ndarray:
    """The image file ``path`` (any mode PIL reads) as RGB uint8 (H, W, 3), EXIF orientation
    applied; an unreadable file is a one-line ``SegcheckError``."""
    return _read(path, "image", lambda im: np.asarray(im.convert("RGB"), dtype=np.uint8))


def read_mask(path: Path, advice: str = _MASK_ADVICE) -> np.ndarray:
    """The label image ``path`` as its pixel values, int64 (H, W), unchanged (a palette image:
    its palette indices).

    A file that is not single-channel (mode L, P, I, I;16 or 1; e.g. an RGB colour rendering
    of the labels) or cannot be read is a one-line ``SegcheckError``; ``advice`` (what the
    masks should be) ends the message for a wrong mode.
    """
    return _read(path, "mask", lambda im: _mask_values(im, path, advice))


def _mask_values(im: Image.Image, path: Path, advice: str) -> np.ndarray:
    if im.mode not in _MASK_MODES:
        raise SegcheckError(f"mask {path} has mode {im.mode}, not a single-channel label image; {advice}")
    return np.asarray(im).astype(np.int64)


def read_pair(image_path: Path, mask_path: Path, advice: str = _MASK_ADVICE) -> tuple[np.ndarray, np.ndarray]:
    """:func:`read_image` and :func:`read_mask` (``advice`` for a wrong mode) of one sample;
    different sizes are a ``SegcheckError`` naming both files."""
    image, mask = read_image(image_path), read_mask(mask_path, advice)
    if image.shape[:2] != mask.shape:
        raise SegcheckError(
            f"image {image_path} is {image.shape[0]}x{image.shape[1]} but its mask {mask_path} is "
            f"{mask.shape[0]}x{mask.shape[1]} (HxW); make them the same size"
        )
    return image, mask


def read_mask_of(image_path: Path, mask_path: Path, advice: str = _MASK_ADVICE) -> np.ndarray:
    """:func:`read_mask` of one sample without decoding its image: the image's size (turned by
    its EXIF orientation) comes from the file's header; a size mismatch is the one-line error of
    :func:`read_pair`."""
    mask = read_mask(mask_path, advice)
    try:
        with Image.open(image_path) as im:
            width, height = im.size
            if im.getexif().get(0x0112) in (5, 6, 7, 8):  # turned a quarter: sides swap
                width, height = height, width
    except _READ_ERRORS as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise SegcheckError(f"cannot read image {image_path}: {reason}; replace or remove the file") from None
    if (height, width) != mask.shape:
        raise SegcheckError(
            f"image {image_path} is {height}x{width} but its mask {mask_path} is "
            f"{mask.shape[0]}x{mask.shape[1]} (HxW); make them the same size"
        )
    return mask


def map_labels(mask: np.ndarray, table: np.ndarray, path: Path, expected: str) -> np.ndarray:
    """``table[mask]``: the on-disk values of ``mask`` (read from ``path``) mapped through the
    lookup ``table`` (int64, indexed by on-disk value; -1 marks a value that may not occur).

    A value outside the table or marked -1 is one ``SegcheckError`` naming the file, (up to
    10 of) the values and ``expected`` (what the values should be, e.g. ``"1..14"``).
    """
    if mask.size and 0 <= int(mask.min()) and int(mask.max()) < len(table):
        mapped = table[mask]
        if int(mapped.min()) >= 0:  # every value known: no need to list them
            return mapped
    values = np.unique(mask)
    inside = (values >= 0) & (values < len(table))
    inside[inside] = table[values[inside]] >= 0
    if not inside.all():
        bad = values[~inside].tolist()
        listed = ", ".join(map(str, bad[:10])) + (f", ... ({len(bad)} values)" if len(bad) > 10 else "")
        raise SegcheckError(
            f"mask {path} has values [{listed}], expected {expected}; check that it is this dataset's label "
            "file (not a colour rendering or an already converted copy) or replace it"
        )
    return table[mask]


class MappedPairs:
    """A split of image/mask file pairs (``pairs``) whose on-disk mask values go through the
    lookup ``table`` (:func:`map_labels`, describing them as ``EXPECTED`` in errors).

    A pair whose mask is None (an unlabelled split) reads as ``(image, None)``; a subclass
    whose masks differ in encoding overrides :meth:`labels_of`; ``MASK_ADVICE`` ends the
    error for a mask that is not single-channel.
    """

    pairs: tuple[tuple[Path, Path | None], ...] = ()
    table: np.ndarray
    EXPECTED = "the dataset's on-disk labels"
    MASK_ADVICE = _MASK_ADVICE

    def __len__(self) -> int:
        return len(self.pairs)

    def image_id(self, index: int) -> str:
        """The file stem of sample ``index``'s image."""
        return self.pairs[operator.index(index)][0].stem

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray | None]:
        image_path, mask_path = self.pairs[operator.index(index)]
        if mask_path is None:
            return read_image(image_path), None
        image, mask = read_pair(image_path, mask_path, self.MASK_ADVICE)
        table, expected = self.labels_of(mask_path)
        return image, map_labels(mask, table, mask_path, expected)

    def mask(self, index: int) -> np.ndarray | None:
        """Sample ``index``'s mask alone (its image's size read from the file's header, not decoded)."""
        image_path, mask_path = self.pairs[operator.index(index)]
        if mask_path is None:
            return None
        table, expected = self.labels_of(mask_path)
        return map_labels(read_mask_of(image_path, mask_path, self.MASK_ADVICE), table, mask_path, expected)

    def labels_of(self, mask_path: Path) -> tuple[np.ndarray, str]:
        """The lookup table of mask file ``mask_path`` and how its values are described in errors."""
        return self.table, self.EXPECTED


def _factory(root: Path | None, split: str) -> FolderDataset:
    """Registry factory: the folder dataset at ``root`` (required)."""
    if root is None:
        raise SegcheckError(
            "dataset 'folder' needs --data-root pointing at a folder with dataset.yaml, images/, masks/"
        )
    return FolderDataset(root, split)


@hookimpl
def segcheck_register_datasets(registry):
    registry.add(
        "folder",
        _factory,
        description="images/ and masks/ with matching stems (optionally per split folder) plus dataset.yaml",
        settings=declared_settings,
        needs_root=True,
    )
