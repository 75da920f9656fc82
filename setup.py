"""The optional C extension; everything else about the package is in pyproject.toml.

segcheck/metrics/_pairs.c speeds up the uint8 confusion matrix. ``optional=True``: without a
C compiler the install still succeeds and counting uses torch.bincount (same counts, slower);
``segcheck.metrics._counting.pair_counter_name()`` says which one runs.
"""

from setuptools import Extension, setup

# -O3 after the interpreter's flags (distribution Pythons build extensions at -O2): GCC then
# vectorises the fused-index loop and unrolls the lanes, about 3x faster (see _pairs.c).
setup(
    ext_modules=[
        Extension("segcheck.metrics._pairs", ["segcheck/metrics/_pairs.c"], optional=True, extra_compile_args=["-O3"])
    ]
)
