"""Ablation: train one variant per recipe ingredient and judge each with segcheck's own gates.

Every variant starts from the ``naive`` recipe (cross-entropy only) and adds ingredients;
each checkpoint then runs ``pytest suites/gates`` (the product, not a re-implementation) and
the JSON reports are folded into one Markdown table. ``run_binary`` does the same for the
binary recipes of the prompted default (``unet-prompted`` on ``synthetic-drywall``, judged by
``suites/prompted``). ``variant="shortcut"`` runs :data:`SHORTCUT_VARIANTS` on
``synthetic-streets-shortcut``, judged by ``suites/gates``, and checks the field reports'
decision rule for the consistency loss (:func:`decision_rule`).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from segcheck import SegcheckError, outputs
from segcheck.train.recipes import RECIPES
from segcheck.train.trainer import train, writable


def _beyond_naive(recipe: str) -> dict:
    """The settings ``recipe`` changes relative to ``naive`` (its name aside)."""
    naive, other = RECIPES["naive"].to_dict(), RECIPES[recipe].to_dict()
    return {k: v for k, v in other.items() if k != "name" and v != naive[k]}


VARIANT_ROBUST = "robust: + " + " + ".join(_beyond_naive("robust"))
VARIANTS: dict[str, dict] = {
    "naive (CE)": {},
    "+ consistency 0.1": {"consistency": 0.1},
    "+ recon 0.5": {"recon": 0.5},
    "+ outlier exposure 0.1": {"outlier_exposure": 0.1},
    "+ flips": {"flips": True},
    "+ rolls": {"rolls": True},
    "+ scale crops": {"scale_crops": True},
    "+ photometric": {"photometric": True},
    "+ flips + rolls": {"flips": True, "rolls": True},
    # the shipped robust recipe, derived so that the row cannot drift from it
    VARIANT_ROBUST: _beyond_naive("robust"),
}
#: the shortcut variant's rows: the field reports' four proposals alone and together, the
#: positional jitter that fixed the standard variant, and the standard robust recipe
SHORTCUT_VARIANTS: dict[str, dict] = {
    "naive (CE)": {},
    "+ consistency 0.1": {"consistency": 0.1},
    "+ input gradient 0.1": {"input_gradient": 0.1},
    "+ recon 0.5": {"recon": 0.5},
    "+ contrastive 0.1": {"contrastive": 0.1},
    "+ consistency + input gradient + recon + contrastive": {
        "consistency": 0.1,
        "input_gradient": 0.1,
        "recon": 0.5,
        "contrastive": 0.1,
    },
    "+ flips + rolls": {"flips": True, "rolls": True},
    VARIANT_ROBUST: _beyond_naive("robust"),
}
#: the binary recipes, by row name: their recipe (each a set of loss ingredients over plain BCE)
BINARY_VARIANTS: dict[str, str] = {
    "naive-binary (BCE)": "naive-binary",
    "focal-binary (focal, gamma 2)": "focal-binary",
    "robust-binary (balanced BCE + Dice)": "robust-binary",
}
SUITES = Path(__file__).resolve().parents[1] / "suites"  # the package segcheck.suites
SUITE = SUITES / "gates"
ANOMALY_SUITE = SUITES / "anomaly"
PROMPTED_SUITE = SUITES / "prompted"


def judge(
    checkpoint: Path, report: Path, marks: str, suites: tuple[Path, ...] | None = None, dataset: str | None = None
) -> dict:
    """Run the ``suites`` (default: gates and anomaly) on ``checkpoint`` (with ``--dataset``
    when given); return their JSON report."""
    suites = (SUITE, ANOMALY_SUITE) if suites is None else suites
    if not all(s.is_dir() for s in suites):
        raise SegcheckError(f"the gate suites are not at {SUITES}; reinstall segcheck (its suites ship in the package)")
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        *map(str, suites),
        "-q",
        "-p",
        "no:cacheprovider",
        "--checkpoint",
        str(checkpoint),
        "--segcheck-report",
        str(report),
        "-m",
        marks,
        *(["--dataset", dataset] if dataset else []),
    ]
    subprocess.run(cmd, check=False, capture_output=True)
    if not report.is_file():
        raise SegcheckError(f"the gate suite wrote no report for {checkpoint}; run {' '.join(cmd)} to see why")
    return json.loads(report.read_text())


#: the gates an ingredient can plausibly change get a column each; the rest share one
COLUMNS = (
    "noise_input",
    "positional_prior",
    "derangement_gap",
    "shift_equivariance",
    "perturbation_stability",
    "prediction_collapse",
    "generalization",
    "anomaly_detection",
)


def column(name: str) -> str:
    """Gates that come in families (``perturbation_stability[jpeg]``) share one column."""
    family = name.split("[")[0]
    return family if family in COLUMNS else "other gates"


def _cell(gates: list[dict]) -> str:
    gates = [g for g in gates if g["outcome"] in ("passed", "failed", "error")]  # skipped gates say nothing
    if not gates:
        return "-"
    failed = [g["gate"] for g in gates if g["outcome"] != "passed"]
    if not failed:
        return "pass" if len(gates) == 1 else f"pass ({len(gates)}/{len(gates)})"
    if len(gates) == 1:
        return "**fail**"
    names = ", ".join(n.split("[")[-1].rstrip("]") for n in failed)
    return f"**fail**: {names}"


def table(rows: dict[str, dict]) -> str:
    """Markdown: one row per variant: real mIoU, noise mIoU, their ratio, MSP's anomaly AUROC,
    then each gate column's verdict. Columns no report has a gate for (the anomaly ones when
    ``suites/anomaly`` did not run) are left out."""
    by_row = {variant: _by_column(report) for variant, report in rows.items()}
    columns = [c for c in (*COLUMNS, "other gates") if any(c in cols for cols in by_row.values())]
    anomaly = "anomaly_detection" in columns
    head = ["variant", "real mIoU", "noise mIoU", "noise/real", *(["anomaly AUROC (msp)"] if anomaly else [])]
    lines = ["| " + " | ".join(head + columns) + " |", "|---" * (len(head) + len(columns)) + "|"]
    for variant, report in rows.items():
        noise = by_row[variant]["noise_input"][0]
        real = noise["details"]["real_miou"]
        cells = [variant, f"{real:.3f}", f"{noise['value']:.3f}", f"{noise['value'] / real:.2f}" if real else "-"]
        if anomaly:
            msp = [g for g in report["gates"] if g["gate"] == "anomaly_detection[msp]" and "pooled" in g["details"]]
            cells.append(f"{msp[0]['details']['pooled']['auroc']:.3f}" if msp else "-")
        cells += [_cell(by_row[variant].get(c, [])) for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _by_column(report: dict) -> dict[str, list[dict]]:
    by_column: dict[str, list[dict]] = {}
    for g in report["gates"]:
        by_column.setdefault(column(g["gate"]), []).append(g)
    return by_column


def _summary(report: dict) -> tuple[float, float, list[str]]:
    """(real mIoU, noise mIoU, the gates that did not pass) of one judged variant."""
    noise = next(g for g in report["gates"] if g["gate"] == "noise_input")
    failed = [g["gate"] for g in report["gates"] if g["outcome"] in ("failed", "error")]
    return noise["details"]["real_miou"], noise["value"], failed


def decision_rule(rows: dict[str, dict], baseline: str = "naive (CE)", treated: str = "+ consistency 0.1") -> str:
    """The field reports' test of the consistency loss ("if mIoU drops, the problem is solved")
    applied to two judged variants, next to what the gates say; Markdown lines."""
    (real0, noise0, failed0), (real1, noise1, failed1) = _summary(rows[baseline]), _summary(rows[treated])
    drops = real1 < real0
    verdict = "passes every gate" if not failed1 else f"fails {len(failed1)} gate(s): {', '.join(failed1)}"
    agree = drops == (not failed1)
    return "\n".join(
        [
            f"Decision rule of the field reports (add consistency loss; if mIoU drops, the problem is solved), "
            f"{treated!r} against {baseline!r}:",
            "",
            f"- real mIoU {real0:.3f} -> {real1:.3f}: {'drops' if drops else 'does not drop'} ({real1 - real0:+.3f}); "
            f"the rule says {'solved' if drops else 'the problem is deeper'}.",
            f"- noise mIoU {noise0:.3f} -> {noise1:.3f} ({noise1 - noise0:+.3f}); noise/real "
            f"{noise0 / real0:.2f} -> {noise1 / real1:.2f}.",
            f"- the gates: {baseline!r} fails {len(failed0)}; {treated!r} {verdict}.",
            f"- the rule and the gates {'agree' if agree else 'disagree'}.",
        ]
    )


def binary_table(rows: dict[str, dict]) -> str:
    """Markdown: one row per binary recipe: foreground IoU, Dice and pixel accuracy per concept
    (canonical prompt), the threshold sweep's best threshold, then each prompted gate's verdict."""
    first = next(iter(rows.values()))
    gates = [g["gate"] for g in first["gates"]]
    concepts = list(next(g for g in first["gates"] if g["gate"] == "prompt_metrics")["details"]["per_prompt"])
    head = [f"{c} {m}" for c in concepts for m in ("IoU", "Dice", "pixel acc", "best threshold")]
    lines = ["| recipe | " + " | ".join(head + gates) + " |", "|---" * (len(head) + len(gates) + 1) + "|"]
    for variant, report in rows.items():
        by_gate = {g["gate"]: g for g in report["gates"]}
        metrics = by_gate["prompt_metrics"]["details"]
        sweep = by_gate["prompted_collapse"]["details"].get("concepts", {})
        cells = []
        for c in concepts:
            scores = metrics["per_prompt"][c][metrics["canonical"][c]]
            best = sweep.get(c, {}).get("best_threshold")
            cells += [f"{scores[k]:.3f}" for k in ("iou", "dice", "pixel_accuracy")] + [f"{best:g}" if best else "-"]
        cells += [_cell([by_gate[g]]) + (f" ({by_gate[g]['value']:.3f})" if by_gate[g]["value"] is not None else "")
                  for g in gates]  # fmt: skip
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _claim(page: Path, checkpoints: list[Path], overwrite: bool) -> None:
    """Refuse (one line, before any training) unless ``overwrite`` when the ``page`` or a
    variant's checkpoint, sidecar, resume state or report exists and segcheck did not write it
    (segcheck's own are continued from, not replaced)."""
    rule = {"overwrite": overwrite, "elsewhere": "choose another --out folder"}
    outputs.refuse(page, "--out", **rule)
    for path in checkpoints:
        for file in (path, path.with_suffix(".yaml"), path.with_suffix(".resume.pt"), path.with_suffix(".json")):
            outputs.refuse(file, "--out", **rule)


def _done(path: Path) -> bool:
    """Whether ``path`` is a variant segcheck trained (re-running continues from it); a file
    segcheck did not write is trained anew (only reached with ``overwrite``)."""
    return path.is_file() and outputs.written_by_segcheck(path)


def _write_page(page: Path, text: str) -> None:
    page.write_text(f"{outputs.md_mark()}\n{text}\n")


def run_binary(
    out_dir: Path, *, epochs: int | None = None, device: str = "auto", seed: int = 0, overwrite: bool = False
) -> str:
    """Train and judge each of :data:`BINARY_VARIANTS` into ``out_dir``; write and return
    ``prompted.md``. Files there that segcheck did not write are refused unless ``overwrite``."""
    page = writable(Path(out_dir) / "prompted.md")
    out_dir = page.parent
    paths = {v: out_dir / f"unet-prompted_synthetic-drywall_{r}.safetensors" for v, r in BINARY_VARIANTS.items()}
    _claim(page, list(paths.values()), overwrite)
    rows = {}
    for variant, recipe in BINARY_VARIANTS.items():
        path = paths[variant]
        if not _done(path):
            resume = _done(path.with_suffix(".resume.pt"))
            overrides = {"epochs": epochs} if epochs else {}
            train("unet-prompted", "synthetic-drywall", recipe, out=path, device=device, seed=seed, resume=resume,
                  overwrite=overwrite, **overrides)  # fmt: skip
        rows[variant] = judge(path, path.with_suffix(".json"), "not gpu", (PROMPTED_SUITE,))
    text = binary_table(rows)
    _write_page(page, text)
    return text


#: ``--dataset-variant``: (dataset, rows, suites judged by, decision rule checked)
DATASET_VARIANTS = {
    "standard": ("synthetic-streets", VARIANTS, None, False),
    "shortcut": ("synthetic-streets-shortcut", SHORTCUT_VARIANTS, (SUITE,), True),
}


def run(
    out_dir: Path,
    *,
    epochs: int | None = None,
    device: str = "auto",
    seed: int = 0,
    marks: str = "not train and not gpu",
    variants: dict[str, dict] | None = None,
    dataset_variant: str = "standard",
    overwrite: bool = False,
) -> str:
    """Train and judge every variant of ``dataset_variant`` (:data:`DATASET_VARIANTS`) into
    ``out_dir``; write and return ``ablation.md`` (the table, and for ``shortcut`` the
    decision rule's check). Files there that segcheck did not write are refused unless ``overwrite``."""
    if dataset_variant not in DATASET_VARIANTS:
        raise SegcheckError(f"unknown dataset variant {dataset_variant!r}; known: {', '.join(DATASET_VARIANTS)}")
    dataset, default_variants, suites, rule = DATASET_VARIANTS[dataset_variant]
    variants = default_variants if variants is None else variants
    page = writable(Path(out_dir) / "ablation.md")
    out_dir = page.parent
    paths = [out_dir / f"variant{i}.safetensors" for i in range(len(variants))]
    _claim(page, paths, overwrite)
    rows = {}
    for path, (variant, ingredients) in zip(paths, variants.items()):
        overrides = dict(ingredients, **({"epochs": epochs} if epochs else {}))
        if not _done(path):  # re-running the command continues where it stopped, epoch by epoch
            resume = _done(path.with_suffix(".resume.pt"))
            train("unet", dataset, "naive", out=path, device=device, seed=seed, resume=resume, overwrite=overwrite,
                  **overrides)  # fmt: skip
        rows[variant] = judge(path, path.with_suffix(".json"), marks, suites, None if suites is None else dataset)
    text = table(rows)
    if rule and {"naive (CE)", "+ consistency 0.1"} <= set(rows):  # the rule compares these two rows
        text += "\n\n" + decision_rule(rows)
    _write_page(page, text)
    return text
