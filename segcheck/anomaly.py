"""The anomaly suite's shared work: one streaming pass over a target's anomaly split.

Each batch gets one forward pass; every scorer's map of it feeds that scorer's pooled and
per-image OOD metrics, and the predicted classes feed the known-class confusion matrix
(anomaly pixels out). Component metrics need the best-F1 threshold, known only at the end:
the score maps are kept for them while they fit in ``KEEP_BYTES``, else a second pass
recomputes them. Memory beyond the model and one batch stays bounded (histograms of
``bins`` bins once a scorer has seen ``exact_limit`` pixels; per-component numbers).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch

from segcheck import SegcheckError
from segcheck.data import batch_for, eval_indices, stack
from segcheck.gates.result import NotApplicable, TargetProblem
from segcheck.metrics import ConfusionMatrix, OODMetrics, OODResult, miou
from segcheck.metrics.components import ComponentMetrics, ComponentResult, ground_truth
from segcheck.metrics.thresholds import OperatingPoint
from segcheck.model import all_finite
from segcheck.progress import forward_pass
from segcheck.scoring import BUILTIN_SCORERS, ClassStats, context_names, logit_statistics, score

KEEP_BYTES = 32 << 20  # score maps kept for the component metrics instead of a second pass


@dataclass(frozen=True)
class ScorerResult:
    """One scorer's figures on the anomaly split."""

    pooled: OODResult
    per_image: OODResult
    best_f1: OperatingPoint  # at the threshold of best pixel F1 (positive = score >= threshold)
    sensitivity: tuple[OperatingPoint, ...]  # it, and the thresholds of recall +-5/10/20 points
    components: ComponentResult
    curves: dict = field(default_factory=dict, repr=False)  # ROC and PR points, for plots (OODMetrics.curves)


@dataclass(frozen=True)
class AnomalyEvaluation:
    """Every scorer's figures on ``split`` (``images`` images, ``pixels`` valid pixels of which
    ``anomaly_pixels`` anomalous), and the known-class mIoU there with anomaly pixels out."""

    split: str
    images: int
    pixels: int
    anomaly_pixels: int
    known_miou: float
    scorers: dict[str, ScorerResult]
    class_stats: ClassStats | None = field(default=None, repr=False)
    passes: int = 1
    unavailable: dict[str, str] = field(default_factory=dict)  # scorer -> why it could not run here (SKIP)
    failed: dict[str, str] = field(default_factory=dict)  # scorer -> the error it raised (ERROR)


def anomaly_split(spec, cfg: dict, eval_split: str) -> str:
    """The split the anomaly gates read: ``cfg["split"]``, else the dataset's first anomaly split,
    else ``eval_split`` (e.g. a folder dataset that declares an anomaly_index but no such split)."""
    if spec.anomaly_index is None:
        raise NotApplicable("the dataset declares no anomaly_index: there are no anomaly pixels to detect")
    return cfg.get("split") or (spec.anomaly_splits[0] if spec.anomaly_splits else None) or eval_split


def evaluate(target, cfg: dict, scorers: dict[str, Callable] | None = None) -> AnomalyEvaluation:
    """The anomaly evaluation of ``target`` with ``scorers`` (default: the target's, else the
    built-ins), computed once per target and settings and shared by the anomaly gates."""
    scorers = scorers or getattr(target, "scorers", None) or BUILTIN_SCORERS
    key = f"anomaly:{sorted(cfg.items())}:{list(scorers)}"
    result = target.model.memo(key, target.data, lambda: _settled(_evaluate, target, cfg, scorers))
    if isinstance(result, NotApplicable):
        raise result  # a SKIP is found once, not once per gate
    if isinstance(result, SegcheckError):  # the first gate reports it, the others point to that one
        raise TargetProblem("the anomaly evaluation failed", str(result))
    return result


def _settled(function, *args):
    """``function(*args)``, or the SegcheckError (a NotApplicable too) it raised."""
    try:
        return function(*args)
    except SegcheckError as exc:
        return exc


class _Context(dict):
    """Scorer context; ``class_stats`` is computed on first access (only SML-like scorers ask)."""

    def __init__(self, stats: Callable[[], ClassStats], **values):
        super().__init__(**values)
        self._stats = stats

    def __missing__(self, key):
        if key != "class_stats":
            raise KeyError(key)
        self[key] = self._stats()
        return self[key]


