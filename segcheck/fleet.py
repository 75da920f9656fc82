"""The fleet view of a run of several targets, and the sharding of a fleet over machines.

Pure functions over gate records and the targets' descriptions (the JSON report's ``targets``),
so the shard reports of a fleet, merged, give the same view as one run over all of it:

- :func:`fleet_view`: one row per target (real and noise mIoU from its ``noise_input`` record,
  failed gates), per tag key the mean and spread of both per tag value and across values, the
  ``fleet_spread`` finding (sentences with numbers) and the records of the fleet-level gates
  (registered with ``suite="fleet"``, e.g. ``cross_dataset``);
- :func:`shard_of`: the targets of ``--shard K/N``; :func:`merge_reports`: shard reports as one.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable

from segcheck import SegcheckError, __version__
from segcheck.report import GateRecord, _aligned, _fmt, unjudged
from segcheck.wording import listed

#: the per-target fields of a fleet row that describe what was tested (from ``spec_row``)
SPEC_KEYS = ("model", "dataset", "data_root", "checkpoint", "init_seed", "model_args")


def spec_row(spec) -> dict:
    """What the fleet view needs to know of a ``TargetSpec``, as JSON values (it is stored in
    the report's ``targets[id]["spec"]``, so that a merge of shard reports can group targets)."""
    from segcheck.target import thawed

    return {
        "model": spec.model,
        "dataset": spec.dataset,
        "data_root": None if spec.data_root is None else str(spec.data_root),
        "checkpoint": None if spec.checkpoint is None else str(spec.checkpoint),
        "init_seed": spec.init_seed,
        "model_args": {k: thawed(v) for k, v in spec.model_args},
    }


# --- the view ----------------------------------------------------------------------------------
def target_rows(targets: dict[str, dict], records: Iterable[GateRecord]) -> list[dict]:
    """One row per target id (sorted): its spec and tags, ``real_miou`` and ``noise_miou`` (the
    worst noise kind's, ``noise_kind``) from its ``noise_input`` record (the real mIoU, without
    one, from any record whose details hold ``real_miou``; None when no gate measured it), the
    gates it ``failed``, those that were an ``error``, and ``setup_error`` (why it could not be
    set up, or None)."""
    by_target: dict[str, list[GateRecord]] = {}
    for r in records:
        by_target.setdefault(r.target, []).append(r)
    rows = []
    for target in sorted(set(targets) | set(by_target)):
        described, recs = targets.get(target) or {}, by_target.get(target, [])
        noise = next((r for r in recs if r.gate == "noise_input" and r.value is not None), None)
        reals = [r.details.get("real_miou") for r in ([noise] if noise else []) + recs]
        real = next((float(v) for v in reals if _number(v)), None)
        spec = described.get("spec") or {}
        rows.append(
            {
                "target": target,
                **{k: spec.get(k) for k in SPEC_KEYS},
                "tags": dict(described.get("tags") or {}),
                "real_miou": real,
                "noise_miou": None if noise is None else float(noise.value),
                "noise_kind": None if noise is None else noise.details.get("worst_kind"),
                "failed": sorted({r.gate for r in recs if r.outcome == "failed"}),
                "errors": sorted({r.gate for r in recs if r.outcome == "error"}),
                "setup_error": described.get("error"),
                "random_init": str(described.get("checkpoint", "")).startswith("none (random init"),
            }
        )
    return rows


def judged(row: dict) -> bool:
    """Whether a target row counts in the fleet's findings: set up, and with trained weights."""
    return not (row["random_init"] or row["setup_error"])


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _stats(values: Iterable) -> dict:
    """``{"mean", "spread"}`` (spread = max - min) of the measured values; both None without any."""
    measured = [float(v) for v in values if _number(v)]
    if not measured:
        return {"mean": None, "spread": None}
    return {"mean": math.fsum(measured) / len(measured), "spread": max(measured) - min(measured)}


def tag_summary(rows: list[dict]) -> dict[str, dict]:
    """Per tag key (sorted): ``values``, per tag value its number of ``targets`` and the mean and
    spread of their real and noise mIoU; ``across``: the mean and spread of the values' means
    (``values``: how many values have a measured real mIoU). A target without the key is left out."""
    summary = {}
    for key in sorted({k for r in rows for k in r["tags"]}):
        groups: dict[str, list[dict]] = {}
        for r in rows:
            if key in r["tags"]:
                groups.setdefault(str(r["tags"][key]), []).append(r)
        values = {
            value: {
                "targets": len(members),
                "real_miou": _stats(m["real_miou"] for m in members),
                "noise_miou": _stats(m["noise_miou"] for m in members),
            }
            for value, members in sorted(groups.items())
        }
        summary[key] = {
            "values": values,
            "across": {
                "values": sum(v["real_miou"]["mean"] is not None for v in values.values()),
                "real_miou": _stats(v["real_miou"]["mean"] for v in values.values()),
                "noise_miou": _stats(v["noise_miou"]["mean"] for v in values.values()),
            },
        }
    return summary


def spread_findings(rows: list[dict], tags: dict[str, dict], cfg: dict, unrelated: bool = False) -> list[str]:
    """The ``fleet_spread`` finding: a sentence, with its numbers and the targets it rests on, for
    each gate failing on more than ``cfg["max_fail_fraction"]`` of the judged targets (random-init
    targets and targets that could not be set up are left out, and named), and for each tag whose
    values' mean real mIoU differ by less than ``cfg["min_tag_spread"]`` (``tags`` of the judged
    targets: a systematic pattern no single target shows). Empty when there is nothing of the kind.
    With ``unrelated`` (reports of separate runs merged), a gate's finding names no shared cause."""
    rows = [r for r in rows if judged(r)]  # a random model or a broken target says nothing of the fleet
    findings, n = [], len(rows)
    for gate in sorted({g for r in rows for g in r["failed"]}):
        failing = [r for r in rows if gate in r["failed"]]
        if n < 2 or len(failing) <= cfg["max_fail_fraction"] * n:  # one judged target is one run, not a fleet
            continue
        who = listed([r["target"] for r in failing], most=6)
        sentence = f"{gate} fails on {len(failing)} of {n} targets ({len(failing) / n:.0%}: {who})"
        noise, real = _stats(r["noise_miou"] for r in failing)["mean"], _stats(r["real_miou"] for r in failing)["mean"]
        if gate == "noise_input" and noise is not None and real is not None:
            sentence += (
                f": their mean noise mIoU is {noise:.3f} against {real:.3f} on real images, so these targets score "
                "without reading their images"
            )
            cause = "a shared shortcut (the recipe, or the labels' layout), not one bad run"
        else:
            cause = "a cause the targets share (recipe, data or code), not one bad run"
        if unrelated:  # separate runs need not share anything: say what was merged, not why
            cause = (
                "these come from separate runs merged with --unrelated, so compare their set-ups before reading a cause"
            )
        sentence += f"; {cause}" if gate == "noise_input" and noise is not None and real is not None else f": {cause}"
        findings.append(sentence)
    limit = cfg["min_tag_spread"]
    for key, summary in tags.items():
        means = {v: s["real_miou"]["mean"] for v, s in summary["values"].items() if s["real_miou"]["mean"] is not None}
        spread = summary["across"]["real_miou"]["spread"]
        if len(means) < 2 or spread >= limit:
            continue
        low, high = min(means, key=means.get), max(means, key=means.get)
        noise = summary["across"]["noise_miou"]["mean"]
        findings.append(
            f"the {len(means)} values of tag {key!r} differ by less than {limit:g} in real mIoU "
            f"({100 * limit:g} point{'s' if limit != 0.01 else ''}): spread {spread:.4f}, from {means[low]:.4f} "
            f"({low}) to {means[high]:.4f} ({high})"
            + (f", noise mIoU {noise:.3f} on average" if noise is not None else "")
            + f"; whatever {key} changes, the metric does not see it"
        )
    return findings


def fleet_gate_records(gates, rows: list[dict], config: dict, details: dict | None = None) -> list[GateRecord]:
    """The records of the fleet-level ``gates`` (``Gate`` descriptors of ``suite="fleet"``):
    ``gate.function(rows, cfg) -> {subject: GateResult}``, a subject being what the result is
    about (e.g. a model and checkpoint across datasets). Each row a gate gets also holds
    ``details``: ``{gate: details}`` of its target's records (``details[target]``; not part of
    the view). A gate that raises is one ERROR record."""
    from segcheck.gates.registered import pointed
    from segcheck.gates.result import GateResult
    from segcheck.target import guarded

    records = []
    details = details or {}
    for gate in gates:
        cfg = dict(config.get(gate.section) or {}) if gate.section else {}
        plain = [
            {**r, "tags": dict(r["tags"]), "failed": list(r["failed"]), "errors": list(r["errors"]),
             "details": dict(details.get(r["target"]) or {})}
            for r in rows
        ]  # fmt: skip
        try:
            results = guarded(
                f"fleet gate {gate.name!r} from plugin {gate.plugin}", functools.partial(gate.function, plain, cfg)
            )
            if not isinstance(results, dict) or not all(isinstance(v, GateResult) for v in results.values()):
                raise SegcheckError(
                    f"fleet gate {gate.name!r} from plugin {gate.plugin} returned {type(results).__name__}, "
                    "expected a dict {subject: segcheck.gates.GateResult}"
                )
        except SegcheckError as exc:
            records.append(GateRecord("fleet", gate.name, f"fleet::{gate.name}", "error", message=str(exc)))
            continue
        for subject, result in sorted(results.items()):
            result = pointed(gate, result)
            records.append(GateRecord.from_result(result, str(subject), f"fleet::{gate.name}[{subject}]", gate.name))
    return records


def fleet_view(
    targets: dict[str, dict], records: Iterable[GateRecord], config: dict, gates=(), unrelated: bool = False
) -> dict | None:
    """The fleet view (plain JSON values) of a run, or None with fewer than 2 targets:
    ``targets`` (:func:`target_rows`), ``tags`` (:func:`tag_summary`), ``fleet_spread``
    (:func:`spread_findings`, settings ``config["fleet_spread"]``), ``left_out`` (the targets
    the findings leave out, and why) and ``gates`` (the records of the fleet-level ``gates``)."""
    records = list(records)
    rows = target_rows(targets, records)
    if len(rows) < 2:
        return None
    details: dict[str, dict] = {}
    for r in records:
        if r.details:
            details.setdefault(r.target, {})[r.gate] = r.details
    from segcheck.config import DEFAULTS

    tags = tag_summary(rows)
    cfg = {**DEFAULTS["fleet_spread"], **(config.get("fleet_spread") or {})}
    return {
        "targets": rows,
        "tags": tags,
        "fleet_spread": spread_findings(rows, tag_summary([r for r in rows if judged(r)]), cfg, unrelated),
        "left_out": [
            f"{r['target']} ({'random init' if r['random_init'] else 'not set up'})" for r in rows if not judged(r)
        ],
        "gates": [r.to_dict() for r in fleet_gate_records(gates, rows, config, details)],
    }


def failed_fleet_gates(view: dict | None) -> list[str]:
    """The fleet-level records of ``view`` that failed or errored, as ``gate[subject]``."""
    return [f"{g['gate']}[{g['target']}]" for g in (view or {}).get("gates", []) if g["outcome"] in ("failed", "error")]


def fleet_lines(view: dict) -> list[str]:
    """The fleet view as terminal lines: the per-target table, the per-tag table, the fleet
    gates with their messages, and the fleet_spread sentences."""
    miou = lambda v: "-" if v is None else _fmt(float(v))  # noqa: E731
    rows = [("target", "real mIoU", "noise mIoU", "failed gates")]
    for r in view["targets"]:
        if r["setup_error"]:
            verdict = f"not set up: {r['setup_error']}"
        else:
            verdict = ", ".join(r["failed"] + [f"{g} (error)" for g in r["errors"]]) or "-"
        rows.append((r["target"], miou(r["real_miou"]), miou(r["noise_miou"]), verdict))
    lines = _aligned(rows)
    if view["tags"]:
        four = lambda s: [miou(s[m][k]) for m in ("real_miou", "noise_miou") for k in ("mean", "spread")]  # noqa: E731
        tags = [("tag", "value", "targets", "real mean", "real spread", "noise mean", "noise spread")]
        for key, summary in view["tags"].items():
            values = summary["values"]
            tags += [(key, value, s["targets"], *four(s)) for value, s in values.items()]
            if len(values) >= 2:
                across = summary["across"]
                n = sum(s["targets"] for s in values.values())
                tags.append((key, f"(across {across['values']} values)", n, *four(across)))
        lines += ["", "per tag: mean and spread (max - min) over a value's targets; across: over the values' means"]
        lines += _aligned(tags)
    if view["gates"]:
        gates = [("fleet gate", "subject", "measured", "threshold", "verdict")]
        for g in map(GateRecord.from_dict, view["gates"]):
            shown = ("-", "-") if g.value is None else (_fmt(g.value), g.rule.replace("threshold", _fmt(g.threshold)))
            gates.append((g.gate, g.target, *shown, g.verdict))
        lines += ["", *_aligned(gates)]
        lines += [f"{g['gate']} [{g['target']}]: {g['message']}" for g in view["gates"]]
    found = view["fleet_spread"] or [
        "nothing systematic: no gate fails on most targets, and no tag's values lie closer than its limit"
    ]
    lines += [""]
    if view.get("left_out"):
        lines.append(f"fleet_spread: left out of the findings: {listed(view['left_out'], most=6)}")
    lines += [f"fleet_spread: {sentence}" for sentence in found]
    return lines


# --- shards and their merge -------------------------------------------------------------------
def parse_shard(text: str) -> tuple[int, int]:
    """``"K/N"`` -> (K, N) with 1 <= K <= N; anything else is a one-line error."""
    index, sep, count = str(text).partition("/")
    try:
        k, n = int(index), int(count)
    except ValueError:
        k = n = 0
    if not sep or not 1 <= k <= n:
        raise SegcheckError(
            f"--shard expects K/N with whole numbers 1 <= K <= N (shard K of N, e.g. --shard 2/4), got {text!r}"
        )
    return k, n


def shard_of(ids: Iterable[str], index: int, count: int) -> list[str]:
    """The target ids of shard ``index`` of ``count`` (1-based): the ids sorted (as strings),
    the i-th (from 0) going to shard ``i % count + 1``. Deterministic and independent of the
    manifest's row order; the shards' sizes differ by one at most. Adding or removing a target
    moves the ids sorted after it to other shards."""
    return [t for i, t in enumerate(sorted(ids)) if i % count == index - 1]


def merge_reports(reports: list[tuple[str, dict]], *, unrelated: bool = False) -> tuple[dict, dict, list[GateRecord]]:
    """``(targets, thresholds, records)`` of several JSON reports (``(name, parsed JSON)``
    pairs: the shard reports of one fleet, or, with ``unrelated``, reports of separate runs).
    One-line errors: a file that is not a segcheck report, one of another segcheck version, a
    target in two reports, different settings, shard reports that are not exactly the shards
    1..N of one fleet, and several reports of separate runs without ``unrelated``.
    A record that passed on a non-finite value or threshold becomes an error, as in a live run."""
    if not reports:
        raise SegcheckError("segcheck report merge needs at least one JSON report")
    targets: dict[str, dict] = {}
    where: dict[str, str] = {}
    records: list[GateRecord] = []
    first_name, first = reports[0]
    for name, report in reports:
        if not isinstance(report, dict) or not isinstance(report.get("gates"), list):
            raise SegcheckError(
                f"{name} is not a segcheck JSON report (no 'gates' list); pass files --segcheck-report wrote"
            )
        if report.get("segcheck") != __version__:
            raise SegcheckError(
                f"{name} was written by segcheck {report.get('segcheck') or '(no version)'}, this is segcheck "
                f"{__version__}; merge reports of one version: re-run it with this segcheck, or merge with its own"
            )
        if (report.get("thresholds") or {}) != (first.get("thresholds") or {}):
            a, b = first.get("thresholds") or {}, report.get("thresholds") or {}
            key = next(k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k))
            raise SegcheckError(
                f"{first_name} and {name} were run with different settings ({key}: {a.get(key)} vs {b.get(key)}); "
                "merge the reports of one configuration"
            )
        mine = set(report.get("targets") or {}) | {g.get("target") for g in report["gates"]}
        for target in sorted(mine & set(where)):
            raise SegcheckError(
                f"target {target!r} is in both {where[target]} and {name}; pass each target's report once"
            )
        where.update(dict.fromkeys(mine, name))
        targets.update(report.get("targets") or {})
        records += [_judged(GateRecord.from_dict(g)) for g in report["gates"]]
    _check_shards(reports, unrelated=unrelated)
    return targets, first.get("thresholds") or {}, sorted(records, key=lambda r: (r.target, r.test))


