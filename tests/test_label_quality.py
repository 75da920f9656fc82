"""label_quality on seeded defects the tests write: 10% of a split's masks with one class relabelled as
another are found at the top of its list, clean masks are flagged < 5%; a model that does not read its
images is a SKIP; without cleanlab the gate is absent with the pip command and the other gates run."""

from __future__ import annotations

import importlib.util
import json
import sys

import numpy as np
import pytest

from segcheck import SegcheckError, cli
from segcheck import config as segconfig
from segcheck import plugins as segplugins
from segcheck.gates.registered import measured, run, unmet_need
from segcheck_plugins.synthetic_streets import CLASSES, SyntheticStreets
from tests.conftest import REPO, build_target
from tests.models import ConstantModel
from tests.test_html_report import page_images
from tests.test_split_audits import write_split

needs_cleanlab = pytest.mark.skipif(importlib.util.find_spec("cleanlab") is None, reason="needs segcheck[audits]")
CHECKPOINT = REPO / "plugins" / "checkpoints" / "unet_synthetic-streets_robust.safetensors"
MODULE = "segcheck.gates.label_quality"
ROAD, SIDEWALK = CLASSES.index("road"), CLASSES.index("sidewalk")
#: the val images whose masks say sidewalk where the scene has road: 5 of 50 (10%)
RELABELLED = (4, 13, 22, 31, 47)


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    """A folder dataset of synthetic scenes: val 50 images, 5 of them with road relabelled as
    sidewalk; test 50 clean images; train 16."""
    root = tmp_path_factory.mktemp("relabelled")
    val = SyntheticStreets(split="val")
    samples = {}
    for i in range(50):
        image, mask = val[i]
        if i in RELABELLED:
            mask = np.where(mask == ROAD, SIDEWALK, mask)
        samples[f"scene{i:02d}"] = (image, mask)
    write_split(root, "val", samples)
    test = SyntheticStreets(split="test")
    write_split(root, "test", {f"clean{i:02d}": test[i] for i in range(50)})
    train = SyntheticStreets(split="train")
    write_split(root, "train", {f"train{i:02d}": train[i] for i in range(16)})
    return root


def trained_on(root, split: str = "val", **settings):
    config = segconfig.load(overrides={"eval": {"size": 50, "split": split}, **settings})
    plugins = segplugins.load()
    return build_target(plugins, config, "unet", "folder", checkpoint=CHECKPOINT, data_root=root), config, plugins


@needs_cleanlab
def test_relabelled_class_in_10_percent_of_masks_tops_the_list(seeded):
    from segcheck.gates.label_quality import label_quality

    target, config, _ = trained_on(seeded)
    result = label_quality(target, config["label_quality"])
    listed = result.details["flagged_images"]
    top = [d["image"] for d in listed[: len(RELABELLED)]]
    found = {f"val/scene{i:02d}" for i in RELABELLED} & set(top)
    assert len(found) >= 0.8 * len(RELABELLED), (top, result.message)
    assert [d["share"] for d in listed] == sorted((d["share"] for d in listed), reverse=True)  # worst first
    for d in listed[: len(found)]:
        assert d["classes"].startswith("road labelled as sidewalk")
    assert not result.passed and result.value > config["label_quality"]["max_flagged_share"]
    assert "road labelled as sidewalk" in result.message and "look at the listed images" in result.message
    assert next(iter(result.details["class_pairs"])) == "road labelled as sidewalk"


@needs_cleanlab
def test_clean_masks_are_flagged_under_5_percent(seeded):
    from segcheck.gates.label_quality import label_quality

    target, config, _ = trained_on(seeded, split="test")
    result = label_quality(target, config["label_quality"])
    assert result.passed, result.message
    assert result.value < 0.05 and result.details["flagged_images"] == []
    assert result.details["splits"]["test"]["judged_pixels"] == 50 * 64 * 128  # every labelled pixel: no ignore here


@needs_cleanlab
def test_the_train_sample_when_asked_and_a_grid_for_large_images(seeded):
    from segcheck.gates.label_quality import judged, stride_for

    target, config, _ = trained_on(seeded, split="test", label_quality={"train_images": 8, "pixels_per_image": 2048})
    cfg = config["label_quality"]
    val, train = judged(target, cfg)
    assert (val.split, train.split) == ("test", "train") and len(train.names) == 8
    assert all(name.startswith("train/train") for name in train.names)
    assert set(val.strides) == {stride_for(64, 128, 2048)} == {2}  # 8192 pixels, at most 2048: every 2nd each way
    assert max(val.judged) <= 2048
    assert judged(target, cfg) is judged(target, cfg)  # once per target and settings


