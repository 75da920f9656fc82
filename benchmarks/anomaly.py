"""Anomaly-suite benchmarks: where the evaluation's time goes, streaming memory, scikit-learn.

    python benchmarks/anomaly.py                                  # defaults: a few minutes on a 2-core CPU
    python benchmarks/anomaly.py --images 1500 --size 720x1280    # the issue's 1.4 G pixels (~1.5 h on 1 core)
    python benchmarks/anomaly.py --forward-images 4 --stats-images 4 --images 3 --size 40x64 --pixels 2e5  # seconds

Three tables, each from one run on ``--threads`` torch threads (default 1; OMP/MKL/OpenBLAS
likewise), wall time next to CPU time because a busy machine inflates wall time:

1. **Metric work vs forward passes**: ``segcheck.anomaly._evaluate`` (the whole anomaly
   evaluation: forward passes, the scorers, pooled and per-image OOD metrics, the known-class
   confusion matrix, component metrics) on the bundled unet over ``--forward-images`` images of
   the synthetic-streets ``anomaly`` split, against the forward passes alone over the same
   images in the same batches. The evaluation's time is split by timing wrappers around the
   calls it makes (exclusive time: a callee's time is not also its caller's).
2. **Scale / bounded memory**: the same evaluation streaming ``--images`` generated images of
   ``--size`` through a 1x1-conv model (nearest-colour logits, ``--classes`` classes, one
   anomaly blob per image, made on the fly in ``__getitem__``), in a fresh process. Memory is
   counted above the process before a warm-up evaluation of one batch (model, data objects,
   interpreter), two ways: the live heap (glibc ``mallinfo2``: bytes malloc has handed out,
   i.e. numpy's and torch's arrays), sampled every 50 ms by a thread against the images read,
   and the kernel's peak resident set (VmHWM, reset through ``/proc/self/clear_refs``), which
   also holds what the allocator keeps after a free. The warm-up's peak is "one batch"; the
   timed run's peak minus it is what more images cost.
3. **Peak memory vs scikit-learn**: ``OODMetrics`` as the suite configures it (exact up to
   ``exact_limit`` pixels, then a histogram), fed ``--chunk`` pixels at a time, against
   ``roc_auc_score`` + ``average_precision_score`` + ``roc_curve`` on the same ``--pixels``
   seeded (score, label) pairs (float32 N(0, 1), 5% positives shifted by +1.5), each in a
   fresh process: tracemalloc's peak (numpy's and Python's allocations; not torch's) and
   VmHWM above the inputs, wall time, and the metrics' differences.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import functools
import json
import math
import os
import platform
import re
import sys
import threading
import time
import tracemalloc
import zlib
from collections import defaultdict
from importlib import metadata

import numpy as np
from _report import table, worker_result

SECTIONS = ("forward", "scale", "sklearn")
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")

# the pieces of the evaluation, as the timing wrappers name them
DATA = "images made on the fly (stack)"
FORWARD = "forward passes (normalize + logits)"
SCORERS = "scorer maps"
STATS = "SML class statistics (own train-split forward)"
POOLED = "pooled OOD update"
PER_IMAGE = "per-image OOD update"
SORT = "exact sort + tie table (_Exact.table)"
HISTOGRAM = "histogram binning (ScoreHistogram.update)"
RANKING = "ranking_metrics"
CONFUSION = "known-class confusion matrix"
LABEL = "components: ndimage.label"
COMPONENTS = "components: rest of update"
FINAL = "final compute / best_f1 / sensitivity"
FINITE = "finiteness checks (torch.isfinite)"
MASKS = "masks: ood_pixels / closed_set"
OTHER = "other (argmax, copies, the loop)"
NOT_METRICS = (DATA, FORWARD, SCORERS, STATS)


# --- measuring ---------------------------------------------------------------------------------
def _status_kib(key: str) -> int:
    with open("/proc/self/status") as status:
        return int(re.search(rf"^{key}:\s+(\d+) kB", status.read(), re.M).group(1))


def _reset_peak() -> int:
    """Reset the kernel's peak-RSS counter (VmHWM) to the current RSS; returns that RSS in KiB."""
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")
    return _status_kib("VmRSS")


