"""examples/user-project, as its README describes it (its package on sys.path, its plugin named
with --plugin here: .ci/wheel-check runs the same installed, with the entry point)."""

from __future__ import annotations

import importlib.util
import json

import pytest

from tests.conftest import REPO

EXAMPLE = REPO / "examples" / "user-project"
GATES = str(REPO / "suites" / "gates")


@pytest.fixture
def example(pytester, monkeypatch):
    monkeypatch.syspath_prepend(EXAMPLE / "src")
    return pytester


def gates(pytester, *args) -> tuple[pytest.RunResult, dict[str, str]]:
    report = pytester.path / "report.json"
    result = pytester.runpytest(GATES, "-m", "not train", "-p", "no:cacheprovider", "--segcheck-report", report, *args)
    return result, {g["gate"]: g["outcome"] for g in json.loads(report.read_text())["gates"]}


def test_the_shipped_model_passes_every_quick_gate_by_name_and_by_callable(example):
    """README: exit 0, 27 quick gates pass (28 with the audits extra: label_quality), cpu_cuda_agreement a SKIP
    without CUDA."""
    by_name, outcomes = gates(example, "--plugin", "mypkg.segcheck_plugin", "--model", "mypkg-net", "--dataset",
                              "mypkg-terrain")  # fmt: skip
    assert by_name.ret == 0, by_name.stdout.str()
    by_name.stdout.fnmatch_lines(["*segcheck: model mypkg-net (from mypkg*), checkpoint *terrain.safe*"])
    assert sorted(set(outcomes.values()) - {"skipped"}) == ["passed"]
    assert len(outcomes) == 27 + (importlib.util.find_spec("cleanlab") is not None)
    assert {"split_leakage", "split_shift", "calibration"} <= set(outcomes)
    by_callable, same = gates(example, "--model", "mypkg.models:trained", "--dataset", "mypkg.data:load")
    assert by_callable.ret == 0 and same == outcomes, by_callable.stdout.str()


def test_the_untrained_build_fails_the_scoring_gates_as_the_readme_says(example):
    result, outcomes = gates(example, "--model", "mypkg.models:build", "--dataset", "mypkg.data:load")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    failed = {gate for gate, outcome in outcomes.items() if outcome == "failed"}
    assert failed == {
        "noise_input",
        "positional_prior",
        "prediction_collapse",
        "derangement_gap",
        "perturbation_stability[contrast]",
    }
    if importlib.util.find_spec("cleanlab") is not None:
        assert outcomes["label_quality"] == "skipped"  # it trusts the model's confident pixels: not this model's
