"""The fleet view, the cross_dataset gate, shards and their merge: pure functions over records
(fast), then the CLI's ``segcheck report merge`` on small hand-made reports."""

import json

import pytest
import yaml

from segcheck import SegcheckError, __version__, fleet
from segcheck import config as segconfig
from segcheck.cli import main
from segcheck.gates.cross_dataset import cross_dataset
from segcheck.report import GateRecord
from tests.conftest import REPO
from tests.test_pytest_plugin import GATES, run_gates
from tests.test_pytest_targets import write_split_folder

CONFIG = segconfig.load()


def target(tags=None, model="unet", dataset="synthetic-streets", checkpoint="ckpt/a.safetensors", **extra):
    spec = {"model": model, "dataset": dataset, "data_root": None, "checkpoint": checkpoint, "init_seed": 0}
    return {
        "model": f"{model} (from x)",
        "spec": {**spec, "model_args": {}},
        **({"tags": tags} if tags else {}),
        **extra,
    }


def noise(target_id, real, noise_miou, passed=None):
    passed = noise_miou < 0.1 if passed is None else passed
    details = {"real_miou": real, "noise_miou": {"gaussian": noise_miou}, "worst_kind": "gaussian"}
    test = f"t::test_gate[{target_id}:noise_input]"
    return GateRecord(
        target_id,
        "noise_input",
        test,
        "passed" if passed else "failed",
        noise_miou,
        0.1,
        "value < threshold",
        "m",
        details,
    )


def other(target_id, gate, outcome="passed"):
    return GateRecord(
        target_id, gate, f"t::test_gate[{target_id}:{gate}]", outcome, 1.0 if outcome != "error" else None
    )


def test_rows_take_real_and_noise_miou_from_noise_input_and_name_failed_gates():
    targets = {"a": target({"recipe": "naive"}), "b": target({"recipe": "robust"}), "c": {"error": "no such file"}}
    records = [noise("a", 0.40, 0.31), other("a", "finite_outputs"), other("a", "prediction_collapse", "failed")]
    records += [noise("b", 0.42, 0.05), other("c", "finite_outputs", "error")]
    rows = {r["target"]: r for r in fleet.target_rows(targets, records)}
    assert list(rows) == ["a", "b", "c"]
    assert rows["a"]["real_miou"] == 0.40 and rows["a"]["noise_miou"] == 0.31 and rows["a"]["noise_kind"] == "gaussian"
    assert rows["a"]["failed"] == ["noise_input", "prediction_collapse"] and rows["b"]["failed"] == []
    assert rows["a"]["tags"] == {"recipe": "naive"} and rows["a"]["model"] == "unet"
    assert rows["c"]["real_miou"] is None and rows["c"]["errors"] == ["finite_outputs"]
    assert rows["c"]["setup_error"] == "no such file"


def test_real_miou_without_noise_input_comes_from_another_record():
    record = GateRecord("a", "positional_prior", "t", "passed", 0.5, 0.4, details={"real_miou": 0.61})
    (row,) = fleet.target_rows({"a": target()}, [record])
    assert row["real_miou"] == 0.61 and row["noise_miou"] is None


def test_tags_give_mean_and_spread_per_value_and_across_values():
    targets = {
        t: target({"strategy": s, "dataset": d})
        for t, s, d in [("a", "x", "bdd"), ("b", "x", "idd"), ("c", "y", "bdd"), ("d", "y", "idd")]
    }
    records = [noise("a", 0.40, 0.30), noise("b", 0.44, 0.34), noise("c", 0.41, 0.31), noise("d", 0.45, 0.35)]
    tags = fleet.tag_summary(fleet.target_rows(targets, records))
    assert list(tags) == ["dataset", "strategy"]
    x = tags["strategy"]["values"]["x"]
    assert (
        x["targets"] == 2
        and x["real_miou"]["mean"] == pytest.approx(0.42)
        and x["real_miou"]["spread"] == pytest.approx(0.04)
    )
    across = tags["strategy"]["across"]
    assert across["values"] == 2 and across["real_miou"]["mean"] == pytest.approx(0.425)
    assert across["real_miou"]["spread"] == pytest.approx(0.01)  # x 0.42, y 0.43
    assert tags["dataset"]["across"]["real_miou"]["spread"] == pytest.approx(0.04)
    assert tags["dataset"]["across"]["noise_miou"]["mean"] == pytest.approx(0.325)


