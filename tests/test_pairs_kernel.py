"""The C byte-pair counter behind the uint8 confusion matrix (segcheck/metrics/_pairs.c)."""

from __future__ import annotations

import shutil
import sysconfig

import numpy as np
import pytest

from segcheck.metrics import _counting


def _pair_reference(target, pred):
    return np.bincount(target.astype(np.int64) * 256 + pred, minlength=256 * 256).reshape(256, 256)


needs_c_pairs = pytest.mark.skipif(_counting._pairs is None, reason="segcheck.metrics._pairs is not built here")


@needs_c_pairs
@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, (1 << 16) - 1, 1 << 16, (1 << 16) + 9, 3 * (1 << 16) + 5])
def test_c_pair_kernel_counts_every_byte_pair(n):
    """One table (small inputs) and interleaved lanes, block boundaries, lane tails, and tables
    that grow when a later block has larger values."""
    rng = np.random.default_rng(n)
    ramp = np.minimum(np.arange(n) // 3000, 255).astype(np.uint8)  # values grow block by block
    noise = rng.integers(0, 256, (2, n)).astype(np.uint8)
    for target, pred in [(noise[0], noise[1]), (ramp, ramp[::-1].copy()), (ramp, noise[1] % 3), (noise[0] % 3, ramp)]:
        out = np.zeros(256 * 256, np.int64)
        bounds = _counting._pairs.count_pairs(target, pred, out)
        _counting._pairs.count_pairs(target, pred, out)  # adds to what is there
        assert (out.reshape(256, 256) == 2 * _pair_reference(target, pred)).all()
        assert bounds == ((int(target.max()) + 1, int(pred.max()) + 1) if n else (0, 0))


@needs_c_pairs
def test_c_pair_kernel_folds_its_uint32_tables_before_they_overflow():
    """Past 2**30 pixels the kernel folds its uint32 tables into out and restarts them."""
    n = (1 << 30) + (1 << 17) + 3
    zeros = np.zeros(n, np.uint8)  # untouched zero pages: no resident memory
    out = np.zeros(256 * 256, np.int64)
    assert _counting._pairs.count_pairs(zeros, zeros, out) == (1, 1)
    assert out[0] == n and out[1:].sum() == 0


@needs_c_pairs
def test_c_pair_kernel_stays_in_bounds_when_out_aliases_the_input():
    """Folding writes out while the input is read; each input byte is read once, so the
    indices stay inside the tables whatever the fold writes."""
    out = np.zeros(256 * 256, np.int64)
    target = out.view(np.uint8)[: 1 << 17]
    target[::7] = 200
    before = int(out.sum())
    rows, cols = _counting._pairs.count_pairs(target, target, out)
    assert 1 <= rows <= 256 and 1 <= cols <= 256
    assert int(out.sum()) == before + target.size  # every pixel counted once, inside the table


@needs_c_pairs
def test_c_pair_kernel_rejects_mismatched_buffers():
    out = np.zeros(256 * 256, np.int64)
    with pytest.raises(ValueError, match="target has 3 bytes, pred 2"):
        _counting._pairs.count_pairs(np.zeros(3, np.uint8), np.zeros(2, np.uint8), out)
    with pytest.raises(ValueError, match="256 \\* 256 int64"):
        _counting._pairs.count_pairs(np.zeros(3, np.uint8), np.zeros(3, np.uint8), out[:10])
    with pytest.raises(ValueError, match="C-contiguous"):
        _counting._pairs.count_pairs(np.zeros(6, np.uint8)[::2], np.zeros(3, np.uint8), out)
    with pytest.raises(ValueError, match="target must be an aligned uint8 buffer, got format 'h'"):
        _counting._pairs.count_pairs(np.zeros(3, np.int16), np.zeros(6, np.uint8), out)
    with pytest.raises(ValueError, match="out must be an aligned int64 buffer, got format 'd'"):
        _counting._pairs.count_pairs(np.zeros(3, np.uint8), np.zeros(3, np.uint8), np.zeros(256 * 256))
    misaligned = np.zeros(256 * 256 * 8 + 8, np.uint8)[1:-7].view(np.int64)
    with pytest.raises(ValueError, match="aligned int64"):
        _counting._pairs.count_pairs(np.zeros(3, np.uint8), np.zeros(3, np.uint8), misaligned)


def test_c_pair_kernel_is_built_where_a_compiler_exists():
    """pip builds the optional extension whenever a C compiler is on PATH; CI must use it."""
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(compiler) is None:
        pytest.skip(f"no C compiler ({compiler}) here: counting uses {_counting.pair_counter_name()}")
    assert _counting._pairs is not None, (
        f"{compiler} exists but segcheck.metrics._pairs is not built; reinstall with "
        "`pip install -v -e .` and read the build_ext error"
    )
    assert _counting.PAIRS is _counting.CPairs
