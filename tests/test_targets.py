"""The three small objects (TargetSpec, EvalData, ModelUnderTest), the one pixel rule, the
normalization precedence and the gates' needs, without pytest machinery."""

import re

import numpy as np
import pytest
import torch
import yaml

from segcheck import SegcheckError, gates
from segcheck import config as segconfig
from segcheck.data import DatasetSpec, EvalData
from segcheck.gates.registered import Gate, unmet_need
from segcheck.model import ModelUnderTest
from segcheck.session import open_session
from segcheck.target import Target, TargetSpec, resolve
from segcheck_plugins.torchvision_models import build
from tests.conftest import REPO, build_target
from tests.test_datasets import make_folder, write_config

SPEC = DatasetSpec(classes=("a", "b", "c"), anomaly_index=7)


def test_one_rule_for_which_pixels_count_numpy_and_torch():
    masks = np.array([[0, 1, 2, 7, 255]])
    assert SPEC.counted(masks).tolist() == [[True, True, True, False, False]]
    assert SPEC.closed_set(masks).tolist() == [[0, 1, 2, 255, 255]]
    t = torch.from_numpy(masks)
    assert SPEC.counted(t).tolist() == [[True, True, True, False, False]]
    assert SPEC.closed_set(t).tolist() == [[0, 1, 2, 255, 255]]
    assert SPEC.label_values == {0, 1, 2, 7, 255}
    assert DatasetSpec(("a", "b")).closed_set(masks) is masks  # nothing to map: no copy


def test_anomaly_pixels_are_out_of_closed_set_scores_but_wrong_labels_still_raise():
    data = EvalData(np.zeros((1, 1, 4, 3), np.uint8), np.array([[[0, 1, 7, 7]]]), SPEC)
    assert data.score(np.array([[[0, 1, 2, 0]]])) == 1.0  # anomaly pixels predicted anything: not counted
    with pytest.raises(SegcheckError, match=r"\[5\]"):
        data.score(np.array([[[0, 1, 2, 0]]]), np.array([[[0, 1, 5, 7]]]))


def test_target_spec_is_plain_hashable_data():
    spec = TargetSpec("unet", "synthetic-streets", model_args=(("width", 8),), tags=(("recipe", "naive"),))
    assert hash(spec) == hash(
        TargetSpec("unet", "synthetic-streets", model_args=(("width", 8),), tags=(("recipe", "naive"),))
    )
    assert spec.checkpoint is None and spec.id == "unet"


def test_fresh_never_returns_the_module_under_test():
    net = torch.nn.Conv2d(3, 2, 1)
    model = ModelUnderTest(net, builder=lambda: net)
    fresh = model.fresh(0)
    assert fresh.module is not net and fresh.module is not model.module
    with pytest.raises(SegcheckError, match="has no builder"):
        ModelUnderTest(net).fresh(0)


def test_one_forward_pass_per_eval_set_is_shared():
    calls = []

    class Counting(torch.nn.Conv2d):
        def forward(self, x):
            calls.append(len(x))
            return super().forward(x)

    data = EvalData(np.zeros((4, 8, 8, 3), np.uint8), np.zeros((4, 8, 8)), DatasetSpec(("a", "b")), batch_size=2)
    target = Target(ModelUnderTest(Counting(3, 2, 1)), data)
    first = target.predictions
    assert target.predictions is first and calls == [2, 2]


def test_docs_notebook_example_runs(capsys):
    guide = (REPO / "docs" / "guides" / "python-api.md").read_text()
    code = re.search(r"<!-- notebook-example -->\n```python\n(.*?)```", guide, re.S).group(1)
    exec(compile(code, "docs/guides/python-api.md", "exec"), {})
    out = capsys.readouterr().out
    assert re.search(r"^finite_outputs: PASS", out, re.M) and "noise_input: " in out
    assert "prediction_collapse: " in out


