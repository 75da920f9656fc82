"""Fixtures for segcheck's own tests: plugins, and targets built from ad-hoc modules."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from segcheck import config as segconfig
from segcheck import plugins as segplugins
from segcheck.target import Target

REPO = Path(__file__).resolve().parents[1]


def pytest_configure(config):
    """Under xdist, one torch thread per worker (all of them busy: more would oversubscribe the
    cores); OMP_NUM_THREADS passes the same count to the gate runs the tests start themselves."""
    if hasattr(config, "workerinput"):
        os.environ["OMP_NUM_THREADS"] = "1"
        torch.set_num_threads(1)


@pytest.fixture(scope="session")
def loaded_plugins():
    return segplugins.load()


@pytest.fixture
def make_target(loaded_plugins):
    """``make_target(module=None, **kw)``: a Target on 16 synthetic-streets val images.

    With ``module``, the model under test is that nn.Module (registered as ``adhoc``);
    otherwise the bundled unet with its checkpoint.
    """

    def make(module: torch.nn.Module | None = None, eval_size: int = 16, **meta) -> Target:
        config = segconfig.load(overrides={"eval": {"size": eval_size}})
        if module is None:
            return Target(loaded_plugins, config, "unet", "synthetic-streets")
        plugins = segplugins.load()
        with plugins.models.provided_by("tests"):
            plugins.models.add("adhoc", lambda num_classes: module, **meta)
        return Target(plugins, config, "adhoc", "synthetic-streets", checkpoint=Path("none"))

    return make
