"""The shortcut at full strength: on synthetic-streets-shortcut the naive recipe's shipped
checkpoint learns the layout, and the layout gates say so."""

from __future__ import annotations

from segcheck import config as segconfig
from segcheck.gates import registered
from tests.conftest import REPO, build_target

NAIVE = REPO / "examples" / "checkpoints" / "unet_synthetic-streets-shortcut_naive.safetensors"
ROBUST = NAIVE.with_name("unet_synthetic-streets-shortcut_robust.safetensors")


def test_the_naive_recipe_scores_on_noise_and_does_not_beat_the_prior(loaded_plugins):
    config = segconfig.load()
    target = build_target(loaded_plugins, config, "unet", "synthetic-streets-shortcut", checkpoint=NAIVE)
    gates = {g.name: g for g in loaded_plugins.gates.gates()}
    noise = registered.run(gates["noise_input"], target, config)
    prior = registered.run(gates["positional_prior"], target, config)
    assert not noise.passed and not prior.passed
    real = prior.details["real_miou"]
    assert noise.value >= 0.6 * real  # the field reports' pattern: noise scores most of what real images do
    assert real < prior.details["prior_miou"] + 0.15


def test_the_robust_example_passes_the_layout_and_jpeg_gates(loaded_plugins):
    """The depth-4 fine-tune with JPEG views reads its images: noise, the prior, shifts and JPEG
    (its shift_equivariance margin is thin, 0.9006 against 0.90; docs/explanation/shortcut.md)."""
    config = segconfig.load()
    target = build_target(loaded_plugins, config, "unet", "synthetic-streets-shortcut", checkpoint=ROBUST)
    gates = {g.name: g for g in loaded_plugins.gates.gates()}
    for name in ("noise_input", "positional_prior", "shift_equivariance", "perturbation_stability[jpeg]"):
        result = registered.run(gates[name], target, config)
        assert result.passed, result.message


def test_the_bundled_default_reads_its_images_where_the_naive_checkpoint_does_not(loaded_plugins):
    """The shipped fine-tune (plugins/checkpoints, the variant's default): the layout gates and
    the agreement gates pass, with margins of 0.021 (shift) and 0.024 (JPEG) at 1, 2 and 4 threads."""
    config = segconfig.load()
    target = build_target(loaded_plugins, config, "unet", "synthetic-streets-shortcut")
    assert target.model.provenance["checkpoint"].endswith("unet_synthetic-streets-shortcut_robust.safetensors")
    gates = {g.name: g for g in loaded_plugins.gates.gates()}
    for name in ("noise_input", "positional_prior", "shift_equivariance", "perturbation_stability[jpeg]"):
        result = registered.run(gates[name], target, config)
        assert result.passed, result.message


def test_the_overfit_budget_example_is_a_valid_config():
    config = segconfig.load(REPO / "examples" / "shortcut-overfit-budget.yaml")
    assert config["overfit_tiny"] == {
        **segconfig.DEFAULTS["overfit_tiny"],
        "epochs": 120,
        "lr": 0.001,
        "class_weight_power": 1.0,
    }
