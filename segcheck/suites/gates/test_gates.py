"""The closed-set validity gates: every gate registered for the ``gates`` suite (built-in or
added with ``--plugin``), on every target. ``-k NAME`` and ``-m "not train"`` select as usual."""

import pytest

SEGCHECK_SUITE = "gates"
pytestmark = pytest.mark.gate


def test_gate(segcheck_gate):
    segcheck_gate()
