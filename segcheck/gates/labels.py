"""label_integrity: every mask of every split holds only the dataset's label values, none is
empty, and every class occurs somewhere (the data, not the model, is audited)."""

from __future__ import annotations

import numpy as np
from tqdm import tqdm

from segcheck import SegcheckError
from segcheck.data import read_mask
from segcheck.gates.result import GateResult
from segcheck.hookspecs import hookimpl
from segcheck.target import Target
from segcheck.wording import listed


def _mask_sources(data) -> list[tuple[str, object]]:
    """``(split, dataset)`` for every labelled split the data can read (a split serving the same
    files as an earlier one, as in a flat folder layout, once); only the eval sample without splits."""
    if data.splits is None:
        return [(f"{data.split} (eval sample)", [(None, m) for m in data.masks])]
    sources, seen = [], set()
    for split in (s for s in data.spec.splits if data.has_split(s) and data.spec.labelled(s)):
        dataset = data.dataset(split)
        files = tuple(map(str, getattr(dataset, "pairs", ()))) or id(dataset)
        if files not in seen:
            seen.add(files)
            sources.append((split, dataset))
    return sources


def _scan(sources, spec) -> dict:
    """Label values, class presence and empty masks over every mask, streamed (a bar on a TTY
    once it takes more than two seconds)."""
    found = {"values": set(), "present": np.zeros(spec.num_classes, bool), "empty": [], "rejected": [], "masks": 0}
    for split, dataset in sources:
        for i in tqdm(range(len(dataset)), desc=f"label_integrity: {split} masks", delay=2, leave=False, disable=None):
            try:
                mask = np.asarray(read_mask(dataset, i))
            except SegcheckError as exc:  # the dataset's own check (e.g. a folder mask's values): a finding
                found["rejected"].append(str(exc))
                continue
            except Exception as exc:  # an unreadable sample of a third-party dataset: a finding too
                found["rejected"].append(f"{split}[{i}]: {type(exc).__name__}: {exc}")
                continue
            values = np.unique(mask)
            found["values"].update(values.tolist())
            found["present"][values[(values >= 0) & (values < spec.num_classes)]] = True
            if not spec.counted(mask).any():
                found["empty"].append(f"{split}[{i}]")
            found["masks"] += 1
    return found


def label_integrity(target: Target, cfg: dict | None = None) -> GateResult:
    """Every mask of every labelled split (the eval sample only, without splits) holds only class ids,
    ``ignore_index`` or the anomaly id; none has no counted pixel; every class occurs in some mask."""
    spec = target.data.spec
    sources = _mask_sources(target.data)
    found = _scan(sources, spec)
    values, bad = sorted(found["values"]), sorted(found["values"] - spec.label_values)
    missing = [spec.classes[c] for c in np.flatnonzero(~found["present"])]
    problems = []
    if bad:
        problems.append(
            f"labels [{listed(bad, most=10)}] outside 0..{spec.num_classes - 1} (ignore {spec.ignore_index}): "
            "1-indexed labels? labelIds instead of trainIds? 0/255 masks?"
        )
    if found["rejected"]:
        problems.append(f"{len(found['rejected'])} masks rejected by the dataset, e.g. {found['rejected'][0]}")
    if found["empty"]:
        problems.append(f"{len(found['empty'])} masks have no counted pixel ({listed(found['empty'], most=5)})")
    if missing:
        counted = "1 class occurs" if len(missing) == 1 else f"{len(missing)} classes occur"
        problems.append(f"{counted} in no mask: {listed(missing)}")
        if spec.ignore_index == 255 and set(values) <= {0, 255} and 255 in values:
            problems.append(
                "the masks hold only 0 and 255, and 255 is ignore_index: binary masks stored as 0/255 lose every "
                "foreground pixel; declare binary_255: true (folder datasets) or store them as 0/1"
            )
    read = ", ".join(f"{split}" for split, _ in sources)
    unlabelled = (
        [s for s in spec.unlabelled_splits if target.data.has_split(s)] if target.data.splits is not None else []
    )
    if unlabelled:
        read += f"; {', '.join(unlabelled)} unlabelled, not read"
    measured = f"{found['masks'] + len(found['rejected'])} masks read ({read}), label values {values[:12]}"
    message = f"{measured}: {'; '.join(problems)}" if problems else f"{measured}: all within the dataset's classes"
    details = {"values": values, "empty_masks": found["empty"][:100], "missing_classes": missing,
               "masks": found["masks"], "splits": [split for split, _ in sources],
               "unlabelled_splits": unlabelled}  # fmt: skip
    count = len(bad) + len(found["empty"]) + len(missing) + len(found["rejected"])
    return GateResult(
        "label_integrity", float(count), 0.0, not problems, message, rule="problems == 0", details=details
    )


@hookimpl
def segcheck_register_gates(registry):
    registry.add("label_integrity", label_integrity, needs=("masks",))
