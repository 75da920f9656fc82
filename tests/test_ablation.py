"""The ablation: gate reports fold into one Markdown row per variant; re-running resumes."""

import pytest
import torch

from segcheck import SegcheckError, outputs
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
    # no anomaly gate ran: no anomaly column; no generalization gate: no column either
    assert header == (
        "| variant | real mIoU | noise mIoU | noise/real | noise_input | perturbation_stability | other gates |"
    )
    assert header.count("|") == rule.count("|")
    assert naive.startswith("| naive | 0.984 | 0.133 | 0.14 | **fail** |")
    assert "**fail**: jpeg" in naive and "pass (2/2)" in robust
    assert robust.startswith("| robust | 0.984 | 0.050 | 0.05 | pass |")
    assert naive.count("|") == header.count("|")
    with_anomaly = _report(True, True)
    with_anomaly["gates"].append(_gate("anomaly_detection[msp]", True, 0.9, pooled={"auroc": 0.912}))
    header, _, row = ablation.table({"naive": _report(False, False), "robust": with_anomaly}).splitlines()[:3]
    assert "| noise/real | anomaly AUROC (msp) | noise_input |" in header and "| anomaly_detection |" in header
    assert row.startswith("| naive | 0.984 | 0.133 | 0.14 | - | **fail** |")  # its anomaly gates did not run: "-"


def test_skipped_gates_are_not_failures():
    report = _report(True, True)
    report["gates"].append(_gate("generalization", False, None, outcome="skipped"))
    header, _, row = ablation.table({"robust": report}).splitlines()
    assert "**fail**" not in row and "| generalization |" in header and row.endswith("| - | pass |")


def test_families_share_a_column_and_unknown_gates_go_to_other():
    assert ablation.column("perturbation_stability[jpeg]") == "perturbation_stability"
    assert ablation.column("noise_input") == "noise_input"
    assert ablation.column("finite_outputs") == "other gates"


def _segcheck_state(path):
    torch.save({"epoch": 1, "model": {}, "optimizer": {}, "scheduler": {}, "recipe": {}}, path)


def test_run_trains_missing_variants_resuming_interrupted_ones(tmp_path, monkeypatch):
    (tmp_path / "variant0.safetensors").write_bytes(b"done")
    (tmp_path / "variant0.yaml").write_text("segcheck: 0.1.0\n")
    _segcheck_state(tmp_path / "variant1.resume.pt")
    trained = []
    monkeypatch.setattr(ablation, "train", lambda *a, out, resume, **kw: trained.append((out.name, resume, kw)))
    monkeypatch.setattr(ablation, "judge", lambda path, report, marks, suites, dataset: _report(True, True))
    variants = {"naive": {}, "+ flips": {"flips": True}, "+ rolls": {"rolls": True}}
    text = ablation.run(tmp_path, epochs=2, device="cpu", variants=variants)
    assert [(name, resume) for name, resume, _ in trained] == [
        ("variant1.safetensors", True),
        ("variant2.safetensors", False),
    ]
    assert trained[0][2] == {"device": "cpu", "seed": 0, "overwrite": False, "flips": True, "epochs": 2}
    assert (tmp_path / "ablation.md").read_text() == f"{outputs.md_mark()}\n{text}\n" and len(text.splitlines()) == 5
    ablation.run(tmp_path, epochs=2, device="cpu", variants=variants)  # its own page is segcheck's to replace