def test_fleet_spread_names_a_gate_most_targets_fail_and_a_tag_whose_values_lie_within_a_point():
    ids = "abcd"
    targets = {t: target({"strategy": s, "dataset": d}) for t, s, d in zip(ids, "xxyy", ["bdd", "idd"] * 2)}
    reals, noises = [0.400, 0.450, 0.402, 0.452], [0.31, 0.05, 0.33, 0.30]
    view = fleet.fleet_view(targets, [noise(t, r, n) for t, r, n in zip(ids, reals, noises)], CONFIG)
    found = view["fleet_spread"]
    assert len(found) == 2, found
    assert found[0].startswith(
        "noise_input fails on 3 of 4 targets (75%: a, c, d): their mean noise mIoU is 0.313 against 0.418"
    )
    assert "the 2 values of tag 'strategy' differ by less than 0.01 in real mIoU" in found[1]
    assert "spread 0.0020, from 0.4250 (x) to 0.4270 (y)" in found[1]  # datasets differ by 0.05: not named
    lines = fleet.fleet_lines(view)
    assert any(line.startswith("a       0.4000     0.3100      noise_input") for line in lines), lines
    assert any(line.startswith("strategy  (across 2 values)  4") for line in lines), lines
    assert lines[-2:] == [f"fleet_spread: {s}" for s in found]


def test_a_random_init_target_is_left_out_of_the_fleets_findings_and_named():
    targets = {
        "good": target(),
        "rand": {**target(checkpoint="none"), "checkpoint": "none (random init, target.init_seed 0)"},
        "good2": target(),
    }
    records = [noise("good", 0.60, 0.05), noise("rand", 0.30, 0.29), noise("good2", 0.61, 0.31)]
    view = fleet.fleet_view(targets, records, CONFIG)
    assert not any("fails on" in finding for finding in view["fleet_spread"]), view["fleet_spread"]
    random_init = {row["target"]: row["random_init"] for row in view["targets"]}
    assert random_init == {"good": False, "good2": False, "rand": True}
    assert any("rand (random init)" in line for line in fleet.fleet_lines(view)), fleet.fleet_lines(view)
    alone = {k: v for k, v in targets.items() if k != "good"}  # one judged target: no fleet finding
    assert fleet.fleet_view(alone, [r for r in records if r.target != "good"], CONFIG)["fleet_spread"] == []


def test_half_the_fleet_failing_is_not_most_and_the_limits_are_settings():
    targets = {t: target({"strategy": t}) for t in "ab"}
    records = [noise("a", 0.40, 0.31), noise("b", 0.45, 0.05)]
    assert fleet.fleet_view(targets, records, CONFIG)["fleet_spread"] == []
    config = segconfig.load(overrides={"fleet_spread": {"max_fail_fraction": 0.4, "min_tag_spread": 0.06}})
    found = fleet.fleet_view(targets, records, config)["fleet_spread"]
    assert [s.split(" ")[0:2] for s in found] == [["noise_input", "fails"], ["the", "2"]]
    assert fleet.fleet_lines(fleet.fleet_view(targets, records, CONFIG))[-1].startswith(
        "fleet_spread: nothing systematic"
    )


def test_one_target_is_no_fleet():
    assert fleet.fleet_view({"a": target()}, [noise("a", 0.4, 0.3)], CONFIG) is None


