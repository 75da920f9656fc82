"""prediction_collapse: predicted classes must resemble the ground truth's (DESIGN.md section 4)."""

import pytest

from segcheck import gates

pytestmark = pytest.mark.gate


def test_prediction_collapse(segcheck_target, segcheck_config, gate):
    gate(gates.prediction_collapse(segcheck_target, segcheck_config["prediction_collapse"]))
