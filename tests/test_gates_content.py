"""content_sensitivity: derangement gap, shift equivariance and input gradient catch models that do
not read their image (or cut the graph to it); an honest model passes all three."""

import numpy as np
import pytest
import torch

from segcheck import SegcheckError, gates, perturb
from segcheck import config as segconfig
from segcheck import plugins as segplugins
from segcheck.gates.content import derangement, shift_pixels
from segcheck_plugins.unet import build_unet
from tests.conftest import build_target
from tests.models import NumpyRoundTrip, PositionalModel

CFG = segconfig.DEFAULTS["content_sensitivity"]


@pytest.fixture(scope="module")
def honest(loaded_plugins):
    return build_target(loaded_plugins, segconfig.load(overrides={"eval": {"size": 8}}), "unet", "synthetic-streets")


@pytest.fixture(scope="module")
def positional():
    plugins = segplugins.load()
    with plugins.models.provided_by("tests"):
        module = PositionalModel()
        plugins.models.add("positional", lambda num_classes: module, builds_weights=True)
    return build_target(
        plugins, segconfig.load(overrides={"eval": {"size": 8}}), "positional", "synthetic-streets", checkpoint="none"
    )


def test_derangement_gap_is_zero_for_a_model_that_ignores_its_image(positional):
    result = gates.derangement_gap(positional, CFG)
    assert not result.passed
    # identical predictions for every image: other images' labels fit exactly as well as their own
    assert result.value == pytest.approx(0.0, abs=1e-12)
    assert "gap 0.000 < 0.10" in result.message and "barely depend on the image" in result.message


def test_shift_equivariance_catches_predictions_pinned_to_positions(positional):
    result = gates.shift_equivariance(positional, CFG)
    assert not result.passed
    assert result.details["worst_direction"] in ("up", "down")  # the prior changes mostly with the row
    assert f"worst ({result.details['worst_direction']}) {result.value:.3f} < 0.90" in result.message
    assert "positional shortcut" in result.message


def test_input_gradient_is_zero_for_a_model_that_ignores_its_input(positional):
    result = gates.input_gradient(positional, CFG)
    assert not result.passed and result.value == 0.0
    assert "0 over 4 images <= 1e-08" in result.message and "ignores its input" in result.message


def test_input_gradient_catches_a_graph_cut_by_numpy_preprocessing(make_target):
    target = make_target(NumpyRoundTrip(build_unet(8)), eval_size=4, divisible_by=8)
    result = gates.input_gradient(target, CFG)
    assert not result.passed and result.details["connected"] is False
    assert "numpy preprocessing" in result.message


def test_honest_model_passes_all_three(honest):
    gap = gates.derangement_gap(honest, CFG)
    shift = gates.shift_equivariance(honest, CFG)
    grad = gates.input_gradient(honest, CFG)
    assert gap.passed, gap.message
    assert shift.passed, shift.message
    assert grad.passed, grad.message
    assert set(shift.details["agreement"]) == {"down", "up", "right", "left"}
    assert shift.details["shift_px"] == 8


def test_derangement_has_no_fixed_point_and_is_seeded():
    for n in (2, 3, 8, 33):
        perm = derangement(n, seed=5)
        assert sorted(perm.tolist()) == list(range(n)) and not np.any(perm == np.arange(n))
        assert np.array_equal(perm, derangement(n, seed=5))
    with pytest.raises(SegcheckError, match="at least 2 eval images"):
        derangement(1, seed=0)


def test_shift_is_rounded_up_to_the_models_stride():
    assert shift_pixels(8, 8) == 8 and shift_pixels(5, 8) == 8 and shift_pixels(9, 8) == 16 and shift_pixels(3, 1) == 3


@pytest.mark.parametrize("offset", [3, -3])
@pytest.mark.parametrize("axis", [1, 2])
def test_shift_moves_content_without_wrapping(offset, axis):
    a = np.arange(2 * 6 * 7).reshape(2, 6, 7)
    shifted = perturb.shift(a, offset, axis)
    assert shifted.shape == a.shape
    new, old = perturb.valid_slices(3, offset, axis)
    assert np.array_equal(shifted[new], a[old])
    # the uncovered edge repeats the border, never content from the opposite side
    edge = [slice(None)] * 3
    edge[axis] = slice(0, offset) if offset > 0 else slice(offset, None)
    border = np.take(a, [0 if offset > 0 else a.shape[axis] - 1], axis=axis)
    assert np.array_equal(shifted[tuple(edge)], np.repeat(border, abs(offset), axis=axis))
    assert np.array_equal(perturb.shift(torch.from_numpy(a), offset, axis).numpy(), shifted)
    with pytest.raises(SegcheckError, match="non-zero and smaller"):
        perturb.shift(a, a.shape[axis], axis)
