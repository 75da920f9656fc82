"""The metrics suite (see ``segcheck.suites``)."""
