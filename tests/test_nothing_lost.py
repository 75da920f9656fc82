"""Never destroy a user's file (issue 31): every writer of segcheck (JSON/HTML/Markdown reports,
`segcheck train`, `segcheck predict`, `segcheck report merge/render`) refuses, with one line and
before any work, a path it did not write, an input of the same command or a path inside the
dataset root, unless told to overwrite; its own earlier files it replaces. Figures drawn on
xdist workers reach the report. A merge judges records as a live run does."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from segcheck import SegcheckError, __version__, cli
from segcheck.train import train
from tests.test_datasets import make_folder, write_config
from tests.test_fleet import noise, shard_report
from tests.test_pytest_plugin import GATES
from tests.test_train import tiny  # noqa: F401  (the fixture)

# --rootdir .: the default report path is then pytester's folder, not this repository's
CHEAP = [
    "-p",
    "no:cacheprovider",
    "--rootdir",
    ".",
    "-m",
    "not train",
    "--eval-size",
    "2",
    "-k",
    "head_matches_classes",
]


def files(root: Path) -> dict[str, bytes]:
    """Every file below ``root`` and its bytes."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# --- the pytest reports: JSON, HTML, Markdown, and their figure folders --------------------------
def _dataset(root: Path) -> None:
    make_folder(root / "data", stems=("a", "b"), size=(16, 16))
    write_config(root / "data")


REFUSED_REPORTS = {
    "case 1: a report named like the dataset's config": (
        _dataset,
        ["--segcheck-report", "data/dataset.yaml"],
        "*--segcheck-report data/dataset.yaml: expected a .json file name; e.g. --segcheck-report dataset.json",
    ),
    "a user's JSON file": (
        lambda p: (p / "report.json").write_text('{"mine": 1}\n'),
        ["--segcheck-report", "report.json"],
        "*--segcheck-report report.json exists and segcheck did not write it; choose another path, or pass "
        "--segcheck-overwrite to replace it",
    ),
    "a user's file at the default report path": (
        lambda p: (p / "segcheck-report.json").write_text("my notes\n"),
        [],
        "*the JSON report *segcheck-report.json exists and segcheck did not write it; pass --segcheck-report "
        "OTHER.json, or pass --segcheck-overwrite*",
    ),
    "an unwritable report path": (
        lambda p: (p / "afile").write_text("x"),
        ["--segcheck-report", "afile/report.json"],
        "*--segcheck-report afile/report.json: cannot write there (afile is a file, not a folder)*",
    ),
    "a report inside the dataset root": (
        _dataset,
        ["--dataset", "folder", "--data-root", "data", "--checkpoint", "none", "--segcheck-report", "data/r.json"],
        "*--segcheck-report data/r.json lies inside the dataset root data*",
    ),
    "a user's HTML page": (
        lambda p: (p / "page.html").write_text("<p>mine</p>\n"),
        ["--segcheck-html", "page.html"],
        "*--segcheck-html page.html exists and segcheck did not write it*",
    ),
    "a user's Markdown file": (
        lambda p: (p / "notes.md").write_text("# my notes\n"),
        ["--segcheck-md", "notes.md"],
        "*--segcheck-md notes.md exists and segcheck did not write it*",
    ),
    "a user's folder where the Markdown's figures go": (
        lambda p: (p / "notes.figures").mkdir() or (p / "notes.figures" / "mine.png").write_bytes(b"png"),
        ["--segcheck-md", "notes.md"],
        "*--segcheck-md notes.md: its figures go to notes.figures, a folder segcheck did not write*",
    ),
    "a user's folder where the JSON report's figures go": (
        lambda p: (p / "r.figures").mkdir() or (p / "r.figures" / "mine.png").write_bytes(b"png"),
        ["--segcheck-report", "r.json", "--segcheck-html", "r.html"],
        "*--segcheck-report r.json: its figures go to r.figures, a folder segcheck did not write*",
    ),
}


