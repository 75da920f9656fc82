"""segcheck plugin of ``benchmarks/scale.py``: the models it measures and a clock on their calls.

``null``: a 1x1 convolution (the model costs nothing, so what is measured is segcheck's own
work); ``timed-unet``: the bundled unet. Both add the seconds spent inside their top-level
``forward`` (backward passes not included) to the file named by ``SCALE_CLOCK`` when the
process ends, one line per process: ``seconds calls``.
"""

from __future__ import annotations

import atexit
import os
import time

import torch

from segcheck.hookspecs import hookimpl
from segcheck_plugins.unet import build_unet

_CLOCK = {"seconds": 0.0, "calls": 0}


def _timed(module: torch.nn.Module) -> torch.nn.Module:
    """``module`` with its top-level calls added to the process's clock."""
    started = []

    def before(_module, _args):
        started.append(time.perf_counter())

    def after(_module, _args, _output):
        _CLOCK["seconds"] += time.perf_counter() - started.pop()
        _CLOCK["calls"] += 1

    module.register_forward_pre_hook(before)
    module.register_forward_hook(after)
    return module


@atexit.register
def _write_clock() -> None:
    path = os.environ.get("SCALE_CLOCK")
    if path and _CLOCK["calls"]:
        with open(path, "a") as f:
            f.write(f"{_CLOCK['seconds']:.3f} {_CLOCK['calls']}\n")


@hookimpl
def segcheck_register_models(registry):
    registry.add("null", lambda num_classes: _timed(torch.nn.Conv2d(3, num_classes, 1)), description="1x1 conv")
    registry.add(
        "timed-unet",
        lambda num_classes, **kwargs: _timed(build_unet(num_classes, **kwargs)),
        description="the bundled unet, its forward timed",
        wraps="unet",
    )
