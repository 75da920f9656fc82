"""``segcheck predict``: a model's masks for every image of a dataset split, written as PNG files.

The model is loaded exactly as a gate run loads its target (:func:`segcheck.target.load_model`:
checkpoint, sidecar, normalization, padding). Output files, in ``out``:

- a prompted model: ``{image_id}__{prompt}.png`` for every image and every prompt of every
  concept, single-channel uint8 0/255, the prompt made file-name safe (:func:`safe_name`);
- a closed-set model: ``{image_id}.png``, the class ids (uint8; uint16 above 256 classes).

Image ids are the dataset's (``image_ids()``, ``pair(i)``, ``image_id(i)``) or else the
zero-padded sample index. Images of different sizes are batched by size; ``resize`` (an
``eval.resize`` policy) resizes them first, and the masks are written at that size.

``out`` also gets ``segcheck-predict.json`` (:data:`segcheck.outputs.PREDICT_MANIFEST`), the
files segcheck wrote there, so that a later run replaces those and refuses (unless
``overwrite``) any other file of the same name, and any ``out`` inside the dataset's root.
"""

from __future__ import annotations

import functools
import json
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from segcheck import SegcheckError, __version__, outputs
from segcheck import resize as resizing
from segcheck.target import TargetSpec, dataset_splits, guarded, load_model

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def safe_name(text: str) -> str:
    """``text`` with every character other than letters, digits, ``-`` and ``_`` replaced by
    ``_`` (``"segment joint/tape"`` -> ``"segment_joint_tape"``)."""
    return _UNSAFE.sub("_", text)


@dataclass(frozen=True)
class Written:
    """What :func:`predict` wrote: ``files`` masks for ``images`` images (``prompts`` per image,
    0 for a closed-set model) of ``split`` into ``out``; ``finite`` is False when some logits
    were NaN or infinite."""

    out: Path
    split: str
    images: int
    prompts: int
    files: int
    finite: bool

    def summary(self) -> str:
        """One line: how many files, of what, where."""
        what = f"{self.images} images x {self.prompts} prompts" if self.prompts else f"{self.images} images"
        kind = "masks" if self.prompts else "label maps"
        line = f"wrote {self.files} {kind} ({what}, split {self.split}) to {self.out}"
        if not self.finite:
            line += "; WARNING: some logits were NaN or infinite, so those masks mean nothing"
        return line