def test_cross_dataset_reports_the_spread_of_one_checkpoint_across_datasets():
    targets = {
        "bdd": target(dataset="bdd"),
        "idd": target(dataset="idd"),
        "map": target(dataset="folder"),
        "other": target(dataset="idd", checkpoint="ckpt/b.safetensors"),  # another checkpoint, one dataset
    }
    targets["map"]["spec"]["data_root"] = "/data/map"
    records = [noise("bdd", 0.45, 0.3), noise("idd", 0.40, 0.3), noise("map", 0.36, 0.3), noise("other", 0.2, 0.1)]
    rows = fleet.target_rows(targets, records)
    ((name, result),) = cross_dataset(rows, {"min_spread": 0.0}).items()
    assert name == "unet:a" and result.passed and result.rule == "reported"
    assert result.value == pytest.approx(0.09)
    assert result.details["real_miou"] == {"bdd": 0.45, "folder (/data/map)": 0.36, "idd": 0.40}
    assert "across 3 datasets (bdd 0.450, folder (/data/map) 0.360, idd 0.400)" in result.message
    failing = cross_dataset(rows, {"min_spread": 0.1})["unet:a"]
    assert (
        not failing.passed and failing.threshold == 0.1 and "scores about the same whatever the data" in failing.message
    )


def test_cross_dataset_is_a_registered_fleet_gate_and_a_failing_one_is_named(loaded_plugins):
    gates = loaded_plugins.gates.gates("fleet")
    assert [g.name for g in gates] == ["cross_dataset", "cross_dataset_leakage"]
    assert all(g.markers == ("fleet",) for g in gates)  # cross_dataset_leakage: no record without split_leakage's
    assert "cross_dataset" not in {g.name for g in loaded_plugins.gates.gates("gates")}
    targets = {"bdd": target(dataset="bdd"), "idd": target(dataset="idd")}
    records = [noise("bdd", 0.45, 0.05), noise("idd", 0.44, 0.05)]
    config = segconfig.load(overrides={"cross_dataset": {"min_spread": 0.05}})
    view = fleet.fleet_view(targets, records, config, gates)
    (record,) = view["gates"]
    assert (
        record["target"] == "unet:a"
        and record["outcome"] == "failed"
        and record["test"] == "fleet::cross_dataset[unet:a]"
        and record["message"].endswith("; docs: gates/cross_dataset.md")
    )
    assert fleet.failed_fleet_gates(view) == ["cross_dataset[unet:a]"]
    assert any(line.startswith("cross_dataset [unet:a]: real mIoU spread 0.0100") for line in fleet.fleet_lines(view))


def test_a_fleet_gate_that_raises_is_one_error_record():
    from segcheck.gates.registered import Gate

    def broken(rows, cfg):
        raise KeyError("nope")

    view = fleet.fleet_view({"a": target(), "b": target()}, [], CONFIG, [Gate("broken", broken, plugin="mine")])
    (record,) = view["gates"]
    assert (
        record["outcome"] == "error"
        and record["message"] == "fleet gate 'broken' from plugin mine raised KeyError: 'nope'"
    )


@pytest.mark.parametrize("text", ["0/2", "3/2", "2", "a/b", "1/0", "-1/2"])
def test_a_bad_shard_is_one_line(text):
    with pytest.raises(SegcheckError, match=r"^--shard expects K/N with whole numbers 1 <= K <= N .*got"):
        fleet.parse_shard(text)


def test_shards_split_sorted_ids_round_robin_whatever_the_order():
    ids = ["e", "a", "d", "b", "c"]
    shards = [fleet.shard_of(ids, k, 2) for k in (1, 2)]
    assert shards == [["a", "c", "e"], ["b", "d"]] and fleet.parse_shard("2/2") == (2, 2)
    assert [fleet.shard_of(reversed(ids), k, 2) for k in (1, 2)] == shards
    assert sorted(sum((fleet.shard_of(ids, k, 3) for k in (1, 2, 3)), [])) == sorted(ids)


