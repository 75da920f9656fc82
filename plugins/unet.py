"""The bundled small UNet (``unet``): fast on CPU, the embedded default's architecture."""

from __future__ import annotations

import re
import zlib
from pathlib import Path

import torch
from torch import nn

from segcheck.hookspecs import hookimpl

CHECKPOINTS = Path(__file__).parent / "checkpoints"


PADDINGS = ("zeros", "reflect", "replicate")


def _block(cin: int, cout: int, padding: str = "zeros") -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, padding_mode=padding, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, padding_mode=padding, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    """UNet with ``depth`` poolings; any input size (sides that are not multiples of
    ``2**depth`` are padded, replicating the border, and the outputs cropped back).

    ``forward`` returns logits (B, num_classes, H, W); with ``recon_head=True`` or
    ``embed_head=True`` it returns ``{"out": logits}`` plus ``"recon"`` (B, 3, H, W) for the
    trainer's reconstruction loss and ``"embed"`` (B, 32, H, W), a two-layer 1x1 projection of
    the last decoder features, for its pixel-contrastive loss.

    ``padding`` is the convolutions' ``padding_mode``: ``"zeros"`` lets the network locate the
    image border, hence every pixel's absolute position, even on a blank input (Islam et al.
    2020, Kayhan & van Gemert 2020); ``"reflect"`` and ``"replicate"`` hide most of it.
    """

    def __init__(
        self,
        num_classes: int,
        width: int = 16,
        depth: int = 3,
        recon_head: bool = False,
        embed_head: bool = False,
        padding: str = "zeros",
    ):
        super().__init__()
        if padding not in PADDINGS:
            raise ValueError(f"unet padding must be one of {', '.join(PADDINGS)}, got {padding!r}")
        widths = [width * 2**i for i in range(depth + 1)]
        self.down = nn.ModuleList(
            [_block(3, widths[0], padding)] + [_block(a, b, padding) for a, b in zip(widths, widths[1:])]
        )
        self.up = nn.ModuleList(nn.ConvTranspose2d(b, a, 2, stride=2) for a, b in zip(widths, widths[1:]))
        self.merge = nn.ModuleList(_block(2 * a, a, padding) for a in widths[:-1])
        self.head = nn.Conv2d(widths[0], num_classes, 1)
        self.recon = nn.Conv2d(widths[0], 3, 1) if recon_head else None
        self.embed = (
            nn.Sequential(nn.Conv2d(widths[0], widths[0], 1), nn.ReLU(inplace=True), nn.Conv2d(widths[0], 32, 1))
            if embed_head
            else None
        )

    def features(self, x: torch.Tensor, condition=None) -> torch.Tensor:
        """The last decoder stage's features for ``x`` padded (replicate) to multiples of
        ``2**depth``; ``condition(features)``, when given, transforms the bottleneck and the
        output of every decoder stage, in that order."""
        condition = condition or (lambda features: features)
        h, w = x.shape[-2:]
        d = 2 ** (len(self.down) - 1)
        if h % d or w % d:
            x = nn.functional.pad(x, (0, -w % d, 0, -h % d), mode="replicate")
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else nn.functional.max_pool2d(x, 2))
            skips.append(x)
        x = condition(skips.pop())
        for up, merge in zip(reversed(self.up), reversed(self.merge)):
            x = condition(merge(torch.cat([up(x), skips.pop()], dim=1)))
        return x

    def forward(self, x: torch.Tensor):
        h, w = x.shape[-2:]
        x = self.features(x)
        logits = self.head(x)[..., :h, :w]
        if self.recon is None and self.embed is None:
            return logits
        heads = {"recon": self.recon, "embed": self.embed}
        return {"out": logits, **{k: head(x)[..., :h, :w] for k, head in heads.items() if head is not None}}


class PromptedUNet(UNet):
    """The UNet asked by text: ``forward(x, prompts)`` with one prompt per image, one logit
    channel (B, 1, H, W). A prompt is a bag of words (lower-cased runs of letters and digits),
    each hashed (crc32) into one of ``buckets`` learned embeddings and averaged; the result
    scales and shifts (FiLM) the bottleneck and every decoder stage, so paraphrases that share
    words start close and any text is a valid prompt.
    """

    def __init__(self, width: int = 16, depth: int = 3, buckets: int = 512, embedding: int = 32):
        super().__init__(1, width=width, depth=depth)
        widths = [width * 2**i for i in range(depth + 1)]
        self.buckets = buckets
        self.words = nn.EmbeddingBag(buckets, embedding, mode="mean")
        self.film = nn.ModuleList(nn.Linear(embedding, 2 * c) for c in [widths[-1], *reversed(widths[:-1])])

    def tokens(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Word-bucket ids and per-prompt offsets for ``EmbeddingBag``."""
        ids, offsets = [], []
        for prompt in prompts:
            offsets.append(len(ids))
            ids += [zlib.crc32(w.encode()) % self.buckets for w in re.findall(r"[a-z0-9]+", prompt.lower())]
        device = self.head.weight.device
        return torch.tensor(ids, dtype=torch.long, device=device), torch.tensor(offsets, device=device)

    def forward(self, x: torch.Tensor, prompts: list[str]):
        if isinstance(prompts, str) or len(prompts) != len(x):
            raise ValueError(f"PromptedUNet takes one prompt per image: {len(x)} images, prompts {prompts!r}")
        text = self.words(*self.tokens(prompts))
        films = iter(self.film)

        def condition(features: torch.Tensor) -> torch.Tensor:
            scale, shift = next(films)(text)[:, :, None, None].chunk(2, dim=1)
            return features * (1 + scale) + shift

        h, w = x.shape[-2:]
        return self.head(self.features(x, condition))[..., :h, :w]


def build_prompted_unet(num_classes: int = 1, *, width: int = 16, depth: int = 3) -> PromptedUNet:
    if num_classes != 1:
        raise ValueError(f"unet-prompted has one logit channel (binary), got num_classes={num_classes}")
    return PromptedUNet(width=width, depth=depth)


def build_unet(num_classes: int, **options) -> UNet:
    """The registry's builder: ``UNet(num_classes, **options)`` (width, depth, padding, heads)."""
    return UNet(num_classes, **options)


@hookimpl
def segcheck_register_models(registry):
    registry.add(
        "unet",
        build_unet,
        checkpoints={
            "synthetic-streets": CHECKPOINTS / "unet_synthetic-streets_robust.safetensors",
            # depth 4, reflect padding (its sidecar's model_kwargs); docs/explanation/shortcut.md
            "synthetic-streets-shortcut": CHECKPOINTS / "unet_synthetic-streets-shortcut_robust.safetensors",
        },
        args={
            "width": "channels of the first block (default 16, doubled per level)",
            "depth": "poolings (default 3)",
            "padding": "the convolutions' padding: zeros (default), reflect or replicate",
        },
        description="small UNet (16-128 channels, 3 poolings, any input size), fast on CPU",
    )
    registry.add(
        "unet-prompted",
        build_prompted_unet,
        binary=True,
        prompted=True,
        checkpoints={"synthetic-drywall": CHECKPOINTS / "unet-prompted_synthetic-drywall_robust-binary.safetensors"},
        args={"width": "channels of the first block (default 16, doubled per level)", "depth": "poolings (default 3)"},
        description="the small UNet asked by text: hashed bag-of-words embedding, FiLM on the decoder; binary",
    )
