"""Points at ``segcheck.suites.prompted.conftest``: the suite ships in the package (one copy)."""

from segcheck.suites.prompted.conftest import *  # noqa: F403
