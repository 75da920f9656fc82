"""positional_prior: a model that only knows where classes usually are fails; an honest one passes."""

import numpy as np
import pytest

from segcheck import config as segconfig
from segcheck import gates
from segcheck.data import DatasetSpec
from segcheck.layout import majority_map, resize_nearest
from tests.models import PositionalModel

CFG = segconfig.DEFAULTS["positional_prior"]


def test_positional_model_fails_with_real_and_prior_miou_in_the_message(make_target):
    result = gates.positional_prior(make_target(PositionalModel(), eval_size=8), CFG)
    assert not result.passed
    prior = result.details["prior_miou"]
    assert result.threshold == pytest.approx(prior + 0.15)
    # the model *is* (a 64-image estimate of) the prior: it scores about what the prior scores
    assert result.value == pytest.approx(prior, abs=0.05)
    assert f"real mIoU {result.value:.3f} vs positional prior {prior:.3f}" in result.message
    assert f"< {result.threshold:.3f}" in result.message
    assert "learnt the layout, not the appearance" in result.message


def test_honest_model_beats_the_prior_by_the_margin(make_target):
    result = gates.positional_prior(make_target(eval_size=8), CFG)
    assert result.passed, result.message
    assert result.value >= result.details["prior_miou"] + 0.15
    assert result.details["train_samples"] == CFG["train_samples"]


def test_margin_is_configurable(make_target):
    result = gates.positional_prior(make_target(eval_size=8), dict(CFG, margin=1.0))
    assert not result.passed and "margin 1.00" in result.message


def test_majority_map_counts_classes_and_skips_ignore_pixels():
    spec = DatasetSpec(classes=("a", "b", "c"))
    masks = np.array([[[0, 1], [2, 255]], [[0, 1], [1, 255]], [[1, 1], [1, 255]]])
    # column 1 row 1 is ignored everywhere: it gets the overall majority class (1)
    assert majority_map(masks, spec).tolist() == [[0, 1], [1, 1]]


def test_resize_nearest_keeps_relative_positions():
    prior = np.array([[0, 1], [2, 3]])
    assert resize_nearest(prior, (4, 4)).tolist() == [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]]
    assert resize_nearest(np.arange(16).reshape(4, 4), (2, 2)).tolist() == [[5, 7], [13, 15]]