def _gate(*needs, section=None):
    return Gate("g", lambda target, cfg: None, section=section, needs=needs)


def test_unmet_needs_are_decided_in_one_place():
    data = EvalData(np.zeros((2, 8, 8, 3), np.uint8), np.zeros((2, 8, 8)), DatasetSpec(("a", "b")))
    target = Target(ModelUnderTest(torch.nn.Conv2d(3, 2, 1)), data)
    config = segconfig.load()
    assert "needs a 'train' split" in unmet_need(_gate("train_split"), target, config)
    assert "has no builder" in unmet_need(_gate("fresh_model"), target, config)
    assert "no 'test' split" in unmet_need(_gate("held_out_split", section="generalization"), target, config)
    assert unmet_need(_gate("labels"), target, config) is None
    with_splits = EvalData(data.images, data.masks, data.spec, splits={"train": [], "test": []})
    assert unmet_need(_gate("train_split"), Target(target.model, with_splits), config) is None


def test_unknown_needs_and_markers_are_errors():
    session = open_session()
    with session.plugins.gates.provided_by("mine.py"):
        with pytest.raises(SegcheckError, match=r"unknown needs \['gpus'\]; known: labels"):
            session.plugins.gates.add("x", lambda t, c: None, needs=("gpus",))
        with pytest.raises(SegcheckError, match=r"unknown markers \['slow'\]"):
            session.plugins.gates.add("y", lambda t, c: None, markers="slow")


def _folder(root, **config):
    make_folder(root, stems=("a", "b", "c", "d"), size=(32, 48))
    write_config(root, **config)
    return root


@pytest.mark.parametrize("explicit", [False, True])
def test_normalization_precedence_dataset_over_model_meta_explicit_over_all(tmp_path, loaded_plugins, explicit):
    root = _folder(tmp_path, mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25])
    path = tmp_path / "lraspp.pt"
    torch.save(build("lraspp_mobilenet_v3_large", 3).state_dict(), path)
    given = {"mean": (0.1, 0.2, 0.3), "std": (0.4, 0.5, 0.6)} if explicit else {}
    target = build_target(
        loaded_plugins,
        segconfig.load(overrides={"eval": {"size": 2}}),
        "lraspp_mobilenet_v3_large",
        "folder",
        checkpoint=path,
        data_root=root,
        **given,
    )
    n = target.model.normalization
    if explicit:
        assert (n.mean, n.std, n.source) == ((0.1, 0.2, 0.3), (0.4, 0.5, 0.6), n.source)
        assert n.source.startswith("explicit setting")
    else:  # the dataset declares what the weights were trained with: it wins over the model's ImageNet meta
        assert (n.mean, n.std, n.source) == ((0.5,) * 3, (0.25,) * 3, "dataset 'folder'")
    assert target.model.mean.flatten().tolist() == pytest.approx(list(n.mean))
    assert target.describe()["normalization"]["source"] == n.source


def test_model_meta_then_imagenet_when_the_dataset_declares_nothing(tmp_path, loaded_plugins):
    root = _folder(tmp_path)
    config = segconfig.load(overrides={"eval": {"size": 2}})
    tv = build_target(loaded_plugins, config, "lraspp_mobilenet_v3_large", "folder", checkpoint="none", data_root=root)
    assert tv.model.normalization.source == "model 'lraspp_mobilenet_v3_large' metadata"
    unet = build_target(loaded_plugins, config, "unet", "folder", checkpoint="none", data_root=root)
    assert unet.model.normalization.source.startswith("ImageNet")


def test_a_target_is_resolved_names_first_then_files(loaded_plugins, tmp_path):
    config = segconfig.load()
    with pytest.raises(SegcheckError, match="unknown model 'nope'"):
        resolve(loaded_plugins, TargetSpec("nope", "synthetic-streets"), config)
    with pytest.raises(SegcheckError, match=f"checkpoint {tmp_path} is a folder"):
        resolve(loaded_plugins, TargetSpec("unet", "synthetic-streets", checkpoint=tmp_path), config)