class Timers:
    """Exclusive wall time per label of wrapped callables, while entered (``with timers:``).

    ``wrap(owner, attr, label)`` replaces ``owner.attr`` (a module function, a class's method or
    an instance's bound method) by a timed one; on exit every original is put back. A call's
    time minus its timed callees' goes to its label; ``nested=True`` prefixes the label with the
    caller's (``"per-image OOD update > exact sort"``); ``opaque=True`` keeps the callees' time
    in the caller's label. ``label`` may be a function of the call's arguments.
    """

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._stack: list[list] = []  # [label, seconds of timed callees]
        self._opaque = 0
        self._undo: list[tuple] = []

    def wrap(self, owner, attr: str, label, *, nested: bool = False, opaque: bool = False) -> None:
        original = getattr(owner, attr)
        had = attr in vars(owner)
        self._undo.append((owner, attr, vars(owner).get(attr), had))

        @functools.wraps(original)
        def timed(*args, **kwargs):
            if self._opaque:
                return original(*args, **kwargs)
            name = label(*args) if callable(label) else label
            if nested and self._stack:
                name = f"{self._stack[-1][0]} > {name}"
            self._stack.append([name, 0.0])
            self._opaque += opaque
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - start
                self._opaque -= opaque
                _, inner = self._stack.pop()
                self.seconds[name] += elapsed - inner
                self.calls[name] += 1
                if self._stack:
                    self._stack[-1][1] += elapsed

        setattr(owner, attr, timed)

    def __enter__(self) -> Timers:
        return self

    def __exit__(self, *exc) -> None:
        for owner, attr, saved, had in reversed(self._undo):
            if had:
                setattr(owner, attr, saved)
            else:
                delattr(owner, attr)
        self._undo.clear()


def evaluation_timers(model) -> Timers:
    """Timers around every call ``segcheck.anomaly._evaluate`` makes that costs time."""
    import scipy.ndimage
    import torch

    from segcheck import anomaly
    from segcheck.data import DatasetSpec
    from segcheck.metrics import ConfusionMatrix, OODMetrics, ood
    from segcheck.metrics._histogram import ScoreHistogram
    from segcheck.metrics.components import ComponentMetrics

    timers = Timers()
    timers.wrap(anomaly, "stack", DATA)
    timers.wrap(model, "normalize", FORWARD)
    timers.wrap(model, "logits", FORWARD)
    timers.wrap(anomaly, "score", SCORERS)
    timers.wrap(anomaly, "max_logit_stats", STATS, opaque=True)
    timers.wrap(OODMetrics, "update", lambda self, *a: POOLED if self.average == "pooled" else PER_IMAGE)
    for method in ("compute", "best_f1", "threshold_sensitivity"):
        timers.wrap(OODMetrics, method, FINAL)
    timers.wrap(ComponentMetrics, "compute", FINAL)
    timers.wrap(ood._Exact, "table", SORT, nested=True)
    timers.wrap(ood, "ranking_metrics", RANKING, nested=True)
    timers.wrap(ScoreHistogram, "update", HISTOGRAM, nested=True)
    timers.wrap(ConfusionMatrix, "update", CONFUSION)
    timers.wrap(ComponentMetrics, "update", COMPONENTS)
    timers.wrap(scipy.ndimage, "label", LABEL)
    timers.wrap(torch, "isfinite", FINITE)
    timers.wrap(DatasetSpec, "ood_pixels", MASKS)
    timers.wrap(DatasetSpec, "closed_set", MASKS)
    return timers


def timed_evaluation(target, cfg: dict) -> dict:
    """One run of ``_evaluate`` under :func:`evaluation_timers`: total, split, passes."""
    from segcheck.anomaly import _evaluate
    from segcheck.scoring import BUILTIN_SCORERS

    scorers = target.scorers or BUILTIN_SCORERS
    with evaluation_timers(target.model) as timers:
        wall, cpu = time.perf_counter(), time.process_time()
        result = _evaluate(target, cfg, scorers)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    split = dict(timers.seconds)
    split[OTHER] = wall - sum(split.values())
    calls = dict(timers.calls)
    first = next(iter(result.scorers.values()))
    return {
        "wall": wall,
        "cpu": cpu,
        "split": split,
        "calls": calls,
        "passes": result.passes,
        "images": result.images,
        "scorers": list(result.scorers),
        "known_miou": result.known_miou,
        "pooled_exact": first.pooled.exact,
        "per_image_exact": first.per_image.exact,
    }