def _evaluate(target, cfg: dict, scorers: dict[str, Callable]) -> AnomalyEvaluation:
    data, model = target.data, target.model
    spec = data.spec
    split = anomaly_split(spec, cfg, data.split)
    unavailable = {
        name: f"scorer {name!r} needs the training split's max-logit statistics; this data has no 'train' split"
        for name, scorer in scorers.items()
        if "class_stats" in context_names(scorer, name) and not data.has_split("train")
    }
    scorers = {n: f for n, f in scorers.items() if n not in unavailable}
    if not scorers:
        raise NotApplicable(f"no scorer can run here: {'; '.join(unavailable.values())}")
    dataset = data.dataset(split)
    indices = eval_indices(len(dataset), cfg["max_images"] or len(dataset), data.seed)
    stats: list[ClassStats] = []

    def class_stats() -> ClassStats:
        if not stats:
            stats.append(max_logit_stats(target, cfg["stats_images"], pass_batch(target, cfg)))
        return stats[0]

    options = dict(exact=None, bins=cfg["bins"], exact_limit=cfg["exact_limit"])
    pooled = {n: OODMetrics(average="pooled", **options) for n in scorers}
    per_image = {
        n: OODMetrics(average="per_image", **{**options, "exact_limit": cfg["per_image_exact_limit"]}) for n in scorers
    }
    confusion = ConfusionMatrix(spec.num_classes, spec.ignore_index)
    kept: dict[str, list[np.ndarray]] | None = {n: [] for n in scorers}
    pixels_kept: list[tuple[np.ndarray, np.ndarray]] = []  # (is_ood, valid) of the kept maps
    budget, area = KEEP_BYTES, 0
    failed: dict[str, str] = {}  # scorer -> its one-line error; the other scorers go on
    batch = pass_batch(target, cfg)
    for masks, logits, maps in _scored(
        model, dataset, indices, scorers, cfg, class_stats, split, failed, spec.num_classes, batch
    ):
        area = area or masks.shape[-1] * masks.shape[-2]
        predicted = logit_statistics(logits).argmax  # shared with the built-in scorers of this batch
        confusion.update(predicted.cpu().numpy(), spec.closed_set(masks))
        is_ood, valid = spec.ood_pixels(masks)
        flags = spec.ood_pixels(torch.from_numpy(masks).to(logits.device))  # ranked where the maps were made
        _each(maps, functools.partial(_rank, pooled, per_image, flags))
        budget -= sum(m.numel() * m.element_size() for m in maps.values()) + is_ood.nbytes + valid.nbytes
        if kept is not None and budget >= 0:
            for name, m in maps.items():
                kept[name].append(m.cpu().numpy())
            pixels_kept.append((is_ood, valid))
        else:
            kept, pixels_kept = None, []
        del masks, logits, maps, flags  # not alive while the next batch is computed
    scorers = {n: f for n, f in scorers.items() if n not in failed}
    if not scorers:
        raise SegcheckError(f"every scorer failed on the {split!r} split: {'; '.join(failed.values())}")
    results = {n: pooled[n].compute() for n in scorers}
    counted = next(iter(results.values()))
    if not counted.positives:
        raise NotApplicable(f"the {split!r} split holds no anomaly pixels (label {spec.anomaly_index}) to detect")
    if not counted.negatives:
        raise NotApplicable(
            f"every valid pixel of the {len(indices)} {split!r} images is an anomaly (label {spec.anomaly_index}): "
            "there is no known pixel to tell the anomalies from (check the masks' label mapping)"
        )
    best = {n: pooled[n].best_f1() for n in scorers}
    sizes = component_sizes(cfg, area)
    components = {n: ComponentMetrics(best[n].threshold, inclusive=True, **sizes) for n in scorers}
    passes = 1
    if kept is not None:
        for i, (is_ood, valid) in enumerate(pixels_kept):
            for name in scorers:
                components[name].update(kept[name][i], is_ood, valid)
    else:  # the maps did not fit: score the split again
        passes = 2
        for masks, _logits, maps in _scored(
            model, dataset, indices, scorers, cfg, class_stats, split, failed, spec.num_classes, batch
        ):
            is_ood, valid = spec.ood_pixels(masks)
            ground_truth(is_ood, valid, sizes["min_gt_size"])  # labelled once, in this thread, for every scorer
            _each(maps, functools.partial(_label, components, is_ood, valid))
            del masks, _logits, maps
    first = results[next(iter(scorers))]
    return AnomalyEvaluation(
        split,
        len(indices),
        first.positives + first.negatives,
        first.positives,
        float(miou(confusion.matrix)),
        {
            n: ScorerResult(
                results[n],
                per_image[n].compute(),
                best[n],
                tuple(pooled[n].threshold_sensitivity()),
                components[n].compute(),
                pooled[n].curves(),
            )
            for n in scorers
        },
        stats[0] if stats else None,
        passes,
        unavailable,
        failed,
    )


