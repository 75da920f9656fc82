"""perturbation_stability and the corruptions: deterministic, pure, graded by severity; a model that
relies on pixel-exact values fails every corruption by name; an honest model passes."""

import numpy as np
import pytest

from segcheck import SegcheckError, gates, perturb
from segcheck import config as segconfig
from segcheck_plugins.synthetic_streets import SyntheticStreets
from tests.models import LowBitsModel

CFG = segconfig.DEFAULTS["perturbation_stability"]


@pytest.fixture(scope="module")
def images():
    data = SyntheticStreets(split="val", length=4)
    return np.stack([data[i][0] for i in range(4)])


@pytest.mark.parametrize("name", perturb.CORRUPTIONS)
def test_corruptions_are_pure_deterministic_and_graded(name, images):
    before = images.copy()
    outputs = [perturb.corrupt(name, images, severity, seed=3) for severity in (1, 2, 3)]
    assert np.array_equal(images, before), "a corruption must not modify its input"
    for severity, out in zip((1, 2, 3), outputs):
        assert out.dtype == np.uint8 and out.shape == images.shape
        assert np.array_equal(out, perturb.corrupt(name, images, severity, seed=3))
    change = [np.abs(out.astype(float) - images).mean() for out in outputs]
    assert 0 < change[0] < change[1] < change[2], change


def test_noise_depends_on_the_seed_and_has_the_stated_sigma(images):
    flat = np.full((2, 64, 64, 3), 128, np.uint8)
    noisy = perturb.gaussian_noise(flat, 1, seed=0)
    assert (noisy.astype(float) - 128).std() == pytest.approx(0.05 * 255, rel=0.03)
    assert not np.array_equal(noisy, perturb.gaussian_noise(flat, 1, seed=1))


def test_photometric_corruptions_do_what_they_say():
    flat = np.full((1, 8, 8, 3), 100, np.uint8)
    assert np.all(perturb.brightness(flat, 1) == 100 + round(0.1 * 255))
    assert np.array_equal(perturb.contrast(flat, 3), flat)  # nothing to scale around the mean
    assert np.array_equal(perturb.gaussian_blur(flat, 3), flat)  # blur keeps constant images
    step = np.zeros((1, 8, 8, 3), np.uint8)
    step[:, :, 4:] = 200
    assert perturb.contrast(step, 1).max() == round(100 + 100 * 0.7)
    delta = np.zeros((1, 9, 9, 3), np.uint8)
    delta[0, 4, 4] = 255
    blurred = perturb.gaussian_blur(delta, 2)[0, :, :, 0].astype(int)
    assert np.unravel_index(blurred.argmax(), blurred.shape) == (4, 4)  # centred: no sub-pixel shift
    assert np.array_equal(blurred, blurred.T) and np.array_equal(blurred, blurred[::-1, ::-1])
    kernel = perturb.gaussian_kernel(1.0)
    assert kernel.sum() == pytest.approx(1.0) and len(kernel) == 7 and kernel.argmax() == 3


def test_bad_corruption_arguments_are_errors(images):
    with pytest.raises(SegcheckError, match="unknown corruption 'fog'"):
        perturb.corrupt("fog", images, 1)
    with pytest.raises(SegcheckError, match="severity must be an integer 1..3"):
        perturb.jpeg(images, 4)
    with pytest.raises(SegcheckError, match="takes uint8 images"):
        perturb.brightness(images.astype(np.float32), 1)


def test_pixel_exact_model_fails_every_corruption_naming_it(make_target):
    target = make_target(LowBitsModel(), eval_size=4, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    for name in gates.CORRUPTIONS:
        result = gates.perturbation_stability(target, CFG, name)
        assert not result.passed, result.message
        assert result.name == f"perturbation_stability[{name}]"
        assert result.value < 0.90
        parameter = perturb.SEVERITIES[name][0]
        assert (
            f"{name} ({parameter}, severity 1): agreement with clean prediction {result.value:.3f} (min 0.90)"
            in result.message
        )
        assert "fragile low-level cues" in result.message


def test_honest_model_is_stable_at_low_severity(make_target):
    target = make_target(eval_size=8)
    for name in gates.CORRUPTIONS:
        result = gates.perturbation_stability(target, CFG, name)
        assert result.passed, result.message
        assert result.details["miou_drop"] <= 0.05
        assert set(result.details["miou"]) == {1, 2, 3}
        robustness = np.mean(list(result.details["miou"].values())) / result.details["clean_miou"]
        assert result.details["relative_robustness"] == pytest.approx(robustness)


def test_gated_severity_must_exist(make_target):
    with pytest.raises(SegcheckError, match="severity must be one of"):
        gates.perturbation_stability(make_target(LowBitsModel(), eval_size=2), dict(CFG, severity=5), "jpeg")