def _judged(record: GateRecord) -> GateRecord:
    """``record``, an error where a live run would have made it one (``report.unjudged``)."""
    measured = record.outcome in ("passed", "failed")
    problem = unjudged(record.gate, record.value, record.threshold, record.passed) if measured else None
    if problem:
        record.outcome, record.message = "error", problem
    return record


def _check_shards(reports: list[tuple[str, dict]], *, unrelated: bool = False) -> None:
    """Shard reports (with a ``shard`` entry) must be exactly shards 1..N of one fleet; several
    reports of separate runs (no ``shard`` entry) only when ``unrelated``: the fleet view's
    findings read a cause the targets share, which separate runs need not have."""
    shards = [(name, r["shard"]) for name, r in reports if r.get("shard")]
    if not shards:
        if len(reports) > 1 and not unrelated:
            raise SegcheckError(
                f"{reports[0][0]} and {reports[1][0]} are not shards of one run (written without --shard K/N), so "
                "their fleet view would compare unrelated targets as one fleet; merge the shard reports of one run, "
                "or pass --unrelated to merge separate runs anyway"
            )
        return
    if len(shards) != len(reports):
        plain = next(name for name, r in reports if not r.get("shard"))
        raise SegcheckError(f"{plain} is not a shard report but {shards[0][0]} is; merge the shards of one fleet only")
    name, first = shards[0]
    for other, shard in shards[1:]:
        if shard["count"] != first["count"] or shard["fleet_targets"] != first["fleet_targets"]:
            raise SegcheckError(
                f"{name} and {other} are shards of different fleets (another --shard N or another manifest); "
                "merge the shards of one run"
            )
    seen: dict[int, str] = {}
    for other, shard in shards:
        if shard["index"] in seen:
            raise SegcheckError(f"{seen[shard['index']]} and {other} are both shard {shard['index']}/{shard['count']}")
        seen[shard["index"]] = other
    missing = [f"{k}/{first['count']}" for k in range(1, first["count"] + 1) if k not in seen]
    if missing:
        raise SegcheckError(
            f"shard reports {', '.join(missing)} are missing (got {len(seen)} of {first['count']}); "
            "pass every shard's report"
        )


def thresholds_config(thresholds: dict) -> dict[str, dict]:
    """A report's flat ``{"section.key": value}`` settings back as ``{section: {key: value}}``."""
    config: dict[str, dict] = {}
    for flat, value in thresholds.items():
        section, _, key = flat.partition(".")
        config.setdefault(section, {})[key] = value
    return config
