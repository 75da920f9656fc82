"""Points at ``segcheck.suites.anomaly.conftest``: the suite ships in the package (one copy)."""

from segcheck.suites.anomaly.conftest import *  # noqa: F403
