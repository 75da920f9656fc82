"""segmentation_models_pytorch's architectures as ``smp:<Arch>`` (optional: ``pip install 'segcheck[smp]'``).

Every architecture is built with ``encoder_weights=None`` (random init, nothing is downloaded;
load trained weights with ``--checkpoint``) and ``classes=num_classes``; the other smp
constructor kwargs come from ``--model-arg`` (``encoder_name=resnet18``, ``encoder_depth=3``,
``decoder_channels=[128, 64, 32, 16, 8]``, ``aux_params={classes: 3}`` as a YAML mapping, ...).
With ``aux_params`` the model returns ``(mask, label)``: segcheck tests the mask.

``divisible_by`` and ``frozen`` are functions of the built module: the input multiple smp's
``check_input_shape`` (and, for PAN and DPT, the decoder) needs, and the encoder parameters
the chosen depth leaves out of the encoder's outputs (plus the classification head, which
no segcheck loss trains). Importing this module raises ImportError without smp installed,
so segcheck lists the plugin as absent; smp itself is imported only when a model is built.
"""

from __future__ import annotations

import importlib.util
import math

import torch

from segcheck import SegcheckError
from segcheck.data import IMAGENET_MEAN, IMAGENET_STD
from segcheck.hookspecs import hookimpl

if importlib.util.find_spec("segmentation_models_pytorch") is None:
    raise ImportError("segmentation_models_pytorch is not installed")

PREFIX = "smp:"
#: architecture (smp class name) -> what it is
ARCHITECTURES = {
    "Unet": "U-Net",
    "UnetPlusPlus": "UNet++ (nested dense skip pathways)",
    "FPN": "Feature Pyramid Network",
    "PSPNet": "Pyramid Scene Parsing Network",
    "DeepLabV3": "DeepLabV3 (dilated encoder, ASPP)",
    "DeepLabV3Plus": "DeepLabV3+ (ASPP and a low-level skip)",
    "Linknet": "LinkNet",
    "MAnet": "Multi-scale Attention Net",
    "PAN": "Pyramid Attention Network",
    "UPerNet": "Unified Perceptual Parsing Network",
    "Segformer": "SegFormer's all-MLP decoder",
    "DPT": "Dense Prediction Transformer (timm ViT encoder, tu-...)",
}
DEFAULT_ENCODER = "resnet34"
#: smp's own defaults where they differ (smp 0.6: DPT needs a timm ViT; PSPNet uses 3 stages, DPT 4)
DEFAULT_ENCODERS = {"DPT": "tu-vit_base_patch16_224.augreg_in21k"}
DEFAULT_DEPTHS = {"PSPNet": 3, "DPT": 4}
#: smp kwargs segcheck sets itself, and what to do instead
REFUSED = {
    "classes": "the head size is the dataset's number of classes (or the model's declared num_classes)",
    "activation": "segcheck needs logits: leave activation unset (null)",
}
PROBE_SIDE = 64  # the side (rounded up to divisible_by) of the input the frozen probe runs


def build(
    arch: str,
    num_classes: int,
    *,
    encoder_name: str | None = None,
    encoder_depth: int | None = None,
    aux_params=None,
    **kwargs,
) -> torch.nn.Module:
    """smp's ``arch`` with a ``num_classes`` head, random weights, no downloads.

    ``encoder_name``/``encoder_depth`` None are smp's defaults for ``arch``; ``aux_params`` a
    mapping (or the sorted pairs a manifest freezes it into); other ``kwargs`` go to smp's
    constructor. ``encoder_weights`` other than None, ``classes``, an ``activation`` or
    ``in_channels`` other than 3 raise ``SegcheckError``. DPT defaults to
    ``dynamic_img_size=True`` so that its ViT runs at any size ``divisible_by`` allows.
    """
    where = f"model {PREFIX}{arch}"
    if kwargs.pop("encoder_weights", None) is not None:
        raise SegcheckError(
            f"{where}: encoder_weights must be null (segcheck downloads nothing); load trained weights with "
            "--checkpoint PATH instead"
        )
    for key, why in REFUSED.items():
        if key in kwargs and (key != "activation" or kwargs[key] is not None):
            raise SegcheckError(f"{where}: --model-arg {key} is not accepted: {why}")
    if kwargs.get("in_channels", 3) != 3:
        raise SegcheckError(f"{where}: in_channels is {kwargs['in_channels']!r}; segcheck feeds RGB images: use 3")
    if encoder_name is not None:
        kwargs["encoder_name"] = encoder_name
    if encoder_depth is not None:
        kwargs["encoder_depth"] = encoder_depth
    if aux_params is not None:
        kwargs["aux_params"] = _aux_params(aux_params, where)
    if arch == "DPT":
        kwargs.setdefault("dynamic_img_size", True)
    import segmentation_models_pytorch as smp

    return getattr(smp, arch)(encoder_weights=None, classes=num_classes, **kwargs)


def _aux_params(value, where: str) -> dict:
    if not isinstance(value, dict) or "classes" not in value:
        raise SegcheckError(
            f"{where}: aux_params is {value!r}; expected a mapping with classes, e.g. "
            "--model-arg 'aux_params={classes: 3, dropout: 0.2}'"
        )
    return value


