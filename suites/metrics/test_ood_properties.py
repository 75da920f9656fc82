"""Points at ``segcheck.suites.metrics.test_ood_properties``: the suite ships in the package (one copy)."""

from segcheck.suites.metrics.test_ood_properties import *  # noqa: F403
