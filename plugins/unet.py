"""The bundled small UNet (``unet``): fast on CPU, the embedded default's architecture."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from segcheck.hookspecs import hookimpl

CHECKPOINTS = Path(__file__).parent / "checkpoints"


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    """UNet with ``depth`` poolings; any input size (sides that are not multiples of
    ``2**depth`` are padded, replicating the border, and the outputs cropped back).

    ``forward`` returns logits (B, num_classes, H, W); with ``recon_head=True`` it returns
    ``{"out": logits, "recon": (B, 3, H, W)}`` for the trainer's reconstruction loss.
    """

    def __init__(self, num_classes: int, width: int = 16, depth: int = 3, recon_head: bool = False):
        super().__init__()
        widths = [width * 2**i for i in range(depth + 1)]
        self.down = nn.ModuleList([_block(3, widths[0])] + [_block(a, b) for a, b in zip(widths, widths[1:])])
        self.up = nn.ModuleList(nn.ConvTranspose2d(b, a, 2, stride=2) for a, b in zip(widths, widths[1:]))
        self.merge = nn.ModuleList(_block(2 * a, a) for a in widths[:-1])
        self.head = nn.Conv2d(widths[0], num_classes, 1)
        self.recon = nn.Conv2d(widths[0], 3, 1) if recon_head else None

    def forward(self, x: torch.Tensor):
        h, w = x.shape[-2:]
        d = 2 ** (len(self.down) - 1)
        if h % d or w % d:
            x = nn.functional.pad(x, (0, -w % d, 0, -h % d), mode="replicate")
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else nn.functional.max_pool2d(x, 2))
            skips.append(x)
        x = skips.pop()
        for up, merge in zip(reversed(self.up), reversed(self.merge)):
            x = merge(torch.cat([up(x), skips.pop()], dim=1))
        logits = self.head(x)[..., :h, :w]
        if self.recon is None:
            return logits
        return {"out": logits, "recon": self.recon(x)[..., :h, :w]}


def build_unet(num_classes: int, *, width: int = 16, depth: int = 3, recon_head: bool = False) -> UNet:
    return UNet(num_classes, width=width, depth=depth, recon_head=recon_head)


@hookimpl
def segcheck_register_models(registry):
    registry.add(
        "unet",
        build_unet,
        checkpoints={"synthetic-streets": CHECKPOINTS / "unet_synthetic-streets_robust.safetensors"},
        args={"width": "channels of the first block (default 16, doubled per level)", "depth": "poolings (default 3)"},
        description="small UNet (16-128 channels, 3 poolings, any input size), fast on CPU",
    )
