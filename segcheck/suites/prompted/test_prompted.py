"""The gates of text-prompted binary models: every gate registered for the ``prompted`` suite,
on every target, per concept and prompt (foreground IoU and Dice, collapse with the threshold
sweep, noise, prompt sensitivity, paraphrase consistency)."""

import pytest

SEGCHECK_SUITE = "prompted"
pytestmark = pytest.mark.gate


def test_prompted(segcheck_gate):
    segcheck_gate()
