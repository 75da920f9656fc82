"""``pytest suites/metrics --plugin FILE`` catches known-buggy metrics, with readable counterexamples."""

from __future__ import annotations

import re

from tests.conftest import REPO

USER_TESTS = REPO / "suites" / "metrics" / "test_user_metrics.py"
BUGGY = REPO / "tests" / "fixtures" / "buggy_metrics.py"

# each bug, and the property that names it
CAUGHT_BY = {
    "absent_as_zero": "test_absent_classes_are_nan",
    "counts_ignore": "test_ignored_pixels_never_matter",
    "drops_out_of_range": "test_out_of_range_labels_raise",
    "zeroes_its_inputs": "test_inputs_are_left_unchanged",
}


def failed_ids(output: str) -> set[str]:
    return set(re.findall(r"^FAILED \S*::(\w+\[\w+\])", output, flags=re.M))


def test_each_buggy_metric_is_caught_with_a_readable_counterexample(pytester, monkeypatch):
    monkeypatch.setenv("HYPOTHESIS_PROFILE", "ci")  # derandomized: the same counterexamples on every run
    properties = " or ".join(["test_agrees_with_reference", *CAUGHT_BY.values()])
    result = pytester.runpytest_subprocess(
        str(USER_TESTS), "--plugin", str(BUGGY), "-p", "no:cacheprovider", "-rf", "-k", properties
    )
    output = result.stdout.str()
    failed = failed_ids(output)
    assert result.ret == 1, output[-3000:] + result.stderr.str()
    for metric, test in CAUGHT_BY.items():
        assert f"{test}[{metric}]" in failed, f"{metric} was not caught by {test}; failures: {sorted(failed)}"
    assert not {f for f in failed if f.endswith("[segcheck]")}, f"the reference failed: {sorted(failed)}"
    only_range = {f for f in failed if f.endswith("[drops_out_of_range]")}
    assert only_range == {"test_out_of_range_labels_raise[drops_out_of_range]"}, sorted(only_range)
    assert "per_class_iou: absent_as_zero (from" in output  # the header says what is under test
    # readable counterexamples: the shrunk input as label grids, each class observed vs expected, a likely cause
    assert re.search(r"SegCase\(num_classes=\d+, ignore_index=-?\d+, dtype=\w+, shape=\(", output)
    assert re.search(r"class \d+: observed 0 +expected nan +<-- differs", output)
    assert "must be NaN" in output and "DID NOT RAISE" in output


def test_a_real_library_is_tested_within_its_declared_domain_and_conventions(pytester, monkeypatch):
    """torchmetrics refuses C = 1 and scores absent classes 0: declared, those are not failures;
    what remains is its one real difference from the contract (out-of-range labels not raised)."""
    monkeypatch.setenv("HYPOTHESIS_PROFILE", "ci")
    plugin = REPO / "tests" / "fixtures" / "torchmetrics_iou.py"
    result = pytester.runpytest_subprocess(
        str(USER_TESTS), "--plugin", str(plugin), "-p", "no:cacheprovider", "-rf", "-k", "torchmetrics"
    )
    output = result.stdout.str()
    assert failed_ids(output) == {"test_out_of_range_labels_raise[torchmetrics]"}, output[-3000:]
    assert "torchmetrics (from " in output and "declares min_classes=2; declares absent='zero'" in output
    assert "returned instead of raising" in output


def test_a_misspelled_metric_kind_is_an_error_not_an_untested_metric(pytester):
    plugin = pytester.makepyfile(
        typo="def segcheck_register_metrics(registry):\n"
        "    registry.add('mine', lambda *a: None, kind='per_klass_iou')\n"
    )
    result = pytester.runpytest_subprocess(str(USER_TESTS), "--plugin", str(plugin), "-p", "no:cacheprovider")
    assert result.ret == 4
    result.stderr.fnmatch_lines(["*metric 'mine' from plugin * has kind='per_klass_iou'; known: 'per_class_iou'*"])
