"""suites/prompted end to end, in subprocesses: the embedded prompted default passes with no
options; the shipped naive-binary checkpoint reproduces the field report's collapse; the same
weights behind a wrapper that ignores its prompt fail prompt_sensitivity."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

PROMPTED = REPO / "suites" / "prompted"
NAIVE = REPO / "plugins" / "checkpoints" / "unet-prompted_synthetic-drywall_naive-binary.safetensors"
DEAF = """
from segcheck.hookspecs import hookimpl
from segcheck_plugins.unet import PromptedUNet


class Deaf(PromptedUNet):
    def forward(self, x, prompts):
        return super().forward(x, ["segment crack"] * len(x))  # whatever it is asked


@hookimpl
def segcheck_register_models(registry):
    registry.add("deaf-unet", lambda num_classes: Deaf(), binary=True, prompted=True, wraps="unet-prompted")
"""


def run_prompted(tmp_path, *args) -> tuple[subprocess.CompletedProcess, dict]:
    report = tmp_path / "report.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            str(PROMPTED),
            "-p",
            "no:cacheprovider",
            "-q",
            "--segcheck-report",
            str(report),
        ]
        + list(args),
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert report.is_file(), done.stdout + done.stderr
    return done, {g["gate"]: g for g in json.loads(report.read_text())["gates"]}


def test_the_embedded_prompted_default_passes_with_no_options(tmp_path):
    done, gates = run_prompted(tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert set(gates) == {
        "prompt_metrics",
        "prompted_collapse",
        "prompted_noise_input",
        "prompt_sensitivity",
        "paraphrase_consistency",
        "negative_prompt",
        "prompted_calibration",
    }
    negative, calibration = gates["negative_prompt"], gates["prompted_calibration"]
    assert negative["outcome"] == "passed" and negative["value"] <= negative["threshold"], negative["message"]
    assert {c: d["empty_pairs"] for c, d in negative["details"]["concepts"].items()} == {"crack": 3, "taping": 1}
    assert calibration["outcome"] == "passed" and calibration["value"] <= 0.05, calibration["message"]
    assert len(calibration["details"]["reliability"]) == 15
    assert "segcheck prompts: foreground per concept and prompt" in done.stdout
    assert "taping   segment drywall seam" in done.stdout
    report = json.loads((tmp_path / "report.json").read_text())
    assert (
        "unet-prompted_synthetic-drywall_robust-binary.safetensors" in report["targets"]["unet-prompted"]["checkpoint"]
    )
    rows = report["prompted"]["unet-prompted"]
    assert [r["prompt"] for r in rows][:2] == ["segment crack", "segment wall crack"]


def test_the_naive_binary_checkpoint_collapses_and_the_message_names_the_best_threshold(tmp_path):
    done, gates = run_prompted(tmp_path, "--checkpoint", str(NAIVE), "--eval-size", "16")
    assert done.returncode == 1
    collapse = gates["prompted_collapse"]
    assert collapse["outcome"] == "failed", collapse["message"]
    assert "'crack'" in collapse["message"] and "the sweep's best threshold is" in collapse["message"]
    crack = gates["prompt_metrics"]["details"]["per_prompt"]["crack"]["segment crack"]
    assert crack["pixel_accuracy"] > 0.9 and crack["iou"] < 0.15  # the field report's pattern


def test_a_wrapper_that_ignores_its_prompt_fails_prompt_sensitivity(tmp_path):
    plugin = tmp_path / "deaf.py"
    plugin.write_text(DEAF)
    robust = REPO / "plugins" / "checkpoints" / "unet-prompted_synthetic-drywall_robust-binary.safetensors"
    done, gates = run_prompted(
        tmp_path, "--plugin", str(plugin), "--model", "deaf-unet", "--checkpoint", str(robust), "--eval-size", "16"
    )
    assert gates["prompt_sensitivity"]["outcome"] == "failed", gates["prompt_sensitivity"]["message"]
    assert "ignores its prompt" in gates["prompt_sensitivity"]["message"]


@pytest.mark.parametrize("suite", ["gates", "prompted"])
def test_suites_name_their_default_target(pytester, suite):
    result = pytester.runpytest(str(REPO / "suites" / suite), "--collect-only", "-p", "no:cacheprovider")
    expected = {"gates": "model unet (*synthetic-streets*", "prompted": "model unet-prompted (*synthetic-drywall*"}
    result.stdout.fnmatch_lines([f"*segcheck: {expected[suite]}"])
