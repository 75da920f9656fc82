"""The pytest integration, end to end through ``pytester``: options, errors, table, report, xdist."""

import json

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from segcheck_plugins.synthetic_streets import SyntheticStreets
from segcheck_plugins.torchvision_models import build
from tests.conftest import REPO

GATES = str(REPO / "suites" / "gates")
MY_ARCH = """
import torch
from segcheck.hookspecs import hookimpl

@hookimpl
def segcheck_register_models(registry):
    registry.add("mynet", lambda num_classes: torch.nn.Conv2d(3, num_classes, 3, padding=1))
"""


def run_gates(pytester, *args):
    report = pytester.path / "report.json"
    result = pytester.runpytest(GATES, "-p", "no:cacheprovider", "--segcheck-report", str(report), *args)
    verdicts = json.loads(report.read_text()) if report.exists() else None
    return result, verdicts


def test_embedded_default_passes_every_gate_with_summary_table_and_report(pytester):
    result, report = run_gates(pytester)
    assert result.ret == 0, result.stdout.str()
    passed = [g for g in report["gates"] if g["outcome"] == "passed"]
    assert result.parseoutcomes()["passed"] == len(passed)  # every passing gate test reported its gate
    skipped = [] if torch.cuda.is_available() else ["SKIP cpu_cuda_agreement: needs CUDA; none available*"]
    result.stdout.fnmatch_lines(
        [
            "*segcheck: model unet*checkpoint*unet_synthetic-streets_robust.safetensors*",
            "*segcheck gates*",
            "gate*target*measured*threshold*verdict*",
            "noise_input*unet*PASS*",
            *skipped,
            f"{len(passed)} of {len(report['gates'])} gates passed*",
        ]
    )
    names = {g["gate"] for g in report["gates"]}
    assert {
        "noise_input",
        "head_matches_classes",
        "output_size",
        "finite_outputs",
        "label_integrity",
        "overfit_tiny",
        "input_baseline",
        "positional_prior",
    } <= names
    assert report["thresholds"]["noise_input.max_miou"] == 0.10
    assert report["targets"]["unet"]["device"] == "cpu"


def test_xdist_gives_the_same_verdicts(pytester):
    plain, serial = run_gates(pytester, "-m", "not train")
    parallel_result, parallel = run_gates(pytester, "-m", "not train", "-n", "2")
    assert plain.ret == parallel_result.ret == 0
    key = lambda report: sorted((g["test"], g["outcome"], g["value"]) for g in report["gates"])  # noqa: E731
    assert key(serial) == key(parallel)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "nope"], "unknown model 'nope'; known models: *deeplabv3_resnet50*unet*"),
        (["--dataset", "nope"], "unknown dataset 'nope'; known datasets: *folder*synthetic-streets*"),
        (["--checkpoint", "missing.pt"], "*checkpoint missing.pt does not exist*"),
        (["--dataset", "folder"], "*reads files: pass --data-root DIR*"),
        (["--eval-size", "0"], "*--eval-size expects a positive integer*"),
        (["--model", "deeplabv3_resnet50"], "*bundles no checkpoint for dataset 'synthetic-streets'*"),
    ],
)
def test_bad_options_are_usage_errors(pytester, args, message):
    result, _ = run_gates(pytester, *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*{message}"])


def test_help_lists_every_segcheck_option(pytester):
    result = pytester.runpytest(GATES, "-p", "no:cacheprovider", "--help")
    assert result.ret == 0, result.stderr.str()
    result.stdout.fnmatch_lines(["segcheck: validity gates*", "*--shard=K/N*", "*shard i % N + 1*"])


def test_plugin_file_makes_a_new_architecture_usable(pytester):
    plugin = pytester.makepyfile(my_arch=MY_ARCH)
    result, report = run_gates(
        pytester, "--plugin", str(plugin), "--model", "mynet", "--checkpoint", "none", "-m", "not train"
    )
    result.stdout.fnmatch_lines(["*segcheck: model mynet (from *my_arch.py)*"])
    verdicts = {g["gate"]: g["outcome"] == "passed" for g in report["gates"]}
    for audit in ("head_matches_classes", "output_size", "finite_outputs", "label_integrity"):
        assert verdicts[audit], audit
    assert "noise_input" in verdicts


def write_folder_dataset(root, n=8):
    data = SyntheticStreets(split="val", length=n)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n):
        image, mask = data[i]
        Image.fromarray(image).save(root / "images" / f"frame_{i:03d}.png")
        Image.fromarray(mask.astype(np.uint8)).save(root / "masks" / f"frame_{i:03d}.png")
    (root / "dataset.yaml").write_text(yaml.safe_dump({"classes": list(data.spec.classes), "ignore_index": 255}))
    return data


