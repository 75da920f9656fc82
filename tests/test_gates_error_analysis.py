"""error_analysis on hand-made images whose red channel is the class map, read back by a model that
is right wherever the masks are: per-class IoU and Boundary IoU against the references, an absent
class shown as absent (not 0), each image's own mIoU worked out by hand, the worst images first,
ignore pixels out; and the tables the report and the terminal print."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from segcheck import config as segconfig
from segcheck.data import DatasetSpec, EvalData
from segcheck.gates import error_analysis
from segcheck.gates.error_analysis import ABSENT_RULE
from segcheck.metrics import ConfusionMatrix, iou
from segcheck.metrics.boundary import boundary_iou
from segcheck.model import ModelUnderTest, Normalization
from segcheck.report import GateRecord, error_lines, error_tables
from segcheck.target import Target

CFG = segconfig.DEFAULTS["error_analysis"]
SPEC = DatasetSpec(("road", "car", "tram"))  # no image shows a tram: an absent class


class ReadsRed(torch.nn.Module):
    """Class k where the red channel is 100 k (pixels normalized with mean 0, std 1: red = value / 255)."""

    def __init__(self):
        super().__init__()
        self.unused = torch.nn.Parameter(torch.zeros(()))  # a module with weights, as models have

    def forward(self, x):
        red = x[:, :1] * 255 / 100
        classes = torch.arange(3, dtype=x.dtype).view(1, 3, 1, 1)
        return -10 * (red - classes).abs()


def _data() -> tuple[EvalData, np.ndarray]:
    """4 images of 24x24 road, each with a 6x6 car: image 2's mask has a second car the image does
    not show (36 px the model calls road), image 3 has a 4x24 band of ignore pixels."""
    labels = np.zeros((4, 24, 24), np.int64)
    for k in range(4):
        labels[k, 4 + 3 * k : 10 + 3 * k, 5:11] = 1
    masks = labels.copy()
    masks[2, 14:20, 14:20] = 1
    masks[3, 20:24] = 255
    images = np.zeros((4, 24, 24, 3), np.uint8)
    images[..., 0] = labels * 100
    return EvalData(images, masks, SPEC, batch_size=3), labels


def _target() -> tuple[Target, np.ndarray]:
    data, labels = _data()
    model = ModelUnderTest(ReadsRed(), normalization=Normalization((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), "test"))
    return Target(model, data, "reads-red"), labels


def test_per_class_iou_boundary_iou_absent_classes_and_the_worst_image():
    target, labels = _target()
    assert np.array_equal(target.predictions.labels, labels)  # the model reads its images exactly
    result = error_analysis(target, CFG)
    d, masks = result.details, target.data.masks
    reference = ConfusionMatrix(3, 255).update(labels, masks)
    assert d["confusion"] == reference.matrix.tolist()
    ious, edges = iou(reference.matrix), boundary_iou(labels, masks, 3, 255)
    # road: every road pixel right, 36 car pixels called road; car: those 36 missed of 4 x 36 + 36
    road_px = 3 * (576 - 36) + (576 - 96 - 36) - 36  # counted road pixels the masks have (image 3 less its band)
    assert ious[0] == pytest.approx(road_px / (road_px + 36)) and ious[1] == pytest.approx(144 / 180)
    rows = {r["class"]: r for r in d["per_class"]}
    assert rows["road"]["IoU"] == pytest.approx(ious[0]) and rows["car"]["IoU"] == pytest.approx(ious[1])
    assert rows["road"]["Boundary IoU"] == pytest.approx(edges[0]) and rows["car"]["Boundary IoU"] == pytest.approx(
        edges[1]
    )
    assert rows["tram"]["IoU"] == rows["tram"]["Boundary IoU"] == "absent"  # not 0: left out of the means
    assert d["absent_classes"] == ["tram"] and d["absent_rule"] == ABSENT_RULE
    assert result.value == pytest.approx((ious[0] + ious[1]) / 2) and result.passed and result.rule == "reported"
    assert d["boundary_miou"] == pytest.approx((edges[0] + edges[1]) / 2)
    assert rows["car"]["most often predicted instead"] == "road (20.0%)"
    # image 2: road 504 of 540 predicted, car 36 of 72 -> own mIoU (504 / 540 + 36 / 72) / 2; the others 1
    worst = (504 / 540 + 0.5) / 2
    assert d["worst_images"][0] == {
        "image": 2,
        "mIoU": pytest.approx(worst),
        "pixel accuracy": pytest.approx(540 / 576),
    }
    assert [i for i, _ in d["images_by_miou"]][0] == 2 and [v for _, v in d["images_by_miou"]] == sorted(
        v for _, v in d["images_by_miou"]
    )
    assert len(d["worst_images"]) == 4 and [w["mIoU"] for w in d["worst_images"][1:]] == [1.0, 1.0, 1.0]
    assert d["boundary_px"] == 1  # 0.02 x 33.9 px, at least 1
    assert "(1 absent: tram)" in result.message and "worst image #2 mIoU" in result.message
    assert "reported, not gated" in result.message


def test_the_report_tables_show_absent_classes_as_absent_and_state_the_rule():
    target, _ = _target()
    result = error_analysis(target, dict(CFG, worst_images=1))
    record = GateRecord.from_result(result, "reads-red", "t::error_analysis")
    table = error_tables([record])["reads-red"]
    assert [w["image"] for w in table["worst images"]] == [2] and table["absent classes"] == ABSENT_RULE
    lines = error_lines({"reads-red": table})
    tram = next(line for line in lines if line.startswith("tram"))
    assert tram.split()[1:3] == ["absent", "absent"]
    assert lines[0].startswith("reads-red: mIoU ") and f"absent: tram; {ABSENT_RULE}" in lines
