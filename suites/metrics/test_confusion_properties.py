"""Points at ``segcheck.suites.metrics.test_confusion_properties``: the suite ships in the package (one copy)."""

from segcheck.suites.metrics.test_confusion_properties import *  # noqa: F403