@pytest.mark.parametrize("setup, args, message", REFUSED_REPORTS.values(), ids=REFUSED_REPORTS)
def test_a_report_path_segcheck_may_not_write_is_a_usage_error_before_any_test(pytester, setup, args, message):
    setup(pytester.path)
    before = files(pytester.path)
    result = pytester.runpytest(GATES, *CHEAP, *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str()[-2000:]
    result.stderr.fnmatch_lines([message])
    assert files(pytester.path) == before  # nothing written, nothing removed


def test_a_rerun_replaces_segchecks_own_reports_and_overwrite_replaces_a_users(pytester):
    pages = ["--segcheck-report", "r.json", "--segcheck-html", "r.html", "--segcheck-md", "md/r.md"]
    for _ in range(2):  # the same command again needs no flag
        assert pytester.runpytest(GATES, *CHEAP, *pages).ret == 0
    report = json.loads((pytester.path / "r.json").read_text())
    listed = [p for t in report["targets"].values() for p in t["figures"]]
    assert listed == ["r.figures/unet/target.predictions.png"] and (pytester.path / listed[0]).is_file()
    assert (pytester.path / "md" / "r.figures" / "unet" / "target.predictions.png").is_file()
    (pytester.path / "mine.json").write_text("{}")
    assert pytester.runpytest(GATES, *CHEAP, "--segcheck-report", "mine.json", "--segcheck-overwrite").ret == 0
    assert json.loads((pytester.path / "mine.json").read_text())["segcheck"] == __version__


def test_case_6_figures_drawn_on_workers_all_reach_the_report(pytester):
    """Two targets on two workers; the second one's first gate is slow, so that (before the fix)
    its worker cleared the figure folder after the first target's grid was written."""
    plugin = pytester.makepyfile(
        slow_gate="""
import time
from segcheck.gates import GateResult

def slow(target, cfg):
    time.sleep(3 if target.id == "b" else 0)
    return GateResult("slow", 0.0, 0.0, True, "slept", rule="value == threshold")

def segcheck_register_gates(registry):
    registry.add("slow", slow)
"""
    )
    targets = [{"name": "a", "checkpoint": "none"}, {"name": "b"}]
    pytester.makefile(".yaml", fleet=yaml.safe_dump({"targets": targets}))
    args = ["--models-manifest", "fleet.yaml", "--plugin", str(plugin), "--eval-size", "2", "-k", "slow"]
    args += ["--segcheck-report", "fleet.json", "--segcheck-html", "fleet.html", "-n", "2"]
    result = pytester.runpytest(GATES, "-p", "no:cacheprovider", "--rootdir", ".", *args)
    assert result.ret == 0, result.stdout.str()[-2000:]
    report = json.loads((pytester.path / "fleet.json").read_text())
    grids = [p for t in report["targets"].values() for p in t.get("figures", [])]
    assert sorted(grids) == ["fleet.figures/a/target.predictions.png", "fleet.figures/b/target.predictions.png"]
    assert all((pytester.path / p).is_file() for p in grids)
    assert "moved or deleted" not in (pytester.path / "fleet.html").read_text()


# --- segcheck train -----------------------------------------------------------------------------
def test_case_2_an_existing_checkpoint_segcheck_did_not_write_is_refused_before_training(tmp_path, tiny):  # noqa: F811
    out = tmp_path / "run.safetensors"
    out.write_bytes(b"the user's weights")
    out.with_suffix(".yaml").write_text("trained_by: me\n")
    before = files(tmp_path)
    with pytest.raises(SegcheckError) as info:
        train(recipe="naive", out=out, epochs=1, **tiny)
    assert str(info.value) == (
        f"--out {out} exists and segcheck did not write it; choose another path, or pass --overwrite to replace it"
    )
    assert files(tmp_path) == before


def test_case_3_the_sidecar_may_not_replace_a_users_settings(tmp_path, tiny):  # noqa: F811
    settings = tmp_path / "proj" / "segcheck.yaml"
    settings.parent.mkdir()
    settings.write_text("noise_input: {max_miou: 0.2}\n")
    out = settings.with_suffix(".safetensors")
    with pytest.raises(SegcheckError, match=rf"--out {out}: its sidecar {settings} exists and segcheck did not"):
        train(recipe="naive", out=out, epochs=1, **tiny)
    assert settings.read_text() == "noise_input: {max_miou: 0.2}\n" and not out.exists()


def test_a_trained_checkpoint_is_replaced_only_with_overwrite_and_never_by_its_own_init(tmp_path, tiny):  # noqa: F811
    out = tmp_path / "run.safetensors"
    train(recipe="naive", out=out, epochs=1, **tiny)
    with pytest.raises(SegcheckError, match="exists: a trained checkpoint is not replaced without a word"):
        train(recipe="naive", out=out, epochs=1, seed=1, **tiny)  # even segcheck's own: it took a run
    assert yaml.safe_load(out.with_suffix(".yaml").read_text())["seed"] == 0
    train(recipe="naive", out=out, epochs=1, seed=1, overwrite=True, **tiny)
    assert yaml.safe_load(out.with_suffix(".yaml").read_text())["seed"] == 1
    with pytest.raises(SegcheckError, match="is also an input of this command"):
        train(recipe="naive", out=out, epochs=1, init=out, **tiny)
    mine = tmp_path / "mine.safetensors"
    mine.write_bytes(b"x")
    train(recipe="naive", out=mine, epochs=1, overwrite=True, **tiny)
    assert yaml.safe_load(mine.with_suffix(".yaml").read_text())["segcheck"] == __version__


def test_case_22_out_must_be_safetensors(tmp_path, tiny):  # noqa: F811
    with pytest.raises(
        SegcheckError, match=r"--out .*x.pt: expected a .safetensors file name; e.g. --out x.safetensors"
    ):
        train(recipe="naive", out=tmp_path / "x.pt", epochs=1, **tiny)
    assert list(tmp_path.iterdir()) == [tmp_path / "tiny.py"]


def test_case_22_init_with_other_classes_or_order_is_one_error(tmp_path, tiny):  # noqa: F811
    first = tmp_path / "first.safetensors"
    train(recipe="naive", out=first, epochs=1, **tiny)
    sidecar = yaml.safe_load(first.with_suffix(".yaml").read_text())
    classes = sidecar["classes"]
    sidecar["classes"] = [classes[1], classes[0], *classes[2:]]  # same names, another order
    first.with_suffix(".yaml").write_text(yaml.safe_dump(sidecar))
    with pytest.raises(SegcheckError) as info:
        train(recipe="naive", out=tmp_path / "tuned.safetensors", epochs=1, init=first, **tiny)
    message = str(info.value)
    assert message.startswith(f"--init {first} was trained on classes [sidewalk, road, building, ")
    assert "but dataset 'tiny-streets' has [road, sidewalk, building, " in message and "\n" not in message


def test_case_15_a_training_split_smaller_than_a_batch_says_what_to_change(tmp_path, tiny):  # noqa: F811
    tiny["batch_size"] = 64
    with pytest.raises(SegcheckError) as info:
        train(recipe="naive", out=tmp_path / "m.safetensors", epochs=1, **tiny)
    assert str(info.value) == (
        "the training split has 32 images, fewer than one batch of 64; pass --batch-size 32 or less, "
        "or train on more images"
    )


# --- segcheck predict ---------------------------------------------------------------------------
def predict(*argv) -> int:
    return cli.main(["predict", "--checkpoint", "none", "--device", "cpu", "--quiet", *map(str, argv)])


def test_case_4_predict_refuses_the_dataset_root_and_a_users_file(tmp_path, capsys):
    _dataset(tmp_path)
    masks = files(tmp_path / "data")
    folder = ("--model", "unet", "--dataset", "folder", "--data-root", tmp_path / "data")
    assert predict(*folder, "--out", tmp_path / "data" / "masks") == 2  # the ground truth
    err = capsys.readouterr().err
    assert f"--out {tmp_path / 'data' / 'masks'} lies inside the dataset root {tmp_path / 'data'}" in err
    assert files(tmp_path / "data") == masks
    streets = ("--model", "unet", "--dataset", "synthetic-streets", "--limit", "2")
    out = tmp_path / "pred"
    out.mkdir()
    (out / "0000.png").write_bytes(b"the user's picture")
    assert predict(*streets, "--out", out) == 2
    assert capsys.readouterr().err.strip() == (
        f"segcheck: error: --out {out} holds 1 file(s) that segcheck predict would replace but did not write "
        "(0000.png); choose another folder, or pass --overwrite to replace them"
    )
    assert files(out) == {"0000.png": b"the user's picture"}
    assert predict(*streets, "--out", out, "--overwrite") == 0
    assert predict(*streets, "--out", out) == 0  # its own masks now: replaced without a flag
    assert sorted(files(out)) == ["0000.png", "0001.png", "segcheck-predict.json"]
    assert predict(*streets, "--out", tmp_path / "pred" / "0000.png" / "x") == 2
    assert "cannot write there" in capsys.readouterr().err


# --- segcheck report merge / render -------------------------------------------------------------
def shards(tmp_path: Path, *versions: str) -> list[Path]:
    paths = []
    for k, ids in ((1, ["a", "c"]), (2, ["b"])):
        paths.append(tmp_path / f"shard{k}.json")
        report = {**shard_report(k, 2, ids, ["a", "b", "c"]), "segcheck": versions[k - 1] if versions else __version__}
        paths[-1].write_text(json.dumps(report))
    return paths


def test_case_5_merge_refuses_an_input_a_users_file_and_an_unwritable_path(tmp_path, capsys):
    a, b = shards(tmp_path)
    before = files(tmp_path)
    (tmp_path / "mine.json").write_text("[1, 2]\n")
    (tmp_path / "afile").write_text("x")
    assert cli.main(["report", "merge", str(a), str(b), "-o", str(a)]) == 2
    assert cli.main(["report", "merge", str(a), str(b), "-o", str(tmp_path / "mine.json")]) == 2
    assert cli.main(["report", "merge", str(a), str(b), "-o", str(tmp_path / "afile" / "m.json")]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert errors == [
        f"segcheck: error: -o {a} is also an input of this command; writing it would destroy it: choose another "
        "path, or pass --overwrite to replace it",
        f"segcheck: error: -o {tmp_path / 'mine.json'} exists and segcheck did not write it; choose another path, "
        "or pass --overwrite to replace it",
        f"segcheck: error: -o {tmp_path / 'afile' / 'm.json'}: cannot write there ({tmp_path / 'afile'} is a file, "
        "not a folder); choose a folder you can write to",
    ]
    assert {k: v for k, v in files(tmp_path).items() if k in before} == before
    assert cli.main(["report", "merge", str(a), str(b), "-o", str(tmp_path / "m.json")]) == 0
    assert cli.main(["report", "merge", str(a), str(b), "-o", str(tmp_path / "m.json")]) == 0  # its own: replaced


def test_render_refuses_a_users_page(tmp_path, capsys):
    (run,) = shards(tmp_path)[:1]
    (tmp_path / "page.html").write_text("<p>mine</p>\n")
    assert cli.main(["report", "render", str(run), "-o", str(tmp_path / "page.html")]) == 2
    assert "page.html exists and segcheck did not write it" in capsys.readouterr().err
    assert (tmp_path / "page.html").read_text() == "<p>mine</p>\n"
    assert cli.main(["report", "render", str(run), "-o", str(tmp_path / "page.html"), "--overwrite"]) == 0
    assert cli.main(["report", "render", str(run), "-o", str(tmp_path / "page.html")]) == 0  # its own now


def test_render_refuses_a_newer_report_and_a_broken_entry_in_one_line(tmp_path, capsys):
    (run,) = shards(tmp_path)[:1]
    report = json.loads(run.read_text())
    newer = tmp_path / "newer.json"
    newer.write_text(json.dumps({**report, "segcheck": "99.0"}))
    assert cli.main(["report", "render", str(newer), "-o", str(tmp_path / "n.html")]) == 2
    err = capsys.readouterr().err
    assert "was written by segcheck 99.0, newer than this segcheck" in err and "pip install -U segcheck" in err
    broken = tmp_path / "broken.json"
    del report["gates"][1]["outcome"]
    broken.write_text(json.dumps(report))
    assert cli.main(["report", "render", str(broken), "-o", str(tmp_path / "b.html")]) == 2
    err = capsys.readouterr().err
    assert "gate entry 1 has no 'outcome'" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "n.html").exists() and not (tmp_path / "b.html").exists()


def test_case_10_merge_applies_the_non_finite_rule_and_refuses_another_version(tmp_path, capsys):
    a, b = shards(tmp_path)
    report = json.loads(a.read_text())
    report["gates"][0] = noise("a", float("nan"), float("nan"), passed=True).to_dict()
    a.write_text(json.dumps(report))
    out = tmp_path / "m.json"
    assert cli.main(["report", "merge", str(a), str(b), "-o", str(out)]) == 0
    assert capsys.readouterr().out.strip().endswith(f"2 of 3 gates passed over 3 targets from 2 reports; wrote {out}")
    (record,) = [g for g in json.loads(out.read_text())["gates"] if g["target"] == "a"]
    assert record["outcome"] == "error" and math.isnan(record["value"])
    assert record["message"] == "noise_input measured nan against 0.1: NaN is no measurement, so the gate cannot judge"
    report["gates"][0] = noise("a", 0.5, float("inf"), passed=True).to_dict()
    a.write_text(json.dumps(report))
    assert cli.main(["report", "merge", str(a), str(b), "-o", str(out), "--overwrite"]) == 0
    (record,) = [g for g in json.loads(out.read_text())["gates"] if g["target"] == "a"]
    assert record["outcome"] == "error" and "a non-finite number cannot pass" in record["message"]
    capsys.readouterr()
    old, new = shards(tmp_path, __version__, "9.9.9")
    assert cli.main(["report", "merge", str(old), str(new), "-o", str(out)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"segcheck: error: {new} was written by segcheck 9.9.9, this is segcheck {__version__}; merge reports of "
        "one version: re-run it with this segcheck, or merge with its own"
    )