def shard_report(index, count, ids, fleet_ids, thresholds=None):
    return {
        "segcheck": __version__,
        "targets": {t: target() for t in ids},
        "thresholds": thresholds or {"noise_input.max_miou": 0.1},
        "gates": [noise(t, 0.4, 0.05).to_dict() for t in ids],
        **({"shard": {"index": index, "count": count, "fleet_targets": fleet_ids}} if count else {}),
    }


@pytest.mark.parametrize(
    "reports, message",
    [
        ([("a.json", {"targets": {}})], "a.json is not a segcheck JSON report"),
        ([("a.json", shard_report(1, 2, ["x"], ["x", "y"]))], r"shard reports 2/2 are missing \(got 1 of 2\)"),
        (
            [("a.json", shard_report(1, 2, ["x"], ["x", "y"])), ("b.json", shard_report(1, 2, ["y"], ["x", "y"]))],
            "a.json and b.json are both shard 1/2",
        ),
        (
            [("a.json", shard_report(1, 2, ["x"], ["x", "y"])), ("b.json", shard_report(2, 2, ["y"], ["x", "z"]))],
            "a.json and b.json are shards of different fleets",
        ),
        (
            [("a.json", shard_report(0, 0, ["x"], [])), ("b.json", shard_report(0, 0, ["x"], []))],
            "target 'x' is in both a.json and b.json",
        ),
        (
            [
                ("a.json", shard_report(0, 0, ["x"], [])),
                ("b.json", shard_report(0, 0, ["y"], [], {"noise_input.max_miou": 0.2})),
            ],
            r"a.json and b.json were run with different settings \(noise_input.max_miou: 0.1 vs 0.2\)",
        ),
    ],
)
def test_merge_refuses_what_is_not_one_fleet(reports, message):
    with pytest.raises(SegcheckError, match=message):
        fleet.merge_reports(reports)


def test_segcheck_report_merge_writes_one_report_with_the_fleet_view(tmp_path, capsys):
    paths = []
    for k, ids in ((1, ["a", "c"]), (2, ["b"])):
        paths.append(tmp_path / f"shard{k}.json")
        paths[-1].write_text(json.dumps(shard_report(k, 2, ids, ["a", "b", "c"])))
    out = tmp_path / "fleet.json"
    assert main(["report", "merge", *map(str, paths), "-o", str(out)]) == 0
    merged = json.loads(out.read_text())
    assert sorted(merged["targets"]) == ["a", "b", "c"] and [g["target"] for g in merged["gates"]] == ["a", "b", "c"]
    assert [r["target"] for r in merged["fleet"]["targets"]] == ["a", "b", "c"] and "shard" not in merged
    printed = capsys.readouterr().out
    assert "target  real mIoU  noise mIoU  failed gates" in printed
    assert printed.strip().endswith(f"3 of 3 gates passed over 3 targets from 2 reports; wrote {out}")


def test_merging_reports_of_separate_runs_needs_unrelated(tmp_path, capsys):
    paths = []
    for name in ("x", "y"):
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_text(json.dumps(shard_report(0, 0, [name], [])))
    out = tmp_path / "both.json"
    assert main(["report", "merge", *map(str, paths), "-o", str(out)]) == 2
    error = capsys.readouterr().err.strip()
    assert "x.json and " in error and "are not shards of one run (written without --shard K/N)" in error, error
    assert "pass --unrelated" in error and not out.exists()
    assert main(["report", "merge", *map(str, paths), "-o", str(out), "--unrelated"]) == 0
    assert sorted(json.loads(out.read_text())["targets"]) == ["x", "y"]
    rows = [{"target": t, "failed": ["g"], "noise_miou": None, "real_miou": 0.5, "random_init": False,
             "setup_error": None} for t in "ab"]  # fmt: skip
    (found,) = fleet.spread_findings(rows, {}, CONFIG["fleet_spread"], unrelated=True)
    assert "separate runs merged with --unrelated" in found and "share" not in found


