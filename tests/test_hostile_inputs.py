"""The second round of hostile inputs (issue 31): nothing passes that was not judged, a broken
target is one line once, and a verdict does not mislead. One test (or case) per finding."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from segcheck import SegcheckError, checkpoint
from segcheck.data import DatasetSpec, EvalData
from segcheck.gates import GateResult
from segcheck_plugins.unet import build_unet
from tests.test_anomaly_datasets import sh_mask, write_sh
from tests.test_prompted_folder import make_layout, write_yaml
from tests.test_pytest_plugin import run_gates

HOSTILE = """
import torch
from segcheck.hookspecs import hookimpl
from segcheck.gates.result import GateResult


class Net(torch.nn.Module):
    def __init__(self, num_classes, mode):
        super().__init__()
        self.mode = mode
        self.conv = torch.nn.Conv2d(3, num_classes + (mode == "extra"), 3, padding=1)

    def forward(self, x):
        if self.mode == "inplace":
            x.mul_(1.0)  # breaks autograd when the input requires grad
        out = self.conv(x)
        return {"list": lambda: [{"out": out}], "dict": lambda: {"mask": out}, "nodim": lambda: out.argmax(1),
                "int": lambda: out.long()}.get(self.mode, lambda: out)()


class Positional(torch.nn.Module):
    def __init__(self, num_classes):
        super().__init__()
        self.bias = torch.nn.Parameter(torch.zeros(1))
        self.classes = num_classes

    def forward(self, x):
        h, w = x.shape[-2:]
        rows = torch.arange(h).view(h, 1).expand(h, w) * self.classes // h
        out = torch.nn.functional.one_hot(rows, self.classes).permute(2, 0, 1).float() * 10
        return out.expand(len(x), -1, -1, -1) + self.bias


@hookimpl
def segcheck_register_models(registry):
    for mode in ("list", "dict", "nodim", "int", "extra", "inplace"):
        registry.add(f"h-{mode}", lambda num_classes, mode=mode: Net(num_classes, mode))
    registry.add("h-meta", lambda num_classes: Net(num_classes, "ok").to("meta"))
    registry.add("h-positional", Positional)


def liar(target, cfg):
    return GateResult("liar", 0.0, 1.0, "False", "a string for a verdict", rule="value >= threshold")


def impostor(target, cfg):
    return GateResult("noise_input", 0.0, 1.0, True, "named after another gate", rule="value <= threshold")


def contrary(target, cfg):
    return GateResult("contrary", 0.2, 0.1, True, "passes against its own rule", rule="value < threshold")


@hookimpl
def segcheck_register_gates(registry):
    registry.add("liar", liar)
    registry.add("impostor", impostor)
    registry.add("contrary", contrary)
