"""overfit_tiny and input_baseline: the gates that train."""

import dataclasses

import pytest
import torch

from segcheck import config as segconfig
from segcheck import gates
from segcheck.model import ModelUnderTest
from segcheck_plugins.unet import build_unet
from tests.models import FrozenHead, PositionalModel
from tests.test_gates_collapse import binary_target

OVERFIT = segconfig.DEFAULTS["overfit_tiny"]
BASELINE = dict(segconfig.DEFAULTS["input_baseline"], steps=40)


def test_overfit_tiny_passes_for_the_bundled_unet_and_says_after_how_many_steps(make_target):
    result = gates.overfit_tiny(make_target(eval_size=8), OVERFIT)
    assert result.passed, result.message
    assert result.details["epochs"] <= OVERFIT["epochs"]
    assert f"after {result.details['epochs']} epochs ({result.details['steps']} steps)" in result.message


def test_overfit_tiny_fails_when_no_gradient_reaches_the_weights(make_target):
    result = gates.overfit_tiny(make_target(FrozenHead(build_unet(8)), eval_size=8), dict(OVERFIT, epochs=5))
    assert not result.passed
    assert result.value < 0.9 and "cannot even memorize ten samples" in result.message
    assert result.details["epochs"] == 5 and result.details["steps"] == 5 * 5  # 10 samples, batches of 2


def test_training_gates_never_train_the_model_under_test(make_target):
    target = make_target(build_unet(8), eval_size=8)  # the builder hands back the model under test itself
    before = {k: v.clone() for k, v in target.model.module.state_dict().items()}
    gates.overfit_tiny(target, dict(OVERFIT, epochs=1))
    after = target.model.module.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_overfit_tiny_trains_a_binary_model_with_its_own_loss():
    """One sigmoid channel: the training gates use BCE like the audits (cross-entropy over one
    channel used to fail with 'Target 1 is out of bounds')."""
    result = gates.overfit_tiny(binary_target(build_unet(1)), OVERFIT)
    assert result.passed, result.message
    assert result.details["history"][-1] >= OVERFIT["min_miou"]


def test_input_baseline_passes_for_a_model_that_reads_its_images(make_target):
    result = gates.input_baseline(make_target(eval_size=16), BASELINE)
    assert result.passed, result.message
    assert result.details["baseline_miou"] < result.details["real_miou"] - 0.15


def test_input_baseline_fails_for_a_model_that_only_knows_positions(make_target):
    target = make_target(build_unet(8), eval_size=16)  # the architecture the baseline trains
    positional = ModelUnderTest(PositionalModel(), builder=target.model.builder)  # ...but the model under test
    target = dataclasses.replace(target, model=positional)  # ignores its images
    result = gates.input_baseline(target, BASELINE)
    assert not result.passed
    assert f"{result.details['real_miou']:.3f}" in result.message and "never sees the image" in result.message
    assert result.details["baseline_miou"] == pytest.approx(result.details["real_miou"], abs=0.15)
