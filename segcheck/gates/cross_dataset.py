"""cross_dataset: a fleet-level gate; one model and checkpoint judged on several datasets.

A fleet-level gate (``suite="fleet"``) is no pytest test: it runs once, at the end of a run of
two or more targets (and in ``segcheck report merge``), over the fleet view's target rows
(``segcheck.fleet.target_rows``), and returns ``{subject: GateResult}``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from segcheck.gates.result import GateResult
from segcheck.hookspecs import hookimpl


def _subject(row: dict) -> tuple:
    """What makes targets "the same model": model, checkpoint (random init: its seed), model args."""
    checkpoint = row["checkpoint"] or f"random-init (init_seed {row['init_seed']})"
    return row["model"], checkpoint, json.dumps(row.get("model_args") or {}, sort_keys=True)


def _dataset(row: dict) -> str:
    return row["dataset"] if not row.get("data_root") else f"{row['dataset']} ({row['data_root']})"


def cross_dataset(rows: list[dict], cfg: dict) -> dict[str, GateResult]:
    """Per model (same ``model``, ``checkpoint`` and model args) judged on two or more datasets
    (dataset name and data root): the spread (max - min) of its real mIoU across them.

    Reported, with the per-dataset numbers; with ``cfg["min_spread"]`` > 0 a spread below it
    fails (a model that scores the same whatever the data may be scoring its labels' layout).
    Targets without a measured real mIoU (no noise_input record) are left out.
    """
    groups: dict[tuple, dict[str, list[float]]] = {}
    for row in rows:
        if row.get("model") is None or row["real_miou"] is None:
            continue
        groups.setdefault(_subject(row), {}).setdefault(_dataset(row), []).append(row["real_miou"])
    names = {key: f"{key[0]}:{Path(key[1]).stem if Path(key[1]).suffix else key[1]}" for key in groups}
    results = {}
    for key, datasets in groups.items():
        if len(datasets) < 2:
            continue
        name = names[key] if list(names.values()).count(names[key]) == 1 else f"{key[0]}:{key[1]}"
        mious = {d: math.fsum(v) / len(v) for d, v in sorted(datasets.items())}
        spread = max(mious.values()) - min(mious.values())
        listed = ", ".join(f"{d} {m:.3f}" for d, m in mious.items())
        minimum = cfg["min_spread"]
        measured = f"real mIoU spread {spread:.4f} across {len(mious)} datasets ({listed})"
        if minimum <= 0:
            results[name] = GateResult(
                "cross_dataset", spread, 0.0, True, f"{measured}; reported (no minimum: cross_dataset.min_spread 0)",
                rule="reported", details={"real_miou": mious},
            )  # fmt: skip
            continue
        passed = spread >= minimum
        message = (
            f"{measured} >= {minimum:.4f}"
            if passed
            else f"{measured} < {minimum:.4f}: the model scores about the same whatever the data; it may be scoring "
            "its labels' layout, not the images (see noise_input)"
        )
        results[name] = GateResult(
            "cross_dataset", spread, minimum, passed, message, rule="value >= threshold", details={"real_miou": mious}
        )
    return results


@hookimpl
def segcheck_register_gates(registry):
    registry.add(
        "cross_dataset", cross_dataset, section="cross_dataset", markers=("fleet",), suite="fleet",
        description="fleet: spread of one model's real mIoU across datasets (same model and checkpoint); "
        "reported, or a minimum (cross_dataset.min_spread)",
    )  # fmt: skip
