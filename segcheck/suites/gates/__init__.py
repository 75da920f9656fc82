"""The gates suite (see ``segcheck.suites``)."""
