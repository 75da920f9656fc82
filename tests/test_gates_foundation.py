"""noise_input and the foundation audits: defective models fail with a reason, honest ones pass."""

import re

import numpy as np
import pytest

from segcheck import config as segconfig
from segcheck import gates
from segcheck.data import EvalData
from segcheck.perturb import NOISE_KINDS, noise_pixels
from segcheck.target import Target
from tests.conftest import REPO, build_target
from tests.models import ConstantModel, PositionalModel

NOISE_CFG = segconfig.DEFAULTS["noise_input"]


def test_positional_model_fails_noise_input_with_its_measured_miou(make_target):
    result = gates.noise_input(make_target(PositionalModel()), NOISE_CFG)
    assert not result.passed
    assert result.value >= 0.10
    assert f"{result.value:.3f}" in result.message
    assert "pixel position, not content" in result.message
    # it scores about as well on noise as on real images, since it never reads them
    assert result.value == pytest.approx(result.details["real_miou"], abs=1e-9)


def test_honest_trained_model_passes_noise_input(make_target):
    result = gates.noise_input(make_target(), NOISE_CFG)
    assert result.passed, result.message
    assert f"constant-class floor {result.details['constant_class_floor']:.3f}" in result.message
    assert result.details["real_miou"] > 0.7
    assert set(result.details["noise_miou"]) == set(NOISE_KINDS)


def test_noise_input_ratio_rule_catches_a_weak_model_below_the_absolute_threshold(make_target):
    # A model that scores little anywhere, with noise no worse than real images, is not reading its input.
    cfg = dict(NOISE_CFG, max_miou=0.99)
    result = gates.noise_input(make_target(PositionalModel()), cfg)
    assert not result.passed and result.threshold == pytest.approx(cfg["max_ratio"] * result.details["real_miou"])
    assert "pixel position, not content" in result.message  # one fixed map on every noise image: a layout


def test_constant_class_floor_above_threshold_is_explained_not_blamed(make_target):
    cfg = dict(NOISE_CFG, max_miou=0.03)  # below the floor of predicting one class everywhere (0.036 here)
    result = gates.noise_input(make_target(), cfg)
    assert result.details["constant_class_floor"] >= 0.03 and result.value < 0.7 * result.details["real_miou"]
    assert not result.passed
    assert "constant-class floor" in result.message
    assert f"set noise_input.max_miou above {result.value:.2f}" in result.message
    # following the advice passes
    assert gates.noise_input(make_target(), dict(cfg, max_miou=round(result.value, 2) + 0.01)).passed


def test_a_model_that_ignores_its_image_is_blamed_even_below_the_floor(make_target):
    cfg = dict(NOISE_CFG, max_miou=0.02)
    result = gates.noise_input(make_target(ConstantModel(value=0.0)), cfg)
    # the model, not the threshold, is blamed: it predicts one class whatever it sees
    assert not result.passed and "the model predicts one class, 'road', everywhere" in result.message
    assert "cannot separate content from prior" not in result.message


def test_model_far_above_the_floor_is_blamed_even_when_the_floor_beats_the_threshold(make_target):
    cfg = dict(NOISE_CFG, max_miou=0.02)  # below the floor, as with few classes
    result = gates.noise_input(make_target(PositionalModel()), cfg)
    assert result.value - result.details["constant_class_floor"] >= 0.02
    assert not result.passed and "pixel position, not content" in result.message, result.message


def test_noise_kinds_are_seeded_and_in_pixel_range():
    shape = (2, 8, 8, 3)
    for kind in NOISE_KINDS:
        a = noise_pixels(kind, shape, (0.5,) * 3, (0.2,) * 3, np.random.default_rng(1))
        b = noise_pixels(kind, shape, (0.5,) * 3, (0.2,) * 3, np.random.default_rng(1))
        assert a.shape == shape and np.array_equal(a, b)
        if kind != "gaussian":
            assert a.min() >= 0 and a.max() <= 255
    with pytest.raises(ValueError, match="unknown noise kind"):
        noise_pixels("pink", shape, (0.5,) * 3, (0.2,) * 3, np.random.default_rng(1))


def test_head_with_wrong_channel_count_fails(make_target):
    result = gates.head_matches_classes(make_target(ConstantModel(channels=9)))
    assert not result.passed
    assert "9 channels" in result.message and "8 classes" in result.message


def test_head_matching_classes_passes(make_target):
    assert gates.head_matches_classes(make_target()).passed


def test_output_size_accepts_uniform_downscale_and_rejects_wrong_aspect(make_target):
    assert gates.output_size(make_target(ConstantModel(stride=4))).passed
    result = gates.output_size(make_target(ConstantModel(stride=2, aspect_bug=True)))
    assert not result.passed and "aspect ratio" in result.message


def test_finite_outputs_catches_nan(make_target):
    result = gates.finite_outputs(make_target(ConstantModel(value=float("nan"))))
    assert not result.passed and "NaN" in result.message
    assert gates.finite_outputs(make_target()).passed


def test_label_integrity_catches_out_of_range_and_empty_masks(make_target):
    target = make_target(ConstantModel())
    images, masks = target.data.images, target.data.masks
    masks = masks.copy()
    masks[0, :2, :2] = 12
    masks[1] = target.data.spec.ignore_index
    target = Target(target.model, EvalData(images, masks, target.data.spec))  # the eval sample only
    result = gates.label_integrity(target)
    assert not result.passed
    assert re.search(r"labels \[12\] outside 0\.\.7", result.message)
    assert "1 masks have no counted pixel (val (eval sample)[1])" in result.message


def test_label_integrity_passes_on_clean_data(make_target):
    assert gates.label_integrity(make_target()).passed


def test_shipped_naive_checkpoint_reproduces_the_shortcut(loaded_plugins):
    naive = REPO / "plugins/checkpoints/unet_synthetic-streets_naive.safetensors"
    target = build_target(loaded_plugins, segconfig.load(), "unet", "synthetic-streets", checkpoint=naive)
    result = gates.noise_input(target, NOISE_CFG)
    assert result.details["real_miou"] > 0.9  # it segments real images well...
    assert not result.passed  # ...and still scores on noise


def test_matched_noise_has_the_eval_datas_own_channel_statistics(make_target):
    noise = noise_pixels("matched", (4, 64, 64, 3), (0.5,) * 3, (0.2,) * 3, np.random.default_rng(0),
                         data_mean=(0.1, 0.5, 0.9), data_std=(0.05, 0.05, 0.05))  # fmt: skip
    assert np.allclose(noise.reshape(-1, 3).mean(0) / 255, (0.1, 0.5, 0.9), atol=0.01)
    target = make_target(eval_size=4)
    result = gates.noise_input(target, NOISE_CFG)
    pixels = target.data.images.reshape(-1, 3) / 255
    assert np.allclose(result.details["data_mean"], pixels.mean(0)) and np.allclose(result.details["data_std"],
                                                                                     pixels.std(0))  # fmt: skip
