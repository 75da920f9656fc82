"""``pytest suites/anomaly`` as a user runs it: the embedded default, a user's scorer, an
anomaly-only dataset and a dataset without anomalies (pytester runs)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from segcheck_plugins.synthetic_streets import ANOMALY_INDEX, CLASSES, SyntheticStreets

REPO = Path(__file__).resolve().parents[1]
SUITE = str(REPO / "suites" / "anomaly")
SCORERS = ("energy", "entropy", "max_logit", "msp", "sml")


def run_suite(pytester, *args):
    report = pytester.path / "report.json"
    result = pytester.runpytest(SUITE, "-p", "no:cacheprovider", "--segcheck-report", str(report), *args)
    return result, json.loads(report.read_text()) if report.exists() else None


def test_embedded_default_passes_and_prints_the_scorer_table(pytester):
    result, report = run_suite(pytester)
    assert result.ret == 0, result.stdout.str()
    gates = {g["gate"]: g for g in report["gates"]}
    assert {f"anomaly_detection[{s}]" for s in SCORERS} | {"anomaly_head", "known_class_miou"} <= set(gates)
    assert all(g["outcome"] == "passed" for g in gates.values())
    result.stdout.fnmatch_lines(
        [
            "*segcheck anomaly scorers*",
            "unet:",
            "scorer*FPR95*AUROC*AUPR*sIoU*PPV*mean F1*verdict",
            *(f"{s} *PASS" for s in SCORERS),
            "threshold sensitivity of * (best pixel F1 at score >= *",
            "threshold*chosen by*precision*recall*F1",
            "*best F1*",
        ]
    )
    rows = report["anomaly"]["unet"]["scorers"]
    assert [r["scorer"] for r in rows] == list(SCORERS)
    msp = gates["anomaly_detection[msp]"]["details"]
    assert msp["split"] == "anomaly" and msp["pooled"]["positives"] > 0 and msp["per_image"]["images"] == 128
    assert "first threshold" in msp["fpr95_convention"]


def test_a_users_scorer_from_the_docs_is_gated_like_the_builtins(pytester):
    guide = (REPO / "docs" / "guides" / "anomaly.md").read_text()
    code = re.search(r"```python\n# my_scorer.py\n(.*?)```", guide, re.S).group(1)
    plugin = pytester.path / "my_scorer.py"
    plugin.write_text(code)
    result, report = run_suite(pytester, "--plugin", str(plugin), "-k", "margin or msp")
    outcomes = {g["gate"]: g["outcome"] for g in report["gates"]}
    assert set(outcomes) == {"anomaly_detection[margin]", "anomaly_detection[msp]"}, result.stdout.str()
    result.stdout.fnmatch_lines(["margin *", "msp *"])


def test_an_anomaly_only_dataset_runs_with_no_error_row(pytester, tmp_path):
    from PIL import Image

    (tmp_path / "images").mkdir()
    (tmp_path / "labels_masks").mkdir()
    scenes = SyntheticStreets("anomaly", length=4)
    for i in range(4):  # synthetic anomaly scenes written as SMIYC frames: 0 usual, 1 anomaly
        image, mask = scenes[i]
        Image.fromarray(image).save(tmp_path / "images" / f"frame{i}.png")
        Image.fromarray((mask == ANOMALY_INDEX).astype(np.uint8)).save(
            tmp_path / "labels_masks" / f"frame{i}_labels_semantic.png"
        )
    (tmp_path / "dataset.yaml").write_text(f"classes: [{', '.join(CLASSES)}]\n")
    robust = REPO / "plugins" / "checkpoints" / "unet_synthetic-streets_robust.safetensors"
    result, report = run_suite(
        pytester, "--dataset", "smiyc", "--data-root", str(tmp_path), "--checkpoint", str(robust)
    )
    outcomes = {g["gate"]: g["outcome"] for g in report["gates"]}
    assert "error" not in outcomes.values(), result.stdout.str()
    assert outcomes["known_class_miou"] == "skipped" and outcomes["anomaly_head"] == "passed"
    assert outcomes["anomaly_free_training"] == "skipped"  # SMIYC has no training split
    assert {outcomes[f"anomaly_detection[{s}]"] for s in SCORERS if s != "sml"} <= {"passed", "failed"}
    aurocs = [g["value"] for g in report["gates"] if g["gate"].startswith("anomaly_detection") and g["value"]]
    assert len(aurocs) == 4 and min(aurocs) > 0.85  # measured, and far from chance on these 4 frames
    assert outcomes["anomaly_detection[sml]"] == "skipped"  # its statistics need a training split


def test_data_without_anomalies_skips_every_gate_with_the_reason(pytester, tmp_path):
    from PIL import Image

    for split in ("train", "val"):
        for i in range(2):
            for kind, array in (
                ("images", np.full((16, 16, 3), 60 * i, np.uint8)),
                ("masks", np.eye(16, dtype=np.uint8)),
            ):
                (tmp_path / split / kind).mkdir(parents=True, exist_ok=True)
                Image.fromarray(array).save(tmp_path / split / kind / f"{i}.png")
    (tmp_path / "dataset.yaml").write_text("classes: [a, b]\n")
    result, report = run_suite(
        pytester, "--dataset", "folder", "--data-root", str(tmp_path), "--model", "unet", "--checkpoint", "none"
    )
    outcomes = {g["gate"]: (g["outcome"], g["message"]) for g in report["gates"]}
    assert result.ret == 0
    detection = outcomes["anomaly_detection[msp]"]
    assert detection[0] == "skipped" and "declares no anomaly_index" in detection[1]
