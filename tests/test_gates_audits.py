"""The configured audits (loss at init, gradient coverage, batch independence, deterministic eval,
input normalization, CPU vs CUDA): each defect fails with its numbers and cause; honest models pass."""

import copy

import numpy as np
import pytest
import torch

from segcheck import SegcheckError, gates
from segcheck import config as segconfig
from segcheck import plugins as segplugins
from segcheck_plugins.unet import build_unet
from tests.conftest import build_target
from tests.models import AlwaysDropout, AuxNet, BatchStatsModel, ConstantModel, DeviceDependent, HotHead, LookupModel

CFG = segconfig.DEFAULTS
MMSEG_MEAN, MMSEG_STD = (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)  # 0-255 scale, as mmseg configs write them


@pytest.fixture(scope="module")
def honest(loaded_plugins):
    return build_target(loaded_plugins, segconfig.load(overrides={"eval": {"size": 4}}), "unet", "synthetic-streets")


def aux_target(return_aux: bool):
    """A torchvision-style model (meta ``aux_prefix``) whose builder adds the aux head only on request."""
    plugins = segplugins.load()
    with plugins.models.provided_by("tests"):
        plugins.models.add(
            "auxnet", lambda num_classes, aux_loss=False: AuxNet(num_classes, aux_loss, return_aux), aux_prefix="aux."
        )
    return build_target(
        plugins, segconfig.load(overrides={"eval": {"size": 2}}), "auxnet", "synthetic-streets", checkpoint="none"
    )


# --- loss at initialization ----------------------------------------------------------------------


def test_head_initialized_too_large_fails_loss_at_init(make_target):
    result = gates.loss_at_init(make_target(HotHead(), eval_size=4, fresh=HotHead), CFG["loss_at_init"])
    assert not result.passed
    loss = result.details["loss"]
    assert loss > 10
    assert f"loss at initialization {loss:.3f} vs ln(8) = 2.079" in result.message
    assert "(max 1.040 = 0.5 x ln 8)" in result.message and "confidently wrong" in result.message


def test_model_that_already_knows_the_labels_fails_loss_at_init(make_target):
    module = LookupModel()  # a "builder" that hands out a model already trained on these labels
    target = make_target(module, eval_size=4, fresh=lambda: copy.deepcopy(module))
    module.memorize(target.model.normalize(target.data.images), target.data.masks)
    result = gates.loss_at_init(target, CFG["loss_at_init"])
    assert not result.passed and result.details["loss"] < 0.1
    assert "already beats chance before training" in result.message


def test_fresh_unet_starts_near_ln_c(honest):
    result = gates.loss_at_init(honest, CFG["loss_at_init"])
    assert result.passed, result.message
    assert result.details["loss"] == pytest.approx(np.log(8), abs=1.04)


# --- gradient coverage ---------------------------------------------------------------------------


def test_aux_head_that_never_trains_is_named():
    result = gates.gradient_coverage(aux_target(return_aux=False), CFG["gradient_coverage"])
    assert not result.passed
    assert result.details["builder_kwargs"] == {"aux_loss": True}
    assert result.details["without_gradient"] == ["aux.weight", "aux.bias"]
    assert "4 of 6 trainable parameter tensors receive a gradient; none reaches aux.weight, aux.bias" in result.message
    assert "auxiliary head left out of the loss" in result.message


def test_aux_head_in_the_output_is_trained_through_the_aux_loss():
    result = gates.gradient_coverage(aux_target(return_aux=True), CFG["gradient_coverage"])
    assert result.passed, result.message
    assert result.details["trainable"] == 6


def test_fresh_unet_trains_every_parameter(honest):
    result = gates.gradient_coverage(honest, CFG["gradient_coverage"])
    assert result.passed, result.message
    assert result.value == 0 and result.details["trainable"] > 10


def test_unet_training_heads_are_trained_through_their_losses(loaded_plugins):
    """The recon and embed heads exist only for their recipes' losses (MSE, pixel contrast)."""
    config = segconfig.load(overrides={"eval": {"size": 2}})
    heads = (("recon_head", True), ("embed_head", True))
    target = build_target(loaded_plugins, config, "unet", "synthetic-streets", checkpoint="none", model_args=heads)
    assert target.model.module.recon is not None and target.model.module.embed is not None
    result = gates.gradient_coverage(target, CFG["gradient_coverage"])
    assert result.passed, result.message


