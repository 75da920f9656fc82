"""The dataset protocol, its description (``DatasetSpec``: which pixels count) and ``EvalData``."""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Protocol

import numpy as np

from segcheck import SegcheckError
from segcheck import resize as resizing
from segcheck.metrics import ConfusionMatrix, miou

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class DatasetSpec:
    """What a dataset's labels mean, and the one rule for which pixels count.

    ``mean``/``std`` are the dataset's declared normalization, per channel in pixel scale
    0-1 (the image is divided by 255 first), or None when it declares none.
    ``ignore_index`` marks pixels that no metric counts. ``anomaly_index``, when set, is the
    label of out-of-distribution pixels (not one of ``classes``): closed-set metrics and
    losses leave them out, OOD metrics take them as positives; ``anomaly_splits`` are the
    splits whose masks may hold it (StreetHazards: ``test``), the others must not.
    ``inlier_index``, when set, labels pixels known to be in-distribution without a class
    (SMIYC's "usual" pixels): OOD metrics take them as negatives, closed-set metrics leave
    them out, and a dataset with one has no class labels (:attr:`class_labels` is False).
    ``unlabelled_splits`` are splits without masks (Cityscapes' ``test``): their samples'
    masks are None, and gates that need labels skip them with the reason.
    ``prompts``, when given (``{concept: [prompt, paraphrase, ...]}``, stored as sorted
    pairs), make it a prompted dataset: each sample is one (image, concept) pair whose mask
    is binary (classes ``background``, ``foreground``), and prompted models are asked with
    the concept's prompts (the first is its canonical prompt).
    """

    classes: tuple[str, ...]
    ignore_index: int = 255
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    splits: tuple[str, ...] = ("train", "val", "test")
    anomaly_index: int | None = None
    anomaly_splits: tuple[str, ...] = ()
    inlier_index: int | None = None
    unlabelled_splits: tuple[str, ...] = ()
    prompts: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def __post_init__(self):
        if isinstance(self.prompts, Mapping):
            object.__setattr__(self, "prompts", tuple(sorted(self.prompts.items())))
        for concept, prompts in self.prompts:
            if isinstance(prompts, str) or not isinstance(prompts, (list, tuple)):
                raise SegcheckError(
                    f"concept {concept!r} has prompts {prompts!r}; expected a list of prompts, e.g. "
                    f"{{{concept}: [segment {concept}]}}"
                )
        object.__setattr__(self, "prompts", tuple((str(c), tuple(p)) for c, p in self.prompts))
        if self.prompts:
            self._check_prompts()
        if len(self.classes) < 2:
            raise SegcheckError(f"a dataset needs at least 2 classes, got {list(self.classes)}")
        if (self.mean is None) != (self.std is None):
            raise SegcheckError("a dataset declares both mean and std, or neither")
        if self.mean is not None and not normalization_ok(self.mean, self.std):
            raise SegcheckError(
                f"mean and std need 3 finite numbers each (pixel scale 0-1) with std > 0, got mean={list(self.mean)} "
                f"std={list(self.std)}"
            )
        if 0 <= self.ignore_index < len(self.classes):
            raise SegcheckError(
                f"ignore_index {self.ignore_index} collides with class {self.classes[self.ignore_index]!r}; "
                f"use a value outside 0..{len(self.classes) - 1} (default 255)"
            )
        if self.anomaly_index is not None and (
            self.anomaly_index < len(self.classes) or self.anomaly_index == self.ignore_index
        ):
            raise SegcheckError(
                f"anomaly_index {self.anomaly_index} collides with a class id (0..{len(self.classes) - 1}) or "
                f"ignore_index {self.ignore_index}; choose another value"
            )
        if self.anomaly_splits and (self.anomaly_index is None or set(self.anomaly_splits) - set(self.splits)):
            raise SegcheckError(
                f"anomaly_splits {list(self.anomaly_splits)} need an anomaly_index and must be among the splits "
                f"{list(self.splits)}"
            )
        if set(self.unlabelled_splits) - set(self.splits):
            raise SegcheckError(
                f"unlabelled_splits {list(self.unlabelled_splits)} must be among the splits {list(self.splits)}"
            )
        if self.inlier_index is not None and (
            self.inlier_index < len(self.classes) or self.inlier_index in (self.ignore_index, self.anomaly_index)
        ):
            raise SegcheckError(
                f"inlier_index {self.inlier_index} collides with a class id (0..{len(self.classes) - 1}), "
                f"ignore_index or anomaly_index; choose another value"
            )

    def _check_prompts(self) -> None:
        if len(self.classes) != 2:
            raise SegcheckError(
                f"a prompted dataset's masks are binary (classes background, foreground), got classes "
                f"{list(self.classes)}"
            )
        for concept, prompts in self.prompts:
            if not concept or not prompts or not all(isinstance(p, str) and p.strip() for p in prompts):
                raise SegcheckError(
                    f"concept {concept!r} has prompts {list(prompts)}; each concept needs at least one "
                    "non-empty prompt, e.g. prompts: {crack: [segment crack, segment wall crack]}"
                )
            if len(set(prompts)) != len(prompts):
                raise SegcheckError(f"concept {concept!r} lists a prompt twice: {list(prompts)}")
        owners: dict[str, str] = {}
        for concept, prompts in self.prompts:
            for prompt in prompts:
                if prompt in owners:
                    raise SegcheckError(
                        f"concepts {owners[prompt]!r} and {concept!r} share the prompt {prompt!r}: the model cannot "
                        "tell them apart by it; give each concept its own prompts"
                    )
                owners[prompt] = concept

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def prompted(self) -> bool:
        """Whether samples are (image, concept) pairs asked for with text prompts."""
        return bool(self.prompts)

    @property
    def concepts(self) -> tuple[str, ...]:
        """The concepts of a prompted dataset, sorted (empty otherwise)."""
        return tuple(c for c, _ in self.prompts)

    def prompts_of(self, concept: str) -> tuple[str, ...]:
        """``concept``'s prompts, canonical first; an error naming the concepts there are."""
        for name, prompts in self.prompts:
            if name == concept:
                return prompts
        raise SegcheckError(f"unknown concept {concept!r}; this dataset's concepts: {', '.join(self.concepts)}")

    @property
    def class_labels(self) -> bool:
        """Whether the masks name classes (False: they mark only inliers, anomalies and void)."""
        return self.inlier_index is None

    @property
    def label_values(self) -> set[int]:
        """Every value a mask may hold: the class ids (when the masks name classes),
        ``ignore_index``, ``anomaly_index`` and ``inlier_index``."""
        classes = set(range(self.num_classes)) if self.class_labels else set()
        return classes | self._not_counted()

    def labelled(self, split: str) -> bool:
        """Whether ``split``'s samples have masks."""
        return split not in self.unlabelled_splits

    def _not_counted(self) -> set[int]:
        return {self.ignore_index} | {v for v in (self.anomaly_index, self.inlier_index) if v is not None}

    def ood_pixels(self, masks):
        """``(is_ood, valid)`` boolean arrays of ``masks`` (numpy or torch): anomaly pixels are the
        positives, every other pixel but ``ignore_index`` a negative."""
        if self.anomaly_index is None:
            raise SegcheckError("this dataset declares no anomaly_index, so no pixel is out of distribution")
        return masks == self.anomaly_index, masks != self.ignore_index

    def counted(self, masks):
        """Boolean array (numpy or torch, like ``masks``): the pixels closed-set metrics and losses count.

        Ignore and anomaly pixels are out; any other value, a wrong label included, counts
        (so that the metric or loss meets it and raises instead of hiding it).
        """
        keep = masks != self.ignore_index
        for value in (self.anomaly_index, self.inlier_index):
            if value is not None:
                keep = keep & (masks != value)
        return keep

    def closed_set(self, masks):
        """``masks`` with anomaly and inlier pixels turned into ``ignore_index`` (numpy or torch,
        a copy only when there are such ids): what closed-set metrics score against."""
        out = masks
        for value in (self.anomaly_index, self.inlier_index):
            if value is None:
                continue
            hit = masks == value
            out = (
                np.where(hit, self.ignore_index, out)
                if isinstance(masks, np.ndarray)
                else out.masked_fill(hit, self.ignore_index)
            )
        return out


