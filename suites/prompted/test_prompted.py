"""Points at ``segcheck.suites.prompted.test_prompted``: the suite ships in the package (one copy)."""

from segcheck.suites.prompted.test_prompted import *  # noqa: F403
