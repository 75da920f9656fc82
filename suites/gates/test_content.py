"""content_sensitivity: the prediction must depend on the image's content (DESIGN.md section 4)."""

import pytest

from segcheck import gates

pytestmark = pytest.mark.gate(name="{param}")  # each test checks the gate it is parametrized with


@pytest.mark.parametrize("check", [gates.derangement_gap, gates.shift_equivariance, gates.input_gradient],
                         ids=lambda f: f.__name__)
def test_content_sensitivity(check, segcheck_target, segcheck_config, gate):
    gate(check(segcheck_target, segcheck_config["content_sensitivity"]))