"""


@pytest.fixture
def hostile(pytester):
    return str(pytester.makepyfile(hostile=HOSTILE))


def outcomes(report) -> dict[str, tuple[str, str]]:
    return {g["gate"]: (g["outcome"], g["message"]) for g in report["gates"]}


def write_folder(root, n=4, size=(32, 48), fill=None, classes=("background", "road", "car"), seed=0):
    """train/val/test folders of ``n`` random images, masks random classes or all ``fill``."""
    rng = np.random.default_rng(seed)
    for split in ("train", "val", "test"):
        for i in range(n):
            image = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
            mask = np.full(size, fill, np.uint8) if fill is not None else rng.integers(0, len(classes), size, np.uint8)
            for kind, array in (("images", image), ("masks", mask)):
                (root / split / kind).mkdir(parents=True, exist_ok=True)
                Image.fromarray(array).save(root / split / kind / f"im{i:03d}.png")
    (root / "dataset.yaml").write_text(yaml.safe_dump({"classes": list(classes)}))


# --- 7. no labelled pixel: an ERROR naming why, once; never a PASS or a FAIL with model advice --------


def test_masks_without_a_labelled_pixel_are_one_error_not_passes_or_model_advice(pytester):
    write_folder(pytester.path / "d", fill=255)
    args = ("--dataset", "folder", "--data-root", "d", "--checkpoint", "none", "-m", "not train")
    result, report = run_gates(pytester, *args)
    found = outcomes(report)
    errors = [g for g, (outcome, _) in found.items() if outcome == "error"]
    assert len(errors) == 1, found
    assert "no labelled pixel in the eval sample: its 4 masks of split 'val' hold only 255" in found[errors[0]][1]
    assert found["label_integrity"][0] == "failed"  # the audit of the masks still says what is wrong with them
    judged = ("prediction_collapse", "noise_input", "positional_prior", "perturbation_stability[jpeg]")
    for gate in judged + (("label_quality",) if "label_quality" in found else ()):  # with the audits extra
        if gate != errors[0]:
            assert found[gate] == ("skipped", f"not run: no labelled pixels (see {errors[0]})"), gate
    assert "model scores without reading" not in result.stdout.str() and "nan%" not in result.stdout.str()


# --- 8. agreement gates skip a prediction that does not depend on the input ----------------------------


def test_agreement_gates_skip_a_model_that_ignores_its_image(pytester, hostile):
    args = ("--plugin", hostile, "--model", "h-positional", "--checkpoint", "none", "--eval-size", "4")
    _, report = run_gates(pytester, *args, "-k", "perturbation_stability")
    found = outcomes(report)
    assert len(found) == 5
    for outcome, message in found.values():
        assert outcome == "skipped" and "the prediction does not depend on the input" in message


# --- 9. a GateResult is checked where it is recorded ---------------------------------------------------


@pytest.mark.parametrize(
    "gate, message",
    [
        ("liar", "GateResult 'liar': passed is 'False' (str); give True or False"),
        ("impostor", "hostile.py returned a result named 'noise_input'; a gate's result carries its registered name"),
        ("contrary", "says it passed, but its value 0.2 against 0.1 does not satisfy its rule 'value < threshold'"),
    ],
)
def test_a_gate_result_that_contradicts_itself_is_an_error_not_a_pass(pytester, hostile, gate, message):
    _, report = run_gates(pytester, "--plugin", hostile, "--checkpoint", "none", "--eval-size", "2", "-k", gate)
    outcome, text = outcomes(report)[gate]
    assert outcome == "error" and message in text


def test_gate_result_accepts_numpy_booleans_as_plain_ones():
    result = GateResult("g", 1.0, 0.5, np.bool_(True), "ok")
    assert result.passed is True
    with pytest.raises(SegcheckError, match="passed is 1 \\(int\\)"):
        GateResult("g", 1.0, 0.5, 1, "not a bool")


# --- 12. a probe at set-up: one line before any gate ------------------------------------------------------


@pytest.mark.parametrize(
    "model, message",
    [
        ("h-list", "model output is a list of 1 item(s), the first a dict; expected a tensor"),
        ("h-dict", "model output is a dict with keys ['mask']; expected a tensor, a dict with 'out' or 'logits'"),
        ("h-nodim", "the model returned a tensor of shape (1, 32, 48) for 1 image(s): no class dimension"),
        ("h-int", "the model returned int64 values; segcheck judges logits"),
        ("h-meta", "the model's weights are on the meta device, without values (conv.weight, conv.bias)"),
    ],
)
def test_an_output_no_gate_can_judge_is_one_line_before_any_gate(pytester, hostile, model, message):
    write_folder(pytester.path / "d")
    args = ("--plugin", hostile, "--model", model, "--checkpoint", "none", "--dataset", "folder", "--data-root", "d")
    result, report = run_gates(pytester, *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR and report is None
    stderr = result.stderr.str()
    assert message in stderr and stderr.count(message) == 1 and "Traceback" not in stderr


def test_a_head_with_one_channel_too_many_fails_its_audit_and_the_others_point_to_it(pytester, hostile):
    args = ("--plugin", hostile, "--model", "h-extra", "--checkpoint", "none", "--eval-size", "4", "-m", "not train")
    result, report = run_gates(pytester, *args, "-k", "not liar and not impostor and not contrary")
    found = outcomes(report)
    assert found["head_matches_classes"][0] == "failed"
    for gate in ("noise_input", "prediction_collapse", "shift_equivariance", "perturbation_stability[jpeg]"):
        assert found[gate][0] == "skipped", gate
        assert found[gate][1].endswith("the head has 9 channels for 8 classes (expected 8) (see head_matches_classes)")
    assert "outside 0..7" not in result.stdout.str()
    assert found["finite_outputs"][0] == "passed"  # logits that are finite, whatever their count


# --- 13. an exception inside a gate is one line -----------------------------------------------------------


def test_an_exception_inside_a_gate_is_one_line_naming_the_model(pytester, hostile):
    args = ("--plugin", hostile, "--model", "h-inplace", "--checkpoint", "none", "--eval-size", "2")
    result, report = run_gates(pytester, *args, "-k", "input_gradient")
    outcome, message = outcomes(report)["input_gradient"]
    assert outcome == "error"
    assert message.startswith("gate input_gradient: the model raised RuntimeError: a leaf Variable that requires grad")
    assert message.endswith("; see --tb=long")
    assert "Traceback" not in result.stdout.str() and "mul_" not in result.stdout.str()
    long, _ = run_gates(pytester, *args, "-k", "input_gradient", "--tb=long")
    assert "x.mul_(1.0)" in long.stdout.str()  # asked for, the traceback is there


# --- 14. a broken anomaly split is one line once; 18. an all-anomalous split is a SKIP ----------------------


def _streethazards(root, test_masks):
    for i, mask in enumerate(test_masks):
        write_sh(root, "train", "t1-3", f"{i:03d}", sh_mask(seed=i), seed=i)
        write_sh(root, "val", "t4", f"{i:03d}", sh_mask(seed=10 + i), seed=10 + i)
        write_sh(root, "test", "t5", f"{i:03d}", mask, seed=20 + i)


def _sh_test_mask(seed, fill=None):
    mask = sh_mask(seed=seed)
    mask[:3, :3] = 14
    return mask if fill is None else np.full_like(mask, fill)


def run_anomaly(pytester, root, *extra):
    import json

    from tests.test_anomaly_suite import SUITE

    report = pytester.path / "anomaly.json"
    args = ("--dataset", "streethazards", "--data-root", str(root), "--checkpoint", "none", "-p", "no:cacheprovider")
    result = pytester.runpytest(SUITE, *args, *extra, "--segcheck-report", str(report))
    return result, outcomes(json.loads(report.read_text()))


def test_an_unreadable_anomaly_split_is_one_error_and_the_other_gates_point_to_it(pytester):
    _streethazards(pytester.path / "sh", [_sh_test_mask(20), _sh_test_mask(21, fill=0), _sh_test_mask(22)])
    # -rN: pytest's own short summary, cut at the terminal's width, would make the count depend on it
    result, found = run_anomaly(pytester, pytester.path / "sh", "-rN")
    errors = {g: m for g, (o, m) in found.items() if o == "error"}
    assert list(errors) == ["anomaly_detection[energy]"], found
    assert "has values [0], expected StreetHazards' on-disk labels 1..14" in errors["anomaly_detection[energy]"]
    for gate in ("anomaly_detection[msp]", "known_class_miou"):
        assert found[gate] == ("skipped", "not run: the anomaly evaluation failed (see anomaly_detection[energy])")
    assert result.stdout.str().count("has values [0]") == 2  # the failing test, and its row of the summary


def test_an_anomaly_split_that_is_all_anomaly_is_a_skip_with_the_reason(pytester):
    _streethazards(pytester.path / "sh", [_sh_test_mask(20, fill=14), _sh_test_mask(21, fill=14)])
    _, found = run_anomaly(pytester, pytester.path / "sh")
    for gate in ("anomaly_detection[max_logit]", "known_class_miou"):
        outcome, message = found[gate]
        assert outcome == "skipped" and "there is no known pixel to tell the anomalies from" in message


# --- 16. sizes beyond a sane limit are refused up front; a MemoryError says what it was allocating ------------


def test_a_huge_resize_policy_is_refused_before_anything_is_read(pytester):
    write_folder(pytester.path / "d")
    args = ("--dataset", "folder", "--data-root", "d", "--checkpoint", "none", "--eval-resize", "20000x20000")
    result, _ = run_gates(pytester, *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*eval.resize '20000x20000' makes images of 20000x20000 = 400 Mpx, above eval.max_megapixels 64; *"]
    )


def test_an_image_above_the_limit_and_a_memory_error_say_what_and_how_big(monkeypatch):
    spec = DatasetSpec(("a", "b"))
    big = [(np.zeros((300, 400, 3), np.uint8), np.zeros((300, 400), np.int64))] * 2
    big = type("Big", (list,), {"spec": spec, "identity": "big"})(big)
    with pytest.raises(SegcheckError, match=r"image 0 of big is 300x400 = 0 Mpx, above eval.max_megapixels 0.1"):
        EvalData.from_dataset({"val": big}, "val", 2, 0, max_megapixels=0.1)

    def no_memory(*args, **kwargs):
        raise MemoryError()

    monkeypatch.setattr(np, "empty", no_memory)  # what the eval sample is read into
    with pytest.raises(SegcheckError, match=r"out of memory holding 2 images of 300x400 \(0.0 GiB as uint8 images"):
        EvalData.from_dataset({"val": big}, "val", 2, 0)


def test_a_memory_error_while_setting_up_says_so(loaded_plugins):
    from segcheck.target import guarded

    def allocate():
        raise MemoryError()

    with pytest.raises(SegcheckError, match=r"^dataset 'x' ran out of memory \(the allocation that failed gave no"):
        guarded("dataset 'x'", allocate)


# --- 17. non-finite normalization is refused wherever it is read -------------------------------------------------


@pytest.mark.parametrize("mean, std", [(".nan", "0.2"), ("0.4", ".inf"), ("0.4", "-.inf")])
def test_a_dataset_yaml_with_non_finite_normalization_is_refused(pytester, mean, std):
    write_folder(pytester.path / "d")
    config = pytester.path / "d" / "dataset.yaml"
    config.write_text(config.read_text() + f"mean: [{mean}, 0.4, 0.4]\nstd: [{std}, 0.2, 0.2]\n")
    result, _ = run_gates(pytester, "--dataset", "folder", "--data-root", "d", "--checkpoint", "none")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*dataset.yaml: mean and std need 3 finite numbers each (pixel scale 0-1)*"])


def test_model_metadata_with_non_finite_normalization_is_refused():
    from segcheck.model import first_normalization

    with pytest.raises(SegcheckError, match=r"the normalization from model 'm' metadata is mean \[nan, 0.5, 0.5\]"):
        first_normalization((None, None, "explicit"), ([float("nan"), 0.5, 0.5], [1, 1, 1], "model 'm' metadata"))


# --- 19. fewer images than asked: the header and report say so; gates below their minimum skip ------------


def test_one_image_is_stated_and_gates_that_need_several_skip(pytester):
    write_folder(pytester.path / "d", n=1)
    args = ("--dataset", "folder", "--data-root", "d", "--checkpoint", "none", "-m", "not train")
    result, report = run_gates(pytester, *args)
    described = "1 image of split 'val' (eval.size 32: the split holds 1)"
    assert report["targets"]["unet"]["eval_sample"] == described
    result.stdout.fnmatch_lines([f"*eval_sample {described}*"])
    found = outcomes(report)
    for gate in ("derangement_gap", "batch_independence", "generalization"):
        assert found[gate] == (
            "skipped",
            f"{gate} needs at least 2 eval images; the eval sample has 1 (split 'val' holds 1)",
        )


# --- 20. EXIF orientation is applied -------------------------------------------------------------------------


def test_a_jpeg_with_exif_orientation_is_read_as_viewers_show_it(tmp_path):
    from segcheck_plugins.folder import read_image

    pixels = np.zeros((16, 16, 3), np.uint8)
    pixels[0] = 255  # the stored top row
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    image.save(tmp_path / "phone.jpg", exif=exif, quality=100)
    shown = read_image(tmp_path / "phone.jpg")
    assert shown[:, -1].mean() > 200 and shown[0, :-1].mean() < 50  # the top row is now the right column


# --- 21. prompted concepts: absent everywhere, a shared prompt, a name with a newline ------------------------


def test_a_concept_with_no_mask_in_the_split_is_an_error_naming_it(tmp_path, loaded_plugins):
    make_layout(tmp_path, annotated={"a": ("crack",), "b": ("crack",)})
    write_yaml(tmp_path)
    splits = {"val": loaded_plugins.datasets.get("prompted-folder").obj(tmp_path, "val")}
    with pytest.raises(SegcheckError, match=r"concept\(s\) 'taping' have prompts but no mask in the 'val' split"):
        EvalData.from_dataset(splits, "val", 1, 0)


def test_two_concepts_sharing_a_prompt_are_refused():
    with pytest.raises(SegcheckError, match="concepts 'crack' and 'seam' share the prompt 'segment line'"):
        DatasetSpec(("background", "foreground"), prompts={"crack": ["segment line"], "seam": ["segment line"]})


def test_a_concept_name_ending_in_a_newline_is_not_file_name_safe(tmp_path):
    from segcheck_plugins.prompted_folder import load_config

    write_yaml(tmp_path, prompts={"crack\n": ["segment crack"]})
    with pytest.raises(SegcheckError, match=r"concept name 'crack\\n' is not file-name safe"):
        load_config(tmp_path)


# --- 22. a sidecar naming another model -------------------------------------------------------------------------


def test_a_sidecar_of_another_model_is_an_error_naming_both(pytester):
    path = pytester.path / "run7.safetensors"
    checkpoint.save(build_unet(8), path, {"model": "deeplabv3_resnet50", "mean": [0.5] * 3, "std": [0.5] * 3})
    result, _ = run_gates(pytester, "--checkpoint", str(path), "-k", "finite_outputs")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*run7.safetensors was trained as model 'deeplabv3_resnet50' (its sidecar run7.yaml says so), but it is "
         "loaded into model 'unet'*"]
    )  # fmt: skip


# --- 23. bfloat16 scores on the CPU ------------------------------------------------------------------------------


def test_cpu_bfloat16_scores_are_measured_like_float32():
    from segcheck.metrics import OODMetrics, binary_iou, component_metrics

    scores = torch.rand(2, 16, 16, generator=torch.Generator().manual_seed(0))
    is_ood = scores > 0.8
    for dtype in (torch.float32, torch.bfloat16):
        metric = OODMetrics()
        metric.update(scores.to(dtype), is_ood)
        assert metric.compute().auroc == 1.0
        assert binary_iou(scores.to(dtype), is_ood.long(), 0.5, 255) > 0
        assert component_metrics(scores.to(dtype), is_ood, threshold=0.5, min_gt_size=0, min_pred_size=0).images == 2