@needs_cleanlab
def test_a_model_that_does_not_read_its_images_is_a_skip_naming_the_gate(make_target):
    plugins = segplugins.load()
    gate = next(g for g in plugins.gates.gates() if g.name == "label_quality")
    config = segconfig.load()
    target = make_target(ConstantModel(), eval_size=4)
    reason = unmet_need(gate, target, config)
    assert reason.startswith("label_quality judges labels by the model's own predictions, but ")
    assert "fails on this target" in reason and "fix " in reason and "\n" not in reason
    honest = make_target(eval_size=8)
    assert unmet_need(gate, honest, config) is None
    noise = next(g for g in plugins.gates.gates() if g.name == "noise_input")
    shared = measured(honest, "noise_input", noise.function, config["noise_input"])
    assert run(noise, honest, config) is shared  # noise_input's own test reuses the need's measurement


@needs_cleanlab
def test_a_weak_model_that_reads_its_images_is_a_skip_not_a_verdict_on_the_labels(loaded_plugins):
    """The shortcut variant's default scores mIoU 0.49: its own errors would read as 11% wrong labels."""
    config = segconfig.load(overrides={"eval": {"size": 8}})
    target = build_target(loaded_plugins, config, "unet", "synthetic-streets-shortcut")
    gate = next(g for g in loaded_plugins.gates.gates() if g.name == "label_quality")
    from segcheck.gates.result import NotApplicable

    with pytest.raises(NotApplicable, match=r"agrees with the eval labels on \d+\.\d% of their pixels \(< "):
        gate.function(target, config["label_quality"])


@needs_cleanlab
def test_the_skip_is_a_record_with_its_reason_from_segcheck_check():
    import segcheck

    val = SyntheticStreets(split="val")
    images, masks = (np.stack(a) for a in zip(*(val[i] for i in range(4))))
    result = segcheck.check(ConstantModel(), images, masks, classes=CLASSES, gates=["label_quality"], device="cpu")
    record = result.get("label_quality")
    assert record.outcome == "skipped" and result.passed
    assert record.message.startswith("label_quality judges labels by the model's own predictions, but noise_input")


@needs_cleanlab
def test_report_lists_flagged_images_by_file_name_and_draws_them(pytester, seeded):
    report = pytester.path / "report.json"
    result = pytester.runpytest(
        str(REPO / "suites" / "gates"), "-p", "no:cacheprovider", "-k", "label_quality", "--dataset", "folder",
        "--data-root", str(seeded), "--model", "unet", "--checkpoint", str(CHECKPOINT), "--eval-size", "50",
        "--segcheck-report", str(report), "--segcheck-html", str(pytester.path / "report.html"),
    )  # fmt: skip
    assert result.ret == 1, result.stdout.str()
    (record,) = [g for g in json.loads(report.read_text())["gates"] if g["gate"] == "label_quality"]
    assert record["outcome"] == "failed"
    names = [d["image"] for d in record["details"]["flagged_images"]]
    assert names[0] in {f"val/scene{i:02d}" for i in RELABELLED}
    page = (pytester.path / "report.html").read_text()
    page_images(page, folder=pytester.path)  # every image of the page opens
    assert record["figures"] and all(f'<a href="{f}"><img src="data:' in page for f in record["figures"])


def test_without_cleanlab_the_gate_is_absent_with_the_pip_command(monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "cleanlab" else real(name, *a))
    monkeypatch.delitem(sys.modules, MODULE, raising=False)
    loaded = segplugins.load()
    assert MODULE in loaded.absent and "pip install 'segcheck[audits]'" in loaded.absent[MODULE]
    names = [g.name for g in loaded.gates.gates()]
    assert "label_quality" not in names and {"split_leakage", "split_shift", "noise_input"} <= set(names)
    assert cli.main(["list"]) == 0
    assert f"  {MODULE}\n      needs cleanlab: pip install 'segcheck[audits]'" in capsys.readouterr().out
    import segcheck

    image, mask = SyntheticStreets(split="val")[0]
    with pytest.raises(SegcheckError, match=r"gate 'label_quality' is absent: plugin .* 'segcheck\[audits\]'"):
        segcheck.check(ConstantModel(), image[None], mask[None], classes=CLASSES, gates=["label_quality"])


def test_the_gate_run_header_names_an_absent_gate_plugin(pytester, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "cleanlab" else real(name, *a))
    monkeypatch.delitem(sys.modules, MODULE, raising=False)
    result = pytester.runpytest_inprocess(
        str(REPO / "suites" / "gates"), "-p", "no:cacheprovider", "-k", "split_leakage", "--segcheck-report", "r.json"
    )
    result.stdout.fnmatch_lines(
        ["segcheck: gates of segcheck.gates.label_quality absent: needs cleanlab: pip install*"]
    )
    assert result.ret == 0, result.stdout.str()
