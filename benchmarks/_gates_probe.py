"""The probe ``benchmarks/gates.py`` loads into a ``pytest suites/gates`` run, twice over: as a
pytest plugin (``-p _gates_probe``: which test is running, and when) and as a segcheck plugin
(``--plugin``: the ``bench-streets`` dataset, synthetic-streets at ``BENCH_SIZE``).

Every top-level ``nn.Module`` call (one not inside another module's forward) is recorded
with its input shape, grad mode and train/eval mode under the running test's id; at the end
of the session the calls and the tests' durations go to ``BENCH_OUT`` as JSON.
"""

from __future__ import annotations

import json
import os
import time

import torch

from segcheck.hookspecs import hookimpl

_calls: list[dict] = []
_durations: dict[str, float] = {}
_state = {"test": "(set-up)", "depth": 0}


def _pre(module, args):
    if _state["depth"] == 0 and args and isinstance(args[0], torch.Tensor):
        _calls.append(
            {
                "test": _state["test"],
                "shape": list(args[0].shape),
                "grad": torch.is_grad_enabled(),
                "train": module.training,
                "module": type(module).__name__,
            }
        )
    _state["depth"] += 1


def _post(module, args, output):
    _state["depth"] -= 1


def pytest_configure(config):
    if os.environ.get("BENCH_OUT"):
        torch.nn.modules.module.register_module_forward_pre_hook(_pre)
        torch.nn.modules.module.register_module_forward_hook(_post)


def pytest_runtest_call(item):
    _state["test"], _state["depth"] = item.nodeid.split("::")[-1], 0


def pytest_runtest_logreport(report):
    if report.when == "call":
        name = report.nodeid.split("::")[-1]
        _durations[name] = _durations.get(name, 0.0) + report.duration


def pytest_sessionstart(session):
    _state["start"] = time.perf_counter()


def pytest_sessionfinish(session):
    out = os.environ.get("BENCH_OUT")
    if out:
        wall = time.perf_counter() - _state.get("start", time.perf_counter())
        with open(out, "w") as f:
            json.dump({"calls": _calls, "durations": _durations, "session_s": wall}, f)


@hookimpl
def segcheck_register_datasets(registry):
    from segcheck_plugins.synthetic_streets import SyntheticStreets

    h, w = (int(v) for v in os.environ.get("BENCH_SIZE", "512x512").split("x"))
    length = int(os.environ.get("BENCH_LENGTH", "64"))
    registry.add(
        "bench-streets",
        lambda root, split: SyntheticStreets(split, length=length, size=(h, w)),
        description=f"synthetic-streets at {h}x{w}, {length} images a split (benchmarks/gates.py)",
    )