def normalization_ok(mean, std) -> bool:
    """Three finite numbers each, every std > 0 (a NaN or inf would poison every input)."""
    values = [*mean, *std]
    if len(mean) != 3 or len(std) != 3 or any(isinstance(v, bool) or not isinstance(v, numbers.Real) for v in values):
        return False
    return all(math.isfinite(v) for v in values) and min(std) > 0


class SegDataset(Protocol):
    """A split of a dataset: ``len()`` samples, each ``(image, mask)``.

    ``image`` is uint8 (H, W, 3); ``mask`` is int64 (H, W) with values in
    ``spec.label_values``, or None in a split of ``spec.unlabelled_splits``. Images may
    differ in size (``eval.resize`` then decides, :mod:`segcheck.resize`). ``identity`` is a
    short string that names the data (e.g. ``"synthetic-streets:seed=0"``).
    A prompted dataset (``spec.prompted``) also has ``pair(index) -> (image_id, concept)``:
    sample ``index`` is that image's mask for that concept (0/1, or ``ignore_index``).
    """

    spec: DatasetSpec
    split: str
    identity: str

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]: ...


def eval_indices(length: int, size: int, seed: int) -> list[int]:
    """A fixed, seeded, sorted sample of ``size`` indices out of ``length`` (all if fewer)."""
    if length == 0:
        raise SegcheckError("the dataset split is empty; check --data-root and the split's files")
    if size >= length:
        return list(range(length))
    rng = np.random.default_rng(seed)
    return sorted(rng.choice(length, size=size, replace=False).tolist())


