"""label_quality: masks whose labels are likely wrong, found by confident learning on the model's own
probabilities (cleanlab's segmentation module; the optional extra ``pip install 'segcheck[audits]'``).

Importing this module raises ImportError without cleanlab, so segcheck lists the plugin as
absent (``segcheck list``, the run's header) and the other gates run; cleanlab itself is
imported when the gate runs.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from segcheck import gate_figures
from segcheck.data import batch_for, compact_masks, eval_indices
from segcheck.gates.result import GateResult, NotApplicable
from segcheck.hookspecs import hookimpl
from segcheck.splits import image_name
from segcheck.target import Target

if importlib.util.find_spec("cleanlab") is None:
    raise ImportError("cleanlab is not installed")

#: flagged images listed in the record's details (worst first), and pairs of classes
LISTED, PAIRS = 100, 10


@dataclass
class Judged:
    """What confident learning found on one split's images.

    Per image (in the order read): its ``names``, ``indices`` (into the eval sample for the eval
    split, into the dataset for ``train``), the labelled pixels judged (``judged``), those
    flagged (``flagged``) and the sampling ``strides`` (every s-th pixel in each direction, so
    that an image holds at most ``pixels_per_image`` judged pixels). ``pairs[i]`` counts image
    i's flagged pixels by (class the model predicts, class the mask gives); ``grids[i]`` is its
    flag map on the sampled grid (True: flagged) for the worst images only (the figure's).
    """

    split: str
    names: list[str] = field(default_factory=list)
    indices: list[int] = field(default_factory=list)
    judged: list[int] = field(default_factory=list)
    flagged: list[int] = field(default_factory=list)
    strides: list[int] = field(default_factory=list)
    pairs: list[dict[tuple[int, int], int]] = field(default_factory=list)
    grids: dict[int, np.ndarray] = field(default_factory=dict)

    @property
    def shares(self) -> np.ndarray:
        """The flagged share of each image's judged pixels (0 for an image without any)."""
        judged = np.asarray(self.judged, np.float64)
        return np.divide(self.flagged, judged, out=np.zeros_like(judged), where=judged > 0)

    @property
    def share(self) -> float:
        """The flagged share of all judged pixels of the split."""
        return sum(self.flagged) / max(sum(self.judged), 1)

    def ranked(self) -> list[int]:
        """Image positions, worst (largest flagged share) first; ties by position."""
        shares = self.shares
        return sorted(range(len(shares)), key=lambda i: (-shares[i], i))


def stride_for(height: int, width: int, pixels: int) -> int:
    """The sampling stride that leaves at most ``pixels`` pixels of an image of ``height x width``."""
    return max(1, math.ceil(math.sqrt(height * width / pixels)))


def _probabilities(model, images: np.ndarray, stride: int) -> np.ndarray:
    """Class probabilities (B, h, w, K) float32 of ``images`` on the grid of every ``stride``-th
    pixel (the softmax of the logits, or for a binary model 1 - p and p of its sigmoid)."""
    with torch.no_grad():
        logits = model.logits(model.normalize(images))
        logits = logits[..., stride // 2 :: stride, stride // 2 :: stride].float()
        if model.binary:
            p = torch.sigmoid(logits[:, :1])
            probs = torch.cat([1 - p, p], 1)
        else:
            probs = logits.softmax(1)
    return probs.permute(0, 2, 3, 1).cpu().numpy()


def _batches(target: Target, split: str, cfg: dict) -> Iterator[tuple[list[int], list[str], np.ndarray, np.ndarray]]:
    """``(indices, names, images, masks)`` batches of the images label_quality judges on ``split``:
    the eval sample for the eval split, a seeded sample of ``cfg["train_images"]`` for ``train``
    (read a batch at a time, consecutive images of one size together)."""
    data = target.data
    if split == data.split:
        names = sample_names(data)
        for part in data.batches():
            indices = list(range(part.start, part.stop))
            yield indices, [names[i] for i in indices], data.images[part], data.masks[part]
        return
    dataset = data.dataset(split)
    group: list[int] = []
    images: list[np.ndarray] = []
    masks: list[np.ndarray] = []
    for index in eval_indices(len(dataset), cfg["train_images"], cfg["seed"]):
        image, mask = dataset[index]
        image = np.asarray(image)
        batch = batch_for(image.shape[:2], data.batch_size, data.batch_pixels)
        if group and (image.shape != images[0].shape or len(group) >= batch):
            yield group, [image_name(dataset, split, i) for i in group], np.stack(images), np.stack(masks)
            group, images, masks = [], [], []
        group.append(index)
        images.append(image)
        masks.append(compact_masks(mask))
    if group:
        yield group, [image_name(dataset, split, i) for i in group], np.stack(images), np.stack(masks)


def sample_names(data) -> list[str]:
    """The name of each eval image (:func:`image_name` of its index in the eval split, drawn as
    ``EvalData.from_dataset`` draws it), or ``eval image i`` without a dataset to name them by."""
    if data.splits is None or not data.has_split(data.split):
        return [f"eval image {i}" for i in range(len(data.images))]
    dataset = data.dataset(data.split)
    indices = eval_indices(len(dataset), data.size, data.seed)
    if len(indices) != len(data.images):
        return [f"eval image {i}" for i in range(len(data.images))]
    return [image_name(dataset, data.split, i) for i in indices]


def judge(target: Target, split: str, cfg: dict, keep: int = gate_figures.IMAGES + 1) -> Judged:
    """Confident learning (``cleanlab.segmentation.filter.find_label_issues``) on ``split``'s
    images: the labelled pixels (``DatasetSpec.counted``, class ids only) of each image on a grid
    of at most ``cfg["pixels_per_image"]`` pixels, with the model's probabilities there. cleanlab
    gets the pixels of the whole split as one row (ignore and anomaly pixels are not labels to
    judge), and only the compact per-pixel rows are held, never a batch's full-size
    probabilities. The flag maps of the ``keep`` worst images are kept for the figure."""
    from cleanlab.segmentation.filter import find_label_issues

    model, spec = target.model, target.data.spec
    k = 2 if model.binary else spec.num_classes
    found = Judged(split)
    probs, labels, counted = [], [], []
    for indices, names, images, masks in _batches(target, split, cfg):
        stride = stride_for(*images.shape[1:3], cfg["pixels_per_image"])
        p = _probabilities(model, images, stride)
        grid = np.asarray(masks)[:, stride // 2 :: stride, stride // 2 :: stride]
        keep_pixel = np.asarray(spec.counted(grid)) & (grid < k)  # wrong label values: label_integrity's
        probs.append(p[keep_pixel])
        labels.append(grid[keep_pixel].astype(np.int64))
        counted += list(keep_pixel)
        found.names += names
        found.indices += indices
        found.strides += [stride] * len(indices)
        found.judged += keep_pixel.reshape(len(indices), -1).sum(1).tolist()
    all_probs, all_labels = np.concatenate(probs), np.concatenate(labels)
    del probs
    if len(all_labels):
        issues = find_label_issues(all_labels[None, None, :], all_probs.T[None, :, None, :], n_jobs=1, verbose=False)[
            0, 0
        ]
    else:
        issues = np.zeros(0, bool)
    owner = np.repeat(np.arange(len(found.judged)), found.judged)
    found.flagged = np.bincount(owner[issues], minlength=len(found.judged)).tolist()
    predicted = all_probs[issues].argmax(1)
    codes = (owner[issues] * k + predicted) * k + all_labels[issues]
    found.pairs = [{} for _ in found.judged]
    for code, count in zip(*np.unique(codes, return_counts=True)):
        image, rest = divmod(int(code), k * k)
        found.pairs[image][divmod(rest, k)] = int(count)
    starts = np.concatenate([[0], np.cumsum(found.judged)])
    for i in found.ranked()[:keep]:
        grid = np.zeros(counted[i].shape, bool)
        grid[counted[i]] = issues[starts[i] : starts[i + 1]]
        found.grids[i] = grid
    return found


def judged(target: Target, cfg: dict) -> list[Judged]:
    """:func:`judge` of the eval split, and of ``train`` when ``cfg["train_images"]`` asks for it
    and the data has a labelled train split other than the eval split; once per target and settings."""
    data = target.data

    def compute() -> list[Judged]:
        splits = [data.split]
        if cfg["train_images"] and data.split != "train" and data.has_split("train") and data.spec.labelled("train"):
            splits.append("train")
        return [judge(target, split, cfg) for split in splits]

    return target.model.memo(f"label_quality {sorted(cfg.items())!r}", data, compute)


def described_pairs(pairs: dict[tuple[int, int], int], classes, limit: int = 2) -> str:
    """``"road labelled as sidewalk 80%, ..."``: the most frequent (predicted, given) classes of
    flagged pixels, with their share of them."""
    total = sum(pairs.values())
    top = sorted(pairs.items(), key=lambda item: (-item[1], item[0]))[:limit]
    return ", ".join(f"{classes[p]} labelled as {classes[g]} {n / total:.0%}" for (p, g), n in top)


def pixel_accuracy(target: Target) -> float:
    """The share of the eval sample's counted pixels whose clean prediction is their label."""
    spec, masks, labels = target.data.spec, target.data.masks, target.predictions.labels
    right = counted = 0
    for mask, label in zip(masks, labels):
        keep = spec.counted(mask)
        counted += int(keep.sum())
        right += int((label[keep] == mask[keep]).sum())
    return right / counted if counted else 0.0


def label_quality(target: Target, cfg: dict) -> GateResult:
    """Likely label errors: pixels whose mask label the model's own probabilities contradict
    with confidence (confident learning, cleanlab's segmentation module).

    **What it measures.** For every labelled pixel of the eval sample (and of a seeded sample
    of ``train_images`` training images when that setting is above 0), the model's class
    probabilities and the mask's label go to ``cleanlab.segmentation.filter.find_label_issues``.
    Confident learning estimates, per class, how confident the model is on pixels labelled with
    it (its confident threshold), counts the pixels whose label disagrees with a class the model
    is confidently sure of, and flags that many pixels, those with the lowest probability for
    their own label; a flagged pixel is never one the model predicts as labelled. The gate
    reports the flagged share of the labelled pixels, per image the share flagged and the class
    pairs involved ("road labelled as sidewalk": the model sees road, the mask says sidewalk),
    and the images with at least ``min_image_share`` of their pixels flagged, worst first, by
    file name (``details["flagged_images"]``), drawn as input | mask | flagged pixels | prediction.

    **Rule.** Passes when the flagged share of each judged split's labelled pixels is
    <= ``max_flagged_share`` (default 0.01). Settings: ``min_image_share`` (0.01; an image is
    listed as flagged from this share of its pixels), ``train_images`` (0: the eval sample only),
    ``pixels_per_image`` (16384: a larger image is judged on a grid of every s-th pixel in each
    direction, s the smallest stride that leaves at most this many; the memory held is about
    that many pixels x classes x 4 bytes per image), ``seed`` (the train sample).

    **Needs a model that reads its images.** Confident learning trusts the model where it is
    confident, so a model that ignores its input (or predicts a few classes everywhere) would
    flag every label it disagrees with. The gate needs ``reads_images``: it is a SKIP naming the
    gate when noise_input or prediction_collapse fails on the same target. Those two are
    measured through their own functions with their own settings, once per target
    (``segcheck.gates.registered.measured``: shared with their own tests, whichever runs
    first), so the verdict does not depend on test order, ``-k`` or xdist.

    **Needs a model that mostly agrees with the labels.** When the clean prediction agrees
    with the eval labels on fewer than ``min_accuracy`` (0.90) of their pixels, a weak model's
    own errors would be flagged as label errors (on ``synthetic-streets-shortcut`` a model of
    mIoU 0.49 flags 11%): the gate is a SKIP saying so, not a verdict on the labels.

    **Why it matters.** Range checks (label_integrity) pass masks that are valid integers but
    wrong: a class relabelled as another in part of the data, masks shifted or paired with the
    wrong image, a label mapping off by one for some files. Such labels cap the metric, teach
    the model the error and make a good model look bad; field reports spent days finding them
    by looking at overlays.

    **A failure usually means** that some masks hold wrong labels: look at the listed images
    and the class pairs (one pair dominating many images: a relabelled class or a wrong
    mapping; flags along edges: shifted or resized masks). Fix the masks. On hard data a weak
    model's own errors are flagged too (confident learning assumes a model that is right where
    it is confident, and probabilities out of sample: the eval split is); raise
    ``max_flagged_share`` only after the worst images show no wrong labels.
    """
    classes = target.data.spec.classes
    accuracy = pixel_accuracy(target)
    if accuracy < cfg["min_accuracy"]:
        raise NotApplicable(
            f"the model agrees with the eval labels on {accuracy:.1%} of their pixels (< label_quality.min_accuracy "
            f"{cfg['min_accuracy']:.0%}): confident learning cannot tell a weak model's own errors from wrong labels "
            "(nor badly wrong labels from a weak model); judge these labels with a model that scores higher on them"
        )
    found = judged(target, cfg)
    limit, min_share = cfg["max_flagged_share"], cfg["min_image_share"]
    listed, parts, splits = [], [], {}
    for split in found:
        shares = split.shares
        stride = sorted(set(split.strides))
        grid = "every pixel" if stride == [1] else f"every {'/'.join(map(str, stride))}th pixel each way"
        splits[split.split] = {
            "images": len(split.names),
            "judged_pixels": int(sum(split.judged)),
            "flagged_pixels": int(sum(split.flagged)),
            "share": split.share,
            "strides": stride,
        }
        flagged = [i for i in split.ranked() if shares[i] >= min_share and split.flagged[i]]
        listed += [
            {
                "split": split.split,
                "image": split.names[i],
                "share": float(shares[i]),
                "flagged_pixels": int(split.flagged[i]),
                "classes": described_pairs(split.pairs[i], classes),
            }
            for i in flagged
        ]
        worst = split.ranked()[0] if split.names else None
        text = (
            f"{split.share:.2%} of {sum(split.judged):,} labelled pixels of {len(split.names)} {split.split!r} images "
            f"flagged ({grid}); {len(flagged)} image{'s' if len(flagged) != 1 else ''} with >= {min_share:.0%}"
        )
        if worst is not None and split.flagged[worst]:
            text += f", worst {split.names[worst]} {shares[worst]:.1%} ({described_pairs(split.pairs[worst], classes)})"
        parts.append(text)
    value = max(s["share"] for s in splits.values())
    passed = value <= limit
    totals: dict[tuple[int, int], int] = {}
    for split in found:
        for pairs in split.pairs:
            for pair, n in pairs.items():
                totals[pair] = totals.get(pair, 0) + n
    top = sorted(totals.items(), key=lambda item: (-item[1], item[0]))[:PAIRS]
    details = {
        "splits": splits,
        "flagged_images": sorted(listed, key=lambda d: -d["share"])[:LISTED],
        "flagged_images_total": len(listed),
        "class_pairs": {f"{classes[p]} labelled as {classes[g]}": n for (p, g), n in top},
    }
    measured_text = "; ".join(parts)
    if passed:
        message = f"{measured_text}: <= {limit:.2%} flagged as likely label errors"
    else:
        message = (
            f"{measured_text}: > {limit:.2%} flagged as likely label errors: these masks likely hold wrong labels (a "
            "class relabelled, masks shifted or paired with the wrong image, a wrong label mapping); look at the "
            "listed images and fix their masks (raise label_quality.max_flagged_share only if they show none)"
        )
    return GateResult("label_quality", value, limit, passed, message, rule="value <= threshold", details=details)


__all__ = ["Judged", "image_name", "judge", "judged", "label_quality", "sample_names", "stride_for"]


@hookimpl
def segcheck_register_gates(registry):
    registry.add(
        "label_quality",
        label_quality,
        section="label_quality",
        needs=("labels", "finite_logits", "reads_images"),
        figures=_figures,
    )


def _figures(target: Target, result: GateResult, cfg: dict) -> list:
    """The gate's figures (``segcheck.gate_figures.label_quality``) from its memoized findings."""
    return gate_figures.label_quality(target, judged(target, cfg))
