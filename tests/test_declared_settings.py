"""Settings a dataset declares (registry ``settings=``, a ``segcheck:`` mapping in ``dataset.yaml``):
their rank among the other sources, their checks, and how runs state them."""

from __future__ import annotations

import json

import pytest
import yaml

from segcheck import SegcheckError
from segcheck.session import open_session
from segcheck.target import declared_settings
from tests.test_hostile_inputs import write_folder
from tests.test_pytest_plugin import run_gates

DECLARING = """
from segcheck.hookspecs import hookimpl
from segcheck_plugins.synthetic_streets import SyntheticStreets

DECLARED = {"noise_input": {"max_miou": 0.11, "max_ratio": 0.6, "seed": 1}, "eval": {"size": 5}}


@hookimpl
def segcheck_register_datasets(registry):
    registry.add("declaring", lambda root, split: SyntheticStreets(split, length=16), settings=DECLARED)


@hookimpl
def segcheck_configure(config):
    config["noise_input"]["max_ratio"] = 0.65
    config["noise_input"]["seed"] = 2
    config["eval"]["size"] = 6
"""


def test_each_source_ranks_above_the_next_and_is_named(tmp_path):
    plugin = tmp_path / "declaring.py"
    plugin.write_text(DECLARING)
    config_file = tmp_path / "segcheck.yaml"
    config_file.write_text(yaml.safe_dump({"noise_input": {"seed": 3}, "eval": {"size": 7}}))
    session = open_session([str(plugin)], config_file, {"eval": {"size": 8}})
    config, sources = session.settings(declared_settings(session.plugins, "declaring", None))
    hook = f"a segcheck_configure hook ({plugin})"
    assert sources["noise_input.max_miou"] == (0.11, "dataset 'declaring'")  # the dataset over the defaults
    assert sources["noise_input.max_ratio"] == (0.65, hook)  # a hook over the dataset
    assert sources["noise_input.seed"] == (3, str(config_file))  # segcheck.yaml over a hook
    assert sources["eval.size"] == (8, "command line")  # the command line over segcheck.yaml
    assert config["noise_input"] == {"max_miou": 0.11, "max_ratio": 0.65, "seed": 3}
    assert "noise_input.max_miou" not in session.settings()[1]  # without the dataset: the default
    assert session.config["noise_input"]["max_miou"] == 0.10


def test_a_value_set_back_to_its_default_is_not_listed():
    session = open_session()
    config, sources = session.settings([("dataset 'x'", {"noise_input": {"max_miou": 0.2}})])
    assert sources == {"noise_input.max_miou": (0.2, "dataset 'x'")}
    layered = open_session(overrides={"eval": {"size": 32}}).settings([("dataset 'x'", {"eval": {"size": 4}})])
    assert "eval.size" not in layered[1] and layered[0]["eval"]["size"] == 32


@pytest.mark.parametrize(
    "declared, message",
    [
        ({"overfit_tiny": {"epochs": 0}}, "overfit_tiny.epochs is 0, outside its range [1, inf)"),
        ({"overfit_tiny": {"epochs": "many"}}, "overfit_tiny.epochs must be a whole number, got 'many'"),
        ({"overfit": {"epochs": 9}}, "unknown section 'overfit'"),
        ({"target": {"model": "unet"}}, "a dataset declares gate and eval settings, not the target section"),
        ([1, 2], "segcheck must be a mapping of settings sections"),
    ],
)
def test_a_bad_declaration_in_dataset_yaml_is_one_line_naming_the_file(pytester, declared, message):
    write_folder(pytester.path / "d")
    config = pytester.path / "d" / "dataset.yaml"
    config.write_text(config.read_text() + yaml.safe_dump({"segcheck": declared}))
    result, _ = run_gates(pytester, "--dataset", "folder", "--data-root", "d", "--checkpoint", "none")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    stderr = result.stderr.str()
    assert "dataset.yaml" in stderr and message in stderr and "Traceback" not in stderr


def test_a_folder_declaration_is_used_and_stated_in_the_header_and_the_report(pytester):
    write_folder(pytester.path / "d")
    config = pytester.path / "d" / "dataset.yaml"
    config.write_text(config.read_text() + "segcheck:\n  prediction_collapse: {min_class_fraction: 0.25}\n")
    args = ("--dataset", "folder", "--data-root", "d", "--checkpoint", "none", "-k", "prediction_collapse")
    result, report = run_gates(pytester, *args)
    result.stdout.fnmatch_lines(["segcheck settings: prediction_collapse.min_class_fraction = 0.25 (d/dataset.yaml)"])
    settings = report["targets"]["unet"]["settings"]
    assert settings == {"prediction_collapse.min_class_fraction": {"value": 0.25, "source": "d/dataset.yaml"}}
    assert report["gates"][0]["threshold"] == 0.25  # the gate judged with it


def test_each_target_of_a_manifest_gets_its_own_datasets_declarations(pytester):
    for name, limit in (("a", 0.3), ("b", 0.4)):
        write_folder(pytester.path / name)
        config = pytester.path / name / "dataset.yaml"
        config.write_text(config.read_text() + f"segcheck:\n  prediction_collapse: {{min_class_fraction: {limit}}}\n")
    manifest = {"targets": [{"name": n, "model": "unet", "checkpoint": "none", "dataset": "folder", "data_root": n}
                            for n in ("a", "b")]}  # fmt: skip
    (pytester.path / "fleet.yaml").write_text(yaml.safe_dump(manifest))
    result, report = run_gates(pytester, "--models-manifest", "fleet.yaml", "-k", "prediction_collapse")
    thresholds = {g["target"]: g["threshold"] for g in report["gates"]}
    assert thresholds == {"a": 0.3, "b": 0.4}, json.dumps(report["gates"])[:2000]
    assert report["targets"]["a"]["settings"]["prediction_collapse.min_class_fraction"]["value"] == 0.3
    result.stdout.fnmatch_lines(["segcheck: a settings: prediction_collapse.min_class_fraction = 0.3 (a/dataset.yaml)"])


def test_a_declaration_function_that_raises_is_one_line(loaded_plugins):
    from segcheck.plugins import load

    plugins = load()
    with plugins.datasets.provided_by("tests"):
        plugins.datasets.add("broken", lambda root, split: None, settings=lambda root: 1 / 0)
    with pytest.raises(SegcheckError, match="dataset 'broken': its declared settings raised ZeroDivisionError"):
        declared_settings(plugins, "broken", None)
