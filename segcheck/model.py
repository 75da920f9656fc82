"""Adapter: any segmentation ``nn.Module`` -> logits (B, C, H, W) at input size."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from segcheck import SegcheckError


def output_tensor(output) -> torch.Tensor:
    """The logits in a model's raw output: a tensor, a dict with ``"out"``, or ``.logits``."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, dict) and "out" in output:
        return output["out"]
    if hasattr(output, "logits"):
        return output.logits
    raise SegcheckError(
        f"model output is a {type(output).__name__}; expected a tensor, a dict with 'out', or an object with .logits"
    )


class SegModel:
    """A module with its input normalization, giving logits at input size.

    ``binary`` models have one sigmoid channel for two classes; ``predict`` thresholds
    it at ``threshold``. Inputs whose sides are not multiples of ``divisible_by`` are
    padded (replicate) and the logits cropped back.
    """

    def __init__(self, module: torch.nn.Module, *, mean, std, binary: bool = False, divisible_by: int = 1,
                 device: str | torch.device = "cpu", threshold: float = 0.5):
        self.module = module.to(device).eval()
        self.device = torch.device(device)
        self.mean = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self.binary = binary
        self.divisible_by = max(1, int(divisible_by))
        self.threshold = threshold

    def normalize(self, pixels) -> torch.Tensor:
        """Pixels (N, H, W, 3) in 0..255 (uint8 or float) -> normalized float (N, 3, H, W) on device."""
        x = torch.as_tensor(np.asarray(pixels) if not isinstance(pixels, torch.Tensor) else pixels)
        x = x.to(self.device, torch.float32).permute(0, 3, 1, 2) / 255.0
        return (x - self.mean) / self.std

    def raw(self, x: torch.Tensor) -> torch.Tensor:
        """The module's own logits for normalized ``x``, before any resizing."""
        return output_tensor(self.module(x))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, C, H, W) for normalized ``x`` (B, 3, H, W); gradients flow."""
        h, w = x.shape[-2:]
        d = self.divisible_by
        pad_h, pad_w = -h % d, -w % d
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        out = self.raw(x)
        if out.shape[-2:] != x.shape[-2:]:
            out = F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return out[..., :h, :w]

    def labels(self, logits: torch.Tensor) -> torch.Tensor:
        """Class map (B, H, W) from logits."""
        if self.binary:
            return (torch.sigmoid(logits[:, 0]) > self.threshold).long()
        return logits.argmax(1)

    @torch.no_grad()
    def predict(self, x: torch.Tensor, batch_size: int = 8) -> tuple[np.ndarray, bool]:
        """Class maps (N, H, W) int64 for normalized ``x``, and whether every logit was finite."""
        labels, finite = [], True
        for start in range(0, len(x), batch_size):
            out = self.logits(x[start:start + batch_size].to(self.device))
            finite &= bool(torch.isfinite(out).all())
            labels.append(self.labels(out).cpu().numpy())
        return np.concatenate(labels), finite

    def predict_pixels(self, pixels, batch_size: int = 8) -> tuple[np.ndarray, bool]:
        """``predict`` for pixel-scale images (N, H, W, 3), normalizing batch by batch."""
        labels, finite = [], True
        for start in range(0, len(pixels), batch_size):
            part, ok = self.predict(self.normalize(pixels[start:start + batch_size]), batch_size)
            labels.append(part)
            finite &= ok
        return np.concatenate(labels), finite
