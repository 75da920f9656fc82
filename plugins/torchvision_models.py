"""torchvision's segmentation models, built without downloading any weights."""

from __future__ import annotations

import functools

from segcheck.data import IMAGENET_MEAN, IMAGENET_STD
from segcheck.hookspecs import hookimpl

#: name -> whether the architecture has an auxiliary FCN head (``aux_classifier.*``)
MODELS = {
    "deeplabv3_resnet50": True,
    "deeplabv3_resnet101": True,
    "deeplabv3_mobilenet_v3_large": True,
    "fcn_resnet50": True,
    "fcn_resnet101": True,
    "lraspp_mobilenet_v3_large": False,
}


def build(name: str, num_classes: int, *, aux_loss: bool = False):
    """torchvision's ``name`` with a ``num_classes`` head, random weights, no downloads (torchvision
    is imported here, when a model is built: it costs about 170 MB a process that uses none)."""
    from torchvision.models import segmentation

    kwargs = {"aux_loss": aux_loss} if MODELS[name] else {}
    return getattr(segmentation, name)(weights=None, weights_backbone=None, num_classes=num_classes, **kwargs)


@hookimpl
def segcheck_register_models(registry):
    for name, has_aux in MODELS.items():
        meta = {"aux_prefix": "aux_classifier."} if has_aux else {}
        registry.add(
            name,
            functools.partial(build, name),
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
            description=f"torchvision {name} (random init; load your checkpoint)",
            **meta,
        )
