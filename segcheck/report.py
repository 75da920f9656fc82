"""Gate records (one typed record per gate test) and their reports: the terminal table and the JSON file."""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from segcheck import __version__

VERDICTS = {"passed": "PASS", "failed": "FAIL", "error": "ERROR", "skipped": "SKIP", "xfailed": "XFAIL"}


@dataclass
class GateRecord:
    """What one gate test found about one target: ``outcome`` is one of :data:`VERDICTS`;
    ``value``/``threshold`` are None when the gate could not measure (error, skip).
    ``details`` and ``figures`` hold plain JSON values only, so the record travels from
    xdist workers as it is. ``figures`` are the paths of its PNG files relative to the JSON
    report's folder; ``figure_notes`` say which figures could not be drawn, and why."""

    target: str
    gate: str
    test: str
    outcome: str
    value: float | None = None
    threshold: float | None = None
    rule: str = "-"
    message: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    figures: list[str] = field(default_factory=list)
    figure_notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.outcome == "passed"

    @property
    def verdict(self) -> str:
        return VERDICTS[self.outcome]

    @classmethod
    def from_result(cls, result, target: str, test: str, gate: str | None = None) -> GateRecord:
        """The record of a ``GateResult`` that ``target``'s test ``test`` measured."""
        plain = json.loads(json.dumps(result.to_dict(), default=_jsonable))
        return cls(
            target,
            gate or result.name,
            test,
            "passed" if result.passed else "failed",
            plain["value"],
            plain["threshold"],
            plain["rule"] or "-",
            plain["message"],
            plain["details"],
        )

    @classmethod
    def from_dict(cls, data: dict) -> GateRecord:
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def properties(self) -> list[tuple[str, object]]:
        """Scalar test properties (for ``--junitxml``): gate, target, value, threshold, verdict."""
        return [
            ("segcheck_gate", self.gate),
            ("segcheck_target", self.target),
            ("segcheck_value", self.value),
            ("segcheck_threshold", self.threshold),
            ("segcheck_verdict", self.verdict),
        ]


def unjudged(gate: str, value, threshold, passed: bool, message: str = "") -> str | None:
    """Why a verdict measured as ``value`` against ``threshold`` cannot stand, or None when it
    can: NaN is no measurement (whatever the verdict), and a pass on an infinite number is
    none either. The rule of a live run and of a merge."""
    if any(_nan(v) for v in (value, threshold)):
        because = f" ({message})" if message else ""
        return f"{gate} measured {value} against {threshold}: NaN is no measurement, so the gate cannot judge{because}"
    if passed and not all(_finite(v) for v in (value, threshold)):
        return (
            f"{gate} measured {value} against {threshold}: a non-finite number cannot pass; "
            "the model or the data gave NaN/inf"
        )
    return None


def _nan(value) -> bool:
    try:
        return math.isnan(float(value))
    except (TypeError, ValueError):
        return False  # not a number (e.g. a count as a string)


def _finite(value) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return True  # not a number (e.g. a count as a string): nothing to say


