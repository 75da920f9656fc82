"""What ``pytest suites/gates -m "not train"`` costs on real models, against the forward passes
its gates need, measured alone.

    python benchmarks/gates.py                                   # deeplabv3_resnet50 and smp DeepLabV3Plus, 512x512
    python benchmarks/gates.py --eval-size 32 --device cuda      # on a GPU machine
    python benchmarks/gates.py --models unet --size 64x128 --eval-size 2   # seconds

For each model (random init; ``--checkpoint none``), one ``pytest suites/gates -m "not train
and not gpu"`` run on ``bench-streets`` (synthetic-streets at ``--size``) in a fresh process,
with a probe (``benchmarks/_gates_probe.py``) recording every top-level module call: its
input shape, grad mode and train/eval mode, under the test that made it. Then the same calls
are replayed alone on a module of the same architecture (random input of the recorded
shape, same modes, no segcheck code around them; forward only, so a gate's backward passes
count as its overhead). The table gives per gate the module calls and images, the time of
the test, the time of its forward passes alone and their ratio; the last row is the whole
pytest run (start-up, data loading and reports included) against all forward passes.
One run each; a busy machine inflates both sides alike.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch
from _report import table

ROOT = Path(__file__).resolve().parents[1]
MODELS = {
    "deeplabv3_resnet50": [],
    "smp:DeepLabV3Plus": ["encoder_name=resnet50"],
}


def run_suite(model: str, model_args: list[str], args, out: Path) -> float:
    """One pytest run of the gates on ``model``; its wall time in seconds."""
    env = {
        **os.environ,
        "BENCH_OUT": str(out),
        "BENCH_SIZE": args.size,
        "BENCH_LENGTH": str(max(args.eval_size, 16)),
        "PYTHONPATH": os.pathsep.join([str(ROOT / "benchmarks"), os.environ.get("PYTHONPATH", "")]),
    }
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        str(ROOT / "suites" / "gates"),
        "-p",
        "_gates_probe",
        "-p",
        "no:cacheprovider",
    ]
    cmd += ["-q", "-m", "not train and not gpu", "--plugin", str(ROOT / "benchmarks" / "_gates_probe.py")]
    cmd += ["--model", model, "--checkpoint", "none", "--dataset", "bench-streets", "--eval-size", str(args.eval_size)]
    cmd += ["--device", args.device, "--segcheck-report", str(out.with_suffix(".report.json"))]
    for arg in model_args:
        cmd += ["--model-arg", arg]
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=out.parent)
    wall = time.perf_counter() - start
    if done.returncode not in (0, 1) or not out.is_file():
        tail = (done.stdout + done.stderr).strip().splitlines()[-15:]
        raise SystemExit(f"{model}: the gate run failed (exit {done.returncode}):\n" + "\n".join(tail))
    summary = [line for line in done.stdout.splitlines() if " passed" in line or " failed" in line]
    print(f"{model}: {summary[-1].strip('= ') if summary else 'no summary'} in {wall:.1f} s")
    return wall


def replay(model: str, model_args: list[str], calls: list[dict], device: str) -> dict[str, float]:
    """Seconds of the recorded calls, replayed alone per test, on one fresh module of ``model``
    (the gates' fresh copies are the same architecture)."""
    from segcheck import plugins
    from segcheck.config import model_arg
    from segcheck.target import build_module

    entry = plugins.load().models.get(model)
    module = build_module(entry, 8, **dict(model_arg(a) for a in model_args)).to(device)
    seconds: dict[str, float] = defaultdict(float)
    for call in calls:
        module.train(call["train"])
        x = torch.randn(call["shape"], device=device)
        sync(device)
        start = time.perf_counter()
        with torch.set_grad_enabled(call["grad"]):
            module(x)
        sync(device)
        seconds[call["test"]] += time.perf_counter() - start
    return seconds


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=list(MODELS), help="registered models (default: %(default)s)")
    p.add_argument("--size", default="512x512", help="image size HxW (default: %(default)s)")
    p.add_argument("--eval-size", type=int, default=4, help="eval images (default 4 on a CPU; the suite's own is 32)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    args = p.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}, size {args.size}, "
          f"{args.eval_size} eval images\n")  # fmt: skip
    for model in args.models:
        model_args = MODELS.get(model, [])
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "calls.json"
            wall = run_suite(model, model_args, args, out)
            record = json.loads(out.read_text())
        calls, durations = record["calls"], record["durations"]
        alone = replay(model, model_args, calls, args.device)
        per_test = defaultdict(lambda: [0, 0])
        for call in calls:
            per_test[call["test"]][0] += 1
            per_test[call["test"]][1] += call["shape"][0]
        rows = []
        for test in sorted(set(durations) | set(per_test), key=lambda t: -durations.get(t, 0)):
            n, images = per_test.get(test, (0, 0))
            took, forward = durations.get(test, 0.0), alone.get(test, 0.0)
            ratio = f"{took / forward:.2f}x" if forward > 0 else "-"
            rows.append([test, n, images, f"{took:.2f}", f"{forward:.2f}", ratio])
        total = sum(alone.values())
        rows.append(["**whole pytest run**", len(calls), sum(c["shape"][0] for c in calls), f"{wall:.2f}",
                     f"{total:.2f}", f"{wall / total:.2f}x" if total else "-"])  # fmt: skip
        print(f"\n### {model} {' '.join(model_args)}\n")
        table(["gate (test)", "module calls", "images", "test s", "forward passes alone s", "ratio"], rows)
        print(f"gates' tests {sum(durations.values()):.1f} s of the run's {wall:.1f} s "
              f"(pytest run inside the process {record['session_s']:.1f} s)\n")  # fmt: skip


if __name__ == "__main__":
    main()
