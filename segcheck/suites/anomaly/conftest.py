"""Marks this folder as a segcheck gate suite: at start-up the pytest plugin resolves what is
under test (a wrong name is a usage error before any test runs) and states it in the header."""

SEGCHECK_GATE_SUITE = True
