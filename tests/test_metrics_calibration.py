"""Pixel ECE against torchmetrics' MulticlassCalibrationError and BinaryCalibrationError on the
same pixels: random logits, the bundled model's own pixels through the calibration gate, streamed
in any batches; the one stated difference (a confidence of exactly 1.0)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchmetrics.functional.classification import binary_calibration_error, multiclass_calibration_error

from segcheck import SegcheckError
from segcheck import config as segconfig
from segcheck.gates import calibration
from segcheck.metrics.calibration import CalibrationBins, expected_calibration_error

CFG = segconfig.DEFAULTS["calibration"]


def _logits(seed: int = 0, shape=(4, 5, 16, 16), scale: float = 3.0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(shape, generator=g) * scale
    target = torch.randint(0, shape[1], (shape[0], *shape[2:]), generator=g)
    target[:, :3] = 255  # ignore pixels
    return logits, target


def test_multiclass_ece_is_torchmetrics_on_the_same_pixels_whatever_the_batches():
    logits, target = _logits()
    probs = logits.softmax(1)
    expected = multiclass_calibration_error(probs, target, 5, n_bins=15, norm="l1", ignore_index=255).item()
    bins = CalibrationBins(15)
    for i in (2, 0, 3, 1):  # streamed, in any order
        keep = target[i] != 255
        conf, pred = probs[i].max(0)
        bins.update(conf[keep], pred[keep] == target[i][keep])
    assert bins.ece() == pytest.approx(expected, abs=1e-6)
    assert bins.pixels == int((target != 255).sum())
    rows = bins.reliability()
    assert len(rows) == 15 and sum(r["pixels"] for r in rows) == bins.pixels
    assert rows[0]["low"] == 0 and rows[-1]["high"] == 1


def test_binary_ece_is_torchmetrics_on_the_foreground_probability():
    logits, target = _logits(seed=1, shape=(3, 1, 20, 20), scale=2.0)
    probs = torch.sigmoid(logits[:, 0])
    labels = (torch.rand(probs.shape, generator=torch.Generator().manual_seed(2)) < probs).long()  # nearly calibrated
    expected = binary_calibration_error(probs, labels, n_bins=15, norm="l1").item()
    ours = expected_calibration_error(probs.numpy(), labels.numpy() == 1)  # numpy input, the same counts
    assert ours == pytest.approx(expected, abs=1e-6)
    overconfident = (probs > 0.5).float() * 0.999  # says 0.999 where it is right half of the time
    assert expected_calibration_error(overconfident, labels == 1) > 0.2


def test_the_gate_on_the_bundled_model_is_torchmetrics_on_its_pixels(make_target):
    """The calibration gate streams the model's own pixels; torchmetrics, given them all at once,
    agrees up to its float32 sums (the gate's are float64)."""
    target = make_target(eval_size=4)
    result = calibration(target, CFG)
    with torch.no_grad():
        probs = target.model.logits(target.model.normalize(target.data.images)).float().softmax(1)
    masks = torch.as_tensor(target.data.masks.astype(np.int64))
    expected = multiclass_calibration_error(probs, masks, 8, n_bins=15, norm="l1", ignore_index=255).item()
    assert result.value == pytest.approx(expected, abs=1e-4)
    conf, pred = probs.max(1)
    exact = CalibrationBins(15).update(conf.numpy(), (pred == masks).numpy())  # one batch, float64
    assert result.value == pytest.approx(exact.ece(), abs=1e-12)
    assert result.passed and result.details["pixels"] == int((masks != 255).sum())


def test_a_confidence_of_exactly_one_is_in_the_last_bin():
    """torchmetrics gives 1.0 a 16th bin of its own; segcheck's 15 bins cover [0, 1]."""
    conf = torch.tensor([1.0, 1.0, 0.95, 0.95])
    hit = torch.tensor([1.0, 0.0, 1.0, 1.0])  # overconfident at 1.0, underconfident at 0.95
    bins = CalibrationBins(15).update(conf, hit)
    assert bins.count[-1] == 4 and bins.ece() == pytest.approx(abs(3 - 3.9) / 4)  # one bin: the gaps offset
    assert binary_calibration_error(conf, hit.long(), n_bins=15).item() == pytest.approx(0.5 * 0.5 + 0.5 * 0.05)


def test_bad_inputs_are_errors():
    with pytest.raises(SegcheckError, match=r"confidences must lie in \[0, 1\]"):
        CalibrationBins().update(np.array([1.5]), np.array([1]))
    with pytest.raises(SegcheckError, match="3 confidences for 2 outcomes"):
        CalibrationBins().update(np.zeros(3), np.zeros(2))
    with pytest.raises(SegcheckError, match="whole number >= 1"):
        CalibrationBins(0)
    assert np.isnan(CalibrationBins().ece())