def component_sizes(cfg: dict, area: int) -> dict[str, int]:
    """The component size filters for images of ``area`` pixels: ``min_gt_size``/``min_pred_size``
    apply at ``size_reference`` pixels (SMIYC's 100/500 at 2048x1024) and scale with the area
    (``size_reference`` 0: as given)."""
    scale = area / cfg["size_reference"] if cfg["size_reference"] else 1.0
    return {k: round(cfg[k] * scale) for k in ("min_gt_size", "min_pred_size")}


def pass_batch(target, cfg: dict) -> int:
    """Images one batch of the anomaly pass takes: ``anomaly.batch_size``, fewer when they exceed
    ``anomaly.batch_pixels`` (sized by the eval images; the anomaly split goes through the same
    ``eval.resize`` policy). Every scorer's map and the OOD counts of a batch are made at once,
    so its budget is below a plain forward pass's."""
    return batch_for(target.data.images.shape[1:3], cfg["batch_size"], cfg["batch_pixels"])


def _rank(pooled: dict, per_image: dict, flags: tuple, name: str, scores) -> None:
    """Add one scorer's map of a batch to its pooled and per-image OOD metrics."""
    pooled[name].update(scores, *flags)
    per_image[name].update(scores, *flags)


def _label(components: dict, is_ood, valid, name: str, scores) -> None:
    """Add one scorer's map of a batch to its component metrics (labelled on the host)."""
    components[name].update(scores.cpu().numpy(), is_ood, valid)