def predict(
    plugins,
    spec: TargetSpec,
    out: Path,
    *,
    split: str = "val",
    batch_size: int = 8,
    resize: str = "",
    limit: int | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> Written:
    """Write the masks of ``spec``'s model for the images of ``split`` of its dataset (the
    first ``limit`` images when given) into ``out``, ``batch_size`` masks per forward pass.
    ``out`` is checked before the model loads, and the files it would replace before any is written."""
    from tqdm import tqdm

    resizing.parse(resize)
    if batch_size < 1 or (limit is not None and limit < 1):
        raise SegcheckError(f"batch size {batch_size} and limit {limit} must be positive")
    out = Path(out)
    check_out(out, spec.data_root, overwrite=overwrite)
    splits = dataset_splits(plugins, spec)
    dataset = guarded(f"dataset {spec.dataset!r}", lambda: splits(split))
    model = load_model(plugins, spec, dataset)
    images = image_listing(dataset)[:limit]
    prompts = prompt_names(dataset.spec) if model.prompted else {}
    classes = max(dataset.spec.num_classes, int(model.meta.get("num_classes") or 0))
    dtype = np.uint16 if classes > 256 else np.uint8
    claim(out, [name for image_id, _ in images for name, _ in _files(image_id, prompts)], overwrite=overwrite)
    items = _items(images, prompts, resize)
    total, finite = len(images) * max(len(prompts), 1), True
    with tqdm(total=total, unit="mask", desc="segcheck predict", disable=not progress) as bar:
        for chunk in _chunks(items, batch_size):
            for group in _by_size(chunk):
                pixels = np.stack([image for _, image, _ in group])
                asked = [prompt for _, _, prompt in group] if model.prompted else None
                labels, ok = model.predict(model.normalize(pixels), batch_size, prompts=asked)
                finite &= ok
                for (name, _, _), label in zip(group, labels):
                    array = (label * 255).astype(np.uint8) if model.prompted else label.astype(dtype)
                    _save(array, out / name)
            bar.update(len(chunk))
    return Written(out, split, len(images), len(prompts), total, finite)


def check_out(out: Path, data_root: Path | None, *, overwrite: bool = False) -> None:
    """Raise (one line) unless ``out`` may take predicted masks: a folder (or none yet) that
    segcheck can write, outside the dataset root, whose manifest (if any) is segcheck's (unless ``overwrite``)."""
    if out.exists() and not out.is_dir():
        raise SegcheckError(f"--out {out} is a file; pass a folder for the masks (it is created)")
    if not overwrite and data_root is not None and outputs.inside(out, data_root):
        raise SegcheckError(
            f"--out {out} lies inside the dataset root {data_root}, whose masks it could replace; choose a folder "
            "outside it, or pass --overwrite"
        )
    manifest = out / outputs.PREDICT_MANIFEST
    outputs.refuse(manifest, "--out", overwrite=overwrite, owned=outputs.predicted_files(out) is not None)
    outputs.check_writable(out, "--out", folder=True)


def claim(out: Path, names: list[str], *, overwrite: bool = False) -> None:
    """Raise (one line) when a file of ``names`` exists in ``out`` and segcheck did not write it
    (unless ``overwrite``); else record ``names`` in ``out``'s manifest, before any is written."""
    earlier = outputs.predicted_files(out) or set()
    foreign = [n for n in names if n not in earlier and (out / n).exists()]
    if foreign and not overwrite:
        raise SegcheckError(
            f"--out {out} holds {len(foreign)} file(s) that segcheck predict would replace but did not write "
            f"({', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''}); choose another folder, or pass "
            "--overwrite to replace them"
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
        listing = {"segcheck": __version__, "files": sorted(earlier | set(names))}
        (out / outputs.PREDICT_MANIFEST).write_text(json.dumps(listing, indent=1) + "\n")
    except OSError as exc:
        raise SegcheckError(f"--out {out}: cannot write there ({exc}); pass a folder you can write") from None


def image_listing(dataset) -> list[tuple[str, Callable[[], np.ndarray]]]:
    """``(image_id, read)`` of every image of ``dataset``, ``read()`` giving it as uint8 (H, W, 3).

    A prompted dataset: its ``image_ids()``/``image(id)`` when it has them, else the distinct
    image ids of ``pair(i)`` (read through their first sample). A closed-set one: each sample,
    named by ``image_id(i)`` when the dataset has it, else by its zero-padded index.
    """
    if dataset.spec.prompted:
        if hasattr(dataset, "image_ids") and hasattr(dataset, "image"):
            listing = [(str(i), functools.partial(dataset.image, i)) for i in dataset.image_ids()]
        else:
            first: dict[str, int] = {}
            for index in range(len(dataset)):
                first.setdefault(str(dataset.pair(index)[0]), index)
            listing = [(i, functools.partial(_image_at, dataset, index)) for i, index in first.items()]
    else:
        width = max(4, len(str(len(dataset) - 1)))
        named = hasattr(dataset, "image_id")
        ids = [str(dataset.image_id(i)) if named else f"{i:0{width}d}" for i in range(len(dataset))]
        listing = [(image_id, functools.partial(_image_at, dataset, i)) for i, image_id in enumerate(ids)]
    ids = Counter(image_id for image_id, _ in listing)
    repeated = sorted(i for i, count in ids.items() if count > 1)
    bad = [i for i in ids if not i or "/" in i or "\\" in i or i.startswith(".")]
    if repeated or bad:
        raise SegcheckError(
            f"dataset {getattr(dataset, 'identity', 'dataset')} names images {(repeated or bad)[:5]}, which cannot "
            "name one output file each (repeated, empty, a path or a hidden name); give its images distinct names"
        )
    if not listing:
        raise SegcheckError("the dataset split has no images to predict; check --data-root and --split")
    return listing


def prompt_names(spec) -> dict[str, str]:
    """``{prompt: its file-name part}`` of every prompt of every concept of ``spec`` (each once,
    concepts in order); two prompts that become one name are an error naming both."""
    names: dict[str, str] = {}
    for concept in spec.concepts:
        for prompt in spec.prompts_of(concept):
            names.setdefault(prompt, safe_name(prompt))
    seen: dict[str, str] = {}
    for prompt, name in names.items():
        if name in seen:
            raise SegcheckError(
                f"prompts {seen[name]!r} and {prompt!r} both become {name!r} in file names; reword one of them"
            )
        seen[name] = prompt
    return names


def _image_at(dataset, index: int) -> np.ndarray:
    return dataset[index][0]


def _items(images, prompts: dict[str, str], resize: str) -> Iterator[tuple[str, np.ndarray, str | None]]:
    """``(file name, image, prompt)`` of every mask to write, image by image."""
    for image_id, read in images:
        image = np.asarray(read())
        if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
            raise SegcheckError(f"image {image_id!r} is {image.dtype} {image.shape}; a dataset gives uint8 (H, W, 3)")
        image = resizing.apply(resize, image, None)[0]
        for name, prompt in _files(image_id, prompts):
            yield name, image, prompt


def _files(image_id: str, prompts: dict[str, str]) -> list[tuple[str, str | None]]:
    """``(file name, prompt)`` of each mask of one image: one per prompt, or one without prompts."""
    if not prompts:
        return [(f"{image_id}.png", None)]
    return [(f"{image_id}__{name}.png", prompt) for prompt, name in prompts.items()]


def _chunks(items: Iterator, size: int) -> Iterator[list]:
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _by_size(chunk: list) -> list[list]:
    """``chunk``'s items grouped by image size (a batch holds one size), in first-seen order."""
    groups: dict[tuple[int, int], list] = {}
    for item in chunk:
        groups.setdefault(item[1].shape[:2], []).append(item)
    return list(groups.values())


def _save(array: np.ndarray, path: Path) -> None:
    try:
        Image.fromarray(array).save(path)
    except OSError as exc:
        raise SegcheckError(f"cannot write {path} ({exc}); pass an --out folder you can write") from None
