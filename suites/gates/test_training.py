"""Gates that train: overfit ten samples; beat the input-independent baseline."""

import pytest

from segcheck import gates

pytestmark = [pytest.mark.gate, pytest.mark.train]


def test_overfit_tiny(segcheck_target, segcheck_config, gate):
    gate(gates.overfit_tiny(segcheck_target, segcheck_config["overfit_tiny"]))


def test_input_baseline(segcheck_target, segcheck_config, gate):
    gate(gates.input_baseline(segcheck_target, segcheck_config["input_baseline"]))
