"""One run's set-up, the same for pytest and ``segcheck train``: plugins loaded, settings
merged (defaults, registered gates' sections, segcheck.yaml, command line), then
``segcheck_configure`` called exactly once and its changes checked like YAML settings."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from segcheck import config as segconfig
from segcheck.plugins import Plugins, configure, load


@dataclass(frozen=True)
class Session:
    """Loaded plugins and the final, checked settings of one run."""

    plugins: Plugins
    config: dict


def open_session(
    plugin_specs=(), config_path: Path | None = None, overrides: dict | None = None, target: dict | None = None
) -> Session:
    """Load plugins, merge and check settings, run ``segcheck_configure`` once; any problem is a
    SegcheckError. ``target`` replaces default ``target`` settings (a suite's default target),
    below segcheck.yaml and ``overrides``."""
    plugins = load(plugin_specs)
    defaults = segconfig.with_sections(
        {g.section: g.defaults for g in plugins.gates.gates() if g.section and g.defaults}
    )
    segconfig.merge(defaults, {"target": dict(target or {})}, "the suite's default target")
    config = segconfig.load(config_path, overrides, defaults)
    configure(plugins.manager, config)
    return Session(plugins, segconfig.validated(config, defaults, "a segcheck_configure hook"))
