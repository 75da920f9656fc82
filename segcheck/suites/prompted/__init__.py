"""The prompted suite (see ``segcheck.suites``)."""
