"""Build the pluggy PluginManager and fill the model, dataset, metric and gate registries.

Plugins come from, in order: the built-in modules (``BUILTIN_PLUGINS``, registered exactly
like external ones), installed packages of the ``segcheck`` entry-point group, and the
files or modules the user names with ``--plugin``. A model or dataset may also be named by
its callable, ``module.path:callable`` or ``file.py:callable`` (``segcheck.references``).
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import pluggy

from segcheck import SegcheckError, hookspecs
from segcheck.gates.registered import GateRegistry
from segcheck.references import import_file, importable
from segcheck.registry import Registry
from segcheck.scoring import ScorerRegistry

#: built-in plugins that need an optional extra: module -> (the package it needs, the extra,
#: the prefix, or a tuple of prefixes, of the names it registers). Without the package the
#: plugin is absent, with a note.
OPTIONAL_PLUGINS = {
    "segcheck_plugins.smp_models": ("segmentation_models_pytorch", "smp", "smp:"),
    "segcheck_plugins.hf_models": ("transformers", "hf", ("hf:", "hf-clipseg")),
    "segcheck.gates.label_quality": ("cleanlab", "audits", "label_quality"),
}


def _gate_modules() -> tuple[str, ...]:
    """The modules of ``segcheck.gates`` that register gates (each one a built-in plugin), but
    those of :data:`OPTIONAL_PLUGINS` (registered when their extra is installed)."""
    import segcheck.gates

    names = (f"segcheck.gates.{m.name}" for m in pkgutil.iter_modules(segcheck.gates.__path__))
    names = (n for n in names if n not in OPTIONAL_PLUGINS)
    return tuple(n for n in names if hasattr(importlib.import_module(n), "segcheck_register_gates"))


BUILTIN_PLUGINS = (
    *_gate_modules(),
    "segcheck.checkpoint",
    "segcheck.scoring",
    "segcheck_plugins.unet",
    "segcheck_plugins.torchvision_models",
    "segcheck_plugins.synthetic_streets",
    "segcheck_plugins.synthetic_drywall",
    "segcheck_plugins.folder",
    "segcheck_plugins.prompted_folder",
    "segcheck_plugins.streethazards",
    "segcheck_plugins.smiyc",
    "segcheck_plugins.cityscapes",
    "segcheck_plugins.ade20k",
    "segcheck_plugins.voc",
    "segcheck_plugins.reference_metrics",
)
# The metadata each registry recognises (documented in segcheck.hookspecs).
MODEL_META = (
    "num_classes",
    "mean",
    "std",
    "binary",
    "prompted",
    "divisible_by",
    "aux_prefix",
    "frozen",
    "checkpoint_folder",
    "checkpoints",
    "wraps",
    "args",
    "builds_weights",
    "description",
)
DATASET_META = ("needs_root", "settings", "description")
METRIC_META = ("kind", "description", "min_classes", "absent")
#: what a registered metric may declare (documented in segcheck.hookspecs)
METRIC_CHOICES = {"kind": ("per_class_iou",), "absent": ("nan", "zero"), "min_classes": tuple(range(1, 65))}


@dataclass
class Plugins:
    """The plugin manager and the registries its plugins filled."""

    manager: pluggy.PluginManager
    models: Registry
    datasets: Registry
    metrics: Registry
    gates: GateRegistry
    scorers: ScorerRegistry
    absent: dict[str, str] = field(default_factory=dict)  # optional built-in plugin -> why it is absent

    def plugin_names(self) -> list[str]:
        return [name for name, plugin in self.manager.list_name_plugin() if plugin is not None]


def import_plugin(spec: str) -> ModuleType:
    """Import ``spec``: a path to a ``.py`` file or a dotted module name. The file's folder and
    the invocation folder are importable (``segcheck.references.importable``), so a plugin file
    may import the user's own modules beside it."""
    path = Path(spec)
    if spec.endswith(".py") or path.exists():
        if not path.is_file():
            raise SegcheckError(f"--plugin {spec}: no such file; give a .py file or an importable module name")
        try:
            return import_file(path, "segcheck_user_plugin")
        except Exception as exc:
            raise SegcheckError(f"--plugin {spec} failed to import: {type(exc).__name__}: {exc}") from exc
    importable()
    try:
        return importlib.import_module(spec)
    except ImportError as exc:
        raise SegcheckError(
            f"--plugin {spec}: cannot import it ({exc}); give a .py file or an importable module"
        ) from exc


