"""Points at ``segcheck.suites.anomaly.test_anomaly``: the suite ships in the package (one copy)."""

from segcheck.suites.anomaly.test_anomaly import *  # noqa: F403
