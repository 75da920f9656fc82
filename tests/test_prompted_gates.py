"""The prompted contract and gates: prompts in DatasetSpec/EvalData, prompted model calls, the
gates of suites/prompted on hand-built models that read, ignore or collapse on a prompt, and
negative_prompt / prompted_calibration on the shipped robust-binary model and on a wrapper of it
that always predicts its training objects."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from segcheck import SegcheckError
from segcheck import config as segconfig
from segcheck.data import DatasetSpec, EvalData
from segcheck.gates import (
    NotApplicable,
    negative_prompt,
    paraphrase_consistency,
    prompt_metrics,
    prompt_sensitivity,
    prompted_calibration,
    prompted_collapse,
    prompted_noise_input,
    unmet_need,
)
from segcheck.model import ModelUnderTest, Normalization
from segcheck.target import Target

PROMPTS = {"apple": ["segment apple", "segment red apple"], "grass": ["segment grass"]}
SPEC = DatasetSpec(("background", "foreground"), prompts=PROMPTS)
CFG = segconfig.DEFAULTS


def _data(n: int = 6, size: int = 32, without_apple: int = 0) -> EvalData:
    """``n`` gray images, each with a red square (apple) and a green square (grass); sample
    2k is image k's apple mask, 2k+1 its grass mask. The last ``without_apple`` images have no
    red square: their apple masks are empty (negative pairs)."""
    rng = np.random.default_rng(0)
    images, masks, concepts = [], [], []
    for k in range(n // 2):
        image = np.full((size, size, 3), 128, np.uint8)
        red, green = np.zeros((size, size), np.int64), np.zeros((size, size), np.int64)
        y, x = rng.integers(0, size - 10, 2)
        red[y : y + 8, x : x + 8] = 1
        y, x = rng.integers(0, size - 10, 2)
        green[y : y + 6, x : x + 6] = 1
        green &= 1 - red
        if k >= n // 2 - without_apple:
            red[:] = 0
        image[red == 1] = (255, 0, 0)
        image[green == 1] = (0, 255, 0)
        for concept, mask in (("apple", red), ("grass", green)):
            images.append(image)
            masks.append(mask)
            concepts.append(concept)
    return EvalData(np.stack(images), np.stack(masks), SPEC, concepts=concepts)


class ColourByPrompt(torch.nn.Module):
    """Foreground where the prompt's colour is saturated (red for 'apple', green for 'grass')."""

    def __init__(self, scale=8.0, offset=0.0, ignore_prompt=False, deaf_to="", union=False):
        super().__init__()
        self.bias = torch.nn.Parameter(torch.zeros(()))
        self.scale, self.offset, self.ignore_prompt, self.deaf_to = scale, offset, ignore_prompt, deaf_to
        self.union = union  # foreground wherever any concept is, whatever the prompt

    def forward(self, x, prompts):
        out = []
        for image, prompt in zip(x, prompts):
            prompt = "segment apple" if self.ignore_prompt else prompt
            scores = []
            for channel in (0, 1) if self.union else (0 if "apple" in prompt else 1,):
                others = torch.cat([image[:channel], image[channel + 1 :]]).amax(0)
                scores.append(torch.minimum(image[channel] - 0.9, -0.5 - others))
            logit = self.scale * torch.stack(scores).amax(0) + self.offset + self.bias
            if self.deaf_to and self.deaf_to in prompt:
                logit = torch.full_like(logit, -9.0)
            out.append(logit)
        return torch.stack(out)[:, None]


