"""May segcheck write here? The one rule every writer of segcheck follows (reports, pages,
checkpoints, predicted masks).

A path whose suffix is not the expected one is refused. A path that exists and segcheck did
not write, that is an input of the same command, or that lies inside the dataset's root is
refused unless ``overwrite``. Its folder must take files. Each refusal is one line (what is
wrong, what was expected, what to do), given before any work starts.

"Written by segcheck" is read from the file itself (:func:`written_by_segcheck`): a JSON
report's top-level ``"segcheck"`` version, a checkpoint sidecar's ``segcheck:`` version, the
generator mark of an HTML or Markdown page, a resume state's keys, and for predicted masks
the manifest :data:`PREDICT_MANIFEST` that ``segcheck predict`` writes into its ``--out``.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from segcheck import SegcheckError, __version__

HTML_MARK = '<meta name="generator" content="segcheck {version}">'
MD_MARK = "<!-- written by segcheck {version} -->"
#: the file in a ``segcheck predict --out`` folder listing the masks segcheck wrote there
PREDICT_MANIFEST = "segcheck-predict.json"
_RESUME_KEYS = {"epoch", "model", "optimizer", "scheduler", "recipe"}
#: how the pages of segcheck 0.1.0 began, before they carried the generator mark
_LEGACY_HTML = '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">\n<title>segcheck report: '


def html_mark() -> str:
    return HTML_MARK.format(version=__version__)


def md_mark() -> str:
    return MD_MARK.format(version=__version__)


def _version(value) -> bool:
    return isinstance(value, str) and bool(value)


def _json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None


def _head(path: Path, size: int = 2048) -> str:
    try:
        with open(path, "rb") as f:
            return f.read(size).decode("utf-8", errors="replace")
    except OSError:
        return ""


def report_version(path: Path) -> str | None:
    """The segcheck version a JSON report at ``path`` names, or None (not a segcheck JSON file)."""
    data = _json(Path(path))
    version = data.get("segcheck") if isinstance(data, dict) else None
    return version if _version(version) else None


def _sidecar_version(path: Path) -> bool:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False
    return isinstance(data, dict) and _version(data.get("segcheck"))  # dataset.yaml's segcheck: is a mapping


def _resume_state(path: Path) -> bool:
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # anything torch cannot read weights-only is not a state segcheck wrote
        return False
    return isinstance(state, dict) and _RESUME_KEYS <= set(state)


def predicted_files(folder: Path) -> set[str] | None:
    """The mask file names segcheck predict wrote into ``folder`` (its manifest), or None without one."""
    data = _json(Path(folder) / PREDICT_MANIFEST)
    if not isinstance(data, dict) or not _version(data.get("segcheck")) or not isinstance(data.get("files"), list):
        return None
    return {str(f) for f in data["files"]}


def written_by_segcheck(path: Path) -> bool:
    """Whether the existing file ``path`` carries segcheck's mark (read from the file, by its kind)."""
    path = Path(path)
    name = path.name.lower()
    if name.endswith(".resume.pt"):
        return _resume_state(path)
    suffix = path.suffix.lower()
    if suffix == ".json":
        return report_version(path) is not None
    if suffix in (".html", ".htm"):
        head = _head(path)
        return '<meta name="generator" content="segcheck ' in head or head.startswith(_LEGACY_HTML)
    if suffix in (".md", ".markdown"):
        lines = _head(path, 400).splitlines()
        legacy = lines[:2] == ["# segcheck report", ""] and " · segcheck " in "".join(lines[2:3])
        return bool(lines) and lines[0].startswith("<!-- written by segcheck ") or legacy
    if suffix in (".yaml", ".yml"):
        return _sidecar_version(path)
    if suffix == ".safetensors":
        return path.with_suffix(".yaml").is_file() and _sidecar_version(path.with_suffix(".yaml"))
    if suffix == ".png":
        return path.name in (predicted_files(path.parent) or ())
    return False


def _resolved(path) -> Path:
    return Path(path).expanduser().resolve()


def inside(path: Path, root: Path) -> bool:
    """Whether ``path`` is ``root`` or lies below it (both resolved)."""
    path, root = _resolved(path), _resolved(root)
    return path == root or root in path.parents


