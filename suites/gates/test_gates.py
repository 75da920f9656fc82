"""Points at ``segcheck.suites.gates.test_gates``: the suite ships in the package (one copy)."""

from segcheck.suites.gates.test_gates import *  # noqa: F403
