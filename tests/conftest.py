"""Fixtures for segcheck's own tests: plugins, and targets built from ad-hoc modules."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch._dynamo  # noqa: F401  (see below)

from segcheck import config as segconfig
from segcheck import plugins as segplugins
from segcheck.target import Target, TargetSpec, bundled_checkpoint, resolve

# torch._dynamo is imported here, before any test: pytester drops the modules a test imported
# when it ends, and torch._dynamo (imported lazily by an optimizer step, timm, transformers)
# registers torch._inductor's operator library, which cannot be registered a second time.
REPO = Path(__file__).resolve().parents[1]
BUNDLED = object()  # build_target's default checkpoint: the model's bundled one


def pytest_configure(config):
    """Under xdist, one torch thread per worker (all of them busy: more would oversubscribe the
    cores); OMP_NUM_THREADS passes the same count to the gate runs the tests start themselves."""
    if hasattr(config, "workerinput"):
        os.environ["OMP_NUM_THREADS"] = "1"
        torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    """segcheck's own ``gpu`` tests skip without CUDA (segcheck's pytest plugin skips ``gpu``
    tests only in a run that tests a target: another project's marker is left alone)."""
    if not torch.cuda.is_available():
        for item in items:
            if item.get_closest_marker("gpu") and item.get_closest_marker("gate") is None:
                item.add_marker(pytest.mark.skip(reason="needs CUDA; none available on this machine"))


def pytest_xdist_make_scheduler(config, log):
    """Under ``-n``, segcheck's own tests go to workers by module, as they always have (segcheck's
    plugin leaves xdist's scheduling alone in a run that tests no target)."""
    if config.getoption("dist") != "load":
        return None
    from xdist.scheduler import LoadScopeScheduling

    return LoadScopeScheduling(config, log)


def build_target(plugins, config: dict, model: str, dataset: str, checkpoint=BUNDLED, **spec) -> Target:
    """``resolve`` of a TargetSpec; ``checkpoint`` a path, ``"none"`` (random init) or, by
    default, the model's bundled checkpoint for the dataset."""
    path = bundled_checkpoint(plugins, model, dataset, None if checkpoint is BUNDLED else checkpoint)
    return resolve(plugins, TargetSpec(model, dataset, checkpoint=path, **{"device": "cpu", **spec}), config)


def with_model(name: str, builder, **meta):
    """Plugins with one more model, ``name`` built by ``builder(num_classes)``."""
    plugins = segplugins.load()
    with plugins.models.provided_by("tests"):
        plugins.models.add(name, builder, **meta)
    return plugins


@pytest.fixture(scope="session")
def loaded_plugins():
    return segplugins.load()


@pytest.fixture
def make_target(loaded_plugins):
    """``make_target(module=None, **kw)``: a Target on 16 synthetic-streets val images.

    With ``module``, the model under test is that nn.Module (registered as ``adhoc`` with
    ``meta``; ``fresh()`` builds what fresh copies are, by default the module re-initialized);
    otherwise the bundled unet with its checkpoint. ``mean``/``std`` are an explicit
    normalization.
    """

    def make(module=None, eval_size: int = 16, mean=None, std=None, fresh=None, **meta) -> Target:
        config = segconfig.load(overrides={"eval": {"size": eval_size}})
        if module is None:
            return build_target(loaded_plugins, config, "unet", "synthetic-streets", mean=mean, std=std)
        built = []  # the first build is the model under test; later ones are fresh copies
        meta.setdefault("builds_weights", True)  # a hand-made module is tested as built, not as a random init
        plugins = with_model(
            "adhoc",
            lambda num_classes: built.append(1) or (module if len(built) == 1 or fresh is None else fresh()),
            **meta,
        )
        return build_target(plugins, config, "adhoc", "synthetic-streets", checkpoint="none", mean=mean, std=std)

    return make
