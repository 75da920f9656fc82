"""perturbation_stability: mild corruptions must not change the prediction, one test per corruption."""

import pytest

from segcheck import gates

pytestmark = pytest.mark.gate


@pytest.mark.parametrize("corruption", gates.CORRUPTIONS)
def test_perturbation_stability(corruption, segcheck_target, segcheck_config, gate):
    gate(gates.perturbation_stability(segcheck_target, segcheck_config["perturbation_stability"], corruption))