# --- 1. metric work vs forward passes ------------------------------------------------------------
def unet_target(stats_images: int, batch_size: int):
    """The bundled unet on synthetic-streets, on the CPU, as the tests build it; and its anomaly config."""
    from segcheck.session import open_session
    from segcheck.target import TargetSpec, bundled_checkpoint, resolve

    session = open_session()
    checkpoint = bundled_checkpoint(session.plugins, "unet", "synthetic-streets", None)
    target = resolve(
        session.plugins, TargetSpec("unet", "synthetic-streets", checkpoint=checkpoint, device="cpu"), session.config
    )
    cfg = {**session.config["anomaly"], "stats_images": stats_images, "batch_size": batch_size}
    return target, cfg


def forward_only(target, cfg: dict) -> dict:
    """The evaluation's forward passes alone: the same images in the same batches, under no_grad."""
    import torch

    from segcheck.anomaly import anomaly_split
    from segcheck.data import eval_indices, stack

    data, model = target.data, target.model
    dataset = data.dataset(anomaly_split(data.spec, cfg, data.split))
    indices = eval_indices(len(dataset), cfg["max_images"] or len(dataset), data.seed)
    made = forward = forward_cpu = 0.0
    wall, cpu = time.perf_counter(), time.process_time()
    with torch.no_grad():
        for start in range(0, len(indices), cfg["batch_size"]):
            clock = time.perf_counter()
            images, _ = stack(dataset, indices[start : start + cfg["batch_size"]])
            made += time.perf_counter() - clock
            clock, clock_cpu = time.perf_counter(), time.process_time()
            model.logits(model.normalize(images)).float()
            forward += time.perf_counter() - clock
            forward_cpu += time.process_time() - clock_cpu
    return {
        "wall": time.perf_counter() - wall,
        "cpu": time.process_time() - cpu,
        "data": made,
        "forward": forward,
        "forward_cpu": forward_cpu,
    }


