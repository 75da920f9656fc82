"""Audits: structural checks of the model and the data, one test each."""

import pytest

from segcheck import gates

pytestmark = pytest.mark.gate


@pytest.mark.parametrize("audit", [gates.head_matches_classes, gates.output_size, gates.finite_outputs,
                                   gates.label_integrity], ids=lambda f: f.__name__)
def test_audit(audit, segcheck_target, gate):
    gate(audit(segcheck_target))
