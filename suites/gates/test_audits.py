"""Audits: structural checks of the model and the data, one test each."""

import pytest

from segcheck import gates

pytestmark = pytest.mark.gate(name="{param}")  # each test checks the gate it is parametrized with


@pytest.mark.parametrize("audit", [gates.head_matches_classes, gates.output_size, gates.finite_outputs,
                                   gates.label_integrity], ids=lambda f: f.__name__)
def test_audit(audit, segcheck_target, gate):
    gate(audit(segcheck_target))


@pytest.mark.parametrize("audit", [gates.input_normalization, gates.loss_at_init, gates.gradient_coverage,
                                   gates.batch_independence, gates.deterministic_eval], ids=lambda f: f.__name__)
def test_configured_audit(audit, segcheck_target, segcheck_config, gate):
    gate(audit(segcheck_target, segcheck_config[audit.__name__]))
