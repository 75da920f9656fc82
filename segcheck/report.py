"""Reports of gate results: the terminal table and the JSON file."""

from __future__ import annotations

import json
from pathlib import Path

from segcheck import __version__


def _fmt(value) -> str:
    """Floats with 4 decimals; tiny non-zero ones (tolerances, gradient norms) in 3 significant digits."""
    if isinstance(value, float):
        return f"{value:.3g}" if 0 < abs(value) < 1e-3 else f"{value:.4f}"
    return str(value)


VERDICTS = {"passed": "PASS", "failed": "FAIL", "error": "ERROR", "skipped": "SKIP", "xfailed": "XFAIL"}


def _verdict(r: dict) -> str:
    return VERDICTS[r["outcome"]]


def summary_table(results: list[dict]) -> list[str]:
    """Lines of a table: gate, model, measured, threshold, verdict; then the reason of every
    gate that errored or skipped before measuring."""
    rows = [("gate", "model", "measured", "threshold", "verdict")]
    rows += [(r["name"], r["model"], "-", "-", _verdict(r)) if r["value"] is None else
             (r["name"], r["model"], _fmt(r["value"]), r["rule"].replace("threshold", _fmt(r["threshold"])),
              _verdict(r)) for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    unmeasured = [r for r in results if r["value"] is None]
    lines += [f"{_verdict(r)} {r['name']}: {r['message']}" for r in unmeasured]
    passed = sum(r["passed"] for r in results)
    tally = {outcome: sum(r["outcome"] == outcome for r in results) for outcome in ("error", "skipped", "xfailed")}
    counts = [f"{n} {'errors' if outcome == 'error' and n != 1 else outcome}" for outcome, n in tally.items() if n]
    lines.append(f"{passed} of {len(results)} gates passed" + (f" ({', '.join(counts)})" if counts else ""))
    return lines


def write_json(path: Path, target: dict, thresholds: dict, results: list[dict]) -> Path:
    """Write the machine-readable report: what was tested, the thresholds used, every gate."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    report = {"segcheck": __version__, "target": target, "thresholds": thresholds, "gates": results}
    path.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    return path