def test_segcheck_configure_changes_are_type_checked(tmp_path):
    plugin = tmp_path / "conf.py"
    plugin.write_text("def segcheck_configure(config):\n    config['noise_input']['max_miou'] = 'low'\n")
    with pytest.raises(SegcheckError, match=r"a segcheck_configure hook \(.*\): noise_input.max_miou must be a number"):
        open_session([str(plugin)])


def test_a_third_party_section_gets_its_defaults_and_yaml_overrides(tmp_path):
    plugin = tmp_path / "g.py"
    plugin.write_text(
        "def segcheck_register_gates(registry):\n"
        "    registry.add('mine', lambda t, c: None, section='mine', defaults={'limit': 0.5})\n"
    )
    (tmp_path / "s.yaml").write_text(yaml.safe_dump({"mine": {"limit": 0.75}}))
    assert open_session([str(plugin)]).config["mine"] == {"limit": 0.5}
    assert open_session([str(plugin)], tmp_path / "s.yaml").config["mine"] == {"limit": 0.75}
    assert gates.NotApplicable.__mro__[1] is SegcheckError


def test_a_builder_handing_back_the_module_under_test_gives_fresh_weights():
    net = torch.nn.Conv2d(3, 2, 1)
    with torch.no_grad():
        net.weight.fill_(5.0)  # "trained"
    fresh = ModelUnderTest(net, builder=lambda: net).fresh(0)
    assert not torch.equal(fresh.module.weight, net.weight) and float(net.weight.detach().mean()) == 5.0


def test_predictions_are_recomputed_after_the_weights_change_in_place():
    net = torch.nn.Conv2d(3, 2, 1)
    data = EvalData(np.full((2, 4, 4, 3), 200, np.uint8), np.zeros((2, 4, 4)), DatasetSpec(("a", "b")))
    target = Target(ModelUnderTest(net), data)
    with torch.no_grad():
        net.bias.copy_(torch.tensor([10.0, -10.0]))
    assert (target.predictions.labels == 0).all()
    with torch.no_grad():
        net.bias.copy_(torch.tensor([-10.0, 10.0]))
    assert (target.predictions.labels == 1).all()


@pytest.mark.parametrize(
    "manifest, message",
    [
        ({"targets": [{"model": "unet", "mean": [123, 1, 1], "std": [1, 1, 1]}]}, "eval.mean [123, 1, 1]"),
        ({"defaults": ["unet"], "targets": [{"model": "unet"}]}, "'defaults:' must be a mapping"),
        ({"targets": [{"model": "unet", "colour": "red"}]}, "unknown keys ['colour']"),
        ({"targets": [{"model": "unet"}, {"model": "unet"}]}, "several targets are called ['unet:unet_synthetic"),
    ],
)
def test_manifest_rows_are_checked(tmp_path, loaded_plugins, manifest, message):
    from segcheck.manifest import read_manifest

    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(manifest))
    with pytest.raises(SegcheckError) as info:
        read_manifest(path, loaded_plugins, {"dataset": "synthetic-streets"})
    assert message in str(info.value)


def test_manifest_model_args_are_hashable_and_relative_paths_are_the_manifests(tmp_path, loaded_plugins):
    from segcheck.manifest import read_manifest

    (tmp_path / "data").mkdir()
    (tmp_path / "fleet.yaml").write_text(yaml.safe_dump({"targets": [
        {"model": "unet", "checkpoint": "none", "model_args": {"widths": [8, 16]}, "data_root": "data"}]}))  # fmt: skip
    (spec,) = read_manifest(tmp_path / "fleet.yaml", loaded_plugins, {"dataset": "synthetic-streets"})
    assert len({spec, spec}) == 1 and spec.model_args == (("widths", (8, 16)),) and spec.data_root == tmp_path / "data"
