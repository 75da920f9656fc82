"""The benchmark scripts still run end to end (tiny sizes: this checks they work, not speed)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def run(script: str, *args: str) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done


def test_metrics_benchmark_measures_every_row():
    done = run("metrics.py", "--pixels", "3000", "--ood-pixels", "3000", "--stream-pixels", "5000")
    missing = [line for line in done.stderr.splitlines() if "not measured" in line]
    if importlib.util.find_spec("torchmetrics") is None:  # the optional `bench` extra
        missing = [line for line in missing if "torchmetrics" not in line]
    assert not missing, missing
    out = done.stdout
    for row in (
        "| segcheck confusion_matrix |",
        "| segcheck, torch.bincount fallback |",
        "| segcheck histogram (AUROC+AUPR+FPR95) |",
        "| sklearn roc_auc_score |",
        "| 5,000 |",
    ):
        assert row in out, f"{row} missing from:\n{out}"
    assert "confusion matrices identical: True" in out


def test_train_benchmark_compares_both_loops():
    done = run("train.py", "--size", "32x32", "--batch-size", "2", "--steps", "2", "--warmup", "1", "--device", "cpu")
    assert "plain fp32 loop" in done.stdout and "segcheck trainer" in done.stdout, done.stdout


def test_anomaly_benchmark_prints_every_table():
    done = run(
        "anomaly.py",
        *("--forward-images", "4", "--stats-images", "4", "--batch-size", "2"),
        *("--images", "3", "--size", "40x64", "--pixels", "2e5"),
    )
    assert "not measured" not in done.stderr, done.stderr[-2000:]
    out = done.stdout
    for row in (
        "## 1. Metric work vs forward passes",
        "| anomaly evaluation (_evaluate) |",
        "| forward passes (normalize + logits) |",
        "## 2. Scale / bounded memory: 3 generated images of 40x64",
        "| live heap (mallinfo2, 50 ms samples) |",
        "| total (_evaluate) |",
        "## 3. Peak memory vs scikit-learn: 200,000",
        "| segcheck OODMetrics (AUROC+AUPR+FPR95) |",
        "| sklearn roc_auc_score |",
        "| AUROC |",
    ):
        assert row in out, f"{row} missing from:\n{out}"


def test_fleet_benchmark_times_and_measures_a_tiny_fleet():
    done = run(
        "fleet.py",
        "--targets",
        "2",
        "--workers",
        "1,2",
        "--memory-targets",
        "2",
        "--eval-size",
        "2",
        "-k",
        "finite_outputs",
    )
    out = done.stdout
    for row in ("## 1. Wall time of a 2-target fleet", "| -n 1 | ", "| -n 2 | ", "## 2. Memory at 2 targets (-n 2)"):
        assert row in out, f"{row} missing from:\n{out}"
    assert "peak worker RSS at 2 targets / at 2: 1.00x" in out
