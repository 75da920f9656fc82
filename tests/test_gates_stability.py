"""perturbation_stability, corruption_robustness and the corruptions: deterministic, pure, graded by
severity, ImageNet-C's constants and definitions (against scipy's Gaussian filter and the standard
library's HSV); a model that relies on pixel-exact values fails every corruption by name; an honest
model passes; the ladder is reported with its mRR."""

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
    levels = range(6)  # 0 the mild level, 1-5 ImageNet-C's
    outputs = [perturb.corrupt(name, images, severity, seed=3) for severity in levels]
    assert np.array_equal(images, before), "a corruption must not modify its input"
    for severity, out in zip(levels, outputs):
        assert out.dtype == np.uint8 and out.shape == images.shape
        assert np.array_equal(out, perturb.corrupt(name, images, severity, seed=3))
    change = [np.abs(out.astype(float) - images).mean() for out in outputs]
    assert change[0] > 0 and all(a < b for a, b in zip(change[1:], change[2:])), change  # ImageNet-C: graded


def test_the_ladder_is_imagenet_cs_and_the_mild_level_is_unchanged():
    """Hendrycks & Dietterich's constants (``imagecorruptions``' gaussian_noise, brightness,
    contrast, gaussian_blur, jpeg_compression), and the mild level segcheck has always gated."""
    assert perturb.IMAGENET_C == {
        "gaussian_noise": (0.08, 0.12, 0.18, 0.26, 0.38),
        "brightness": (0.1, 0.2, 0.3, 0.4, 0.5),
        "contrast": (0.4, 0.3, 0.2, 0.1, 0.05),
        "gaussian_blur": (1, 2, 3, 4, 6),
        "jpeg": (25, 18, 15, 10, 7),
    }
    assert perturb.MILD == {
        "gaussian_noise": 0.05,
        "brightness": 0.10,
        "contrast": 0.70,
        "gaussian_blur": 0.5,
        "jpeg": 75,
    }
    assert {name: levels[0] for name, levels in perturb.SEVERITIES.items()} == perturb.MILD
    assert perturb.level_name(0) == "mild level" and perturb.level_name(3) == "ImageNet-C severity 3"


@pytest.mark.parametrize(("severity", "sigma"), [(0, 0.05), (1, 0.08), (5, 0.38)])
def test_noise_depends_on_the_seed_and_has_the_stated_sigma(severity, sigma):
    flat = np.full((2, 64, 64, 3), 128, np.uint8)
    noisy = perturb.gaussian_noise(flat, severity, seed=0)
    spread = (noisy.astype(float) - 128).std()
    if severity < 5:  # sigma 0.38 clips at 0 and 255
        assert spread == pytest.approx(sigma * 255, rel=0.03)
    assert not np.array_equal(noisy, perturb.gaussian_noise(flat, severity, seed=1))
    assert not np.array_equal(perturb.gaussian_noise(flat, 0, seed=0), perturb.gaussian_noise(flat, 1, seed=0))


def test_the_mild_level_keeps_its_bytes():
    """The gated level draws what it always drew: the generator seeded [seed, 1], as before."""
    flat = np.full((1, 8, 8, 3), 128, np.uint8)
    noise = np.random.default_rng([7, 1]).standard_normal(flat.shape, dtype=np.float32) * np.float32(0.05 * 255)
    expected = np.clip(np.rint(flat.astype(np.float32) + noise), 0, 255).astype(np.uint8)
    assert np.array_equal(perturb.gaussian_noise(flat, 0, seed=7), expected)


def test_photometric_corruptions_do_what_they_say():
    flat = np.full((1, 8, 8, 3), 100, np.uint8)
    assert np.all(perturb.brightness(flat, 0) == 100 + round(0.1 * 255))  # the mild level: every channel
    assert np.array_equal(perturb.contrast(flat, 3), flat)  # nothing to scale around the mean
    assert np.array_equal(perturb.gaussian_blur(flat, 3), flat)  # blur keeps constant images
    assert np.array_equal(perturb.gaussian_blur(flat, 0), flat)
    step = np.zeros((1, 8, 8, 3), np.uint8)
    step[:, :, 4:] = 200
    assert perturb.contrast(step, 0).max() == round(100 + 100 * 0.7)
    assert perturb.contrast(step, 1).max() == round(100 + 100 * 0.4)
    delta = np.zeros((1, 9, 9, 3), np.uint8)
    delta[0, 4, 4] = 255
    for severity in (0, 1):
        blurred = perturb.gaussian_blur(delta, severity)[0, :, :, 0].astype(int)
        assert np.unravel_index(blurred.argmax(), blurred.shape) == (4, 4)  # centred: no sub-pixel shift
        assert np.array_equal(blurred, blurred.T) and np.array_equal(blurred, blurred[::-1, ::-1])
    kernel = perturb.gaussian_kernel(1.0)
    assert kernel.sum() == pytest.approx(1.0) and len(kernel) == 7 and kernel.argmax() == 3


