"""generalization: the eval split's mIoU must hold on another split (DESIGN.md section 4)."""

import pytest

from segcheck import config, gates

pytestmark = pytest.mark.gate


def test_generalization(segcheck_target, segcheck_config, gate):
    cfg = segcheck_config["generalization"]
    default = config.DEFAULTS["generalization"]["split"]
    if cfg["split"] == default and default not in segcheck_target.spec.splits:
        pytest.skip(f"dataset {segcheck_target.dataset_name!r} has no {default!r} split to compare with; "
                    "set generalization.split to another split to run this gate")
    if cfg["split"] == default and gates.shares_eval_images(segcheck_target, default):
        pytest.skip(f"the {default!r} split holds the eval images themselves (a folder dataset without split "
                    f"folders); put held-out images in DIR/{default}/ to run this gate")
    gate(gates.generalization(segcheck_target, cfg))  # a configured split that does not exist is an error