@pytest.mark.parametrize(
    "name", ["ablation.md", "variant0.safetensors", "variant0.yaml", "variant1.resume.pt", "variant1.json"]
)
def test_run_refuses_a_file_segcheck_did_not_write_before_any_training(tmp_path, monkeypatch, name):
    (tmp_path / name).write_text("the user's own notes\n")
    trained = []
    monkeypatch.setattr(ablation, "train", lambda *a, out, **kw: trained.append(out))
    monkeypatch.setattr(ablation, "judge", lambda path, report, marks, suites, dataset: _report(True, True))
    variants = {"naive": {}, "+ flips": {"flips": True}}
    with pytest.raises(SegcheckError, match=rf"^--out .*{name} exists and segcheck did not write it; .*--overwrite"):
        ablation.run(tmp_path, variants=variants)
    assert trained == [] and (tmp_path / name).read_text() == "the user's own notes\n"
    ablation.run(tmp_path, variants=variants, overwrite=True)
    assert [out.name for out in trained] == ["variant0.safetensors", "variant1.safetensors"]  # the foreign one anew
    assert (tmp_path / "ablation.md").read_text().startswith(outputs.md_mark())


def test_run_binary_refuses_a_page_segcheck_did_not_write(tmp_path, monkeypatch):
    (tmp_path / "prompted.md").write_text("mine\n")
    monkeypatch.setattr(ablation, "train", lambda *a, **kw: pytest.fail("trained before refusing"))
    with pytest.raises(SegcheckError, match="prompted.md exists and segcheck did not write it"):
        ablation.run_binary(tmp_path)


def test_the_shortcut_variant_trains_on_its_dataset_and_checks_the_decision_rule(tmp_path, monkeypatch):
    trained, judged = [], []
    monkeypatch.setattr(ablation, "train", lambda model, dataset, *a, out, **kw: trained.append(dataset))
    reports = {"variant0.json": _report(False, False), "variant1.json": _report(True, True)}
    reports["variant1.json"]["gates"][1]["details"]["real_miou"] = 0.9  # consistency costs real mIoU
    monkeypatch.setattr(
        ablation,
        "judge",
        lambda path, report, marks, suites, dataset: judged.append((suites, dataset)) or reports[report.name],
    )
    variants = {"naive (CE)": {}, "+ consistency 0.1": {"consistency": 0.1}}
    text = ablation.run(tmp_path, variants=variants, dataset_variant="shortcut")
    assert trained == ["synthetic-streets-shortcut"] * 2
    assert judged == [((ablation.SUITE,), "synthetic-streets-shortcut")] * 2
    assert "- real mIoU 0.984 -> 0.900: drops (-0.084); the rule says solved." in text
    assert "- noise mIoU 0.133 -> 0.050 (-0.083); noise/real 0.14 -> 0.06." in text
    assert "'+ consistency 0.1' passes every gate" in text and "the rule and the gates agree" in text
    assert "'naive (CE)' fails 2" in text
    with pytest.raises(SegcheckError, match="unknown dataset variant 'hard'; known: standard, shortcut"):
        ablation.run(tmp_path, dataset_variant="hard")


def test_the_shortcut_rows_hold_each_field_proposal_alone_and_together():
    rows = ablation.SHORTCUT_VARIANTS
    for ingredient in ("consistency", "input_gradient", "recon", "contrastive"):
        assert sum(list(v) == [ingredient] for v in rows.values()) == 1
    assert {"consistency", "input_gradient", "recon", "contrastive"} in [set(v) for v in rows.values()]
    assert rows[ablation.VARIANT_ROBUST] == ablation.VARIANTS[ablation.VARIANT_ROBUST]


def test_judge_without_the_suites_is_a_clear_error(tmp_path, monkeypatch):
    assert (ablation.SUITE / "test_gates.py").is_file()  # the suites ship in the package: no checkout needed
    monkeypatch.setattr(ablation, "SUITE", tmp_path / "missing")
    with pytest.raises(SegcheckError, match="reinstall segcheck"):
        ablation.judge(tmp_path / "x.safetensors", tmp_path / "x.json", "not train")


def test_the_last_variant_is_the_shipped_robust_recipe():
    from dataclasses import replace

    from segcheck.train.recipes import RECIPES

    name, settings = list(ablation.VARIANTS.items())[-1]
    assert name.startswith("robust")
    assert replace(RECIPES["naive"].with_(**settings), name="robust") == RECIPES["robust"]