def test_imagenet_c_blur_is_scipys_gaussian_filter_as_the_reference_calls_it():
    """skimage.filters.gaussian(x / 255, sigma, channel_axis=-1) is scipy's gaussian_filter with
    mode 'nearest' and truncate 4 over the two image axes: the same up to rounding."""
    from scipy import ndimage

    images = np.random.default_rng(2).integers(0, 256, (2, 20, 30, 3), dtype=np.uint8)
    for severity, sigma in zip(perturb.LADDER, perturb.IMAGENET_C["gaussian_blur"]):
        reference = ndimage.gaussian_filter(images / 255.0, sigma=(0, sigma, sigma, 0), mode="nearest", truncate=4.0)
        ours = perturb.gaussian_blur(images, severity).astype(float)
        assert np.abs(ours - np.rint(reference * 255)).max() <= 1, severity


def test_imagenet_c_brightness_adds_to_v_in_hsv():
    """The reference converts to HSV, adds c to V (clipped at 1) and converts back: the standard
    library's colorsys does the same conversions."""
    import colorsys

    images = np.random.default_rng(4).integers(0, 256, (1, 6, 7, 3), dtype=np.uint8)
    images[0, 0, 0] = 0  # black: hue and saturation 0, becomes grey c
    images[0, 0, 1] = 255  # white: V already 1
    for severity, c in zip(perturb.LADDER, perturb.IMAGENET_C["brightness"]):
        ours = perturb.brightness(images, severity)[0]
        for y, x in np.ndindex(images.shape[1:3]):
            h, s, v = colorsys.rgb_to_hsv(*(images[0, y, x] / 255.0))
            expected = np.rint(np.array(colorsys.hsv_to_rgb(h, s, min(v + c, 1.0))) * 255)
            assert np.abs(ours[y, x].astype(float) - expected).max() <= 1, (severity, y, x)


def test_bad_corruption_arguments_are_errors(images):
    with pytest.raises(SegcheckError, match="unknown corruption 'fog'"):
        perturb.corrupt("fog", images, 1)
    with pytest.raises(SegcheckError, match=r"severity must be an integer 0..5 \(0 the mild level"):
        perturb.jpeg(images, 6)
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
            f"{name} ({parameter}, mild level): agreement with clean prediction {result.value:.3f} (min 0.90)"
            in result.message
        )
        assert "fragile low-level cues" in result.message


def test_honest_model_is_stable_at_low_severity(make_target):
    target = make_target(eval_size=8)
    for name in gates.CORRUPTIONS:
        result = gates.perturbation_stability(target, CFG, name)
        assert result.passed, result.message
        d = result.details
        assert d["severity"] == 0 and d["level"] == "mild level" and d["parameter"] == perturb.MILD[name]
        assert d["miou_drop"] == pytest.approx(d["clean_miou"] - d["miou"]) and d["miou_drop"] <= 0.05


def test_gated_severity_must_exist(make_target):
    with pytest.raises(SegcheckError, match=r"severity must be one of 0..5"):
        gates.perturbation_stability(make_target(LowBitsModel(), eval_size=2), dict(CFG, severity=6), "jpeg")


def test_the_ladder_reports_miou_per_severity_and_the_mrr_and_shares_its_passes(make_target):
    target = make_target(eval_size=4)
    result = gates.corruption_robustness(target, CFG)
    d = result.details
    assert result.passed and result.rule == "reported" and result.value == pytest.approx(d["mrr"])
    assert set(d["miou"]) == set(gates.CORRUPTIONS) and all(set(per) == {1, 2, 3, 4, 5} for per in d["miou"].values())
    clean = target.predictions.miou
    for name, per in d["miou"].items():
        assert d["relative_robustness"][name] == pytest.approx(np.mean(list(per.values())) / clean)
        assert per[5] < per[1] <= clean + 0.02  # graded: the strongest severity hurts most
    assert d["mrr"] == pytest.approx(np.mean(list(d["relative_robustness"].values())))
    assert d["mpc"] == pytest.approx(np.mean([v for per in d["miou"].values() for v in per.values()]))
    assert d["mrr"] == pytest.approx(d["mpc"] / clean)  # Michaelis et al.'s rPC: the same number
    assert "mean relative robustness (mRR)" in result.message and "reported, not gated" in result.message
    gated = gates.perturbation_stability(target, dict(CFG, severity=3), "jpeg")  # the ladder's pass, shared
    assert gated.details["miou"] == d["miou"]["jpeg"][3] and gated.value == d["agreement"]["jpeg"][3]
    assert "(15, ImageNet-C severity 3)" in gated.message
