"""The targets of a run: from the command line (one), or from a manifest (``--models-manifest``)."""

from __future__ import annotations

from pathlib import Path

from segcheck import SegcheckError
from segcheck import config as segconfig
from segcheck.target import TargetSpec, bundled_checkpoint, hashable

ROW_KEYS = ("name", "model", "checkpoint", "dataset", "data_root", "device", "model_args", "tags", "mean", "std",
            "trust_checkpoint", "init_seed")  # fmt: skip


def _flag(row: dict, key: str, who: str) -> bool:
    value = row.get(key, False)
    if not isinstance(value, bool):
        raise SegcheckError(f"{who}: {key} must be true or false, got {value!r}")
    return value


def _seed(row: dict, who: str) -> int:
    value = row.get("init_seed", 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise SegcheckError(f"{who}: init_seed must be a whole number >= 0, got {value!r}")
    return value


def target_spec(plugins, row: dict, base: Path | None = None) -> TargetSpec:
    """A ``TargetSpec`` from a row of plain values (``checkpoint`` absent: the bundled one;
    ``"none"``: random init); relative paths in the row are relative to ``base`` (a manifest's
    folder) or to the working directory. Names and folders are checked before anything loads."""
    who = f"target {row.get('name') or row.get('model')!r}"
    unknown = sorted(set(row) - set(ROW_KEYS))
    if unknown:
        raise SegcheckError(f"{who} has unknown keys {unknown}; known: {', '.join(ROW_KEYS)}")
    for key in ("model_args", "tags"):
        if not isinstance(row.get(key) or {}, dict):
            raise SegcheckError(f"{who}: {key} must be a mapping")
    plugins.models.get(row["model"])
    dataset = plugins.datasets.get(row["dataset"])
    where = lambda p: None if p is None else Path(p) if base is None or Path(p).is_absolute() else base / p  # noqa: E731
    data_root = where(row.get("data_root"))
    if dataset.meta.get("needs_root") and data_root is None:
        raise SegcheckError(f"dataset {row['dataset']!r} reads files: pass --data-root DIR")
    if data_root is not None and not data_root.is_dir():
        raise SegcheckError(
            f"{who}: data root {data_root} does not exist or is not a folder; pass the dataset's folder"
        )
    given = row.get("checkpoint")
    checkpoint = bundled_checkpoint(
        plugins, row["model"], row["dataset"], given if given in (None, "none") else where(given)
    )
    mean, std = segconfig.explicit_normalization({"eval": {"mean": row.get("mean") or [], "std": row.get("std") or []}})
    return TargetSpec(
        model=row["model"], dataset=row["dataset"], checkpoint=checkpoint, data_root=data_root,
        device=row.get("device", "auto"), model_args=hashable(row.get("model_args") or {}), mean=mean, std=std,
        tags=tuple(sorted((str(k), str(v)) for k, v in (row.get("tags") or {}).items())), name=row.get("name"),
        trust_checkpoint=_flag(row, "trust_checkpoint", who), init_seed=_seed(row, who),
    )  # fmt: skip


def read_manifest(path: Path, plugins, base_row: dict) -> list[TargetSpec]:
    """The targets of a manifest: ``targets:`` (a list of rows) over ``defaults:`` over
    ``base_row`` (the command line's settings; its paths are taken as absolute first)."""
    path = Path(path)
    if not path.is_file():
        raise SegcheckError(f"models manifest {path} does not exist")
    data = segconfig.read_yaml(path, "models manifest") or {}
    rows = data.get("targets") if isinstance(data, dict) else None
    defaults = data.get("defaults") or {} if isinstance(data, dict) else None
    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
        raise SegcheckError(
            f"models manifest {path} needs 'targets:', a list of mappings ({', '.join(ROW_KEYS)}), "
            "and optionally 'defaults:', one such mapping"
        )
    if not isinstance(defaults, dict):
        raise SegcheckError(f"models manifest {path}: 'defaults:' must be a mapping of target keys")
    base = {k: str(Path(v).resolve()) if k == "data_root" and v else v for k, v in base_row.items()}
    return unique([target_spec(plugins, {**base, **defaults, **row}, path.parent) for row in rows])


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
