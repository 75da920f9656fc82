"""The gate suite end to end through ``pytester``: several targets, registered third-party
gates, typed records in the JSON and junitxml, the pixel rule and normalization as a user meets them."""

import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from segcheck_plugins.synthetic_streets import ANOMALY_INDEX, SyntheticStreets
from segcheck_plugins.torchvision_models import build
from tests.conftest import REPO
from tests.test_pytest_plugin import run_gates

FAST = {
    "overfit_tiny": {"epochs": 2, "samples": 4},
    "input_baseline": {"steps": 3, "samples": 16},
    "positional_prior": {"train_samples": 8},
}


def write_split_folder(root, n=4, anomalies=False, **config):
    """synthetic-streets images in the folder layout DIR/<split>/{images,masks} with dataset.yaml."""
    for split in ("train", "val", "test"):
        data = SyntheticStreets(split=split, length=n, anomalies=anomalies)
        for i in range(n):
            image, mask = data[i]
            for kind, array in (("images", image), ("masks", mask.astype(np.uint8))):
                (root / split / kind).mkdir(parents=True, exist_ok=True)
                Image.fromarray(array).save(root / split / kind / f"{i:03d}.png")
    config.setdefault("classes", list(data.spec.classes))
    (root / "dataset.yaml").write_text(yaml.safe_dump(config))


def test_a_folder_dataset_with_anomaly_pixels_runs_every_closed_set_gate(pytester):
    root = pytester.path / "streets"
    write_split_folder(root, anomalies=True, anomaly_index=ANOMALY_INDEX)
    assert (np.asarray(Image.open(root / "val" / "masks" / "000.png")) == ANOMALY_INDEX).any()
    pytester.makefile(".yaml", segcheck=yaml.safe_dump(FAST))
    result, report = run_gates(
        pytester,
        "--dataset",
        "folder",
        "--data-root",
        str(root),
        "--checkpoint",
        "none",
        "--segcheck-config",
        "segcheck.yaml",
    )
    outcomes = {g["gate"]: g["outcome"] for g in report["gates"]}
    assert "error" not in outcomes.values(), [g["message"] for g in report["gates"] if g["outcome"] == "error"]
    assert {
        "noise_input",
        "positional_prior",
        "overfit_tiny",
        "input_baseline",
        "generalization",
        "perturbation_stability[jpeg]",
        "prediction_collapse",
        "label_integrity",
    } <= set(outcomes)
    assert "outside 0.." not in result.stdout.str()


def test_a_dataset_declared_normalization_is_used_and_stated(pytester):
    root = pytester.path / "streets"
    write_split_folder(root, mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25])
    torch.save(build("lraspp_mobilenet_v3_large", 8).state_dict(), pytester.path / "lraspp.pt")
    args = f"--model lraspp_mobilenet_v3_large --checkpoint lraspp.pt --dataset folder --data-root {root}".split()
    result, report = run_gates(pytester, *args, "-k", "input_normalization")
    result.stdout.fnmatch_lines(
        ["segcheck normalization: mean (0.5, 0.5, 0.5), std (0.25, 0.25, 0.25) from dataset 'folder'"]
    )
    described = report["targets"]["lraspp_mobilenet_v3_large"]["normalization"]
    assert described == {"mean": [0.5] * 3, "std": [0.25] * 3, "source": "dataset 'folder'"}
    result, _ = run_gates(pytester, *args, "-k", "input_normalization", "--mean", "0.4,0.4,0.4", "--std", "0.2,0.2,0.2")
    result.stdout.fnmatch_lines(["segcheck normalization: mean (0.4, 0.4, 0.4), std (0.2, 0.2, 0.2) from explicit*"])


MY_GATE = """
from segcheck.gates import GateResult
from segcheck.hookspecs import hookimpl

CALLS = []

def pixel_count(target, cfg):
    value = float(target.data.masks.size)
    return GateResult("pixel_count", value, cfg["min_pixels"], value >= cfg["min_pixels"],
                      f"{value:.0f} eval pixels", rule="value >= threshold")

@hookimpl
def segcheck_register_gates(registry):
    registry.add("pixel_count", pixel_count, section="pixel_count", defaults={"min_pixels": 1000.0})

@hookimpl
def segcheck_configure(config):
    with open(__file__ + ".calls", "a") as f:
        f.write("configure\\n")
"""


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_a_plugin_gate_runs_like_a_built_in_and_configure_runs_once_per_process(pytester, workers):
    plugin = pytester.makepyfile(my_gate=MY_GATE)
    calls = plugin.parent / "my_gate.py.calls"
    result, report = run_gates(
        pytester,
        "--plugin",
        str(plugin),
        "-k",
        "pixel_count or finite",
        "--eval-size",
        "2",
        "--junitxml",
        "junit.xml",
        *workers,
    )
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(["pixel_count*unet*16384.0000*value >= 1000.0000*PASS*"])
    record = next(g for g in report["gates"] if g["gate"] == "pixel_count")
    assert record["target"] == "unet" and record["value"] == 2 * 64 * 128
    assert report["thresholds"]["pixel_count.min_pixels"] == 1000.0
    assert calls.read_text().count("configure") == (1 if not workers else 3)  # controller + 2 workers, once each
    properties = ET.parse(pytester.path / "junit.xml").findall(".//property")
    assert properties and {p.get("name") for p in properties} <= {
        "segcheck_gate",
        "segcheck_target",
        "segcheck_value",
        "segcheck_threshold",
        "segcheck_verdict",
    }
    assert not any(p.get("value", "").lstrip().startswith(("{", "[")) for p in properties)  # scalars only


