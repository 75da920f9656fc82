"""What a fleet run costs: the wall time of a 20-target fleet at ``-n 1`` vs ``-n 2``, and the
pytest processes' peak memory at 10 vs 50 targets (one target resident per worker: flat).

    python benchmarks/fleet.py                                    # 20 targets; memory at 10 and 50
    python benchmarks/fleet.py --targets 40 --workers 1,2,4 --eval-size 32 -k "not train"
    python benchmarks/fleet.py --targets 2 --memory-targets 2,3 --eval-size 2 -k finite_outputs  # seconds

Each run is ``pytest suites/gates --models-manifest M -n W`` in a fresh process, over a manifest
of N targets: the bundled unet's robust checkpoint under N names (``--random-init``: N
random-init unets, init_seed 0..N-1), cheap gates (``-k``) on ``--eval-size`` images. Each
worker gets ``--threads`` torch threads (default: the machine's cores / W, through
OMP_NUM_THREADS), so ``-n 1`` and ``-n 2`` use the same cores. A probe
(``benchmarks/_fleet_probe.py``) records in every pytest process its peak resident set size
(getrusage) and its RSS after each test: the table gives the largest worker's peak, its RSS
after its first and its last target, and the controller's peak. One run each.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _report import table

ROOT = Path(__file__).resolve().parents[1]
ROBUST = ROOT / "plugins" / "checkpoints" / "unet_synthetic-streets_robust.safetensors"
GATES = "noise_input or head_matches_classes or finite_outputs or output_size or prediction_collapse"


def manifest(path: Path, n: int, random_init: bool) -> Path:
    """A manifest of ``n`` targets (names t000, t001, ...)."""
    rows = [
        {"name": f"t{i:03d}", "init_seed": i, "checkpoint": "none"} if random_init
        else {"name": f"t{i:03d}", "checkpoint": str(ROBUST)}
        for i in range(n)
    ]  # fmt: skip
    path.write_text(json.dumps({"defaults": {"model": "unet", "dataset": "synthetic-streets"}, "targets": rows}))
    return path  # JSON is YAML


def run_fleet(n: int, workers: int, args, tmp: Path) -> dict:
    """One fleet run of ``n`` targets on ``workers`` xdist workers: wall time and the probe's numbers."""
    out = tmp / f"{n}x{workers}"
    out.mkdir()
    threads = args.threads or max(1, (os.cpu_count() or 1) // workers)
    env = {
        **os.environ,
        "BENCH_OUT": str(out),
        "OMP_NUM_THREADS": str(threads),
        "PYTHONPATH": os.pathsep.join([str(ROOT / "benchmarks"), str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        str(ROOT / "suites" / "gates"),
        "-p",
        "_fleet_probe",
        "-p",
        "no:cacheprovider",
    ]
    cmd += ["-q", "--models-manifest", str(manifest(out / "fleet.yaml", n, args.random_init))]
    cmd += ["-m", "not train and not gpu", "-k", args.k, "--eval-size", str(args.eval_size), "--device", args.device]
    cmd += ["--segcheck-report", str(out / "report.json"), "-n", str(workers)]
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=out)
    wall = time.perf_counter() - start
    if done.returncode not in (0, 1) or not (out / "report.json").is_file():
        tail = (done.stdout + done.stderr).strip().splitlines()[-15:]
        raise SystemExit(
            f"{n} targets, -n {workers}: the fleet run failed (exit {done.returncode}):\n" + "\n".join(tail)
        )
    report = json.loads((out / "report.json").read_text())
    probes = {p.stem: json.loads(p.read_text()) for p in out.glob("*.json") if p.stem not in ("report", "fleet")}
    ran = [p for w, p in probes.items() if w != "controller" and p["rss_mb"]]
    biggest = max(ran, key=lambda p: p["peak_mb"])
    after = _after_each_target(biggest["rss_mb"])
    print(f"  {n} targets, -n {workers} ({threads} threads each): {len(report['gates'])} gate records in {wall:.1f} s",
          file=sys.stderr)  # fmt: skip
    return {
        "wall": wall,
        "threads": threads,
        "records": len(report["gates"]),
        "peak": biggest["peak_mb"],
        "first": after[0] if after else None,
        "last": after[-1] if after else None,
        "targets_on_it": len(after),
        "controller": probes.get("controller", {}).get("peak_mb"),
    }


def _after_each_target(samples: list) -> list[float]:
    """A worker's RSS after the last test of each of its targets (test ids ``...[tNNN:gate]``)."""
    last: dict[str, float] = {}
    for nodeid, rss in samples:
        target = nodeid.partition("[")[2].partition(":")[0]
        if target and rss is not None:
            last[target] = rss
    return list(last.values())


def mb(value) -> str:
    return "-" if value is None else f"{value:.0f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--targets", type=int, default=20, help="targets of the timed fleet (default: %(default)s)")
    p.add_argument(
        "--workers", default="1,2", help="xdist worker counts to time, comma-separated (default: %(default)s)"
    )
    p.add_argument("--memory-targets", default="10,50", help="fleet sizes for memory (default: %(default)s)")
    p.add_argument("--memory-workers", type=int, default=2, help="workers of the memory runs (default: %(default)s)")
    p.add_argument("--eval-size", type=int, default=8, help="eval images per target (default: %(default)s)")
    p.add_argument("-k", default=GATES, help="the gates (pytest -k; default: %(default)s)")
    p.add_argument(
        "--random-init", action="store_true", help="random-init unets (init_seed i) instead of the checkpoint"
    )
    p.add_argument("--threads", type=int, help="torch threads per worker (default: cores / workers)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    args = p.parse_args()
    workers = [int(w) for w in args.workers.split(",")]
    sizes = [int(n) for n in args.memory_targets.split(",")]
    kind = "random-init unets" if args.random_init else "the robust unet checkpoint under N names"
    print(f"{os.cpu_count()} cores, device {args.device}, {kind}, {args.eval_size} eval images, -k {args.k!r}\n")
    runs: dict[tuple[int, int], dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for w in workers:
            runs[(args.targets, w)] = run_fleet(args.targets, w, args, Path(tmp))
        for n in sizes:
            if (n, args.memory_workers) not in runs:
                runs[(n, args.memory_workers)] = run_fleet(n, args.memory_workers, args, Path(tmp))
    base = runs[(args.targets, workers[0])]["wall"]
    print(f"## 1. Wall time of a {args.targets}-target fleet\n")
    rows = []
    for w in workers:
        r = runs[(args.targets, w)]
        rows.append([f"-n {w}", r["threads"], r["records"], f"{r['wall']:.1f}", f"{r['wall'] / args.targets:.2f}",
                     f"{base / r['wall']:.2f}x"])  # fmt: skip
    table(["workers", "threads each", "gate records", "wall s", "s per target", f"speed-up vs -n {workers[0]}"], rows)
    print(f"## 2. Memory at {' vs '.join(map(str, sizes))} targets (-n {args.memory_workers})\n")
    rows = []
    for n in sizes:
        r = runs[(n, args.memory_workers)]
        rows.append([n, r["targets_on_it"], mb(r["peak"]), mb(r["first"]), mb(r["last"]), mb(r["controller"])])
    table(["targets", "targets on the largest worker", "its peak RSS MB", "RSS after its first target MB",
           "after its last MB", "controller peak MB"], rows)  # fmt: skip
    small, large = runs[(sizes[0], args.memory_workers)], runs[(sizes[-1], args.memory_workers)]
    print(f"peak worker RSS at {sizes[-1]} targets / at {sizes[0]}: {large['peak'] / small['peak']:.2f}x")


if __name__ == "__main__":
    main()
