"""Side-by-side metric benchmarks: segcheck vs scikit-learn vs torchmetrics (issue 5).

    python benchmarks/metrics.py                      # 100M / 20M / 393M pixels: a few minutes
    python benchmarks/metrics.py --pixels 2e6 --ood-pixels 1e6 --stream-pixels 1e7   # seconds

Every measurement runs once, in a fresh subprocess, on one thread (``torch.set_num_threads(1)``
and OMP/MKL/OpenBLAS threads = 1; the "threads" row is the only exception and says so). The
subprocess builds the seeded inputs, makes one tiny warm-up call (library initialisation is
not the metric's cost), resets the kernel's peak-RSS counter (``/proc/self/clear_refs``) and
reports wall time, CPU time and the peak resident memory above what the inputs already used.
CPU time is printed next to wall time because a busy machine inflates wall time.

Inputs: confusion matrix, uniform random uint8 labels 0..18 (C = 19; no ignored pixels, so
that every implementation counts the same pixels); OOD, float32 scores N(0, 1) with 10% OOD
pixels shifted by +2. A second confusion table counts region-coherent maps (runs of 256 pixels
of one class, 5% wrong), where neighbouring pixels repeat one (target, prediction) pair as in
real model output: the case that slows a plain bincount loop. torchmetrics is optional (``pip install -e ".[bench]"``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import time

import numpy as np
from _report import table, worker_result

C = 19
STREAM_CHUNK = 1024 * 2048  # one Cityscapes-sized image per update
SINGLE_THREAD = {k: "1" for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}


# --- worker side: one measurement per process -----------------------------------------------
def _status_kib(key: str) -> int:
    return int(re.search(rf"^{key}:\s+(\d+) kB", open("/proc/self/status").read(), re.M).group(1))


def _label_inputs(n: int):
    rng = np.random.default_rng(0)
    return rng.integers(0, C, n, dtype=np.uint8), rng.integers(0, C, n, dtype=np.uint8)


def _region_inputs(n: int):
    """Label maps as a segmentation model makes them: runs of 256 pixels of one class, 5% wrong."""
    rng = np.random.default_rng(0)
    target = np.repeat(rng.integers(0, C, -(-n // 256), dtype=np.uint8), 256)[:n]
    pred = target.copy()
    wrong = rng.random(n) < 0.05
    pred[wrong] = rng.integers(0, C, int(wrong.sum()), dtype=np.uint8)
    return target, pred


def _score_inputs(n: int, seed: int = 1):
    rng = np.random.default_rng(seed)
    is_ood = rng.random(n) < 0.1
    scores = rng.standard_normal(n, dtype=np.float32)
    scores[is_ood] += 2
    return scores, is_ood


def _torch(x):
    import torch

    return torch.from_numpy(x)


def _cm_segcheck(threads: int, pairs: str | None = None):
    from segcheck.metrics import _counting, confusion_matrix

    if pairs:  # force one uint8 pair counter (the fallback runs where the C extension is not built)
        _counting.PAIRS = getattr(_counting, pairs)
    return lambda t, p: confusion_matrix(p, t, C, threads=threads)


def _cm_sklearn(t, p):
    from sklearn.metrics import confusion_matrix

    return confusion_matrix(t, p, labels=np.arange(C))


def _cm_torchmetrics(validate: bool):
    from torchmetrics.functional.classification import multiclass_confusion_matrix

    return lambda t, p: multiclass_confusion_matrix(_torch(p), _torch(t), C, validate_args=validate).numpy()


def _iou_torchmetrics(t, p):
    from torchmetrics.functional.classification import multiclass_jaccard_index

    return multiclass_jaccard_index(_torch(p), _torch(t), C, average=None).double().numpy()


def _iou_segcheck(t, p):
    from segcheck.metrics import confusion_matrix, iou

    return iou(confusion_matrix(p, t, C))


def _ood_segcheck(exact: bool):
    from segcheck.metrics import ood_metrics

    return lambda x, y: ood_metrics(x, y, exact=exact).as_dict()


def _sk(name: str):
    def run(x, y):
        from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

        if name == "auroc":
            return {"auroc": roc_auc_score(y, x)}
        if name == "aupr":
            return {"aupr": average_precision_score(y, x)}
        fpr, tpr, _ = roc_curve(y, x, drop_intermediate=False)
        return {"fpr": float(fpr[np.searchsorted(tpr, 0.95)])}

    return run


CM = {
    "segcheck confusion_matrix": lambda: _cm_segcheck(1),
    "segcheck confusion_matrix, all cores": lambda: _cm_segcheck(os.cpu_count() or 1),
    "segcheck, torch.bincount fallback": lambda: _cm_segcheck(1, "TorchPairs"),
    "numpy bincount, int64 fused index": lambda: lambda t, p: np.bincount(t.astype(np.int64) * C + p, minlength=C * C),
    "sklearn confusion_matrix": lambda: _cm_sklearn,
    "torchmetrics multiclass_confusion_matrix": lambda: _cm_torchmetrics(True),
    "torchmetrics ... validate_args=False": lambda: _cm_torchmetrics(False),
    "segcheck per-class IoU": lambda: _iou_segcheck,
    "torchmetrics multiclass_jaccard_index": lambda: _iou_torchmetrics,
}
OOD = {
    "segcheck histogram (AUROC+AUPR+FPR95)": lambda: _ood_segcheck(False),
    "segcheck exact (AUROC+AUPR+FPR95)": lambda: _ood_segcheck(True),
    "sklearn roc_auc_score": lambda: _sk("auroc"),
    "sklearn average_precision_score": lambda: _sk("aupr"),
    "sklearn roc_curve (FPR95)": lambda: _sk("fpr"),
}


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if hasattr(value, "tolist"):
        return value.tolist()
    return value


def _measure(run, inputs, small):
    run(*small)  # warm-up: imports and first-call initialisation are not the metric's cost
    open("/proc/self/clear_refs", "w").write("5")  # peak RSS := current RSS
    base = _status_kib("VmRSS")
    wall, cpu = time.perf_counter(), time.process_time()
    value = run(*inputs)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"wall": wall, "cpu": cpu, "peak_mib": (_status_kib("VmHWM") - base) / 1024, "value": _jsonable(value)}


class _Images:
    """Synthetic score images generated into fixed buffers: the generator allocates nothing per image."""

    def __init__(self, size: int):
        self.rng = np.random.default_rng(0)
        self.scores = np.empty(size, np.float32)
        self.uniform = np.empty(size, np.float32)
        self.is_ood = np.empty(size, bool)

    def next(self, size: int):
        x, u, y = self.scores[:size], self.uniform[:size], self.is_ood[:size]
        self.rng.standard_normal(out=x, dtype=np.float32)
        self.rng.random(out=u, dtype=np.float32)
        np.less(u, 0.1, out=y)
        np.add(x, 2, out=x, where=y)
        return x, y


def _stream(n: int) -> dict:
    """Feed ``n`` synthetic pixels to one OODMetrics, image by image; peak memory above the inputs."""
    from segcheck.metrics import OODMetrics

    OODMetrics(exact=False).update(*_score_inputs(1000, seed=99))  # warm-up
    metrics = OODMetrics(exact=False)
    images = _Images(min(STREAM_CHUNK, n))
    images.next(min(STREAM_CHUNK, n))
    open("/proc/self/clear_refs", "w").write("5")
    base = _status_kib("VmRSS")
    spent_wall = spent_cpu = 0.0
    done = 0
    while done < n:
        x, y = images.next(min(STREAM_CHUNK, n - done))
        wall, cpu = time.perf_counter(), time.process_time()
        metrics.update(x, y)
        spent_wall += time.perf_counter() - wall
        spent_cpu += time.process_time() - cpu
        done += x.size
    wall, cpu = time.perf_counter(), time.process_time()
    result = metrics.compute()
    spent_wall += time.perf_counter() - wall
    spent_cpu += time.process_time() - cpu
    return {
        "wall": spent_wall,
        "cpu": spent_cpu,
        "peak_mib": (_status_kib("VmHWM") - base) / 1024,
        "value": result.as_dict(),
        "pixels": done,
    }


def _gpu(n_labels: int, n_scores: int) -> dict:
    import torch

    from segcheck.metrics import confusion_matrix, ood_metrics

    t, p = (_torch(a).cuda() for a in _label_inputs(n_labels))
    x, y = (_torch(a).cuda() for a in _score_inputs(n_scores))
    out = {}
    for name, run, n in (
        ("confusion_matrix", lambda: confusion_matrix(p, t, C), n_labels),
        ("OOD histogram", lambda: ood_metrics(x, y, exact=False), n_scores),
    ):
        run()
        torch.cuda.synchronize()
        start = time.perf_counter()
        run()
        torch.cuda.synchronize()
        out[name] = n / (time.perf_counter() - start)
    return out


def worker(kind: str, name: str, n: int) -> dict:
    import torch

    torch.set_num_threads(1)
    if kind == "cm":
        return _measure(CM[name](), _label_inputs(n), _label_inputs(1000))
    if kind == "regions":
        return _measure(CM[name](), _region_inputs(n), _region_inputs(1000))
    if kind == "ood":
        return _measure(OOD[name](), _score_inputs(n), _score_inputs(1000, seed=5))
    if kind == "stream":
        return _stream(n)
    if kind == "gpu":
        return _gpu(*(int(v) for v in name.split(",")))
    raise ValueError(f"unknown measurement kind {kind!r}")


# --- parent side: run each measurement in a subprocess, print the tables -----------------------
def measure(kind: str, name: str, n: int) -> dict | None:
    env = {**os.environ, **SINGLE_THREAD}
    return worker_result([sys.executable, __file__, "--worker", kind, name, str(n)], env, name)


def _timing_cells(m: dict, n: int) -> list:
    return [f"{m['wall']:.3f}", f"{m['cpu']:.3f}", f"{n / m['wall'] / 1e6:,.0f}", f"{m['peak_mib']:,.0f}"]


def confusion_section(n: int) -> None:
    print(f"## Confusion matrix: {n:,} uint8 pixels, C = {C}, one run, one thread\n")
    results = {name: measure("cm", name, n) for name in CM if not (name.endswith("all cores") and os.cpu_count() == 1)}
    ok = {k: v for k, v in results.items() if v}
    base = ok.get("segcheck confusion_matrix")
    matrices = {k: np.asarray(v["value"]) for k, v in ok.items() if np.asarray(v["value"]).shape == (C, C)}
    rows = []
    for name, m in ok.items():
        ratio = f"{m['wall'] / base['wall']:.1f}x" if base else "-"
        rows.append([name] + _timing_cells(m, n) + [ratio])
    table(["implementation", "wall s", "cpu s", "Mpixel/s (wall)", "peak extra MiB", "time / segcheck"], rows)
    if matrices:
        reference = next(iter(matrices.values()))
        agree = all((m == reference).all() for m in matrices.values())
        print(f"All {len(matrices)} confusion matrices identical: {agree}.")
    ious = {k: np.asarray(v["value"], float) for k, v in ok.items() if np.asarray(v["value"]).shape == (C,)}
    if len(ious) == 2:
        a, b = ious.values()
        print(
            f"Per-class IoU, segcheck vs torchmetrics: max difference {np.max(np.abs(a - b)):.2e} "
            "(torchmetrics computes in float32)."
        )
    if base:
        for other in (
            "sklearn confusion_matrix",
            "torchmetrics multiclass_confusion_matrix",
            "torchmetrics ... validate_args=False",
        ):
            if ok.get(other):
                print(
                    f"segcheck vs {other}: {ok[other]['wall'] / base['wall']:.0f}x faster (wall), "
                    f"{ok[other]['cpu'] / base['cpu']:.0f}x (cpu)."
                )
    print()


def regions_section(n: int) -> None:
    print(f"## Confusion matrix on region-coherent maps: {n:,} uint8 pixels (runs of 256, 5% wrong), one thread\n")
    rows = []
    for name in ("segcheck confusion_matrix", "segcheck, torch.bincount fallback"):
        m = measure("regions", name, n)
        if m:
            rows.append([name] + _timing_cells(m, n))
    table(["implementation", "wall s", "cpu s", "Mpixel/s (wall)", "peak extra MiB"], rows)


def ood_section(n: int) -> float | None:
    """Print the OOD comparison; return sklearn roc_auc_score's measured peak bytes per pixel."""
    print(f"## OOD metrics: {n:,} float32 pixel scores (10% OOD), one run, one thread\n")
    results = {name: measure("ood", name, n) for name in OOD}
    sk = {}
    for name in ("sklearn roc_auc_score", "sklearn average_precision_score", "sklearn roc_curve (FPR95)"):
        if results.get(name):
            sk.update(results[name]["value"])
    rows = []
    for name, m in results.items():
        if not m:
            continue
        v = m["value"]
        errors = []
        if "exact" in v:  # a segcheck result: its difference from scikit-learn, and its stated bound
            for key, label in (("auroc", "AUROC"), ("aupr", "AP"), ("fpr", "FPR95")):
                if key in sk:
                    errors.append(f"{label} {abs(v[key] - sk[key]):.1e} (bound {v[key + '_error']:.1e})")
        rows.append([name] + _timing_cells(m, n) + ["; ".join(errors) or "reference"])
    table(["implementation", "wall s", "cpu s", "Mpixel/s (wall)", "peak extra MiB", "|difference| from sklearn"], rows)
    hist = results.get("segcheck histogram (AUROC+AUPR+FPR95)")
    sk_time = sum(
        results[k]["wall"] for k in ("sklearn roc_auc_score", "sklearn average_precision_score") if results.get(k)
    )
    if hist and sk_time:
        print(
            f"segcheck histogram vs sklearn roc_auc_score + average_precision_score: "
            f"{sk_time / hist['wall']:.0f}x faster (wall).\n"
        )
    auc = results.get("sklearn roc_auc_score")
    return auc["peak_mib"] * 2**20 / n if auc else None