def _each(maps: dict, work: Callable[[str, object], object]) -> None:
    """``work(name, map)`` for every scorer's map of a batch, two at a time: the counting and
    labelling are numpy and scipy work that releases the GIL (an exception is raised here)."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        for done in [pool.submit(work, name, m) for name, m in maps.items()]:
            done.result()


def read_ahead(dataset, parts: list) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """:func:`segcheck.data.stack` of each list of indices in ``parts``, in order, the next one
    read in a background thread while the caller works on the current one (image decoding
    releases the GIL): at most two batches are held."""
    if not parts:
        return
    with ThreadPoolExecutor(max_workers=1) as reader:
        pending = reader.submit(stack, dataset, parts[0])
        for part in parts[1:]:
            current, pending = pending.result(), reader.submit(stack, dataset, part)
            yield current
            del current
        yield pending.result()


def _scored(
    model, dataset, indices, scorers, cfg, class_stats, split, failed: dict, classes: int, batch: int
) -> Iterator[tuple]:
    """``(masks, logits, {scorer: scores (B, H, W) float32 tensor on the model's device})`` per
    batch of ``batch`` images of ``indices``; a scorer that fails is entered in ``failed`` with
    its one-line error and left out from then on."""
    parts = [indices[start : start + batch] for start in range(0, len(indices), batch)]
    with forward_pass(len(indices)) as done, torch.no_grad():
        for images, masks in read_ahead(dataset, parts):
            x = model.normalize(images)
            logits = model.logits(x).float()
            if logits.shape[1] != classes:
                raise SegcheckError(
                    f"the head has {logits.shape[1]} channels for {classes} known classes, so no "
                    "anomaly score of the known classes can be read (see anomaly_head)"
                )
            if not all_finite(logits):
                raise SegcheckError(
                    f"the model's logits on the {split!r} split are not finite (NaN/inf); no anomaly score can be "
                    "ranked (see finite_outputs)"
                )
            context = _Context(class_stats, temperature=cfg["temperature"], inputs=x, module=model.module)
            maps = {}
            for name, scorer in scorers.items():
                if name in failed:
                    continue
                try:
                    s = score(scorer, logits, context, name)
                    if not all_finite(s):
                        raise SegcheckError(
                            f"scorer {name!r} gave NaN/inf scores on the {split!r} split; fix the scorer"
                        )
                except NotApplicable:
                    raise
                except SegcheckError as exc:
                    failed[name] = str(exc)
                    continue
                except Exception as exc:
                    failed[name] = f"scorer {name!r} raised {type(exc).__name__}: {exc}"
                    continue
                maps[name] = s
            done(len(images))
            del images, x, context
            yield masks, logits, maps
            del masks, logits, maps


def score_maps(target, cfg: dict, scorer: str, count: int, scan: int = 8) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Images (N, H, W, 3), masks and ``scorer``'s score maps (N, H, W) of up to ``count`` images
    of the anomaly split, for pictures: the first of the evaluation's sample (its first ``scan``)
    that hold anomaly pixels, else its first ones."""
    ev = evaluate(target, cfg)
    data, model = target.data, target.model
    dataset = data.dataset(ev.split)
    indices = eval_indices(len(dataset), cfg["max_images"] or len(dataset), data.seed)[:scan]
    images, masks = stack(dataset, indices)
    hits = [i for i, m in enumerate(masks) if (m == data.spec.anomaly_index).any()]
    chosen = (hits or list(range(len(indices))))[:count]
    images, masks = images[chosen], masks[chosen]
    function = (getattr(target, "scorers", None) or BUILTIN_SCORERS)[scorer]
    stats = (
        (lambda: ev.class_stats)
        if ev.class_stats is not None
        else (lambda: max_logit_stats(target, cfg["stats_images"], pass_batch(target, cfg)))
    )
    with torch.no_grad():
        x = model.normalize(images)
        logits = model.logits(x).float()
        context = _Context(stats, temperature=cfg["temperature"], inputs=x, module=model.module)
        maps = score(function, logits, context, scorer).cpu().numpy()
    return images, masks, maps


def max_logit_stats(target, images: int, batch: int = 8) -> ClassStats:
    """Per-class mean and std of the max logit over the pixels predicted as that class, on a
    seeded sample of ``images`` training images, ``batch`` at a time (standardized max logit's
    statistics)."""
    data, model = target.data, target.model
    if not data.has_split("train"):
        raise NotApplicable("standardized max logit needs the training split's statistics; this data has no 'train'")
    dataset = data.dataset("train")
    c = data.spec.num_classes
    total, squares = torch.zeros(c, dtype=torch.float64), torch.zeros(c, dtype=torch.float64)
    count = torch.zeros(c, dtype=torch.int64)
    indices = eval_indices(len(dataset), images, data.seed)
    with torch.no_grad():
        for start in range(0, len(indices), batch):
            pixels, _ = stack(dataset, indices[start : start + batch])
            logits = model.logits(model.normalize(pixels)).float()
            if not all_finite(logits):
                raise SegcheckError(
                    "the model's logits on the 'train' split are not finite (NaN/inf): no SML statistics"
                )
            top, predicted = logits.max(1)  # amax(1) and argmax(1) in one pass
            top, predicted = top.flatten().double().cpu(), predicted.flatten().cpu()
            if predicted.numel() and int(predicted.max()) >= c:
                raise SegcheckError(f"the model predicts class {int(predicted.max())} with {c} known classes")
            total += torch.bincount(predicted, top, c)
            squares += torch.bincount(predicted, top * top, c)
            count += torch.bincount(predicted, minlength=c)
    seen = count > 1
    overall_mean = total.sum() / count.sum()
    overall_var = squares.sum() / count.sum() - overall_mean**2
    mean = torch.where(seen, total / count.clamp_min(1), overall_mean)
    var = torch.where(seen, squares / count.clamp_min(1) - mean**2, overall_var)
    std = var.clamp_min(1e-12).sqrt()
    return ClassStats(
        mean.float(), std.float(), tuple(int(v) for v in count), tuple(int(i) for i in torch.nonzero(~seen).flatten())
    )