def test_torchvision_state_dict_on_a_folder_dataset(pytester):
    data = write_folder_dataset(pytester.path / "streets")
    model = build("lraspp_mobilenet_v3_large", 8)  # "trained elsewhere": a few plain-torch steps
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    images = torch.stack([torch.from_numpy(data[i][0]).permute(2, 0, 1).float() / 255 for i in range(4)])
    masks = torch.stack([torch.from_numpy(data[i][1]) for i in range(4)])
    for _ in range(3):
        loss = torch.nn.functional.cross_entropy(model(images)["out"], masks)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    torch.save(model.state_dict(), pytester.path / "lraspp.pt")
    result, report = run_gates(
        pytester,
        "--model",
        "lraspp_mobilenet_v3_large",
        "--checkpoint",
        "lraspp.pt",
        "--dataset",
        "folder",
        "--data-root",
        "streets",
        "--eval-size",
        "4",
        "-m",
        "not train",
    )
    result.stdout.fnmatch_lines(["*segcheck: model lraspp_mobilenet_v3_large*dataset folder*"])
    verdicts = {g["gate"]: g for g in report["gates"]}
    assert {"noise_input", "head_matches_classes", "output_size", "finite_outputs", "label_integrity"} <= set(verdicts)
    assert verdicts["head_matches_classes"]["outcome"] == verdicts["label_integrity"]["outcome"] == "passed"
    assert report["targets"]["lraspp_mobilenet_v3_large"]["dataset"].startswith("folder")
    # a flat folder has no held-out split: generalization says so instead of comparing val with itself
    assert verdicts["generalization"]["outcome"] == "skipped"
    assert "holds the same images as the eval split" in verdicts["generalization"]["message"]


@pytest.mark.parametrize("kind", ["wrong head", "corrupt"])
def test_an_unloadable_checkpoint_is_one_line_and_a_usage_error(pytester, kind):
    path = pytester.path / "c13.pt"
    if kind == "wrong head":
        torch.save(build("lraspp_mobilenet_v3_large", 13).state_dict(), path)
        expected = "*checkpoint c13.pt does not fit the model (shape mismatch: *(13, *) vs model (8, *)*"
    else:
        path.write_bytes(b"PK\x03\x04 not really a zip archive" * 8)
        expected = "*checkpoint c13.pt is corrupt or not a PyTorch file*"
    result, report = run_gates(
        pytester, "--model", "lraspp_mobilenet_v3_large", "--checkpoint", "c13.pt", "--eval-size", "2"
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    errors = [line for line in result.stderr.lines if line.strip()]
    assert len(errors) == 1, result.stderr.str()  # one line, not one per gate
    result.stderr.fnmatch_lines([f"ERROR: {expected}"])
    assert "Traceback" not in result.stdout.str() + result.stderr.str()
    assert report is None and " passed" not in result.stdout.str()  # no gate ran, none passed


def test_segcheck_yaml_overrides_thresholds_and_unknown_keys_fail(pytester):
    pytester.makefile(".yaml", segcheck="noise_input:\n  max_miou: 0.2\n")
    result, report = run_gates(pytester, "--segcheck-config", "segcheck.yaml", "-k", "noise")
    assert result.ret == 0 and report["thresholds"]["noise_input.max_miou"] == 0.2
    pytester.makefile(".yaml", bad="noise_input:\n  max_mio: 0.2\n")
    result, _ = run_gates(pytester, "--segcheck-config", "bad.yaml")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*unknown setting noise_input.max_mio; known: max_miou, max_ratio, seed*"])


def test_a_configured_split_that_does_not_exist_fails_instead_of_skipping(pytester):
    pytester.makefile(".yaml", segcheck="generalization:\n  split: holdout\n")
    result, _ = run_gates(pytester, "--segcheck-config", "segcheck.yaml", "--eval-size", "4", "-k", "generalization")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*no 'holdout' split (splits: train, val, test, anomaly); set generalization.split*"])


SCENARIOS = """
import pytest
from segcheck import SegcheckError
from segcheck.gates import GateResult

pytestmark = pytest.mark.gate

def ok(name):
    return GateResult(name, 1.0, 0.5, True, "fine", rule="value >= threshold")

@pytest.fixture
def breaks_on_teardown():
    yield
    raise RuntimeError("teardown boom")

def test_pass_then_teardown_error(gate, breaks_on_teardown):
    gate(ok("pass_then_teardown_error"))

def test_error_and_teardown_error(breaks_on_teardown):
    raise SegcheckError("checkpoint broken")

@pytest.mark.xfail(raises=SegcheckError, strict=True, reason="known bad data")
def test_expected_error():
    raise SegcheckError("dataset has no 'test' split")

@pytest.mark.parametrize("which", ["a", "b"])
def test_family(which, gate):
    gate(ok(f"family[{which}]"))
"""


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_every_gate_test_is_one_record_whatever_its_phases_did(pytester, workers):
    pytester.makepyfile(test_scenarios=SCENARIOS)
    report_path = pytester.path / "r.json"
    result = pytester.runpytest("-p", "no:cacheprovider", "--segcheck-report", str(report_path), *workers)
    result.assert_outcomes(passed=3, xfailed=1, errors=2, failed=1)
    records = {g["gate"]: g for g in json.loads(report_path.read_text())["gates"]}
    assert sorted(records) == [
        "error_and_teardown_error",
        "expected_error",
        "family[a]",
        "family[b]",
        "pass_then_teardown_error",
    ]
    assert records["pass_then_teardown_error"]["outcome"] == "error"  # a pass followed by a teardown error
    assert "teardown boom" in records["pass_then_teardown_error"]["message"]
    assert records["error_and_teardown_error"]["message"] == "checkpoint broken"  # the first reason, once
    assert records["expected_error"]["outcome"] == "xfailed"
    assert records["expected_error"]["message"] == "expected failure: known bad data"
    result.stdout.fnmatch_lines(["2 of 5 gates passed (2 errors, 1 xfailed)"])


def test_tests_in_a_folder_called_gate_are_not_gates(pytester):
    pytester.mkpydir("gate")
    (pytester.path / "gate" / "test_x.py").write_text("def test_unrelated():\n    assert 1 == 2\n")
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    assert "segcheck gates" not in result.stdout.str()
    assert not (pytester.path / "segcheck-report.json").exists()
