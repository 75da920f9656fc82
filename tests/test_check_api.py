"""``segcheck.check``: chosen gates on a module and arrays, from a user's own tests."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

import segcheck
from segcheck import SegcheckError
from segcheck.report import GateRecord
from tests.conftest import REPO

CLASSES = ("dark", "bright")
NORM = {"mean": (0.5,) * 3, "std": (0.25,) * 3}
READS = ["finite_outputs", "head_matches_classes", "prediction_collapse", "derangement_gap", "label_integrity"]


@pytest.fixture(scope="module")
def arrays():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(8, 32, 48, 3), dtype=np.uint8)
    return images, (images[..., 0] > 127).astype(np.int64)


def reader() -> torch.nn.Module:
    """Logit of "bright" grows with the red channel: it reads its images and gets them right."""
    net = torch.nn.Conv2d(3, 2, kernel_size=1)
    with torch.no_grad():
        net.weight.zero_()
        net.bias.zero_()
        net.weight[1, 0] = 10.0
    return net


class Constant(torch.nn.Module):
    """Predicts "dark" everywhere, whatever the image."""

    def __init__(self):
        super().__init__()
        self.bias = torch.nn.Parameter(torch.tensor([1.0, 0.0]))

    def forward(self, x):
        return self.bias.view(1, 2, 1, 1) + 0 * x[:, :2]


def test_a_model_that_reads_its_images_passes(arrays):
    result = segcheck.check(reader(), *arrays, classes=CLASSES, gates=READS, **NORM)
    assert result.assert_passed() is result and result.passed
    assert [r.gate for r in result] == READS and all(isinstance(r, GateRecord) for r in result)
    assert result.get("derangement_gap").value > 0.5
    assert "5 of 5 gates passed" in str(result)


def test_a_collapsed_model_fails_with_the_gates_messages(arrays):
    result = segcheck.check(Constant(), *arrays, classes=CLASSES, gates=["finite_outputs", "prediction_collapse"])
    assert not result.passed and [r.gate for r in result.failures] == ["prediction_collapse"]
    with pytest.raises(AssertionError) as failed:
        result.assert_passed()
    message = str(failed.value)
    assert message.startswith("1 of 2 segcheck gates did not pass:\nFAIL prediction_collapse: 1/2 present classes")
    assert "never predicted: bright" in message and "finite_outputs" not in message


def test_skips_are_records_not_failures_and_a_family_name_stands_for_its_members(arrays):
    result = segcheck.check(Constant(), *arrays, classes=CLASSES, gates=["perturbation_stability", "positional_prior"])
    assert {r.outcome for r in result} == {"skipped"} and result.passed
    assert len([r for r in result if r.gate.startswith("perturbation_stability[")]) == 5
    assert "needs a 'train' split" in result.get("positional_prior").message


def test_splits_and_settings_reach_the_gates(arrays):
    images, masks = arrays
    pairs = list(zip(images, masks))
    result = segcheck.check(
        reader(), images, masks, classes=CLASSES, gates=["positional_prior", "prediction_collapse"],
        settings={"positional_prior": {"train_samples": 8}, "prediction_collapse": {"min_class_fraction": 1.0}},
        splits={"train": pairs}, **NORM,
    )  # fmt: skip
    assert result.get("positional_prior").outcome == "passed"
    assert result.get("prediction_collapse").threshold == 1.0


def test_an_exception_in_a_gate_is_an_error_record_chained_to_the_assertion(arrays):
    class OneAtATime(torch.nn.Conv2d):
        def forward(self, x):
            if len(x) > 1:
                raise RuntimeError("batches are not supported")
            return super().forward(x)

    result = segcheck.check(OneAtATime(3, 2, 1), *arrays, classes=CLASSES, gates=["batch_independence"], **NORM)
    (record,) = result
    assert record.outcome == "error" and record.message == "raised RuntimeError: batches are not supported"
    with pytest.raises(AssertionError) as failed:
        result.assert_passed()
    assert isinstance(failed.value.__cause__, RuntimeError)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"gates": ["nope"]}, r"segcheck.check: unknown gate 'nope'; registered gates: .*noise_input"),
        ({"gates": "noise_input"}, r"gates is a list of gate names, got the string 'noise_input'"),
        ({"mean": (0.5,) * 3}, r"give mean and std together"),
        ({"settings": {"noise_input": {"max_mio": 1}}}, r"segcheck.check\(settings=...\): unknown setting noise_inp"),
    ],
)
def test_bad_arguments_are_one_line(arrays, kwargs, message):
    with pytest.raises(SegcheckError, match=message):
        segcheck.check(reader(), *arrays, classes=CLASSES, **kwargs)


def test_a_module_that_does_not_give_logits_is_refused_up_front(arrays):
    with pytest.raises(SegcheckError, match="model"):
        segcheck.check(torch.nn.Flatten(), *arrays, classes=CLASSES)


def test_readme_check_example_runs():
    readme = (REPO / "README.md").read_text()
    code = re.search(r"<!-- check-example -->\n```python\n(.*?)```", readme, re.S).group(1)
    exec(compile(code, "README.md", "exec"), {})