def concepts_of(dataset: SegDataset, indices: Sequence[int]) -> tuple[str, ...] | None:
    """The concept of each sample of a prompted dataset (None for a closed-set one). A declared
    concept without any sample in the whole split is an error naming it (no eval size finds it)."""
    if not dataset.spec.prompted:
        return None
    everywhere = [dataset.pair(i)[1] for i in range(len(dataset))]
    unknown = sorted(set(everywhere) - set(dataset.spec.concepts))
    if unknown:
        raise SegcheckError(
            f"samples name concepts {unknown} that the dataset's prompts do not declare "
            f"({', '.join(dataset.spec.concepts)}); add their prompts to dataset.yaml"
        )
    absent = [c for c in dataset.spec.concepts if c not in set(everywhere)]
    if absent:
        split = getattr(dataset, "split", "this")
        raise SegcheckError(
            f"concept(s) {', '.join(map(repr, absent))} have prompts but no mask in the {split!r} split "
            f"({len(everywhere)} masks, all of {', '.join(sorted(set(everywhere)))}); add their masks or remove their "
            "prompts from dataset.yaml"
        )
    return tuple(everywhere[i] for i in indices)


def mask_dtype(low: int, high: int) -> np.dtype:
    """The smallest integer type that holds label values ``low..high``: uint8 for 0..255 (the
    usual case, ignore 255 included), uint16 up to 65535, else int32 or int64."""
    for dtype in (np.uint8, np.uint16, np.int32):
        info = np.iinfo(dtype)
        if info.min <= low and high <= info.max:
            return np.dtype(dtype)
    return np.dtype(np.int64)


def compact_masks(masks: np.ndarray) -> np.ndarray:
    """``masks`` in :func:`mask_dtype` of their own values (every value kept exactly)."""
    masks = np.asarray(masks)
    if masks.dtype == np.bool_ or np.issubdtype(masks.dtype, np.floating):
        if masks.dtype != np.bool_ and not np.array_equal(masks, np.round(masks)):
            raise SegcheckError(f"masks must hold whole-number labels, got {masks.dtype} values with fractions")
        masks = masks.astype(np.int64)
    if not np.issubdtype(masks.dtype, np.integer):
        raise SegcheckError(f"masks must hold integer labels, got {masks.dtype}")
    if not masks.size:
        return masks.astype(np.uint8)
    return masks.astype(mask_dtype(int(masks.min()), int(masks.max())), copy=False)


def read_mask(dataset: SegDataset, index: int) -> np.ndarray | None:
    """Sample ``index``'s mask, without decoding its image when the dataset can (``mask(index)``)."""
    if hasattr(dataset, "mask"):
        return dataset.mask(index)
    return dataset[index][1]


