"""Points at ``segcheck.suites.metrics.conftest``: the suite ships in the package (one copy)."""

from segcheck.suites.metrics.conftest import *  # noqa: F403
