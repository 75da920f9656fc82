"""Progress of long forward passes: one line per pass that took longer than ``AFTER_S``
seconds, through ``SINK`` (the pytest plugin sets it to write past output capture), or a bar
on standard error when it is a terminal and nothing else is listening."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

SINK: Callable[[str], None] | None = None
AFTER_S = 5.0


@contextmanager
def forward_pass(images: int) -> Iterator[Callable[[int], None]]:
    """``with forward_pass(n) as done: ... done(k)`` after each batch of ``k`` images."""
    start, seen = time.perf_counter(), [0]
    bar = None
    if SINK is None and sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=images, unit="img", desc="segcheck forward pass", delay=AFTER_S, leave=False)

    def done(count: int) -> None:
        seen[0] += count
        if bar is not None:
            bar.update(count)

    try:
        yield done
    finally:
        if bar is not None:
            bar.close()
        elapsed = time.perf_counter() - start
        if SINK is not None and elapsed > AFTER_S:
            SINK(f"forward pass over {seen[0]} images took {elapsed:.0f} s ({seen[0] / elapsed:.2f} img/s)")