def stack(dataset: SegDataset, indices: Sequence[int]) -> tuple[np.ndarray, np.ndarray | None]:
    """Images (N, H, W, 3) uint8 and masks (N, H, W) of ``indices`` (masks None for an
    unlabelled split), filled in place one sample at a time; masks in the smallest integer type
    that holds their values (:func:`mask_dtype`). Sizes must agree."""
    images = masks = None
    n = len(indices)
    for k, index in enumerate(indices):
        image, mask = dataset[index]
        image = np.asarray(image)
        if images is None:
            (h, w), labelled = image.shape[:2], mask is not None
            images = _allocated((n, h, w, 3), np.uint8, n, (h, w), labelled)
            masks = _allocated((n, h, w), np.uint8, n, (h, w), labelled) if labelled else None
        if image.shape[:2] != (h, w):
            _different_sizes(dataset, indices, k)
        if (mask is not None) != labelled:
            raise SegcheckError("some samples of this split have masks and others none; a split is labelled or not")
        images[k] = image
        if mask is not None:
            mask = np.asarray(mask)
            if mask.size:
                wanted = mask_dtype(min(int(mask.min()), 0), max(int(mask.max()), int(np.iinfo(masks.dtype).max)))
                if wanted != masks.dtype and np.can_cast(masks.dtype, wanted):
                    masks = masks.astype(wanted)  # a label the compact type cannot hold: never wrapped
            masks[k] = mask
    return images, masks


def _allocated(shape: tuple[int, ...], dtype, n: int, size: tuple[int, int], labelled: bool) -> np.ndarray:
    """``np.empty(shape, dtype)``; out of memory, one line saying what and how big."""
    try:
        return np.empty(shape, dtype)
    except MemoryError:
        need = n * size[0] * size[1] * (3 + labelled) / 2**30
        raise SegcheckError(
            f"out of memory holding {n} images of {size[0]}x{size[1]} ({need:.1f} GiB as uint8 images and masks); "
            "lower eval.size (--eval-size) or resize the images (--eval-resize)"
        ) from None


def _different_sizes(dataset: SegDataset, indices: Sequence[int], mismatch: int) -> None:
    """Raise: the images of ``indices`` differ in size (every size read, for the message)."""
    shapes = sorted({np.shape(dataset[i][0])[:2] for i in indices})
    shown = ", ".join(f"{h}x{w}" for h, w in shapes[:4]) + (", ..." if len(shapes) > 4 else "")
    raise SegcheckError(
        f"the {len(indices)} images read have {len(shapes)} different sizes ({shown}); segcheck batches "
        "them, so set an eval.resize policy (segcheck.yaml or --eval-resize, e.g. 512x512 or short:512)"
    )


#: the defaults of ``eval.batch_pixels`` and ``eval.backward_pixels``: the pixels one forward
#: pass takes at most (two 1024x2048 images; 512 of 64x128), and one pass with a backward
BATCH_PIXELS = 1 << 22
BACKWARD_PIXELS = 1 << 20