def stream_section(n: int, sklearn_bytes_per_pixel: float | None) -> None:
    print(f"## Streaming OOD metrics over {n:,} synthetic pixels ({STREAM_CHUNK:,}-pixel images), one thread\n")
    m = measure("stream", "stream", n)
    if not m:
        return
    v = m["value"]
    table(
        ["pixels", "segcheck wall s", "cpu s", "Mpixel/s (wall)", "peak extra MiB", "AUROC", "AUROC bound"],
        [[f"{m['pixels']:,}"] + _timing_cells(m, m["pixels"]) + [f"{v['auroc']:.6f}", f"{v['auroc_error']:.1e}"]],
    )
    if sklearn_bytes_per_pixel:
        print(
            f"(scikit-learn is not run at this size: roc_auc_score peaked at {sklearn_bytes_per_pixel:.0f} bytes "
            f"per pixel above, about {sklearn_bytes_per_pixel * m['pixels'] / 2**30:.0f} GiB here.)\n"
        )


def gpu_section(n_labels: int, n_scores: int) -> None:
    import torch

    if not torch.cuda.is_available():
        print("## GPU\n\nCUDA is not available on this machine: GPU throughput not measured.\n")
        return
    m = measure("gpu", f"{n_labels},{n_scores}", 0)
    if m:
        print(f"## GPU ({torch.cuda.get_device_name(0)})\n")
        table(["metric", "Mpixel/s"], [[k, f"{v / 1e6:,.0f}"] for k, v in m.items()])


