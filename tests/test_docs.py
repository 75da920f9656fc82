"""The docs: every registered built-in gate has its page (a new gate cannot go undocumented), no
gate page names a gate that does not exist, the generated tables cover the code's tables, failure
messages point to their page, and the README and the docs' examples run as written."""

import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import segcheck
from segcheck.config import DEFAULTS
from segcheck.gates import GateResult
from segcheck.gates.registered import Gate, docs_page, pointed

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"


def _hooks():
    spec = importlib.util.spec_from_file_location("segcheck_docs_hooks", DOCS / "hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


hooks = _hooks()


def test_every_registered_builtin_gate_has_its_hand_written_page():
    missing = hooks.missing_prose()
    assert not missing, (
        "registered built-in gates without their page: "
        + ", ".join(f"docs/gates/{name}.md" for name in missing)
        + " (what the gate measures, its default rule, why it matters, what a failure usually means, what fixes "
        "it; the registry facts and settings are inserted by docs/hooks.py)"
    )


def test_no_gate_page_names_a_gate_that_does_not_exist():
    unknown = hooks.unknown_pages()
    assert not unknown, f"docs/gates/ pages that name no registered gate: {', '.join(unknown)}"


def test_the_families_cover_every_builtin_gate_and_the_docs_pointer_names_their_page():
    names = {g.name for gates in hooks.families().values() for g in gates}
    assert {"noise_input", "perturbation_stability[jpeg]", "anomaly_detection[msp]", "cross_dataset"} <= names
    for gates in hooks.families().values():
        for gate in gates:
            page = docs_page(gate)
            assert (DOCS / page).is_file(), f"{gate.name} points to {page}, which does not exist"


def test_a_new_gate_gets_a_generated_page_and_is_reported_missing(monkeypatch):
    def mask_quality(target, cfg):
        """Confident learning on the model's probabilities: the share of pixels whose label is likely wrong."""

    new = Gate(
        "mask_quality",
        mask_quality,
        section="mask_quality",
        defaults={"max_flagged": 0.01, "seed": 0},
        plugin="segcheck.gates.mask_quality",
        description="Confident learning on the model's probabilities: the share of pixels whose label is likely wrong.",
    )
    registered = hooks.builtin_gates()
    monkeypatch.setattr(hooks, "builtin_gates", lambda: (*registered, new))
    monkeypatch.setattr(hooks, "_section_readers", hooks._section_readers.__wrapped__)
    assert hooks.missing_prose() == ["mask_quality"]
    page = hooks.expand(hooks.generated_gate_page("mask_quality"), "gates/mask_quality.md")
    assert "Confident learning on the model's probabilities" in page
    assert "| `mask_quality.max_flagged` | `0.01` | number |" in page
    assert "docs/gates/mask_quality.md` is missing" in page
    assert "mask_quality" in str(hooks.gates_nav())
    odd = Gate("odd", mask_quality, plugin="segcheck.gates.odd", suite="calibration")
    monkeypatch.setattr(hooks, "builtin_gates", lambda: (*registered, new, odd))
    assert {"calibration": [{"odd": "gates/odd.md"}]} in hooks.gates_nav()  # a suite of its own has its place


def test_gate_facts_are_inserted_into_the_hand_written_page():
    prose = (DOCS / "gates" / "noise_input.md").read_text()
    page = hooks.expand(prose, "gates/noise_input.md")
    assert page.startswith("# noise_input\n") and "From the gate registry" in page
    assert "| `noise_input.max_miou` | `0.1` | number | `(0, 1]` |" in page
    assert "docs: gates/noise_input.md" in page
    with pytest.raises(ValueError, match="unknown <!-- generated: nope -->"):
        hooks.expand("# x\n<!-- generated: nope -->\n", "reference/x.md")


def test_the_reference_tables_cover_every_setting_option_and_command():
    from segcheck import cli
    from segcheck.pytest_options import OPTIONS

    settings = hooks.settings_reference()
    for section, values in DEFAULTS.items():
        assert f"### {section}\n" in settings
        for key in values:
            assert f"`{section}.{key}`" in settings, f"{section}.{key} is not in the settings reference"
    options = hooks.pytest_options()
    assert all(f"`{flag}" in options for flag in OPTIONS)
    commands = hooks.cli_reference()
    sub = next(a for a in cli.parser()._actions if a.dest == "command")
    assert all(f"### segcheck {name}\n" in commands for name in sub.choices)
    assert "`--recipe" in commands and "`--overwrite`" in commands


def _failing(name="noise_input"):
    message = "noise mIoU 0.2 >= 0.10: predictions follow pixel position"
    return GateResult(name, 0.2, 0.1, False, message, "value < threshold")


def test_a_failure_message_ends_with_its_docs_page():
    builtin = Gate("perturbation_stability[jpeg]", print, plugin="segcheck.gates.stability")
    result = pointed(builtin, _failing("perturbation_stability[jpeg]"))
    assert result.message.endswith("predictions follow pixel position; docs: gates/perturbation_stability.md")
    passed = GateResult("noise_input", 0.05, 0.1, True, "fine", "value < threshold")
    assert pointed(Gate("noise_input", print, plugin="segcheck.gates.noise"), passed) is passed
    assert pointed(Gate("mine", print, plugin="my_gate.py"), _failing("mine")).message == _failing().message
    own = Gate("mine", print, plugin="my_gate.py", docs="https://example.org/gates/mine")
    assert pointed(own, _failing("mine")).message.endswith("; docs: https://example.org/gates/mine")


def test_a_failing_gate_points_to_its_page_in_the_record_and_the_assertion():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(8, 16, 16, 3), dtype=np.uint8)
    masks = (images[..., 0] > 127).astype(np.int64)
    net = torch.nn.Conv2d(3, 2, kernel_size=1)
    with torch.no_grad():  # "bright" everywhere: a collapse onto one class
        net.weight.zero_()
        net.bias.copy_(torch.tensor([0.0, 5.0]))
    result = segcheck.check(net, images, masks, classes=("dark", "bright"), gates=["prediction_collapse"])
    record = result.get("prediction_collapse")
    assert record.outcome == "failed" and record.message.endswith("; docs: gates/prediction_collapse.md")
    with pytest.raises(AssertionError, match=r"docs: gates/prediction_collapse\.md"):
        result.assert_passed()


def _blocks(marker: str):
    for path in [REPO / "README.md", *sorted(DOCS.rglob("*.md"))]:
        for code in re.findall(rf"<!-- {marker} -->\n```python\n(.*?)```", path.read_text(), re.S):
            yield pytest.param(code, id=str(path.relative_to(REPO)))


@pytest.mark.parametrize("code", list(_blocks("check-example")))
def test_the_check_examples_of_the_readme_and_the_docs_run(code):
    exec(compile(code, "example", "exec"), {})


def test_the_readme_is_short_and_its_links_resolve():
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", readme):
        if "://" not in target:
            assert (REPO / target).exists(), f"README links to {target}, which does not exist"


def test_the_terminal_and_the_json_report_point_a_failure_to_its_page(pytester):
    from tests.test_pytest_plugin import run_gates

    naive = str(REPO / "plugins" / "checkpoints" / "unet_synthetic-streets_naive.safetensors")
    result, report = run_gates(pytester, "--checkpoint", naive, "-k", "noise_input", "--eval-size", "8")
    assert result.ret == 1, result.stdout.str()
    (record,) = report["gates"]
    assert record["outcome"] == "failed" and record["message"].endswith("; docs: gates/noise_input.md")
    result.stdout.fnmatch_lines(["noise_input: noise mIoU * pixel position*; docs: gates/noise_input.md"])