def _target(module, data=None) -> Target:
    half = Normalization((0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "test")
    model = ModelUnderTest(module, normalization=half, binary=True, prompted=True)
    return Target(model, data or _data(), "adhoc")


def test_dataset_spec_prompts_are_checked_and_ordered():
    assert SPEC.prompted and SPEC.concepts == ("apple", "grass")
    assert SPEC.prompts_of("apple") == ("segment apple", "segment red apple")
    with pytest.raises(SegcheckError, match="unknown concept 'pear'"):
        SPEC.prompts_of("pear")
    with pytest.raises(SegcheckError, match="binary"):
        DatasetSpec(("a", "b", "c"), prompts=PROMPTS)
    with pytest.raises(SegcheckError, match="at least one non-empty prompt"):
        DatasetSpec(("background", "foreground"), prompts={"crack": []})
    with pytest.raises(SegcheckError, match="expected a list of prompts"):
        DatasetSpec(("background", "foreground"), prompts={"tape": "tape"})
    assert not DatasetSpec(("a", "b")).prompted


def test_eval_data_prompts_per_sample():
    data = _data(4)
    assert data.prompts() == ["segment apple", "segment grass"] * 2
    assert data.prompts(1) == ["segment red apple", "segment grass"] * 2  # grass has no paraphrase: its last
    assert data.prompts("segment grass") == ["segment grass"] * 4
    with pytest.raises(SegcheckError, match="pass concepts"):
        EvalData(data.images, data.masks, SPEC)


def test_a_prompted_model_needs_one_prompt_per_image():
    target = _target(ColourByPrompt())
    x = target.model.normalize(target.data.images[:2])
    with pytest.raises(SegcheckError, match="one text prompt per image"):
        target.model.logits(x)
    with pytest.raises(SegcheckError, match="one text prompt per image"):
        target.model.logits(x, ["segment apple"])
    assert target.model.logits(x, ["segment apple", "segment grass"]).shape == (2, 1, 32, 32)


def test_a_model_that_reads_its_prompt_passes_every_prompted_gate():
    target = _target(ColourByPrompt())
    results = [
        prompt_metrics(target, CFG["prompt_metrics"]),
        prompted_collapse(target, CFG["prompted_collapse"]),
        prompted_noise_input(target, CFG["prompted_noise_input"]),
        prompt_sensitivity(target, CFG["prompt_sensitivity"]),
        paraphrase_consistency(target, CFG["paraphrase_consistency"]),
    ]
    assert all(r.passed for r in results), [r.message for r in results if not r.passed]
    metrics = results[0].details["per_prompt"]
    assert metrics["apple"]["segment apple"]["iou"] == pytest.approx(1.0)
    assert set(metrics["apple"]) == {"segment apple", "segment red apple"}
    assert results[3].value == pytest.approx(1.0)  # own prompt IoU 1, the other concept's 0


def test_a_model_that_ignores_its_prompt_fails_prompt_sensitivity():
    result = prompt_sensitivity(_target(ColourByPrompt(ignore_prompt=True)), CFG["prompt_sensitivity"])
    assert not result.passed and result.value < 0.10
    assert "ignores its prompt" in result.message


def test_paraphrase_consistency_is_not_applicable_to_a_model_that_ignores_its_prompt():
    # issue 36: it passed at 1.0 here (every paraphrase gives the same mask, as every prompt does)
    with pytest.raises(NotApplicable) as info:
        paraphrase_consistency(_target(ColourByPrompt(ignore_prompt=True)), CFG["paraphrase_consistency"])
    assert str(info.value) == (
        "the model gives about the same mask whatever it is asked (every concept's gap to another concept's prompt "
        "is < 0.10, the largest 0.000), so its paraphrases agree trivially; prompt_sensitivity judges this"
    )


def test_collapse_to_background_fails_and_names_the_sweeps_best_threshold():
    # foreground probability sigmoid(8 * 0.1 - 1.6) = 0.31 at most: nothing above 0.5
    target = _target(ColourByPrompt(offset=-1.6))
    result = prompted_collapse(target, CFG["prompted_collapse"])
    assert not result.passed and result.value == 0.0
    assert "best threshold is 0.1" in result.message and "collapse to background at threshold 0.5" in result.message
    metrics = prompt_metrics(target, CFG["prompt_metrics"])
    assert not metrics.passed and "pixel accuracy" in metrics.message
    assert metrics.details["per_prompt"]["apple"]["segment apple"]["pixel_accuracy"] > 0.9


def test_a_model_deaf_to_a_paraphrase_fails_paraphrase_consistency():
    result = paraphrase_consistency(_target(ColourByPrompt(deaf_to="red")), CFG["paraphrase_consistency"])
    assert not result.passed and result.value == 0.0
    assert "segment apple | segment red apple" in result.message


def test_paraphrase_consistency_cannot_judge_empty_masks():
    with pytest.raises(NotApplicable, match="no varied prediction"):
        paraphrase_consistency(_target(ColourByPrompt(offset=-50)), CFG["paraphrase_consistency"])


def test_non_finite_logits_are_an_error_not_a_verdict():
    target = _target(ColourByPrompt(offset=float("nan")))
    with pytest.raises(SegcheckError, match="not finite"):
        prompt_metrics(target, CFG["prompt_metrics"])


def test_closed_set_gates_skip_a_prompted_model_and_prompted_gates_a_closed_set_one(loaded_plugins, make_target):
    gates = {g.name: g for g in loaded_plugins.gates.gates()}
    prompted = _target(ColourByPrompt())
    assert "closed-set gate" in unmet_need(gates["noise_input"], prompted, CFG)
    assert unmet_need(gates["prompt_sensitivity"], prompted, CFG) is None
    assert "closed-set" in unmet_need(gates["prompt_sensitivity"], make_target(eval_size=2), CFG)
    assert {g.name for g in loaded_plugins.gates.gates("prompted")} == {
        "prompt_metrics",
        "prompted_collapse",
        "prompted_noise_input",
        "prompt_sensitivity",
        "paraphrase_consistency",
        "negative_prompt",
        "prompted_calibration",
    }


@pytest.mark.parametrize(
    ("model", "dataset", "expected"),
    [("unet-prompted", "synthetic-streets", "declares no prompts"), ("unet", "synthetic-drywall", "takes no prompt")],
)
def test_a_prompted_model_and_a_prompted_dataset_go_together(loaded_plugins, model, dataset, expected):
    from tests.conftest import build_target

    config = segconfig.load(overrides={"eval": {"size": 2}})
    with pytest.raises(SegcheckError, match=expected):
        build_target(loaded_plugins, config, model, dataset, checkpoint="none")


def test_synthetic_drywall_pairs_and_masks():
    from segcheck_plugins.synthetic_drywall import CONCEPTS, SyntheticDrywall

    data = SyntheticDrywall("val")
    assert len(data) == 2 * 64 and data.spec.concepts == CONCEPTS
    assert data.pair(0) == ("val_0000", "crack") and data.pair(3) == ("val_0001", "taping")
    image, mask = data[1]
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}
    assert np.array_equal(data[0][0], data[1][0])  # one image, two concepts
    fractions = {c: np.mean([data[i][1].mean() for i in range(j, 64, 2)]) for j, c in enumerate(CONCEPTS)}
    assert 0.003 < fractions["crack"] < 0.03 and 0.03 < fractions["taping"] < 0.15


