"""noise_input: the model must not score on noise (DESIGN.md section 4)."""

import pytest

from segcheck import gates

pytestmark = pytest.mark.gate


def test_noise_input(segcheck_target, segcheck_config, gate):
    gate(gates.noise_input(segcheck_target, segcheck_config["noise_input"]))