def _count(text: str) -> int:
    value = float(text)
    if value < 1 or value != int(value):
        raise argparse.ArgumentTypeError(f"expected a positive pixel count (e.g. 1e8), got {text!r}")
    return int(value)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pixels", type=_count, default=100_000_000, help="confusion-matrix pixels (default 1e8)")
    parser.add_argument("--ood-pixels", type=_count, default=20_000_000, help="OOD comparison pixels (default 2e7)")
    parser.add_argument(
        "--stream-pixels", type=_count, default=393_000_000, help="streaming OOD pixels (default 3.93e8)"
    )
    parser.add_argument(
        "--gpu-only", action="store_true", help="only the GPU section (CUDA confusion matrix and OOD histogram)"
    )
    parser.add_argument("--worker", nargs=3, metavar=("KIND", "NAME", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        kind, name, n = args.worker
        print(json.dumps(worker(kind, name, int(n))))
        return
    from segcheck.metrics import _counting

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    print(
        f"# segcheck metrics benchmark\n\n`python benchmarks/{os.path.basename(__file__)} "
        f"{' '.join(sys.argv[1:] if argv is None else argv)}`\n"
    )
    print(
        f"{cpu}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start; "
        f"Python {platform.python_version()}, numpy {np.__version__}; segcheck's uint8 pair counter: "
        f"{_counting.pair_counter_name()}\n"
    )
    if not args.gpu_only:
        confusion_section(args.pixels)
        regions_section(args.pixels)
        stream_section(args.stream_pixels, ood_section(args.ood_pixels))
    gpu_section(args.pixels, args.ood_pixels)


if __name__ == "__main__":
    main()
