"""The ablation: gate reports fold into one Markdown row per variant; re-running resumes."""

import pytest

from segcheck import SegcheckError
from segcheck.train import ablation


def _gate(name, passed, value=0.0, outcome=None, **details):
    outcome = outcome or ("passed" if passed else "failed")
    return {"gate": name, "value": value, "outcome": outcome, "details": details}


def _report(noise_passed, jpeg_passed):
    return {
        "gates": [
            _gate("finite_outputs", True),
            _gate("noise_input", noise_passed, 0.133 if not noise_passed else 0.05, real_miou=0.984),
            _gate("perturbation_stability[gaussian_noise]", True),
            _gate("perturbation_stability[jpeg]", jpeg_passed),
        ]
    }


def test_table_has_one_row_per_variant_with_failures_named():
    text = ablation.table({"naive": _report(False, False), "robust": _report(True, True)})
    header, rule, naive, robust = text.splitlines()
    assert header.startswith("| variant | real mIoU | noise mIoU | anomaly AUROC (msp) | noise_input |")
    assert header.count("|") == rule.count("|")
    assert naive.startswith("| naive | 0.984 | 0.133 | - | **fail** |")
    assert "**fail**: jpeg" in naive and "pass (2/2)" in robust
    assert robust.startswith("| robust | 0.984 | 0.050 | - | pass |")
    assert naive.count("|") == header.count("|") and " - |" in naive  # gates not run show "-"


def test_skipped_gates_are_not_failures():
    report = _report(True, True)
    report["gates"].append(_gate("generalization", False, None, outcome="skipped"))
    row = ablation.table({"robust": report}).splitlines()[2]
    assert "**fail**" not in row and row.endswith("| - | - | pass |")  # generalization: "-", not run


def test_families_share_a_column_and_unknown_gates_go_to_other():
    assert ablation.column("perturbation_stability[jpeg]") == "perturbation_stability"
    assert ablation.column("noise_input") == "noise_input"
    assert ablation.column("finite_outputs") == "other gates"


def test_run_trains_missing_variants_resuming_interrupted_ones(tmp_path, monkeypatch):
    (tmp_path / "variant0.safetensors").write_bytes(b"done")
    (tmp_path / "variant1.resume.pt").write_bytes(b"half")
    trained = []
    monkeypatch.setattr(ablation, "train", lambda *a, out, resume, **kw: trained.append((out.name, resume, kw)))
    monkeypatch.setattr(ablation, "judge", lambda path, report, marks: _report(True, True))
    variants = {"naive": {}, "+ flips": {"flips": True}, "+ rolls": {"rolls": True}}
    text = ablation.run(tmp_path, epochs=2, device="cpu", variants=variants)
    assert [(name, resume) for name, resume, _ in trained] == [
        ("variant1.safetensors", True),
        ("variant2.safetensors", False),
    ]
    assert trained[0][2] == {"device": "cpu", "seed": 0, "flips": True, "epochs": 2}
    assert (tmp_path / "ablation.md").read_text() == text + "\n" and len(text.splitlines()) == 5


def test_judge_outside_a_checkout_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(ablation, "SUITE", tmp_path / "missing")
    with pytest.raises(SegcheckError, match="run the ablation from a segcheck checkout"):
        ablation.judge(tmp_path / "x.safetensors", tmp_path / "x.json", "not train")


def test_the_last_variant_is_the_shipped_robust_recipe():
    from dataclasses import replace

    from segcheck.train.recipes import RECIPES

    name, settings = list(ablation.VARIANTS.items())[-1]
    assert name.startswith("robust")
    assert replace(RECIPES["naive"].with_(**settings), name="robust") == RECIPES["robust"]
