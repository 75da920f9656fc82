"""The plugin manager: built-ins, entry points, --plugin files and modules, hook validation."""

import textwrap

import pytest

from segcheck import SegcheckError, plugins

MY_ARCH = """
import torch
from segcheck.hookspecs import hookimpl

@hookimpl
def segcheck_register_models(registry):
    registry.add("mynet", lambda num_classes: torch.nn.Conv2d(3, num_classes, 1), description="1x1 conv")
"""


def test_builtins_register_models_datasets_and_metrics(loaded_plugins):
    assert {
        "unet",
        "deeplabv3_resnet50",
        "deeplabv3_resnet101",
        "deeplabv3_mobilenet_v3_large",
        "fcn_resnet50",
        "fcn_resnet101",
        "lraspp_mobilenet_v3_large",
    } <= set(loaded_plugins.models.names())
    assert {"synthetic-streets", "folder"} <= set(loaded_plugins.datasets.names())
    assert loaded_plugins.models.get("unet").plugin == "segcheck_plugins.unet"
    assert "segcheck" in loaded_plugins.metrics


def test_plugin_file_adds_a_model(tmp_path):
    path = tmp_path / "my_arch.py"
    path.write_text(MY_ARCH)
    loaded = plugins.load([str(path)])
    entry = loaded.models.get("mynet")
    assert entry.plugin == str(path)
    assert entry.obj(5).out_channels == 5


def test_plugin_module_by_name(tmp_path, monkeypatch):
    (tmp_path / "my_arch_mod.py").write_text(MY_ARCH)
    monkeypatch.syspath_prepend(tmp_path)
    assert "mynet" in plugins.load(["my_arch_mod"]).models


def test_entry_point_plugin_is_loaded(tmp_path, monkeypatch):
    (tmp_path / "segcheck_fake.py").write_text(MY_ARCH)
    dist = tmp_path / "segcheck_fake-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: segcheck-fake\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[segcheck]\nfake = segcheck_fake\n")
    monkeypatch.syspath_prepend(tmp_path)
    loaded = plugins.load()
    assert loaded.models.get("mynet").plugin == "fake"
    assert "mynet" not in plugins.load(entry_points=False).models


def test_misspelled_hook_is_an_error(tmp_path):
    path = tmp_path / "typo.py"
    path.write_text("def segcheck_register_model(registry):\n    pass\n")
    with pytest.raises(SegcheckError, match="segcheck_register_model.*segcheck hooks are"):
        plugins.load([str(path)])


def test_duplicate_model_across_plugins_is_an_error(tmp_path):
    path = tmp_path / "dup.py"
    path.write_text(
        textwrap.dedent("""
        def segcheck_register_models(registry):
            registry.add("unet", lambda num_classes: None)
    """)
    )
    with pytest.raises(SegcheckError, match="model 'unet' registered twice"):
        plugins.load([str(path)])


@pytest.mark.parametrize(
    "spec, match", [("missing_file.py", "no such file"), ("no_such_module_xyz", "cannot import it")]
)
def test_bad_plugin_specs(spec, match):
    with pytest.raises(SegcheckError, match=match):
        plugins.load([spec])


def test_plugin_that_fails_to_import_names_the_error(tmp_path):
    path = tmp_path / "broken.py"
    path.write_text("raise RuntimeError('boom')\n")
    with pytest.raises(SegcheckError, match="failed to import: RuntimeError: boom"):
        plugins.load([str(path)])