def test_the_report_is_written_without_the_terminal_reporter(pytester):
    report = pytester.path / "r.json"
    from tests.test_pytest_plugin import GATES

    pytester.runpytest(
        GATES, "-p", "no:cacheprovider", "-p", "no:terminal", "--segcheck-report", str(report), "-k", "finite_outputs"
    )
    assert [g["gate"] for g in json.loads(report.read_text())["gates"]] == ["finite_outputs"]


def test_several_targets_run_in_one_session_and_a_broken_one_is_one_error(pytester):
    pytester.path.joinpath("broken.pt").write_bytes(b"not a checkpoint")
    pytester.makefile(
        ".yaml",
        fleet=yaml.safe_dump(
            {
                "defaults": {"model": "unet", "dataset": "synthetic-streets"},
                "targets": [
                    {"name": "robust", "tags": {"recipe": "robust"}},
                    {
                        "name": "naive",
                        "checkpoint": str(REPO / "plugins/checkpoints/unet_synthetic-streets_naive.safetensors"),
                        "tags": {"recipe": "naive"},
                    },
                    {"name": "broken", "checkpoint": "broken.pt"},
                ],
            }
        ),
    )
    result, report = run_gates(
        pytester,
        "--models-manifest",
        "fleet.yaml",
        "-m",
        "not train",
        "-k",
        "noise_input or finite_outputs",
        "--eval-size",
        "4",
    )
    by_target = {}
    for g in report["gates"]:
        by_target.setdefault(g["target"], []).append((g["gate"], g["outcome"]))
    assert set(by_target) == {"robust", "naive", "broken"}
    assert dict(by_target["robust"]) == {"finite_outputs": "passed", "noise_input": "passed"}
    assert dict(by_target["naive"])["noise_input"] == "failed"
    assert [o for _, o in by_target["broken"]].count("error") == 1 and "passed" not in dict(
        by_target["broken"]
    ).values()
    result.stdout.fnmatch_lines(
        [
            "ERROR finite_outputs: target 'broken' could not be set up: checkpoint broken.pt *",
            "SKIP noise_input: not run: target 'broken' could not be set up*",
        ]
    )
    assert report["targets"]["robust"]["tags"] == {"recipe": "robust"}
    assert "error" in report["targets"]["broken"]
    rows = {r["target"]: r for r in report["fleet"]["targets"]}  # the fleet view: one row each
    assert rows["naive"]["failed"] == ["noise_input"] and rows["robust"]["noise_miou"] < 0.1
    assert rows["broken"]["setup_error"].startswith("checkpoint broken.pt") and rows["broken"]["real_miou"] is None
    result.stdout.fnmatch_lines(["*segcheck fleet*", "broken *-*-*not set up: checkpoint broken.pt *"])


PID_GATES = """
import os

from segcheck.gates import GateResult


def pid(target, cfg, name):
    return GateResult(name, float(os.getpid()), 0.0, True, "the worker's process id", rule="value > threshold")


def segcheck_register_gates(registry):
    for i in range(4):
        registry.add(f"pid_{i}", lambda target, cfg, name=f"pid_{i}": pid(target, cfg, name))
"""


def test_under_xdist_each_target_runs_on_one_worker(pytester):
    plugin = pytester.makepyfile(pid_gates=PID_GATES)
    naive = str(REPO / "plugins/checkpoints/unet_synthetic-streets_naive.safetensors")
    targets = [{"name": n, "checkpoint": naive} for n in ("a", "b", "c")]
    pytester.makefile(".yaml", fleet=yaml.safe_dump({"targets": targets}))
    result, report = run_gates(
        pytester, "--models-manifest", "fleet.yaml", "--plugin", str(plugin), "-n", "2", "--eval-size", "2", "-k", "pid"
    )
    assert result.ret == 0, result.stdout.str()
    pids = {}
    for g in report["gates"]:
        pids.setdefault(g["target"], set()).add(g["value"])
    assert set(pids) == {"a", "b", "c"} and all(len(p) == 1 for p in pids.values()), pids
    assert len(set().union(*pids.values())) == 2  # both workers were used


AFTER_PASS = """
import pytest
from segcheck.gates import GateResult

pytestmark = pytest.mark.gate

def test_recorded_then_failed(gate):
    gate(GateResult("recorded_then_failed", 1.0, 0.5, True, "fine", rule="value >= threshold"))
    assert 1 == 2, "a later check of the same test"
"""


def test_a_record_agrees_with_its_test_that_failed_after_recording_a_pass(pytester):
    pytester.makepyfile(test_after=AFTER_PASS)
    report = pytester.path / "r.json"
    result = pytester.runpytest("-p", "no:cacheprovider", "--segcheck-report", str(report))
    result.assert_outcomes(failed=1)
    (record,) = json.loads(report.read_text())["gates"]
    assert record["outcome"] == "failed" and "the test failed after its gate passed" in record["message"]


def test_a_long_forward_pass_says_so_on_the_terminal(pytester, monkeypatch):
    from segcheck import progress

    monkeypatch.setattr(progress, "AFTER_S", 0.0)  # every pass counts as long
    result, _ = run_gates(pytester, "-k", "noise_input", "--eval-size", "4")
    result.stdout.fnmatch_lines(["segcheck: noise_input [[]unet[]]: forward pass over 4 images took * s (* img/s)"])
