"""Zero-code targets: ``--model module.path:callable`` or ``--model path/to/file.py:callable``
(the same for ``--dataset``) name a callable instead of a registered name, and user code is
imported the way users expect: a ``.py`` file's folder and the invocation folder are importable
(``--plugin my_plugin.py`` may ``from mymodel import Net``, under ``pytest`` as under
``python -m pytest``)."""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

from segcheck import SegcheckError

_DOTTED = r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*"
#: ``module.path:attr`` or ``anything.py:attr`` (split at the last colon: a Windows drive keeps its own)
REFERENCE = re.compile(rf"^(?P<source>{_DOTTED}|.+\.py):(?P<attr>{_DOTTED})$")


def is_reference(name: str) -> bool:
    """Whether ``name`` has the form of a callable reference (``module:callable`` or ``file.py:callable``)."""
    return REFERENCE.match(name) is not None


def importable(*files: Path) -> None:
    """Make the folders of ``files`` (first on ``sys.path``, as pytest's rootdir-relative
    imports do) and the invocation folder (last) importable."""
    for file in files:
        folder = str(Path(file).resolve().parent)
        if folder not in sys.path:
            sys.path.insert(0, folder)
    here = str(Path.cwd())
    if here not in sys.path and "" not in sys.path:
        sys.path.append(here)


def import_file(path: Path, prefix: str) -> ModuleType:
    """Import the ``.py`` file ``path`` as a module of its own (named ``<prefix>_<stem>_<hash>``),
    its folder and the invocation folder importable; what it raises propagates."""
    path = Path(path)
    importable(path)
    name = f"{prefix}_{path.stem}_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def import_reference(name: str, kind: str, known: str) -> tuple[object, str]:
    """The callable ``name`` (``module:callable`` or ``file.py:callable``) refers to, and where it
    comes from (the module, or the file's path), for the report. Every problem is one line;
    ``known`` (the registered names) is said too when the module is not there at all, since
    ``name`` may be a misspelled registered name."""
    match = REFERENCE.match(name)
    source, attr = match.group("source"), match.group("attr")
    what = f"{kind} {name!r}"
    if source.endswith(".py"):
        path = Path(source)
        if not path.is_file():
            raise SegcheckError(
                f"unknown {what}: not a registered {kind} ({known}), and file {source} does not exist (from "
                f"{Path.cwd()}); give a registered name, module.path:callable or path/to/file.py:callable"
            )
        origin = str(path.resolve())
        try:
            module = import_file(path, "segcheck_user")
        except Exception as exc:
            raise SegcheckError(f"{what}: importing {source} raised {type(exc).__name__}: {exc}") from exc
    else:
        origin = source
        importable()
        try:
            module = importlib.import_module(source)
        except ModuleNotFoundError as exc:
            if exc.name is None or not (source == exc.name or source.startswith(f"{exc.name}.")):
                raise SegcheckError(f"{what}: importing {source} raised ModuleNotFoundError: {exc}") from exc
            raise SegcheckError(
                f"unknown {what}: not a registered {kind} ({known}), and module {source} cannot be imported "
                f"({exc}); install the package that holds it, or run from the folder that holds it"
            ) from exc
        except Exception as exc:
            raise SegcheckError(f"{what}: importing {source} raised {type(exc).__name__}: {exc}") from exc
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            there = sorted(k for k, v in vars(module).items() if callable(v) and not k.startswith("_"))
            raise SegcheckError(
                f"{what}: {source} has no attribute {attr!r}; its callables: {', '.join(there) or '(none)'}"
            )
        obj = getattr(obj, part)
    if not callable(obj):
        raise SegcheckError(
            f"{what}: {source}:{attr} is a {type(obj).__name__}, not a callable; name a function "
            + ("(num_classes, **model_args) -> nn.Module" if kind == "model" else "(root, split) -> dataset")
        )
    return obj, origin
