"""The segmentation_models_pytorch adapter (``smp:<Arch>``): builds, input multiples, frozen
parameters, aux_params, and the plugin's absence without the package."""

from __future__ import annotations

import functools
import importlib.util
import sys

import pytest
import torch

pytest.importorskip("segmentation_models_pytorch")

from segcheck import SegcheckError, cli  # noqa: E402
from segcheck import plugins as segplugins  # noqa: E402
from segcheck.data import IMAGENET_MEAN, IMAGENET_STD, DatasetSpec  # noqa: E402
from segcheck.model import SegModel  # noqa: E402
from segcheck.pytest_options import _model_arg  # noqa: E402
from segcheck.target import hashable, module_meta, thawed  # noqa: E402
from segcheck.train.loop import criterion  # noqa: E402
from segcheck.train.recipes import get as get_recipe  # noqa: E402
from segcheck_plugins import smp_models  # noqa: E402

PLUGIN = "segcheck_plugins.smp_models"
VIT = "tu-vit_tiny_patch16_224"
#: small encoders and decoders, per architecture
SMALL = {
    "Unet": {"decoder_channels": [64, 32, 16, 16, 8]},
    "UnetPlusPlus": {"decoder_channels": [64, 32, 16, 16, 8]},
    "MAnet": {"decoder_channels": [64, 32, 16, 16, 8], "decoder_pab_channels": 16},
    "FPN": {"decoder_pyramid_channels": 64, "decoder_segmentation_channels": 32},
    "PSPNet": {"psp_out_channels": 64},
    "DeepLabV3": {"decoder_channels": 64},
    "DeepLabV3Plus": {"decoder_channels": 64},
    "UPerNet": {"decoder_channels": 64},
    "Segformer": {"decoder_segmentation_channels": 64},
    "DPT": {"encoder_name": VIT, "decoder_intermediate_channels": [32, 64, 96, 128], "decoder_fusion_channels": 32},
}
#: divisible_by of each architecture built with them
DIVISIBLE_BY = {
    "Unet": 1,  # smp's Unet interpolates to every skip's size (requires_divisible_input_shape False)
    "UnetPlusPlus": 32,
    "FPN": 32,
    "PSPNet": 8,  # encoder depth 3
    "DeepLabV3": 8,  # dilated to output stride 8
    "DeepLabV3Plus": 16,
    "Linknet": 32,
    "MAnet": 32,
    "PAN": 128,  # output stride 16, and the FPA block halves the last map three times
    "UPerNet": 32,
    "Segformer": 32,
    "DPT": 32,  # patch 16, and depth 4 reassembles a 1/32 map
}
SPEC = DatasetSpec(classes=("background", "a", "b"))


