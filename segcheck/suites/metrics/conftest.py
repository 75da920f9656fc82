"""suites/metrics: hypothesis profiles and the user metrics under test.

Profiles: ``dev`` (default; quick, random, remembers failures in ``.hypothesis/``) and
``ci`` (more examples, derandomized so that a run is reproducible, no database). Select
with the environment variable ``HYPOTHESIS_PROFILE``.

User metrics: every metric registered through ``segcheck_register_metrics`` with
``kind="per_class_iou"`` (bundled ones, installed plugins, ``--plugin FILE``) becomes one
parametrization of the ``user_metric`` argument, decided at collection time.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, Phase, settings

from segcheck import SegcheckError
from segcheck.metrics import _counting
from segcheck.pytest_plugin import STATE

# The explain phase (lines "always and only run by failing test cases") is left out: it
# doubles the time to report a failure and points into numpy's array printing, not at the bug.
PHASES = tuple(p for p in Phase if p is not Phase.explain)
settings.register_profile("dev", max_examples=40, deadline=None, phases=PHASES)
settings.register_profile(
    "ci",
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
    phases=PHASES,
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

PER_CLASS_IOU = "per_class_iou"
USER_KINDS = (PER_CLASS_IOU,)  # the kinds of user metric this suite knows how to test


def registered_metrics(config: pytest.Config):
    """The metric Registry filled by the plugins of this run (segcheck's pytest plugin loads
    them once per session; a bad ``--plugin`` is a usage error)."""
    try:
        return config.stash[STATE].plugins.metrics
    except SegcheckError as exc:
        raise pytest.UsageError(str(exc)) from None


def user_metrics(config: pytest.Config, kind: str) -> list:
    return [entry for entry in registered_metrics(config) if entry.meta.get("kind") == kind]


def pytest_generate_tests(metafunc: pytest.Metafunc):
    if "user_metric" in metafunc.fixturenames:
        entries = user_metrics(metafunc.config, PER_CLASS_IOU)
        metafunc.parametrize("user_metric", entries, ids=[entry.name for entry in entries])


def pytest_report_header(config: pytest.Config) -> list[str]:
    lines = [
        f"hypothesis profile: {settings.get_current_profile_name()}",
        f"segcheck uint8 pair counter: {_counting.pair_counter_name()}; property-tested here: "
        + ", ".join(c.__name__ for c in _counting.AVAILABLE_PAIRS),
    ]
    for kind in USER_KINDS:
        entries = user_metrics(config, kind)
        names = ", ".join(f"{e.name} (from {e.plugin}{_declared(e)})" for e in entries) or "none registered"
        lines.append(f"segcheck metrics under test, kind {kind}: {names}")
    return lines


def _declared(entry) -> str:
    """What a metric declared about its domain and conventions, for the header."""
    declared = {k: entry.meta[k] for k in ("min_classes", "absent") if k in entry.meta}
    return "".join(f"; declares {k}={v!r}" for k, v in declared.items())
