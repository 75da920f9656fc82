"""The anomaly-segmentation gates: every gate registered for the ``anomaly`` suite, on every
target: ``anomaly_detection[<scorer>]`` for each registered scorer, and the anomaly audits.
A dataset without anomaly pixels makes them SKIP with the reason."""

import pytest

SEGCHECK_SUITE = "anomaly"
pytestmark = pytest.mark.gate


def test_anomaly(segcheck_gate):
    segcheck_gate()