def divisible_by(module: torch.nn.Module) -> int:
    """The multiple an input side must be: the encoder's output stride when smp checks it
    (``SegmentationModel.check_input_shape``; Unet does not), times 8 for PAN (its FPA block
    halves the last feature map three times: sides under 8 x stride fail), and for DPT the
    least common multiple with 2^(depth+1) (its decoder reassembles stage i at stride 2^(i+2)
    and fuses by exact 2x upsampling)."""
    import segmentation_models_pytorch as smp

    encoder = module.encoder
    if isinstance(module, smp.DPT):
        strides = list(encoder.output_strides)
        return math.lcm(*strides, 2 ** (len(strides) + 1))
    stride = int(encoder.output_stride)
    if isinstance(module, smp.PAN):
        return 8 * stride
    return stride if getattr(module, "requires_divisible_input_shape", True) else 1


def frozen(module: torch.nn.Module) -> tuple[str, ...]:
    """Parameter-name prefixes no segcheck loss reaches by design: the encoder's parameters
    that none of its outputs depends on (the stages a shallow ``encoder_depth`` leaves unused,
    a timm ViT's classifier head and final norm), found by one backward pass of the encoder
    alone in eval mode (``PROBE_SIDE`` input, the module's state untouched), and
    ``classification_head.`` (the aux_params label head)."""
    unused = _unused_encoder_parameters(module)
    prefixes = _prefixes(module, {f"encoder.{name}" for name in unused})
    if getattr(module, "classification_head", None) is not None:
        prefixes.append("classification_head.")
    return tuple(prefixes)


def _probe_size(module: torch.nn.Module) -> tuple[int, int]:
    model = getattr(module.encoder, "model", None)
    patch = getattr(model, "patch_embed", None)
    if patch is not None and getattr(patch, "strict_img_size", False):  # a fixed-size timm ViT
        return tuple(patch.img_size)
    d = divisible_by(module)
    side = d * math.ceil(PROBE_SIDE / d)
    return side, side


def _unused_encoder_parameters(module: torch.nn.Module) -> set[str]:
    """Names (in ``module.encoder``) of trainable parameters outside the autograd graph of the
    encoder's outputs."""
    encoder = module.encoder
    named = [(name, p) for name, p in encoder.named_parameters() if p.requires_grad]
    if not named:
        return set()
    first = named[0][1]
    modes = {m: m.training for m in encoder.modules()}
    try:
        encoder.eval()
        with torch.enable_grad():
            x = torch.zeros(1, 3, *_probe_size(module), device=first.device, dtype=first.dtype)
            outputs = [t for t in _tensors(encoder(x)) if t.requires_grad]
            if not outputs:
                return {name for name, _ in named}
            total = sum(t.float().sum() for t in outputs)
            grads = torch.autograd.grad(total, [p for _, p in named], allow_unused=True)
    finally:
        for m, mode in modes.items():
            m.training = mode
    return {name for (name, _), g in zip(named, grads) if g is None}


def _tensors(output) -> list[torch.Tensor]:
    """The tensors in an encoder's output (a tensor, or nested lists/tuples holding tensors and None)."""
    if isinstance(output, torch.Tensor):
        return [output]
    if isinstance(output, list | tuple):
        return [t for item in output for t in _tensors(item)]
    return []


def _prefixes(module: torch.nn.Module, unused: set[str]) -> list[str]:
    """``unused`` parameter names as the fewest prefixes: each outermost submodule all of
    whose parameters are unused (``"encoder.layer4."``), else the parameter's own name."""
    if not unused:
        return []
    prefixes, covered = [], set()
    for name, sub in module.named_modules():
        if not name or any(name.startswith(p) for p in prefixes):
            continue
        params = {f"{name}.{n}" for n, _ in sub.named_parameters()}
        if params and params <= unused:
            prefixes.append(f"{name}.")
            covered |= params
    return prefixes + sorted(unused - covered)


def _args(arch: str) -> dict[str, str]:
    encoder = DEFAULT_ENCODERS.get(arch, DEFAULT_ENCODER)
    args = {
        "encoder_name": f"smp encoder (default {encoder}): one of smp.encoders.get_encoder_names() or tu-<timm name>"
        + ("; DPT needs a timm ViT (tu-...)" if arch == "DPT" else ""),
        "encoder_depth": f"encoder stages used (default {DEFAULT_DEPTHS.get(arch, 5)}); the parameters a shallow depth "
        "leaves unused are declared frozen",
        "aux_params": "classification head on the encoder, a YAML mapping: --model-arg 'aux_params={classes: 3}'; "
        "the model returns (mask, label), segcheck tests the mask and declares classification_head. frozen",
    }
    if arch == "DPT":
        args["dynamic_img_size"] = (
            "default true: the ViT interpolates its position embeddings, so any padded size runs; false: only the "
            "ViT's own input size (224x224) runs"
        )
    args["**kwargs"] = (
        "any other smp constructor kwarg, e.g. decoder_channels=[128,64,32,16,8]"
        + (", encoder_output_stride=8" if arch in ("DeepLabV3", "DeepLabV3Plus", "PAN") else "")
        + "; encoder_weights must stay null (load weights with --checkpoint)"
    )
    return args


def _builder(arch: str):
    def builder(num_classes: int, **kwargs) -> torch.nn.Module:
        return build(arch, num_classes, **kwargs)

    builder.__name__ = builder.__qualname__ = f"build_{arch}"
    builder.__doc__ = f"smp.{arch}: see :func:`build`."
    return builder


@hookimpl
def segcheck_register_models(registry):
    for arch, what in ARCHITECTURES.items():
        registry.add(
            f"{PREFIX}{arch}",
            _builder(arch),
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
            divisible_by=divisible_by,
            frozen=frozen,
            args=_args(arch),
            description=f"smp {what}, encoder {DEFAULT_ENCODERS.get(arch, DEFAULT_ENCODER)} by default "
            "(random init: load your checkpoint)",
        )
