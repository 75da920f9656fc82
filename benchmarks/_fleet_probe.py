"""The probe ``benchmarks/fleet.py`` loads into a fleet run (``-p _fleet_probe``): in every pytest
process (the controller and each xdist worker) the resident set size after each test
(``/proc/self/status`` VmRSS; Linux) and, at the end, the process's peak (``getrusage``),
written to ``BENCH_OUT/<worker>.json``."""

from __future__ import annotations

import json
import os
import resource
import sys
from pathlib import Path

_samples: list[tuple[str, float]] = []


def _rss_mb() -> float | None:
    try:
        with open("/proc/self/status") as status:
            line = next(x for x in status if x.startswith("VmRSS:"))
    except (OSError, StopIteration):
        return None  # not Linux: the peak alone is measured
    return int(line.split()[1]) / 1024


def pytest_runtest_logfinish(nodeid, location):
    _samples.append((nodeid, _rss_mb()))


def pytest_sessionfinish(session):
    out = os.environ.get("BENCH_OUT")
    if not out:
        return
    worker = getattr(session.config, "workerinput", {}).get("workerid", "controller")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak_mb = peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux
    Path(out, f"{worker}.json").write_text(json.dumps({"worker": worker, "peak_mb": peak_mb, "rss_mb": _samples}))