# --- batch independence and deterministic eval -----------------------------------------------------


def test_batch_statistics_in_eval_mode_fail_batch_independence(make_target):
    result = gates.batch_independence(make_target(BatchStatsModel(), eval_size=4), CFG["batch_independence"])
    assert not result.passed and result.value > result.threshold
    assert f"between a batch of 4 and single images {result.value:.3g} (max {result.threshold:.3g})" in result.message
    assert "BatchNorm left in train mode" in result.message


def test_dropout_left_on_fails_deterministic_eval(make_target):
    result = gates.deterministic_eval(make_target(AlwaysDropout(), eval_size=4), CFG["deterministic_eval"])
    assert not result.passed and result.details["changed_pixels"] > 0
    assert f"between two eval passes {result.value:.3g}" in result.message and "dropout" in result.message


def test_honest_model_is_batch_independent_and_deterministic(honest):
    for audit in (gates.batch_independence, gates.deterministic_eval):
        result = audit(honest, CFG[audit.__name__])
        assert result.passed, result.message


# --- input normalization ---------------------------------------------------------------------------


def test_mean_std_in_0_255_scale_squash_the_inputs(make_target):
    target = make_target(ConstantModel(), eval_size=4, mean=MMSEG_MEAN, std=MMSEG_STD)
    result = gates.input_normalization(target, CFG["input_normalization"])
    assert not result.passed
    assert max(result.details["std"]) < 0.01
    assert "std 0.25..4" in result.message and "given in 0-255 scale" in result.message


def test_inputs_left_in_0_255_fail(make_target):
    target = make_target(ConstantModel(), eval_size=4, mean=(0.0, 0.0, 0.0), std=(1 / 255,) * 3)
    result = gates.input_normalization(target, CFG["input_normalization"])
    assert not result.passed and min(result.details["std"]) > 4
    assert "the model gets 0-255 values" in result.message


def test_images_stored_as_0_1_values_are_named(make_target):
    target = make_target(ConstantModel(), eval_size=4)
    images, masks = target.data.images, target.data.masks
    target.data.images, target.data.masks = (images > 127).astype(np.uint8), masks  # 0-1 floats cast to uint8
    result = gates.input_normalization(target, CFG["input_normalization"])
    assert not result.passed and "pixel range 0..1" in result.message and "cast to uint8" in result.message


def test_honest_inputs_are_normalized(honest):
    result = gates.input_normalization(honest, CFG["input_normalization"])
    assert result.passed, result.message


# --- CPU vs CUDA ---------------------------------------------------------------------------------


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised without CUDA")
def test_cpu_cuda_agreement_without_cuda_is_a_clear_error(make_target):
    with pytest.raises(SegcheckError, match="needs CUDA, which is not available"):
        gates.cpu_cuda_agreement(make_target(ConstantModel(), eval_size=1), CFG["cpu_cuda_agreement"])


def test_device_comparison_of_identical_devices_agrees(honest):
    result = gates.cpu_cuda_agreement(honest, CFG["cpu_cuda_agreement"], device="cpu")
    assert result.passed and result.value == 1.0 and result.details["max_logit_difference"] == 0.0


@pytest.mark.gpu
def test_model_that_differs_on_cuda_fails_cpu_cuda_agreement(make_target):
    target = make_target(DeviceDependent(build_unet(8)), eval_size=4, divisible_by=8)
    result = gates.cpu_cuda_agreement(target, CFG["cpu_cuda_agreement"])
    assert not result.passed and result.value < 0.99
    assert "class agreement cpu vs cuda" in result.message and "device-dependent code paths" in result.message


@pytest.mark.gpu
def test_honest_model_agrees_on_cpu_and_cuda(honest):
    result = gates.cpu_cuda_agreement(honest, CFG["cpu_cuda_agreement"])
    assert result.passed, result.message


def test_declared_num_classes_that_does_not_fit_the_data_fails_the_head_audit():
    plugins = segplugins.load()
    with plugins.models.provided_by("tests"):
        plugins.models.add("net13", lambda num_classes: torch.nn.Conv2d(3, num_classes, 1), num_classes=13)
    target = build_target(
        plugins, segconfig.load(overrides={"eval": {"size": 2}}), "net13", "synthetic-streets", checkpoint="none"
    )
    result = gates.head_matches_classes(target)
    assert not result.passed and result.value == 13
    assert "head has 13 channels, dataset has 8 classes" in result.message
