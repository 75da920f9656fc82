"""The targets of a run: from the command line (one), or from a manifest (``--models-manifest``)."""

from __future__ import annotations

from pathlib import Path

import yaml

from segcheck import SegcheckError
from segcheck.target import TargetSpec, bundled_checkpoint

ROW_KEYS = (
    "name",
    "model",
    "checkpoint",
    "dataset",
    "data_root",
    "device",
    "model_args",
    "tags",
    "trust_checkpoint",
    "init_seed",
)


def target_spec(plugins, row: dict, base: Path | None = None) -> TargetSpec:
    """A ``TargetSpec`` from a row of plain values (``checkpoint`` absent: the bundled one;
    ``"none"``: random init); relative paths are relative to ``base``."""
    unknown = sorted(set(row) - set(ROW_KEYS) - {"mean", "std"})
    if unknown:
        raise SegcheckError(
            f"target {row.get('name') or row.get('model')!r} has unknown keys {unknown}; known: {', '.join(ROW_KEYS)}"
        )
    plugins.models.get(row["model"])
    dataset = plugins.datasets.get(row["dataset"])
    if dataset.meta.get("needs_root") and row.get("data_root") is None:
        raise SegcheckError(f"dataset {row['dataset']!r} reads files: pass --data-root DIR")
    if row.get("data_root") is not None and not Path(row["data_root"]).is_dir() and base is None:
        raise SegcheckError(
            f"--data-root {row['data_root']} does not exist or is not a folder; pass the dataset's folder"
        )
    where = lambda p: None if p is None else (Path(p) if base is None or Path(p).is_absolute() else base / p)  # noqa: E731
    checkpoint = row.get("checkpoint")
    checkpoint = bundled_checkpoint(
        plugins, row["model"], row["dataset"], checkpoint if checkpoint in (None, "none") else where(checkpoint)
    )
    for key in ("model_args", "tags"):
        if not isinstance(row.get(key) or {}, dict):
            raise SegcheckError(f"target {row.get('name') or row['model']!r}: {key} must be a mapping")
    return TargetSpec(
        model=row["model"],
        dataset=row["dataset"],
        checkpoint=checkpoint,
        data_root=where(row.get("data_root")),
        device=row.get("device", "auto"),
        model_args=tuple(sorted((row.get("model_args") or {}).items())),
        mean=row.get("mean"),
        std=row.get("std"),
        tags=tuple(sorted((str(k), str(v)) for k, v in (row.get("tags") or {}).items())),
        name=row.get("name"),
        trust_checkpoint=bool(row.get("trust_checkpoint", False)),
        init_seed=int(row.get("init_seed", 0)),
    )


def read_manifest(path: Path, plugins, base_row: dict) -> list[TargetSpec]:
    """The targets of a manifest: ``targets:`` (a list of rows) over ``defaults:`` over ``base_row``."""
    path = Path(path)
    if not path.is_file():
        raise SegcheckError(f"models manifest {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise SegcheckError(f"models manifest {path} is not valid YAML ({' '.join(str(exc).split())})") from None
    rows = data.get("targets") if isinstance(data, dict) else None
    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
        raise SegcheckError(
            f"models manifest {path} needs 'targets:', a list of mappings (model, checkpoint, "
            "dataset, data_root, model_args, tags, name)"
        )
    defaults = dict(base_row, **(data.get("defaults") or {}))
    return unique([target_spec(plugins, dict(defaults, **row), path.parent) for row in rows])


def unique(specs: list[TargetSpec]) -> list[TargetSpec]:
    """``specs``, each with a distinct id: a repeated id gets its checkpoint's stem; still repeated is an error."""
    ids = [s.id for s in specs]
    named = []
    for spec in specs:
        if ids.count(spec.id) > 1 and spec.name is None:
            stem = spec.checkpoint.stem if spec.checkpoint is not None else "random-init"
            spec = TargetSpec(**{**vars(spec), "name": f"{spec.model}:{stem}"})
        named.append(spec)
    seen = [s.id for s in named]
    repeated = sorted({i for i in seen if seen.count(i) > 1})
    if repeated:
        raise SegcheckError(f"several targets are called {repeated}; give each a distinct 'name'")
    return named