class _Manager(pluggy.PluginManager):
    """Treats any ``segcheck_*`` function of a plugin as a hook implementation (as pytest does
    with ``pytest_*``), so a misspelled hook name is caught by ``check_pending``."""

    def parse_hookimpl_opts(self, plugin, name):
        opts = super().parse_hookimpl_opts(plugin, name)
        if opts is None and name.startswith(hookspecs.PROJECT + "_") and callable(getattr(plugin, name, None)):
            return {}
        return opts


def _fill(manager: pluggy.PluginManager, hook_name: str, registry: Registry, *, lifo: bool = True, **more) -> Registry:
    """Call each implementation of ``hook_name`` (in pluggy's order, or in registration order
    when not ``lifo``: built-ins first) with ``registry`` (and ``more``), attributing entries to it."""
    impls = getattr(manager.hook, hook_name).get_hookimpls()
    for impl in reversed(impls) if lifo else impls:
        with registry.provided_by(impl.plugin_name):
            call_hook(impl, hook_name, registry=registry, **more)
    return registry


def call_hook(impl, hook_name: str, **kwargs):
    """Call one hook implementation; an exception it raises becomes one line naming the plugin."""
    try:
        return impl.function(**{arg: kwargs[arg] for arg in impl.argnames})
    except SegcheckError:
        raise
    except Exception as exc:
        raise SegcheckError(
            f"plugin {impl.plugin_name}: its {hook_name} raised {type(exc).__name__}: {exc}; fix the plugin "
            "or leave it out (--plugin)"
        ) from exc


def load(plugin_specs: list[str] | tuple[str, ...] = (), *, entry_points: bool = True) -> Plugins:
    """Register built-in, installed (entry points) and user plugins; fill the registries."""
    manager = _Manager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    for name in BUILTIN_PLUGINS:
        manager.register(importlib.import_module(name), name=name)
    absent = {}
    for name, (package, extra, _) in OPTIONAL_PLUGINS.items():
        try:
            manager.register(importlib.import_module(name), name=name)
        except ImportError as exc:  # the extra is not installed (or broken): the plugin is absent, with the reason
            absent[name] = f"needs {package}: pip install 'segcheck[{extra}]' ({type(exc).__name__}: {exc})"
    if entry_points:
        manager.load_setuptools_entrypoints(hookspecs.PROJECT)
    for spec in plugin_specs:
        module = import_plugin(spec)
        if manager.is_registered(module):
            continue
        manager.register(module, name=spec)
    try:
        manager.check_pending()
    except pluggy.PluginValidationError as exc:
        raise SegcheckError(f"{exc}; segcheck hooks are: {', '.join(_hook_names())}") from exc
    scorers = _fill(manager, "segcheck_register_scorers", ScorerRegistry(), lifo=False)
    hints = {OPTIONAL_PLUGINS[name][2]: f"plugin {name} is absent ({note})" for name, note in absent.items()}
    return Plugins(
        manager=manager,
        models=_fill(manager, "segcheck_register_models", Registry("model", MODEL_META, hints=hints, references=True)),
        datasets=_fill(manager, "segcheck_register_datasets", Registry("dataset", DATASET_META, references=True)),
        metrics=_fill(
            manager, "segcheck_register_metrics", Registry("metric", METRIC_META, METRIC_CHOICES, required=("kind",))
        ),
        gates=_fill(manager, "segcheck_register_gates", GateRegistry(), lifo=False, scorers=scorers),
        scorers=scorers,
        absent=absent,
    )


def _hook_names() -> list[str]:
    return sorted(name for name in vars(hookspecs) if name.startswith("segcheck_"))
