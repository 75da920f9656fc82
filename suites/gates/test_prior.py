"""positional_prior: the model must beat the training labels' per-position majority (DESIGN.md section 4)."""

import pytest

from segcheck import gates

pytestmark = pytest.mark.gate


def test_positional_prior(segcheck_target, segcheck_config, gate):
    gate(gates.positional_prior(segcheck_target, segcheck_config["positional_prior"]))
