"""Expected calibration error (ECE) of per-pixel confidences, streamed over batches.

ECE (Naeini et al. 2015; Guo et al., "On Calibration of Modern Neural Networks", ICML 2017):
the confidences are sorted into ``bins`` equal-width bins over [0, 1]; for each bin, the gap
between its mean confidence and its observed frequency of the event, weighted by its share of
the pixels: ``ECE = sum_b n_b / n * |freq_b - conf_b|`` (the L1 norm). Only counts are kept
(pixels, sum of confidences, sum of outcomes per bin), so memory does not grow with the data
and batches may come in any order.

Two readings of "confidence", as torchmetrics has them:

- multi-class (``MulticlassCalibrationError``): the largest softmax probability of a pixel,
  and the event "the arg-max class is the true class" (top-1 accuracy);
- binary (``BinaryCalibrationError``): the foreground probability, and the event "the pixel
  is foreground": the reliability of p itself, not of max(p, 1 - p).

Bin k holds confidences in [k / bins, (k + 1) / bins), the last bin [1 - 1 / bins, 1] closed:
torchmetrics' bins (``torch.bucketize(..., right=True) - 1``), except that torchmetrics gives a
confidence of exactly 1.0 a bin of its own after the last; here it is in the last bin, as every
confidence in [0, 1] is in one of ``bins``. Sums are float64; torchmetrics casts confidences to
float32 whatever it is given and sums them there, so over many pixels its bin means drift: on the
embedded default's 262,144 pixels its ECE reads 0.0104 where float64 sums (its binning or this
one) give 0.0115, all of it the top bin's mean confidence (0.9929 instead of 0.9918).
"""

from __future__ import annotations

import numpy as np

from segcheck import SegcheckError


class CalibrationBins:
    """Per-bin counts of confidences and outcomes: ``update(confidence, outcome)`` adds pixels
    (numpy arrays or torch tensors of one shape: confidences in [0, 1], outcomes boolean or
    0/1); :meth:`ece` and :meth:`reliability` read them."""

    def __init__(self, bins: int = 15):
        if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 1:
            raise SegcheckError(f"calibration bins must be a whole number >= 1, got {bins!r}")
        self.bins = int(bins)
        self.count = np.zeros(self.bins, np.int64)
        self.confidence = np.zeros(self.bins, np.float64)
        self.outcome = np.zeros(self.bins, np.float64)

    def update(self, confidence, outcome) -> CalibrationBins:
        """Add pixels; returns self so that calls chain (a bad batch leaves the counts unchanged)."""
        if hasattr(confidence, "detach"):  # a torch tensor: count where it lies
            import torch

            conf = confidence.detach().reshape(-1).to(torch.float64)
            hit = torch.as_tensor(outcome, device=conf.device).reshape(-1).to(torch.float64)
            if conf.shape != hit.shape:
                raise SegcheckError(f"{conf.numel()} confidences for {hit.numel()} outcomes")
            if conf.numel() and not bool(((conf >= 0) & (conf <= 1)).all()):
                raise SegcheckError("confidences must lie in [0, 1] (probabilities, not logits); found values outside")
            index = (conf * self.bins).floor().clamp_(0, self.bins - 1).long()
            count = torch.bincount(index, minlength=self.bins).cpu().numpy()
            total = torch.zeros(self.bins, dtype=torch.float64, device=conf.device).index_add_(0, index, conf)
            events = torch.zeros(self.bins, dtype=torch.float64, device=conf.device).index_add_(0, index, hit)
            total, events = total.cpu().numpy(), events.cpu().numpy()
        else:
            conf = np.asarray(confidence, np.float64).reshape(-1)
            hit = np.asarray(outcome, np.float64).reshape(-1)
            if conf.shape != hit.shape:
                raise SegcheckError(f"{conf.size} confidences for {hit.size} outcomes")
            if conf.size and not ((conf >= 0) & (conf <= 1)).all():
                raise SegcheckError("confidences must lie in [0, 1] (probabilities, not logits); found values outside")
            index = np.clip(np.floor(conf * self.bins), 0, self.bins - 1).astype(np.int64)
            count = np.bincount(index, minlength=self.bins)
            total = np.bincount(index, conf, self.bins)
            events = np.bincount(index, hit, self.bins)
        self.count += count
        self.confidence += total
        self.outcome += events
        return self

    @property
    def pixels(self) -> int:
        return int(self.count.sum())

    def ece(self) -> float:
        """The expected calibration error (L1); NaN when nothing was counted."""
        n = self.pixels
        return float(np.abs(self.outcome - self.confidence).sum() / n) if n else float("nan")

    def max_gap(self) -> float:
        """The largest gap |frequency - mean confidence| of a non-empty bin (the MCE); NaN when empty."""
        full = self.count > 0
        if not full.any():
            return float("nan")
        return float(np.max(np.abs(self.outcome[full] - self.confidence[full]) / self.count[full]))

    def reliability(self) -> list[dict]:
        """One row per bin: its edges, pixel count, mean confidence and observed frequency
        (None for an empty bin): the reliability diagram's data."""
        rows = []
        for k in range(self.bins):
            n = int(self.count[k])
            rows.append(
                {
                    "low": k / self.bins,
                    "high": (k + 1) / self.bins,
                    "pixels": n,
                    "confidence": float(self.confidence[k] / n) if n else None,
                    "frequency": float(self.outcome[k] / n) if n else None,
                }
            )
        return rows


def expected_calibration_error(confidence, outcome, bins: int = 15) -> float:
    """ECE of one set of confidences and outcomes (:class:`CalibrationBins` of one batch)."""
    return CalibrationBins(bins).update(confidence, outcome).ece()
