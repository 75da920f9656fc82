"""cpu_cuda_agreement: the model predicts the same on CPU and CUDA (needs a GPU; skipped without one)."""

import pytest

from segcheck import gates

pytestmark = [pytest.mark.gate, pytest.mark.gpu]


def test_cpu_cuda_agreement(segcheck_target, segcheck_config, gate):
    gate(gates.cpu_cuda_agreement(segcheck_target, segcheck_config["cpu_cuda_agreement"]))
