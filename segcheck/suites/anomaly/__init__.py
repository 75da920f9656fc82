"""The anomaly suite (see ``segcheck.suites``)."""
