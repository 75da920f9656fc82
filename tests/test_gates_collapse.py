"""prediction_collapse: a model that predicts one class, a binary model with no positives or with
sigmoid applied twice, fail with the numbers; honest multi-class and binary models pass."""

import numpy as np
import pytest

from segcheck import config as segconfig
from segcheck import gates
from segcheck import plugins as segplugins
from segcheck.data import DatasetSpec
from segcheck.gates.collapse import SWEEP, class_fractions, threshold_sweep
from segcheck_plugins.synthetic_scene import ROAD
from segcheck_plugins.synthetic_streets import SyntheticStreets
from tests.conftest import build_target
from tests.models import ConstantModel, GrayRoadDetector

CFG = segconfig.DEFAULTS["prediction_collapse"]


class RoadMasks:
    """synthetic-streets relabelled as a binary task: road (1) vs everything else (0)."""

    def __init__(self, split: str):
        self.inner = SyntheticStreets(split)
        self.split = split
        self.identity = f"{self.inner.identity}:road-vs-rest"
        self.spec = DatasetSpec(classes=("background", "road"), mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))

    def __len__(self):
        return len(self.inner)

    def __getitem__(self, index):
        image, mask = self.inner[index]
        return image, (mask == ROAD).astype(np.int64)


def binary_target(module, eval_size: int = 8):
    plugins = segplugins.load()
    with plugins.models.provided_by("tests"):
        plugins.models.add("road-detector", lambda num_classes: module, binary=True)
    with plugins.datasets.provided_by("tests"):
        plugins.datasets.add("streets-road", lambda root, split: RoadMasks(split))
    config = segconfig.load(overrides={"eval": {"size": eval_size}})
    return build_target(plugins, config, "road-detector", "streets-road", checkpoint="none")


def test_single_class_model_fails_naming_the_classes_it_never_predicts(make_target):
    result = gates.prediction_collapse(make_target(ConstantModel(value=0.0), eval_size=8), CFG)
    assert not result.passed
    assert result.value == pytest.approx(1 / 8)
    assert "1/8 present classes predicted (0.12, min 0.50)" in result.message
    assert "dominant predicted 'road' 1.00" in result.message
    assert "never predicted: sidewalk, building, vegetation, sky, car, person, pole" in result.message
    assert "collapses towards few classes" in result.message
    assert result.details["dominance_excess"] > 0.20


def test_honest_model_predicts_the_classes_it_sees(make_target):
    result = gates.prediction_collapse(make_target(eval_size=8), CFG)
    assert result.passed, result.message
    assert result.value >= 0.5 and result.details["dominance_excess"] <= 0.20


def test_binary_model_without_positives_fails_and_reports_the_better_threshold():
    result = gates.prediction_collapse(binary_target(GrayRoadDetector(shift=-6.05)), CFG)
    assert not result.passed
    low, high = result.details["probability_range"]
    assert high < 0.5
    best = result.details["best_threshold"]
    assert best < 0.5 and result.details["threshold_sweep"][best] > 0.3 > result.details["threshold_iou"]
    assert f"every probability is <= the threshold 0.5; threshold {best:g} would give IoU" in result.message
    assert f"probabilities {low:.3f}..{high:.3f}" in result.message


def test_binary_model_that_outputs_probabilities_is_caught_as_sigmoid_applied_twice():
    result = gates.prediction_collapse(binary_target(GrayRoadDetector(as_probability=True)), CFG)
    assert not result.passed
    low, high = result.details["probability_range"]
    assert 0.5 <= low and high <= 0.732
    assert "sigmoid of values in 0..1" in result.message and "return logits" in result.message


def test_honest_binary_model_passes_with_its_threshold_sweep():
    result = gates.prediction_collapse(binary_target(GrayRoadDetector()), CFG)
    assert result.passed, result.message
    assert list(result.details["threshold_sweep"]) == list(SWEEP)
    assert result.details["threshold_iou"] > 0.7


def test_class_fractions_and_sweep_on_known_values():
    labels = np.array([[0, 0, 1, 2]])
    counted = np.array([[True, True, True, False]])
    assert class_fractions(labels, counted, 3).tolist() == pytest.approx([2 / 3, 1 / 3, 0.0])
    probs = np.array([[0.05, 0.35, 0.65, 0.95]])
    masks = np.array([[0, 1, 1, 255]])
    sweep = threshold_sweep(probs, masks, 255)
    assert sweep[0.3] == pytest.approx(1.0) and sweep[0.5] == pytest.approx(0.5) and sweep[0.7] == 0.0