def forward_section(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    target, cfg = unet_target(args.stats_images, args.batch_size)
    timed_cfg = {**cfg, "max_images": args.forward_images}
    h, w = target.data.dataset("anomaly")[0][1].shape
    timed_evaluation(target, {**cfg, "max_images": args.batch_size, "stats_images": args.batch_size})  # warm-up
    alone = forward_only(target, timed_cfg)
    ev = timed_evaluation(target, timed_cfg)
    n = ev["images"]
    print(
        f"## 1. Metric work vs forward passes: bundled unet, {n} synthetic-streets 'anomaly' images of {h}x{w}, "
        f"batch {cfg['batch_size']}, {len(ev['scorers'])} scorers, one run each\n"
    )
    base = alone["forward"]
    table(
        ["run", "wall s", "cpu s", "time / forward passes"],
        [
            [
                "forward passes alone (normalize + logits, no_grad)",
                f"{base:.3f}",
                f"{alone['forward_cpu']:.3f}",
                "1.00x",
            ],
            [
                "the same, with the images made (stack)",
                f"{alone['wall']:.3f}",
                f"{alone['cpu']:.3f}",
                f"{alone['wall'] / base:.2f}x",
            ],
            ["anomaly evaluation (_evaluate)", f"{ev['wall']:.3f}", f"{ev['cpu']:.3f}", f"{ev['wall'] / base:.2f}x"],
        ],
    )
    stats = f" + the SML statistics' own forward over {cfg['stats_images']} train images" * (STATS in ev["split"])
    print(
        f"The evaluation made {ev['passes']} pass(es) over the {n} anomaly images{stats}; "
        f"pooled OOD in {'exact' if ev['pooled_exact'] else 'histogram'} mode, per-image in "
        f"{'exact' if ev['per_image_exact'] else 'histogram'} mode. Metric work (everything but images, forward "
        f"passes, scorer maps and SML statistics): {_metric_seconds(ev):.3f} s = "
        f"{_metric_seconds(ev) / base:.2f}x the forward passes.\n"
    )
    print("Time split of that evaluation run (timing wrappers, exclusive time):\n")
    _split_table(ev, n)


def _metric_seconds(ev: dict) -> float:
    return sum(s for k, s in ev["split"].items() if k not in NOT_METRICS)


def _split_table(ev: dict, images: int, extrapolate: int | None = None) -> None:
    header = ["piece", "wall s", "share", "calls", "ms / image"]
    if extrapolate:
        header.append(f"extrapolated to {extrapolate:,} images, s")
    rows = []
    for name, seconds in sorted(ev["split"].items(), key=lambda kv: -kv[1]):
        row = [name, f"{seconds:.3f}", f"{seconds / ev['wall']:.1%}", ev["calls"].get(name, "-")]
        row.append(f"{seconds / images * 1e3:.1f}")
        if extrapolate:
            row.append(f"{_extrapolated(name, seconds, images, extrapolate):,.0f}")
        rows.append(row)
    total = ["total (_evaluate)", f"{ev['wall']:.3f}", "100%", 1, f"{ev['wall'] / images * 1e3:.1f}"]
    if extrapolate:
        total.append(f"{sum(_extrapolated(k, v, images, extrapolate) for k, v in ev['split'].items()):,.0f}")
    table(header, rows + [total])


def _extrapolated(name: str, seconds: float, images: int, to: int) -> float:
    """``seconds`` scaled to ``to`` images: linear, but the SML statistics read a fixed number of images."""
    return seconds if name == STATS else seconds / images * to


# --- 2. scale / bounded memory ------------------------------------------------------------------------
class GeneratedSplit:
    """A seeded generated split (``SegDataset``): image ``i`` is made in ``__getitem__`` from
    ``(seed, split, i)``: a coarse grid of class cells in the class colours plus pixel noise, a
    void band at the bottom, and (``anomalies``) one elliptic blob of an unusual colour labelled
    ``spec.anomaly_index``. ``served`` counts the items read."""

    GRID = (6, 10)

    def __init__(self, spec, split: str, length: int, size: tuple[int, int], palette: np.ndarray, seed: int = 0):
        self.spec, self.split, self.length, self.size, self.palette = spec, split, length, size, palette
        self.anomalies = split in spec.anomaly_splits
        self.identity = f"generated:{split}:{size[0]}x{size[1]}:seed={seed}"
        self._key = [seed, zlib.crc32(split.encode())]
        self.served = 0

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for a split of {self.length}")
        rng = np.random.default_rng(self._key + [index])
        h, w = self.size
        cells = rng.integers(0, self.spec.num_classes, self.GRID)
        mask = cells[np.arange(h)[:, None] * self.GRID[0] // h, np.arange(w)[None, :] * self.GRID[1] // w]
        image = self.palette[mask] + rng.integers(0, 40, (h, w, 3), dtype=np.uint8)
        if self.anomalies:
            cy, cx = rng.uniform(0.3, 0.8) * h, rng.uniform(0.1, 0.9) * w
            ry, rx = rng.uniform(0.05, 0.15) * h, rng.uniform(0.05, 0.15) * w
            yy, xx = np.ogrid[:h, :w]
            blob = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
            image[blob] = rng.integers(0, 256, 3, dtype=np.uint8)
            mask[blob] = self.spec.anomaly_index
        mask[h - max(1, h // 20) :] = self.spec.ignore_index  # e.g. the ego vehicle
        self.served += 1
        return image, mask


def generated_target(images: int, size: tuple[int, int], classes: int, batch_size: int, seed: int = 0):
    """A Target on generated ``train``/``anomaly`` splits with a 1x1-conv nearest-colour model."""
    import torch

    from segcheck.data import DatasetSpec, EvalData
    from segcheck.model import ModelUnderTest, Normalization
    from segcheck.target import Target

    rng = np.random.default_rng(seed)
    palette = rng.integers(20, 216, (classes, 3)).astype(np.uint8)  # + noise < 40 stays below 256
    spec = DatasetSpec(
        tuple(f"class{i}" for i in range(classes)),
        splits=("train", "anomaly"),
        anomaly_index=classes,
        anomaly_splits=("anomaly",),
    )
    splits = {
        "train": GeneratedSplit(spec, "train", max(images, 64), size, palette, seed),
        "anomaly": GeneratedSplit(spec, "anomaly", images, size, palette, seed),
    }
    # logit_c(x) = -s |x - p_c|^2 up to a term common to all classes: linear in x
    centres = torch.from_numpy((palette.astype(np.float32) + 20) / 255)
    conv = torch.nn.Conv2d(3, classes, 1)
    with torch.no_grad():
        conv.weight.copy_(20 * centres[:, :, None, None])
        conv.bias.copy_(-10 * (centres**2).sum(1))
    model = ModelUnderTest(conv, normalization=Normalization((0.0,) * 3, (1.0,) * 3, "benchmark"), device="cpu")
    data = EvalData.from_dataset(splits, "train", 1, seed, batch_size)
    return Target(model, data, "conv1x1"), splits["anomaly"]


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks")
        + ("keepcost",)
    ]


def live_heap() -> int:
    """Bytes malloc has handed out and not yet had back (glibc ``mallinfo2``: in-use arena chunks
    plus mmapped blocks): the arrays alive now, whatever the allocator keeps resident besides."""
    info = _LIBC.mallinfo2()
    return info.uordblks + info.hblkhd


_LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
_LIBC.mallinfo2.restype = _MallInfo2


class MemorySampler(threading.Thread):
    """Every ``interval`` s until stopped: ``(split.served, VmRSS KiB, live heap bytes)``."""

    def __init__(self, split, interval: float = 0.05):
        super().__init__(daemon=True)
        self.split, self.interval = split, interval
        self.samples: list[tuple[int, int, int]] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.samples.append((self.split.served, _status_kib("VmRSS"), live_heap()))
            self._stop_event.wait(self.interval)

    def __enter__(self) -> MemorySampler:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop_event.set()
        self.join()

    def peak_live(self) -> int:
        return max((live for _, _, live in self.samples), default=live_heap())


def scale_worker(args) -> dict:
    """Section 2 in this (fresh) process: a warm-up evaluation of one batch, then the timed one.
    Memory is counted above what the process holds before the warm-up (the model, the data
    objects, the interpreter): live heap (sampled) and resident set (VmHWM)."""
    import torch

    from segcheck.anomaly import _evaluate
    from segcheck.config import DEFAULTS
    from segcheck.scoring import BUILTIN_SCORERS

    torch.set_num_threads(args.threads)
    h, w = args.size
    target, split = generated_target(args.images, args.size, args.classes, args.batch_size)
    cfg = {**DEFAULTS["anomaly"], "batch_size": args.batch_size, "stats_images": args.stats_images}
    rss_before, live_before = _reset_peak(), live_heap()
    with MemorySampler(split) as warm:
        _evaluate(target, {**cfg, "max_images": args.batch_size, "stats_images": args.batch_size}, BUILTIN_SCORERS)
    rss_one_batch = _status_kib("VmHWM")
    split.served = 0
    _reset_peak()
    with MemorySampler(split) as sampler:
        ev = timed_evaluation(target, {**cfg, "max_images": 0})
    mib = 1 / 2**20
    return {
        **ev,
        "size": [h, w],
        "rss": {
            "before": rss_before / 1024,
            "one_batch": (rss_one_batch - rss_before) / 1024,
            "peak": (_status_kib("VmHWM") - rss_before) / 1024,
            "after": (_status_kib("VmRSS") - rss_before) / 1024,
        },
        "live": {
            "before": live_before * mib,
            "one_batch": (warm.peak_live() - live_before) * mib,
            "peak": (sampler.peak_live() - live_before) * mib,
            "after": (live_heap() - live_before) * mib,
        },
        "samples": [(served, (live - live_before) * mib) for served, _, live in sampler.samples],
    }


def scale_section(args) -> None:
    m = measure("scale", args)
    if not m:
        return
    h, w = m["size"]
    n, pixels = m["images"], m["images"] * h * w
    print(
        f"## 2. Scale / bounded memory: {n:,} generated images of {h}x{w} ({pixels / 1e9:.3f} G pixels), "
        f"1x1-conv model with {args.classes} classes, batch {args.batch_size}, {len(m['scorers'])} scorers, "
        "one run in a fresh process\n"
    )
    metric = _metric_seconds(m)
    table(
        ["images", "passes", "wall s", "cpu s", "Mpixel/s (all)", "Mpixel/s (metric work)", "known mIoU"],
        [
            [
                f"{n:,}",
                m["passes"],
                f"{m['wall']:.1f}",
                f"{m['cpu']:.1f}",
                f"{pixels / m['wall'] / 1e6:.2f}",
                f"{pixels / metric / 1e6:.2f}",
                f"{m['known_miou']:.3f}",
            ]
        ],
    )
    rows = []
    for key, label in (("live", "live heap (mallinfo2, 50 ms samples)"), ("rss", "resident set (VmHWM, VmRSS)")):
        v = m[key]
        rows.append(
            [label, f"{v['before']:,.0f}", f"{v['one_batch']:,.0f}", f"{v['peak']:,.0f}"]
            + [f"{v['peak'] - v['one_batch']:+,.0f}", f"{v['after']:,.0f}"]
        )
    table(
        ["memory, MiB", "before warm-up", "peak, one-batch run", "peak, this run", "beyond one batch", "held after"],
        rows,
    )
    print(
        "Peaks are above the process before the warm-up (model, data objects, interpreter). 'one-batch run' = "
        "the warm-up evaluation of one batch (every piece, the SML statistics on one batch); 'this run' = the "
        "timed evaluation of every image; 'beyond one batch' = their difference: what more images cost. Live heap "
        "= bytes malloc has handed out (numpy's and torch's arrays), sampled; the resident set also holds what "
        "the allocator keeps after a free. Mpixel/s = the split's pixels / time; metric work = all but images, "
        "forward passes, scorer maps and SML statistics (both passes).\n"
    )
    _memory_table(m["samples"], n, m["passes"], args.batch_size)
    print(
        f"Time split at {h}x{w} (timing wrappers, exclusive time). The last column is an EXTRAPOLATION, "
        "linear in the images at this size (the SML statistics held fixed), not a measurement:\n"
    )
    _split_table(m, n, args.extrapolate)


def _memory_table(samples: list, images: int, passes: int, batch: int) -> None:
    """Live heap above the base per batch (max and min of its samples): does it grow with the images?"""
    per_pass = -(-images // batch)
    batches: dict[tuple[int, int], list[float]] = defaultdict(list)
    for served, live in samples:
        if 0 < served <= passes * images:
            batches[(served - 1) // images, (served - 1) % images // batch].append(live)
    shown = {0, 1, per_pass // 4, per_pass // 2, 3 * per_pass // 4, per_pass - 2, per_pass - 1}
    rows = [
        [p + 1, f"{b + 1} of {per_pass}", f"{b * batch + 1}-{min((b + 1) * batch, images)}"]
        + [f"{max(v):,.0f}", f"{min(v):,.0f}", len(v)]
        for (p, b), v in sorted(batches.items())
        if b in shown
    ]
    table(["pass", "batch", "images", "live heap above base, max MiB", "min MiB", "samples"], rows)
    later = sorted((b, max(v), min(v)) for (p, b), v in batches.items() if p == 0 and b > 0)
    if len(later) >= 4:  # the first batch has no previous one alive beside it: left out
        x = [b * batch for b, _, _ in later]
        high, low = (np.polyfit(x, [r[i] for r in later], 1)[0] * 1000 for i in (1, 2))
        print(
            f"Live heap over batches 2-{per_pass} of pass 1, least-squares slope of the per-batch max {high:+,.1f} "
            f"and min {low:+,.1f} MiB per 1,000 images.\n"
        )


# --- 3. peak memory vs scikit-learn -------------------------------------------------------------------
def _pixels(n: int, seed: int = 0):
    """``n`` float32 scores N(0, 1), 5% positives shifted by +1.5 (seeded)."""
    rng = np.random.default_rng(seed)
    positive = rng.random(n, dtype=np.float32) < 0.05
    scores = rng.standard_normal(n, dtype=np.float32)
    scores[positive] += 1.5
    return scores, positive


def _segcheck_ood(scores, positive, chunk: int) -> dict:
    from segcheck.config import DEFAULTS
    from segcheck.metrics import OODMetrics

    cfg = DEFAULTS["anomaly"]
    metrics = OODMetrics(average="pooled", exact=None, bins=cfg["bins"], exact_limit=cfg["exact_limit"])
    for start in range(0, scores.size, chunk):
        metrics.update(scores[start : start + chunk], positive[start : start + chunk])
    return metrics.compute().as_dict()


def _sklearn_auroc(scores, positive) -> dict:
    from sklearn.metrics import roc_auc_score

    return {"auroc": float(roc_auc_score(positive, scores))}


def _sklearn_aupr(scores, positive) -> dict:
    from sklearn.metrics import average_precision_score

    return {"aupr": float(average_precision_score(positive, scores))}


def _sklearn_fpr95(scores, positive) -> dict:
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(positive, scores, drop_intermediate=False)
    return {"fpr": float(fpr[np.searchsorted(tpr, 0.95)])}


def _peaks(run, *inputs) -> dict:
    """One call of ``run(*inputs)``: wall/CPU time, tracemalloc's peak and VmHWM above the start."""
    tracemalloc.start()
    base = _reset_peak()
    wall, cpu = time.perf_counter(), time.process_time()
    value = run(*inputs)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    traced = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return {
        "wall": wall,
        "cpu": cpu,
        "traced_mib": traced / 2**20,
        "rss_mib": (_status_kib("VmHWM") - base) / 1024,
        "value": value,
    }


OURS = "segcheck OODMetrics (AUROC+AUPR+FPR95)"
OOD_RUNS = {
    OURS: lambda args: functools.partial(_segcheck_ood, chunk=args.chunk),
    "sklearn roc_auc_score": lambda args: _sklearn_auroc,
    "sklearn average_precision_score": lambda args: _sklearn_aupr,
    "sklearn roc_curve (FPR95)": lambda args: _sklearn_fpr95,
}


def ood_worker(args, name: str) -> dict:
    """One implementation of section 3 in this (fresh) process: a tiny warm-up, then one run."""
    from segcheck.config import DEFAULTS
    from segcheck.metrics import OODMetrics

    run = OOD_RUNS[name](args)
    small = _pixels(1000, seed=1)
    run(*small)
    if name == OURS and args.pixels > DEFAULTS["anomaly"]["exact_limit"]:
        OODMetrics(exact=False).update(*small).compute()  # the histogram's first use imports torch: not timed
    return _peaks(run, *_pixels(args.pixels))


def sklearn_section(args) -> None:
    results = {name: measure(f"ood:{name}", args) for name in OOD_RUNS}
    if not all(results.values()):
        return
    n = args.pixels
    print(
        f"## 3. Peak memory vs scikit-learn: {n:,} float32 (score, label) pixels (5% positive), segcheck fed "
        f"{args.chunk:,} pixels per update, one run each, each in a fresh process\n"
    )
    ours = results.pop(OURS)
    sk_total = {
        "wall": sum(r["wall"] for r in results.values()),
        "cpu": sum(r["cpu"] for r in results.values()),
        "traced_mib": max(r["traced_mib"] for r in results.values()),
        "rss_mib": max(r["rss_mib"] for r in results.values()),
    }
    rows = [[OURS, *_peak_cells(ours, ours)]]
    rows += [[name, *_peak_cells(r, ours)] for name, r in results.items()]
    rows.append(["sklearn, the three together (sum of times, max of peaks)", *_peak_cells(sk_total, ours)])
    header = ["implementation", "wall s", "cpu s", "tracemalloc peak MiB", "VmHWM above inputs MiB", "time / segcheck"]
    table(header, rows)
    v = ours["value"]
    reference = {k: r["value"][k] for r in results.values() for k in r["value"]}
    table(
        ["metric", "segcheck", "sklearn", "|difference|", "segcheck's stated bound"],
        [
            [label, f"{v[k]:.8f}", f"{reference[k]:.8f}", f"{abs(v[k] - reference[k]):.1e}", f"{v[k + '_error']:.1e}"]
            for k, label in (("auroc", "AUROC"), ("aupr", "AUPR (average precision)"), ("fpr", "FPR95"))
        ],
    )
    mode = "exact" if v["exact"] else "histogram"
    print(
        f"segcheck ended in {mode} mode (exact up to exact_limit pixels, then {args.bins:,} bins); "
        f"inputs: {n * 5 / 2**20:,.0f} MiB, not counted. tracemalloc sees numpy's and Python's allocations "
        "(not torch's, e.g. the histogram's bincount); VmHWM sees the whole process.\n"
    )


def _peak_cells(m: dict, ours: dict) -> list:
    return [
        f"{m['wall']:.3f}",
        f"{m['cpu']:.3f}",
        f"{m['traced_mib']:,.1f}",
        f"{m['rss_mib']:,.1f}",
        f"{m['wall'] / ours['wall']:.1f}x",
    ]


# --- driver -------------------------------------------------------------------------------------------
def measure(kind: str, args) -> dict | None:
    """Run worker ``kind`` in a fresh process with the same options; its JSON result."""
    env = {**os.environ, **{k: str(args.threads) for k in THREAD_VARIABLES}}
    return worker_result([sys.executable, __file__, *args.argv, "--worker", kind], env, kind)


def _size(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"(\d+)x(\d+)", text)
    if not match or min(int(v) for v in match.groups()) < 16:
        raise argparse.ArgumentTypeError(f"expected HxW with both sides >= 16, e.g. 720x1280, got {text!r}")
    return int(match.group(1)), int(match.group(2))


def _count(text: str) -> int:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not value >= 1 or value != int(value):
        raise argparse.ArgumentTypeError(f"expected a positive whole number (e.g. 2e7), got {text!r}")
    return int(value)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS), help="the sections to run")
    p.add_argument("--threads", type=_count, default=1, help="torch (and OMP/MKL/OpenBLAS) threads")
    p.add_argument(
        "--batch-size", type=_count, default=8, help="images per forward pass (the suite's anomaly.batch_size)"
    )
    p.add_argument(
        "--stats-images",
        type=_count,
        default=64,
        help="train images for the SML statistics (the suite's anomaly.stats_images)",
    )
    g = p.add_argument_group("1. metric work vs forward passes")
    g.add_argument(
        "--forward-images",
        type=_count,
        default=64,
        help="synthetic-streets anomaly images for the unet (the split has 128)",
    )
    g = p.add_argument_group("2. scale / bounded memory")
    g.add_argument("--images", type=_count, default=100, help="generated anomaly images (the issue's: 1500)")
    g.add_argument("--size", type=_size, default="360x640", help="HxW of each image (the issue's: 720x1280)")
    g.add_argument("--classes", type=_count, default=13, help="known classes of the 1x1-conv model")
    g.add_argument(
        "--extrapolate",
        type=_count,
        default=1500,
        help="also print each piece's time scaled linearly to this many images of the same size",
    )
    g = p.add_argument_group("3. peak memory vs scikit-learn")
    g.add_argument("--pixels", type=_count, default=20_000_000, help="(score, label) pixels")
    g.add_argument("--chunk", type=_count, default=720 * 1280, help="pixels per OODMetrics.update (one 1280x720 image)")
    p.add_argument("--worker", help=argparse.SUPPRESS)  # "scale" or "ood:<implementation>"
    return p


def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser().parse_args(argv)
    args.argv = argv
    if args.worker:
        kind, _, name = args.worker.partition(":")
        print(json.dumps(scale_worker(args) if kind == "scale" else ood_worker(args, name)))
        return
    from segcheck.config import DEFAULTS

    args.bins = DEFAULTS["anomaly"]["bins"]
    versions = ", ".join(f"{name} {metadata.version(name)}" for name in ("torch", "numpy", "scipy", "scikit-learn"))
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    print(f"# segcheck anomaly benchmark\n\n`python benchmarks/{os.path.basename(__file__)} {' '.join(argv)}`\n")
    print(
        f"{cpu}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start; {args.threads} torch "
        f"thread(s); Python {platform.python_version()}, {versions}. Sections: {', '.join(args.only)}; "
        f"batch {args.batch_size}, SML statistics on {args.stats_images} train images; 1: {args.forward_images} "
        f"unet images; 2: {args.images:,} images of {args.size[0]}x{args.size[1]}; 3: {args.pixels:,} pixels.\n"
    )
    for name, section in (("forward", forward_section), ("scale", scale_section), ("sklearn", sklearn_section)):
        if name in args.only:
            section(args)
            sys.stdout.flush()


if __name__ == "__main__":
    main()