@functools.cache
def small(arch: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return smp_models.build(arch, 3, **{"encoder_name": "resnet18", **SMALL.get(arch, {})}).eval()


def test_every_architecture_is_registered():
    import segmentation_models_pytorch as smp

    assert set(DIVISIBLE_BY) == set(smp_models.ARCHITECTURES) == {a.__name__ for a in smp._MODEL_ARCHITECTURES}


@pytest.mark.parametrize("arch", sorted(DIVISIBLE_BY))
def test_builds_and_gives_logits_at_a_size_that_is_no_multiple(arch):
    module = small(arch)
    d = smp_models.divisible_by(module=module)
    assert d == DIVISIBLE_BY[arch]
    h, w = 70, 90  # no multiple of any divisible_by above 1
    model = SegModel(module, mean=IMAGENET_MEAN, std=IMAGENET_STD, divisible_by=d)
    with torch.no_grad():
        logits = model.logits(torch.randn(1, 3, h, w))
    assert logits.shape == (1, 3, h, w) and bool(torch.isfinite(logits).all())
    if module.requires_divisible_input_shape:  # the raw module refuses what the adapter pads
        with pytest.raises(RuntimeError), torch.no_grad():
            module(torch.randn(1, 3, h, w))


@pytest.mark.parametrize(("arch", "side"), [("PAN", 64), ("DPT", 48)])
def test_extra_factor_beyond_the_output_stride_is_needed(arch, side):
    """A multiple of the encoder's output stride (smp's own check) that is no multiple of
    divisible_by still fails in the decoder."""
    module = small(arch)
    assert side % module.encoder.output_stride == 0 and side % smp_models.divisible_by(module=module)
    with pytest.raises(RuntimeError), torch.no_grad():
        module(torch.randn(1, 3, side, side))


def _without_gradient(module: torch.nn.Module, x: torch.Tensor) -> set[str]:
    """Parameters that segcheck's training loss (``criterion``) gives no non-zero gradient."""
    module.train()
    y = torch.randint(0, 3, (x.shape[0], *x.shape[-2:]))
    loss = criterion([module(x)], x, y, get_recipe("naive"), SPEC)
    named = list(module.named_parameters())
    grads = torch.autograd.grad(loss, [p for _, p in named], allow_unused=True)
    module.eval()
    return {name for (name, _), g in zip(named, grads) if g is None or not bool(torch.any(g != 0))}


def _under(module: torch.nn.Module, prefixes: tuple[str, ...]) -> set[str]:
    return {name for name, _ in module.named_parameters() if name.startswith(prefixes)}


def test_pspnet_depth_3_frozen_are_exactly_the_parameters_without_gradient():
    module = smp_models.build("PSPNet", 3, encoder_name="resnet18", encoder_depth=3)
    frozen = module_meta({"frozen": smp_models.frozen}, module)["frozen"]
    assert frozen == ("encoder.layer3.", "encoder.layer4.")
    assert len(_under(module, frozen)) == 30  # the field report's 30 encoder tensors
    assert _without_gradient(module, torch.randn(2, 3, 64, 64)) == _under(module, frozen)


def test_vit_frozen_are_its_unused_blocks_head_and_norm_and_the_label_head():
    module = smp_models.build(
        "DPT", 3, encoder_name=VIT, encoder_depth=2, encoder_output_indices=[2, 5],
        decoder_intermediate_channels=[32, 64], decoder_fusion_channels=32, aux_params={"classes": 2},
    )  # fmt: skip
    frozen = smp_models.frozen(module=module)
    assert frozen == tuple(f"encoder.model.blocks.{i}." for i in range(6, 12)) + (
        "encoder.model.norm.",
        "encoder.model.head.",
        "classification_head.",
    )
    assert _without_gradient(module, torch.randn(2, 3, 32, 32)) == _under(module, frozen)


def test_default_depth_freezes_nothing():
    assert smp_models.frozen(module=small("DeepLabV3Plus")) == ()


def test_encoder_weights_are_refused():
    with pytest.raises(SegcheckError, match="encoder_weights must be null.*--checkpoint"):
        smp_models.build("Unet", 3, encoder_weights="imagenet")
    for key, value in (("classes", 4), ("activation", "softmax"), ("in_channels", 1)):
        with pytest.raises(SegcheckError, match=key):
            smp_models.build("Unet", 3, **{key: value})


def test_aux_params_from_the_command_line_give_mask_logits_and_a_frozen_label_head():
    key, value = _model_arg("aux_params={classes: 4, dropout: 0.1}")
    ((name, held),) = hashable({key: value})  # as a target's model_args hold it, hashable
    assert thawed(held) == {"classes": 4, "dropout": 0.1}  # and as load_model gives it to the builder
    module = smp_models.build("PSPNet", 3, encoder_name="resnet18", **{name: thawed(held)})
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        mask, label = module.eval()(x)
    assert mask.shape == (2, 3, 64, 64) and label.shape == (2, 4)
    model = SegModel(module, mean=IMAGENET_MEAN, std=IMAGENET_STD, divisible_by=smp_models.divisible_by(module))
    assert model.logits(x).shape == (2, 3, 64, 64)
    frozen = smp_models.frozen(module)
    assert frozen == ("encoder.layer3.", "encoder.layer4.", "classification_head.")
    # the loss takes the mask: the label head gets no gradient, is not a segmentation aux head
    assert _without_gradient(module, x) == _under(module, frozen)
    with pytest.raises(SegcheckError, match="aux_params=\\{classes: 3"):
        smp_models.build("PSPNet", 3, aux_params="classes:3")


def test_segcheck_list_shows_the_architectures(capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    assert "smp:DeepLabV3Plus" in out and f"[{PLUGIN}]" in out
    assert PLUGIN not in out.partition("absent (optional extras not installed):")[2]


def test_without_the_package_the_plugin_is_absent_with_a_hint(monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "segmentation_models_pytorch" else real(name, *a)
    )
    monkeypatch.delitem(sys.modules, PLUGIN)
    loaded = segplugins.load()
    assert PLUGIN in loaded.absent and "pip install 'segcheck[smp]'" in loaded.absent[PLUGIN]
    assert not [name for name in loaded.models.names() if name.startswith("smp:")]
    with pytest.raises(SegcheckError) as raised:
        loaded.models.get("smp:Unet")
    message = str(raised.value)
    assert "\n" not in message and f"plugin {PLUGIN} is absent" in message and "segcheck[smp]" in message
    assert cli.main(["list"]) == 0
    assert f"  {PLUGIN}\n      needs segmentation_models_pytorch" in capsys.readouterr().out
