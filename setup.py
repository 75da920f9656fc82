"""The optional C extension; everything else about the package is in pyproject.toml.

segcheck/metrics/_pairs.c speeds up the uint8 confusion matrix. ``optional=True``: without a
C compiler the install still succeeds and counting uses torch.bincount (same counts, slower);
``segcheck.metrics._counting.pair_counter_name()`` says which one runs.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("segcheck.metrics._pairs", ["segcheck/metrics/_pairs.c"], optional=True)])
