"""Thin: loads segcheck's pytest plugin (also a ``pytest11`` entry point of the same name,
so it registers once). The suites and the tests never import from this file."""

pytest_plugins = ("segcheck.pytest_plugin",)