def batch_for(size: tuple[int, int], batch_size: int, pixels: int) -> int:
    """Images of ``size`` (H, W) a pass takes: ``batch_size``, fewer when they exceed ``pixels``
    (never fewer than one)."""
    return max(1, min(batch_size, pixels // max(1, size[0] * size[1])))


Splits = Callable[[str], SegDataset] | Mapping[str, SegDataset]
EVAL_MASKS = object()  # EvalData.score's default: the eval sample's own masks


@dataclass(eq=False)
class EvalData:
    """The eval sample a target is judged on, and the way to its dataset's other splits.

    ``images`` (N, H, W, 3) uint8 and ``masks`` (N, H, W) int64 of split ``split``, described
    by ``spec`` (``masks`` None: an unlabelled sample). ``splits`` gives a split's dataset by
    name (a factory or a mapping; any sequence of ``(image, mask)`` pairs will do): gates that
    need training masks or a held-out split read them through :meth:`sample`; without it only
    the eval sample exists.
    ``batch_size`` is how many images one forward pass takes, and :attr:`backward_batch` one
    pass with a backward (``backward_pixels`` a batch at most; a pass with a backward keeps
    every activation); ``size`` and ``seed`` are how the sample was drawn (other splits are
    sampled the same way); ``resize`` is the ``eval.resize`` policy every split read through
    :meth:`dataset` goes through. Masks are kept in the smallest integer type of their values.
    ``concepts`` (a prompted dataset) name each sample's concept; :meth:`prompts` gives the
    prompt each sample is asked with.
    """

    images: np.ndarray
    masks: np.ndarray | None
    spec: DatasetSpec
    split: str = "val"
    batch_size: int = 8
    splits: Splits | None = field(default=None, repr=False)
    identity: str = "arrays"
    size: int | None = None
    seed: int = 0
    resize: str = ""
    concepts: tuple[str, ...] | None = None
    max_megapixels: float = resizing.MAX_MEGAPIXELS
    backward_pixels: int = BACKWARD_PIXELS
    batch_pixels: int = BATCH_PIXELS

    def __post_init__(self):
        resizing.check_policy(self.resize, self.max_megapixels)
        self.images = np.asarray(self.images)
        self.size = len(self.images) if self.size is None else self.size
        if self.images.ndim != 4 or self.images.shape[-1] != 3 or self.images.dtype != np.uint8:
            raise SegcheckError(f"eval images must be uint8 (N, H, W, 3), got {self.images.dtype} {self.images.shape}")
        if self.spec.prompted and self.concepts is None:
            raise SegcheckError("the spec declares prompts: pass concepts=[...], one concept per eval image")
        if self.concepts is not None and not self.spec.prompted:
            raise SegcheckError("concepts were given, but the spec declares no prompts; declare them in DatasetSpec")
        if self.concepts is not None:
            self.concepts = tuple(self.concepts)
            if len(self.concepts) != len(self.images):
                raise SegcheckError(f"{len(self.concepts)} concepts for {len(self.images)} eval images")
            for concept in set(self.concepts):
                self.spec.prompts_of(concept)
        if self.masks is None:  # an unlabelled split: gates that need labels skip it
            return
        self.masks = compact_masks(self.masks)
        if self.masks.shape != self.images.shape[:3]:
            raise SegcheckError(f"eval masks {self.masks.shape} do not match the images {self.images.shape[:3]}")

    @cached_property
    def labelled_pixels(self) -> int:
        """How many eval mask pixels the metrics count (:meth:`DatasetSpec.counted`); 0 without masks."""
        if self.masks is None:
            return 0
        return sum(int(self.spec.counted(self.masks[b]).sum()) for b in self.batches())

    @cached_property
    def class_counts(self) -> np.ndarray:
        """Counted eval pixels of each class (C,) int64, closed-set; an error for a label out of range."""
        if self.masks is None:
            raise SegcheckError("these images have no masks to count (an unlabelled split)")
        return np.diag(self.confusion(self.masks, self.masks)).copy()  # the masks as a prediction: the counts

    @property
    def chunk(self) -> int:
        """Images a computation without the model takes at once (statistics, scores): as many as
        ``batch_pixels`` allows, the whole sample when it fits."""
        return batch_for(self.images.shape[1:3], len(self.images), self.batch_pixels)

    @property
    def backward_batch(self) -> int:
        """Images a pass with a backward takes: ``batch_size``, fewer when they exceed ``backward_pixels``."""
        return batch_for(self.images.shape[1:3], self.batch_size, self.backward_pixels)

    def batches(self, count: int | None = None, size: int | None = None) -> list[slice]:
        """Slices of the first ``count`` eval images (all by default), ``size`` (default
        ``batch_size``) at a time: how every pass over the eval sample is cut."""
        count = len(self.images) if count is None else min(count, len(self.images))
        size = size or self.batch_size
        return [slice(start, min(start + size, count)) for start in range(0, count, size)]

    def prompts(self, choice: int | str | None = 0) -> list[str]:
        """The prompt of each sample: its concept's prompt number ``choice`` (0: canonical;
        ``choice`` past a concept's last paraphrase takes its last), or the same literal prompt
        for all (``choice`` a string)."""
        if self.concepts is None:
            raise SegcheckError("these eval images have no concepts (not a prompted dataset); nothing to prompt with")
        if isinstance(choice, str):
            return [choice] * len(self.concepts)
        return [self.spec.prompts_of(c)[min(choice or 0, len(self.spec.prompts_of(c)) - 1)] for c in self.concepts]

    def has_split(self, split: str) -> bool:
        """Whether :meth:`sample` can read ``split``."""
        if split == self.split:
            return True
        if isinstance(self.splits, Mapping):
            return split in self.splits
        return self.splits is not None and split in self.spec.splits

    def dataset(self, split: str) -> SegDataset:
        """The dataset of ``split``; an error naming the splits there are when it is not available."""
        if not self.has_split(split) or self.splits is None:
            there = ", ".join(self.spec.splits) if self.splits is not None else f"only the eval sample ({self.split})"
            raise SegcheckError(f"no {split!r} split to read here (there is {there}); give EvalData its splits")
        dataset = self.splits[split] if isinstance(self.splits, Mapping) else self.splits(split)
        return resizing.resized(dataset, self.resize, self.max_megapixels)

    def sample(self, split: str, size: int, seed: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Images and masks (None: an unlabelled split) of a seeded sample of ``size`` images of
        ``split`` (all if fewer)."""
        dataset = self.dataset(split)
        return stack(dataset, eval_indices(len(dataset), size, seed))

    def sample_masks(self, split: str, size: int, seed: int) -> np.ndarray:
        """The masks alone of the sample :meth:`sample` draws (images not decoded where the dataset
        can read a mask alone), compact (:func:`compact_masks`); an unlabelled split is an error."""
        dataset = self.dataset(split)
        masks = [read_mask(dataset, i) for i in eval_indices(len(dataset), size, seed)]
        if any(m is None for m in masks):
            raise SegcheckError(f"split {split!r} is unlabelled: it has no masks to read")
        if len({np.shape(m) for m in masks}) > 1:
            raise SegcheckError(
                f"the masks of split {split!r} differ in size; set an eval.resize policy (e.g. --eval-resize 512x512)"
            )
        return compact_masks(np.stack([compact_masks(m) for m in masks]))

    def score(self, pred: np.ndarray, masks: np.ndarray | object = EVAL_MASKS) -> float:
        """Dataset-level mIoU of class maps ``pred`` against ``masks`` (default: the eval masks),
        counted ``batch_size`` images at a time; masks None (an unlabelled sample) is an error,
        never a fallback to the eval masks."""
        masks = self.masks if masks is EVAL_MASKS else masks
        if masks is None:
            raise SegcheckError("these images have no masks to score against (an unlabelled split)")
        return miou(self.confusion(pred, masks))

    def confusion(self, pred: np.ndarray, masks: np.ndarray, matrix: ConfusionMatrix | None = None) -> np.ndarray:
        """The closed-set confusion matrix of class maps ``pred`` against ``masks`` (added to
        ``matrix`` when given: a score streamed over batches), ``batch_size`` images at a time."""
        matrix = matrix or ConfusionMatrix(self.spec.num_classes, self.spec.ignore_index)
        if np.shape(pred) != np.shape(masks):
            raise SegcheckError(f"prediction shape {np.shape(pred)} != target shape {np.shape(masks)}")
        for start in range(0, len(masks), self.batch_size):
            part = slice(start, start + self.batch_size)
            matrix.update(pred[part], self.spec.closed_set(masks[part]))
        return matrix.matrix

    @classmethod
    def from_dataset(
        cls,
        splits: Splits,
        split: str,
        size: int,
        seed: int,
        batch_size: int = 8,
        resize: str = "",
        max_megapixels: float = resizing.MAX_MEGAPIXELS,
        batch_pixels: int = BATCH_PIXELS,
        backward_pixels: int = BACKWARD_PIXELS,
    ) -> EvalData:
        """The seeded eval sample of ``size`` images of ``split`` under the ``resize`` policy (no
        image above ``max_megapixels``), keeping ``splits`` for the others; a forward pass takes
        ``batch_size`` images, fewer when they exceed ``batch_pixels`` (:func:`batch_for`)."""
        resizing.check_policy(resize, max_megapixels)
        raw = splits[split] if isinstance(splits, Mapping) else splits(split)
        dataset = resizing.resized(raw, resize, max_megapixels)
        indices = eval_indices(len(dataset), size, seed)
        images, masks = stack(dataset, indices)
        identity = getattr(dataset, "identity", "dataset")
        concepts = concepts_of(dataset, indices)
        batch = batch_for(images.shape[1:3], batch_size, batch_pixels)
        return cls(
            images, masks, dataset.spec, split, batch, splits, identity, size, seed, resize, concepts,
            max_megapixels, backward_pixels, batch_pixels,
        )  # fmt: skip
