"""overfit_tiny and input_baseline: the gates that train."""

import dataclasses
import re
import types

import numpy as np
import pytest
import torch

from segcheck import config as segconfig
from segcheck import gates
from segcheck.gates import training
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


def test_overfit_tiny_names_failing_classes_and_objects_below_the_output_stride(make_target):
    coarse = lambda: torch.nn.Conv2d(3, 8, 8, stride=8)  # noqa: E731 -- logits at 1/8 resolution
    target = make_target(coarse(), eval_size=8, fresh=coarse, divisible_by=8)
    result = gates.overfit_tiny(target, dict(OVERFIT, epochs=2))
    assert not result.passed
    assert re.search(r"classes below 0\.90: .*pole 0\.\d{3} \(smallest object \d px across, below the output stride 8",
                     result.message), result.message  # fmt: skip
    assert set(result.details["per_class_iou"]) <= set(target.data.spec.classes)


def test_overfit_tiny_stops_above_the_bar_so_a_pass_has_room(make_target):
    result = gates.overfit_tiny(make_target(eval_size=8), OVERFIT)
    assert result.value >= OVERFIT["stop_miou"] > OVERFIT["min_miou"]


@pytest.mark.parametrize("power, expected", [(0.0, [1, 1, 1]), (0.5, [1 / 2, 1, 1]), (1.0, [1 / 4, 1, 1])])
def test_overfit_class_weights_follow_frequency_to_the_minus_power(power, expected):
    spec = types.SimpleNamespace(num_classes=3, counted=lambda m: m != 255)
    masks = np.array([[0, 0, 0, 0, 1, 2, 255, 255]])  # frequencies 4/6, 1/6, 1/6; ignore not counted
    weights = training._balanced_weights(masks, spec, power).numpy()
    assert weights.mean() == pytest.approx(1.0)
    assert weights / weights[1] == pytest.approx(expected)


def test_overfit_tiny_weights_its_loss_with_the_configured_power(make_target, monkeypatch):
    from segcheck.gates import overfit

    powers, real = [], overfit._balanced_weights
    monkeypatch.setattr(
        overfit, "_balanced_weights", lambda m, spec, power: powers.append(power) or real(m, spec, power)
    )
    gates.overfit_tiny(make_target(eval_size=8), dict(OVERFIT, epochs=1, class_weight_power=1.0))
    assert powers == [1.0]
