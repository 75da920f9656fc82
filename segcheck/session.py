"""One run's set-up, the same for pytest and ``segcheck train``: plugins loaded, and the layers
of settings merged in one order, lowest first: the defaults table (with the registered gates'
sections), a dataset's declarations, what ``segcheck_configure`` hooks change (called exactly
once, on the defaults), ``segcheck.yaml``, the command line. Every layer is checked like a YAML
file, and every value that is not a default keeps the name of the layer that set it."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

from segcheck import SegcheckError
from segcheck import config as segconfig
from segcheck.plugins import Plugins, call_hook, load


@dataclass(frozen=True)
class Session:
    """Loaded plugins, the defaults, and the layers of settings above a dataset's declarations
    (hooks, then ``segcheck.yaml``, then the command line)."""

    plugins: Plugins
    defaults: dict
    layers: tuple[segconfig.Layer, ...] = ()

    @property
    def config(self) -> dict:
        """The settings of a run without a dataset's declarations."""
        return self.settings()[0]

    def settings(self, declared: list[segconfig.Layer] | tuple = ()) -> tuple[dict, dict[str, tuple[object, str]]]:
        """The settings with a dataset's ``declared`` layers (``segcheck.target.declared_settings``)
        below the hooks, ``segcheck.yaml`` and the command line, and the source of each value
        that is not a default (``segcheck.config.layered``)."""
        for source, values in declared:
            if isinstance(values, dict) and "target" in values:
                raise SegcheckError(
                    f"{source}: a dataset declares gate and eval settings, not the target section; move it to "
                    "segcheck.yaml or the command line"
                )
        return segconfig.layered(self.defaults, [*declared, *self.layers])


def open_session(
    plugin_specs=(), config_path: Path | None = None, overrides: dict | None = None, target: dict | None = None
) -> Session:
    """Load plugins, read the settings' layers and run ``segcheck_configure`` once; any problem
    is a SegcheckError. ``target`` replaces default ``target`` settings (a suite's default
    target), below everything else."""
    plugins = load(plugin_specs)
    defaults = segconfig.with_sections(
        {g.section: g.defaults for g in plugins.gates.gates() if g.section and g.defaults}
    )
    segconfig.merge(defaults, {"target": dict(target or {})}, "the suite's default target")
    layers = [*_hook_layers(plugins, defaults)]
    if config_path is not None:
        layers.append((str(config_path), segconfig.read_file(config_path)))
    layers.append(("command line", overrides or {}))
    session = Session(plugins, defaults, tuple(layers))
    session.settings()  # every layer checked now
    return session


def _hook_layers(plugins: Plugins, defaults: dict) -> list[segconfig.Layer]:
    """What each ``segcheck_configure`` hook changes (in pluggy's order, each on the result of the
    ones before, starting from the defaults), one layer per hook, checked like YAML."""
    config, layers = copy.deepcopy(defaults), []
    for impl in reversed(plugins.manager.hook.segcheck_configure.get_hookimpls()):
        before = copy.deepcopy(config)
        call_hook(impl, "segcheck_configure", config=config)
        source = f"a segcheck_configure hook ({impl.plugin_name})"
        config = segconfig.validated(config, defaults, source)
        layers.append((source, segconfig.changes(before, config)))
    return layers
