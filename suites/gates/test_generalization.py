"""generalization: the eval split's mIoU must hold on another split (DESIGN.md section 4)."""

import pytest

from segcheck import gates

pytestmark = pytest.mark.gate


def test_generalization(segcheck_target, segcheck_config, gate):
    cfg = segcheck_config["generalization"]
    if cfg["split"] not in segcheck_target.spec.splits:
        pytest.skip(f"dataset {segcheck_target.dataset_name!r} has no {cfg['split']!r} split to compare with")
    gate(gates.generalization(segcheck_target, cfg))