def check_output(
    path: Path,
    flag: str,
    *,
    suffixes: Iterable[str] = (),
    inputs: Iterable[Path | None] = (),
    data_roots: Iterable[Path | None] = (),
    overwrite: bool = False,
    overwrite_flag: str = "--overwrite",
    elsewhere: str = "choose another path",
) -> Path:
    """``path`` (a file ``flag`` names), once segcheck may write it: its suffix one of
    ``suffixes`` (when given), not a folder, its folder writable, and, unless ``overwrite``,
    neither one of ``inputs``, nor inside one of ``data_roots``, nor an existing file that segcheck
    did not write. Otherwise a SegcheckError of one line, whose advice is ``elsewhere`` or
    ``overwrite_flag``."""
    path = Path(path)
    suffixes = tuple(suffixes)
    if suffixes and path.suffix.lower() not in suffixes:
        raise SegcheckError(
            f"{flag} {path}: expected a {' or '.join(suffixes)} file name; e.g. {flag} "
            f"{path.with_suffix(suffixes[0]).name if path.name else 'out' + suffixes[0]}"
        )
    if path.is_dir():
        raise SegcheckError(
            f"{flag} {path} is a folder; give a file path such as {path / ('out' + (suffixes or ('',))[0])}"
        )
    rule = {"overwrite": overwrite, "overwrite_flag": overwrite_flag, "elsewhere": elsewhere}
    refuse(path, flag, inputs=inputs, data_roots=data_roots, **rule)
    check_writable(path, flag)
    return path


def refuse(
    path: Path,
    flag: str,
    *,
    inputs: Iterable[Path | None] = (),
    data_roots: Iterable[Path | None] = (),
    overwrite: bool = False,
    overwrite_flag: str = "--overwrite",
    elsewhere: str = "choose another path",
    owned: bool | None = None,
) -> None:
    """Raise (one line) unless ``overwrite`` when file ``path`` is one of ``inputs``, lies inside
    one of ``data_roots``, or exists and segcheck did not write it (``owned``, when given, decides
    that instead of the file's mark)."""
    if overwrite:
        return
    path = Path(path)
    choose = f"{elsewhere}, or pass {overwrite_flag} to replace it"
    for given in inputs:
        if given is not None and _same(path, Path(given)):
            raise SegcheckError(
                f"{flag} {path} is also an input of this command; writing it would destroy it: {choose}"
            )
    for root in data_roots:
        if root is not None and inside(path, root):
            raise SegcheckError(
                f"{flag} {path} lies inside the dataset root {root}; segcheck writes nothing into a dataset: "
                f"choose a path outside it, or pass {overwrite_flag}"
            )
    if path.exists() and not (written_by_segcheck(path) if owned is None else owned):
        raise SegcheckError(f"{flag} {path} exists and segcheck did not write it; {choose}")


def _same(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` name one file (through links too)."""
    if _resolved(a) == _resolved(b):
        return True
    return a.exists() and b.exists() and os.path.samefile(a, b)


def check_writable(path: Path, flag: str, *, folder: bool = False) -> None:
    """Raise (one line) unless segcheck can create ``path`` (a file, or with ``folder`` a folder)
    and write in its folder: its nearest existing folder takes a probe file, removed at once."""
    path = Path(path)
    where = path if folder else path.parent
    existing = where
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    reason = None
    if not existing.is_dir():
        reason = f"{existing} is a file, not a folder"
    elif path.is_file() and not os.access(path, os.W_OK):
        reason = f"{path} is read-only"
    else:
        try:
            handle, probe = tempfile.mkstemp(dir=existing, prefix=".segcheck-probe-")
            os.close(handle)
            os.unlink(probe)
        except OSError as exc:
            reason = exc.strerror or str(exc)
    if reason:
        raise SegcheckError(f"{flag} {path}: cannot write there ({reason}); choose a folder you can write to")


def check_figures_folder(
    folder: Path, flag: str, owners: Iterable[Path], *, overwrite: bool = False, overwrite_flag: str = "--overwrite"
) -> None:
    """Raise (one line) unless ``overwrite`` when ``folder`` (a report's ``<stem>.figures/``)
    exists with files in it and none of ``owners`` (the reports beside it that use it) is segcheck's."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise SegcheckError(
            f"{flag}: its figures go to {folder}, which is a file; choose another report name, or move that file"
        )
    if overwrite or not folder.exists():
        return
    if any(folder.iterdir()) and not any(Path(o).is_file() and written_by_segcheck(Path(o)) for o in owners):
        raise SegcheckError(
            f"{flag}: its figures go to {folder}, a folder segcheck did not write (no segcheck report beside it); "
            f"choose another report name, or pass {overwrite_flag} to write into it"
        )
