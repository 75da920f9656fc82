"""Points at ``segcheck.suites.metrics.test_user_metrics``: the suite ships in the package (one copy)."""

from segcheck.suites.metrics.test_user_metrics import *  # noqa: F403
