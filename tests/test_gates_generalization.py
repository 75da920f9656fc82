"""generalization: a model that has memorized its eval split fails on the test split; an honest one
holds up."""

import pytest

from segcheck import SegcheckError, gates
from segcheck import config as segconfig
from tests.conftest import build_target
from tests.models import LookupModel
from tests.test_datasets import make_folder, write_config

CFG = segconfig.DEFAULTS["generalization"]


def test_model_that_memorized_the_eval_split_fails(make_target):
    module = LookupModel()
    target = make_target(module, eval_size=8)
    images, masks = target.data.images, target.data.masks
    module.memorize(target.model.normalize(images), masks)
    result = gates.generalization(target, CFG)
    assert not result.passed
    assert result.details["eval_miou"] == pytest.approx(1.0)
    assert result.details["other_miou"] < 0.2
    assert (
        f"mIoU val 1.000 vs test {result.details['other_miou']:.3f} (8 images): gap {result.value:.3f} > 0.05"
        in result.message
    )
    assert "much better on val" in result.message and "leakage" in result.message


def test_honest_model_scores_alike_on_val_and_test(make_target):
    result = gates.generalization(make_target(eval_size=16), CFG)
    assert result.passed, result.message
    assert result.details["images"] == 16 and result.value <= 0.05


def test_split_must_exist_and_differ_from_the_eval_split(make_target):
    target = make_target(LookupModel(), eval_size=2)
    with pytest.raises(SegcheckError, match="no 'holdout' split"):
        gates.generalization(target, dict(CFG, split="holdout"))
    with pytest.raises(SegcheckError, match="is the eval split itself"):
        gates.generalization(target, dict(CFG, split="val"))


def test_a_split_holding_the_eval_images_is_no_comparison(tmp_path, loaded_plugins):
    make_folder(tmp_path, stems=("a", "b", "c", "d"), size=(16, 16))  # flat layout: one image set, every split
    write_config(tmp_path)
    target = build_target(
        loaded_plugins,
        segconfig.load(overrides={"eval": {"size": 2}}),
        "unet",
        "folder",
        checkpoint="none",
        data_root=tmp_path,
    )
    with pytest.raises(gates.NoHeldOutSplit, match="split 'test' holds the same images as the eval split 'val'"):
        gates.generalization(target, CFG)