# --- negative pairs and calibration ---------------------------------------------------------------


def test_negative_prompt_passes_a_model_that_reads_the_image_and_fails_one_that_paints_its_objects():
    data = _data(8, without_apple=2)  # 2 apple pairs with empty masks
    honest = negative_prompt(_target(ColourByPrompt(), data), CFG["negative_prompt"])
    assert honest.passed and honest.value == 0.0, honest.message
    apple = honest.details["concepts"]["apple"]
    assert apple["empty_pairs"] == 2 and set(apple["per_prompt"]) == {"segment apple", "segment red apple"}
    assert "grass" in honest.details["not_judged"]  # every grass pair shows grass
    union = negative_prompt(_target(ColourByPrompt(union=True), data), CFG["negative_prompt"])
    green = 36 / 32**2  # the green 6x6 square, painted as "apple"
    assert not union.passed and union.value == pytest.approx(green)
    assert "asked for 'apple' where there is none, the model paints 3.5% of the image" in union.message
    assert "train with negative pairs" in union.message


def test_negative_prompt_without_an_empty_pair_is_a_skip():
    with pytest.raises(NotApplicable, match="no \\(image, concept\\) pair of the eval sample has an empty mask"):
        negative_prompt(_target(ColourByPrompt()), CFG["negative_prompt"])


class Union(torch.nn.Module):
    """Wraps a prompted module: whatever it is asked, the union of what it finds for ``asked``
    (every concept it was trained on): a model that always predicts its training objects."""

    def __init__(self, inner: torch.nn.Module, asked: list[str]):
        super().__init__()
        self.inner, self.asked = inner, asked

    def forward(self, x, prompts):
        return torch.stack([self.inner(x, [prompt] * len(x)) for prompt in self.asked]).amax(0)


@pytest.fixture(scope="module")
def drywall(loaded_plugins):
    from tests.conftest import build_target

    return build_target(loaded_plugins, segconfig.load(), "unet-prompted", "synthetic-drywall")


def test_the_shipped_robust_binary_model_passes_negative_prompt_and_its_wrapper_fails(drywall):
    result = negative_prompt(drywall, CFG["negative_prompt"])
    assert result.passed and result.value <= CFG["negative_prompt"]["max_share"], result.message
    assert {c: d["empty_pairs"] for c, d in result.details["concepts"].items()} == {"crack": 3, "taping": 1}
    spec = drywall.data.spec
    asked = [spec.prompts_of(c)[0] for c in spec.concepts]
    model = ModelUnderTest(
        Union(drywall.model.module, asked), normalization=drywall.model.normalization, binary=True, prompted=True
    )
    painter = Target(model, drywall.data, "union")
    failed = negative_prompt(painter, CFG["negative_prompt"])
    assert not failed.passed and failed.details["worst_concept"] == "crack" and failed.value > 0.05, failed.message


def test_prompted_calibration_is_torchmetrics_per_concept_on_the_shipped_model(drywall):
    from torchmetrics.functional.classification import binary_calibration_error

    from segcheck.gates.prompted import by_concept, probabilities

    result = prompted_calibration(drywall, CFG["calibration"])
    assert result.passed, result.message
    data = drywall.data
    probs = torch.as_tensor(probabilities(drywall, data.prompts()))
    for concept, idx in by_concept(drywall).items():
        expected = binary_calibration_error(probs[idx], torch.as_tensor(data.masks[idx].astype(np.int64)), n_bins=15)
        assert result.details["per_concept"][concept]["ece"] == pytest.approx(expected.item(), abs=1e-5)
    worst = result.details["worst_concept"]
    assert (
        result.value
        == result.details["per_concept"][worst]["ece"]
        == max(d["ece"] for d in result.details["per_concept"].values())
    )