def _jsonable(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to the JSON report")


def _fmt(value) -> str:
    """Floats with 4 decimals; zero as ``0``; tiny non-zero ones (tolerances, gradient norms) in 3
    significant digits, so no threshold reads ``0.0000``."""
    if isinstance(value, float):
        if value == 0:
            return "0"
        return f"{value:.3g}" if abs(value) < 1e-3 else f"{value:.4f}"
    return str(value)


def summary_table(records: list[GateRecord]) -> list[str]:
    """Lines of a table: gate, target, measured, threshold, verdict; then the reason of every
    gate that errored or skipped before measuring."""
    rows = [("gate", "target", "measured", "threshold", "verdict")]
    rows += [
        (r.gate, r.target, "-", "-", r.verdict)
        if r.value is None
        else (r.gate, r.target, _fmt(r.value), r.rule.replace("threshold", _fmt(r.threshold)), r.verdict)
        for r in records
    ]
    lines = _aligned(rows)
    lines += [f"{r.verdict} {r.gate}: {r.message}" for r in records if r.value is None]
    passed = sum(r.passed for r in records)
    tally = {outcome: sum(r.outcome == outcome for r in records) for outcome in ("error", "skipped", "xfailed")}
    counts = [f"{n} {'errors' if outcome == 'error' and n != 1 else outcome}" for outcome, n in tally.items() if n]
    lines.append(f"{passed} of {len(records)} gates passed" + (f" ({', '.join(counts)})" if counts else ""))
    return lines


SCORER_COLUMNS = ("scorer", "FPR95", "AUROC", "AUPR", "sIoU", "PPV", "mean F1")


def anomaly_tables(records: list[GateRecord]) -> dict[str, dict]:
    """Per target: one row per scorer (pooled FPR95, AUROC, AUPR; components' sIoU, PPV, mean
    F1) from its ``anomaly_detection`` records, and the best scorer's threshold sensitivity
    (lowest FPR95, then highest AUROC)."""
    tables: dict[str, dict] = {}
    for r in records:
        d = r.details
        if "scorer" not in d or "pooled" not in d:
            continue
        p, c = d["pooled"], d["components"]
        row = {"scorer": d["scorer"], "FPR95": p["fpr"], "AUROC": p["auroc"], "AUPR": p["aupr"]}
        row.update({"sIoU": c["siou"], "PPV": c["ppv"], "mean F1": c["f1"], "verdict": r.verdict})
        table = tables.setdefault(r.target, {"scorers": [], "sensitivity": {}})
        table["scorers"].append(row)
        best = min(table["scorers"], key=lambda x: (x["FPR95"], -x["AUROC"]))
        if best is row:
            table["sensitivity"] = {"scorer": d["scorer"], "best_f1": d["best_f1"], "points": d["sensitivity"]}
    return tables


def anomaly_lines(tables: dict[str, dict]) -> list[str]:
    """The scorer table and the best scorer's threshold sensitivity, as terminal lines."""
    lines = []
    for target, table in tables.items():
        rows = [(*SCORER_COLUMNS, "verdict")]
        rows += [(r["scorer"], *(f"{r[k]:.3f}" for k in SCORER_COLUMNS[1:]), r["verdict"]) for r in table["scorers"]]
        lines += [f"{target}:", *_aligned(rows)]
        sens = table["sensitivity"]
        if sens:
            best = sens["best_f1"]["threshold"]
            lines.append(f"threshold sensitivity of {sens['scorer']} (best pixel F1 at score >= {best:.4g}):")
            points = [("threshold", "chosen by", "precision", "recall", "F1")]
            for p in sens["points"]:
                rates = (f"{p[k]:.3f}" for k in ("precision", "recall", "f1"))
                points.append((f"{p['threshold']:.4g}", p["selected_by"], *rates))
            lines += _aligned(points)
    return lines


PROMPT_COLUMNS = ("concept", "prompt", "IoU", "Dice", "pixel acc", "precision", "recall")
_PROMPT_KEYS = ("iou", "dice", "pixel_accuracy", "precision", "recall")


def prompt_tables(records: list[GateRecord]) -> dict[str, list[dict]]:
    """Per target: one row per (concept, prompt) of its ``prompt_metrics`` record: foreground
    IoU, Dice, pixel accuracy, precision and recall (what a prompted model is judged by, not a
    background+foreground mIoU)."""
    tables: dict[str, list[dict]] = {}
    for r in records:
        if r.gate != "prompt_metrics" or "per_prompt" not in r.details:
            continue
        rows = tables.setdefault(r.target, [])
        canonical = r.details.get("canonical", {})
        for concept, prompts in r.details["per_prompt"].items():
            first = [p for p in prompts if p == canonical.get(concept)]  # the canonical prompt first
            for prompt, scores in ((p, prompts[p]) for p in first + [p for p in prompts if p not in first]):
                rows.append({"concept": concept, "prompt": prompt, **{k: scores[k] for k in _PROMPT_KEYS}})
    return tables


def prompt_lines(tables: dict[str, list[dict]]) -> list[str]:
    """The per-prompt foreground table of each target, as terminal lines."""
    lines = []
    for target, table in tables.items():
        rows = [PROMPT_COLUMNS] + [(r["concept"], r["prompt"], *(f"{r[k]:.3f}" for k in _PROMPT_KEYS)) for r in table]
        lines += [f"{target}:", *_aligned(rows)]
    return lines


def robustness_tables(records: list[GateRecord]) -> dict[str, dict]:
    """Per target, from its ``corruption_robustness`` record: one row per corruption (its
    ImageNet-C parameters, mIoU at severities 1-5, relative robustness), the clean mIoU, mRR and
    the mean corrupted mIoU (mPC): the table published Cityscapes-C results compare with."""
    tables: dict[str, dict] = {}
    for r in records:
        d = r.details
        if r.gate != "corruption_robustness" or "relative_robustness" not in d:
            continue
        rows = []
        for corruption, per in d["miou"].items():
            row = {
                "corruption": corruption,
                "parameters": ", ".join(format(v, "g") for v in d["parameters"][corruption]),
            }
            row.update({f"severity {s}": per[s] for s in sorted(per, key=int)})
            row["relative robustness"] = d["relative_robustness"][corruption]
            rows.append(row)
        tables[r.target] = {"clean mIoU": d["clean_miou"], "mRR": d["mrr"], "mPC": d["mpc"], "mIoU per severity": rows}
    return tables


def robustness_lines(tables: dict[str, dict]) -> list[str]:
    """The mIoU per corruption and ImageNet-C severity of each target, as terminal lines."""
    lines = []
    for target, table in tables.items():
        rows = [("corruption", "1", "2", "3", "4", "5", "RR")]
        for row in table["mIoU per severity"]:
            values = [row[k] for k in row if k.startswith("severity ")]
            rows.append((row["corruption"], *(f"{v:.3f}" for v in values), f"{row['relative robustness']:.3f}"))
        lines += [f"{target}: clean mIoU {table['clean mIoU']:.3f}, mRR {table['mRR']:.3f}", *_aligned(rows)]
    return lines


def error_tables(records: list[GateRecord]) -> dict[str, dict]:
    """Per target, from its ``error_analysis`` record: mIoU and mean Boundary IoU, the per-class
    table (absent classes as "absent") and the worst images."""
    tables: dict[str, dict] = {}
    for r in records:
        d = r.details
        if r.gate != "error_analysis" or "per_class" not in d:
            continue
        tables[r.target] = {
            "mIoU": d["miou"],
            f"mean Boundary IoU ({d['boundary_px']} px bands)": d["boundary_miou"],
            "per class": d["per_class"],
            "absent classes": d.get("absent_rule", ""),
            "worst images": d["worst_images"],
        }
    return tables


def error_lines(tables: dict[str, dict]) -> list[str]:
    """The per-class IoU and Boundary IoU of each target, as terminal lines."""
    show = lambda v: v if isinstance(v, str) else f"{v:.3f}"  # noqa: E731
    lines = []
    for target, table in tables.items():
        rows = [("class", "IoU", "Boundary IoU", "GT share", "most often predicted instead")]
        rows += [
            (r["class"], show(r["IoU"]), show(r["Boundary IoU"]), f"{r['ground truth share']:.3f}",
             r["most often predicted instead"])
            for r in table["per class"]
        ]  # fmt: skip
        summary = ", ".join(f"{k} {show(v)}" for k, v in table.items() if isinstance(v, float))
        worst = ", ".join(f"#{w['image']} {w['mIoU']:.3f}" for w in table["worst images"])
        lines += [f"{target}: {summary}", *_aligned(rows), f"worst images (own mIoU): {worst or '-'}"]
        absent = [r["class"] for r in table["per class"] if r["IoU"] == "absent"]
        if absent:  # the rule, where it applies (the JSON and the pages always state it)
            lines.append(f"absent: {', '.join(absent)}; {table['absent classes']}")
    return lines


def _aligned(rows: list[tuple]) -> list[str]:
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(str(cell).ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return lines


def write_json(path: Path, targets: dict[str, dict], thresholds: dict, records: list[GateRecord], **sections) -> Path:
    """Write the machine-readable report: what was tested (per target id), the settings used,
    every gate, the anomaly scorer, prompt, corruption and error-analysis tables when their
    gates ran, and ``sections`` that are not
    None (``fleet``: the fleet view of several targets; ``shard``: which share of a fleet ran)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "segcheck": __version__,
        "targets": targets,
        "thresholds": thresholds,
        "gates": [r.to_dict() for r in records],
        **{k: v for k, v in sections.items() if v is not None},
    }
    tables = (
        ("anomaly", anomaly_tables),
        ("prompted", prompt_tables),
        ("robustness", robustness_tables),
        ("error_analysis", error_tables),
    )
    for key, tabulate in tables:  # each only when its gates ran
        table = tabulate(records)
        if table:
            report[key] = table
    text = json.dumps(report, indent=2, sort_keys=True, default=_jsonable) + "\n"
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")  # replaced at once: never read half-written
    try:
        partial.write_text(text)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path