def test_segcheck_report_merge_errors_are_one_line(tmp_path, capsys):
    (tmp_path / "bad.json").write_text("{not json")
    assert main(["report", "merge", str(tmp_path / "missing.json"), "-o", str(tmp_path / "o.json")]) == 2
    assert main(["report", "merge", str(tmp_path / "bad.json"), "-o", str(tmp_path / "o.json")]) == 2
    assert main(["report", "merge", str(tmp_path / "bad.json")]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 3 and all(e.startswith("segcheck: error: ") for e in errors), errors
    assert (
        "missing.json does not exist" in errors[0] and "is not JSON" in errors[1] and "needs -o FLEET.json" in errors[2]
    )


# --- end to end: the example fleet through pytest (cheap gates, 4 eval images) -----------------
EXAMPLE = REPO / "examples" / "fleet.yaml"
CHEAP_GATES = ["-m", "not train", "--eval-size", "4", "-k", "noise_input or head_matches_classes or finite_outputs"]


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> str:
    """The example fleet's first two rows (naive, robust: the shipped checkpoints), paths made
    absolute, so the end-to-end tests run two targets rather than the whole example."""
    example = yaml.safe_load(EXAMPLE.read_text())
    rows = [dict(r, checkpoint=str((EXAMPLE.parent / r["checkpoint"]).resolve())) for r in example["targets"][:2]]
    assert [r["name"] for r in rows] == ["naive", "robust"]
    path = tmp_path_factory.mktemp("fleet") / "pair.yaml"
    path.write_text(yaml.safe_dump({"defaults": example["defaults"], "targets": rows}))
    return str(path)


@pytest.fixture
def cheap(pair) -> list[str]:
    return ["--models-manifest", pair, *CHEAP_GATES]


def test_the_example_fleet_lists_every_shipped_checkpoint():
    example = yaml.safe_load(EXAMPLE.read_text())
    paths = [(EXAMPLE.parent / r["checkpoint"]).resolve() for r in example["targets"]]
    assert len(paths) == 10 and all(p.is_file() and p.with_suffix(".yaml").is_file() for p in paths)


def test_the_example_fleet_shows_the_naive_noise_failure_and_its_shards_merged_equal_one_run(pytester, cheap):
    result, whole = run_gates(pytester, *cheap)
    assert result.ret == 1  # the naive checkpoint fails noise_input
    result.stdout.fnmatch_lines(
        ["*segcheck fleet*", "target*real mIoU*noise mIoU*failed gates", "naive *noise_input", "robust *-", "recipe*"]
    )
    rows = {r["target"]: r for r in whole["fleet"]["targets"]}
    assert rows["naive"]["failed"] == ["noise_input"] and rows["robust"]["failed"] == []
    assert rows["naive"]["tags"]["recipe"] == "naive" and set(whole["fleet"]["tags"]) >= {"recipe", "architecture"}
    shards = []
    for k in (1, 2):
        shard, report = run_gates(pytester, *cheap, "--shard", f"{k}/2")
        shard.stdout.fnmatch_lines([f"segcheck shard {k}/2: 1 of 2 targets"])
        assert "fleet" not in report and report["shard"] == {
            "index": k,
            "count": 2,
            "fleet_targets": ["naive", "robust"],
        }
        shards.append(pytester.path / f"shard{k}.json")
        (pytester.path / "report.json").rename(shards[-1])
    out = pytester.path / "merged.json"
    assert main(["report", "merge", *map(str, shards), "-o", str(out)]) == 0
    merged = json.loads(out.read_text())
    assert merged["gates"] == whole["gates"] and merged["targets"] == whole["targets"]
    assert merged["fleet"] == whole["fleet"]


def test_the_example_fleet_under_xdist_gives_the_records_of_a_serial_run(pytester, cheap):
    _, serial = run_gates(pytester, *cheap)
    result, parallel = run_gates(pytester, *cheap, "-n", "2")
    assert result.ret == 1, result.stdout.str()
    assert parallel["gates"] == serial["gates"] and parallel["fleet"] == serial["fleet"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--shard", "3/2"], "*--shard expects K/N with whole numbers 1 <= K <= N*got '3/2'"),
        (["--shard", "3/3"], "*--shard 3/3: the run has 2 target(s), so shard 3 gets none; use at most 2 shards"),
    ],
)
def test_a_bad_shard_is_a_usage_error(pytester, pair, args, message):
    result, report = run_gates(pytester, "--models-manifest", pair, *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR and report is None
    result.stderr.fnmatch_lines([message])


ALIVE = """
import weakref

from segcheck.gates import GateResult

SEEN = []


def alive(target, cfg):
    earlier = sum(ref() is not None for ref in SEEN)
    SEEN.append(weakref.ref(target))
    return GateResult("alive", float(earlier), 0.0, earlier == 0, f"{earlier} earlier targets in memory",
                      rule="value == threshold")


def failing(target, cfg):
    return GateResult("failing", 1.0, 0.0, False, "fails, so that a traceback may hold the target")


def segcheck_register_gates(registry):
    registry.add("alive", alive)
    registry.add("failing", failing)
"""


def test_a_worker_holds_one_target_at_a_time(pytester):
    """(In a subprocess: pytester's in-process runs keep every hook call's arguments, tracebacks too.)"""
    plugin = pytester.makepyfile(alive_gate=ALIVE)
    targets = [{"name": n, "checkpoint": "none", "init_seed": i} for i, n in enumerate("abcd")]
    pytester.makefile(".yaml", fleet=yaml.safe_dump({"targets": targets}))
    args = ["--models-manifest", "fleet.yaml", "--plugin", str(plugin), "--eval-size", "2", "-k", "alive or failing"]
    pytester.runpytest_subprocess(GATES, "-p", "no:cacheprovider", "--segcheck-report", "report.json", *args)
    report = json.loads((pytester.path / "report.json").read_text())
    alive = {g["target"]: g["value"] for g in report["gates"] if g["gate"] == "alive"}
    assert alive == dict.fromkeys("abcd", 0.0), alive


def test_a_failing_fleet_gate_fails_the_run(pytester):
    root = pytester.path / "streets"
    write_split_folder(root)
    robust = str(REPO / "plugins/checkpoints/unet_synthetic-streets_robust.safetensors")
    targets = [
        {"name": "on-synthetic", "checkpoint": robust, "tags": {"dataset": "synthetic"}},
        {
            "name": "on-folder",
            "checkpoint": robust,
            "dataset": "folder",
            "data_root": str(root),
            "tags": {"dataset": "folder"},
        },
    ]
    pytester.makefile(".yaml", fleet=yaml.safe_dump({"targets": targets}))
    pytester.makefile(".yaml", segcheck=yaml.safe_dump({"cross_dataset": {"min_spread": 0.5}}))
    args = ["--models-manifest", "fleet.yaml", "--segcheck-config", "segcheck.yaml", "--eval-size", "4"]
    result, report = run_gates(pytester, *args, "-k", "noise_input")
    assert [g["outcome"] for g in report["gates"]] == ["passed", "passed"], report["gates"]
    assert result.ret == 1
    (record,) = report["fleet"]["gates"]
    assert record["gate"] == "cross_dataset" and record["outcome"] == "failed" and record["threshold"] == 0.5
    assert record["target"] == "unet:unet_synthetic-streets_robust"
    result.stdout.fnmatch_lines(
        ["cross_dataset*unet:unet_synthetic-streets_robust*value >= 0.5000*FAIL", "fleet gates failed: cross_dataset*"]
    )
