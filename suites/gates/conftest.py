"""Points at ``segcheck.suites.gates.conftest``: the suite ships in the package (one copy)."""

from segcheck.suites.gates.conftest import *  # noqa: F403
