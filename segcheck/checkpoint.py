"""Safe, strict checkpoint I/O: safetensors, or ``torch.load(weights_only=True)`` state dicts.

Checkpoints are untrusted input: nothing here executes a pickle. Loading is strict: missing
and unexpected keys and shape mismatches are reported by name, never skipped.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch
import yaml

from segcheck import SegcheckError
from segcheck.hookspecs import hookimpl

WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "module")
SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")


def _unreadable_safetensors(path: Path, exc: Exception) -> SegcheckError:
    return SegcheckError(f"checkpoint {path} is not a readable safetensors file ({exc}); re-save it")


def read_state_dict(path: Path, *, mmap: bool = False) -> dict[str, torch.Tensor]:
    """The tensors stored at ``path`` (unwrapping ``{"state_dict": ...}``-style containers).

    ``mmap``: map a (zip-format) ``.pt`` file instead of reading it; tensors' data is read
    only when touched.
    """
    path = Path(path)
    if not path.is_file():
        raise SegcheckError(f"checkpoint {path} does not exist; pass --checkpoint PATH to a .safetensors or .pt file")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise _unreadable_safetensors(path, exc) from exc
    _check_torch_file(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        if "weights only" not in str(exc).lower() or not _needs_globals(exc):
            raise SegcheckError(f"checkpoint {path} is corrupt or not a PyTorch file ({_first(exc)})") from exc
        raise SegcheckError(
            f"checkpoint {path} needs code execution to load (it pickles objects, not just tensors); "
            "segcheck runs no pickled code unless told to: save model.state_dict() with torch.save or "
            "safetensors, or pass --trust-checkpoint if you trust this file"
        ) from exc
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise SegcheckError(
            f"checkpoint {path} is corrupt or not a PyTorch file ({exc.__class__.__name__}: {exc})"
        ) from exc
    return _unwrap(state, path)


PICKLE_PROTOCOL = 0x80  # the first byte of a pickle of protocol 2 or later (torch.save's legacy format)
ZIP_MAGIC = b"PK\x03\x04"  # torch.save's default format is a zip archive


def _check_torch_file(path: Path) -> None:
    """Raise, naming what the file looks like, when ``path`` is neither a zip nor a pickle
    (ONNX, TorchScript-less random bytes, a text file, a safetensors file named .pt)."""
    with open(path, "rb") as f:
        head = f.read(8)
    if _looks_like_safetensors(path):  # first: a header length can start with the pickle byte 0x80
        raise SegcheckError(f"checkpoint {path} is a safetensors file with another suffix; rename it to .safetensors")
    if head.startswith(ZIP_MAGIC) or head[:1] == bytes([PICKLE_PROTOCOL]):
        return
    raise SegcheckError(
        f"checkpoint {path} is not a PyTorch checkpoint (torch.save writes a zip archive or a pickle; its first "
        f"bytes are {head!r}); give a .safetensors file or a state dict saved with torch.save"
    )


def _looks_like_safetensors(path: Path) -> bool:
    """Whether ``path`` starts with a safetensors header (little-endian length, then a JSON object)."""
    with open(path, "rb") as f:
        size = int.from_bytes(f.read(8), "little")
        return 1 < size < path.stat().st_size and f.read(1) == b"{"


def _needs_globals(exc: Exception) -> bool:
    """Whether a weights-only unpickling failed on a class or function the file would import."""
    text = str(exc)
    return any(word in text for word in ("Unsupported global", "GLOBAL", "Unsupported class", "global"))


def _first(exc: Exception) -> str:
    """The cause in a torch.load error (after torch's advice to disable weights_only, which we never follow)."""
    text = str(exc)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1]
    return (text.strip().splitlines() or [type(exc).__name__])[0]


def state_dict_keys(path: Path) -> list[str]:
    """The parameter names stored at ``path``, without reading the tensors' data where possible."""
    path = Path(path)
    if path.suffix == ".safetensors" and path.is_file():
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                return list(f.keys())
        except (SafetensorError, OSError, ValueError) as exc:
            raise _unreadable_safetensors(path, exc) from exc
    return list(read_state_dict(path, mmap=path.is_file() and zipfile.is_zipfile(path)))  # legacy files can't map


def _unwrap(state, path: Path) -> dict[str, torch.Tensor]:
    while isinstance(state, dict) and not _is_tensor_dict(state):
        inner = next((state[k] for k in WRAPPER_KEYS if isinstance(state.get(k), dict)), None)
        if inner is None:
            raise SegcheckError(
                f"checkpoint {path} holds a dict with keys {sorted(map(str, state))[:8]} but no state dict; "
                f"expected tensors or one of the wrappers {list(WRAPPER_KEYS)}"
            )
        state = inner
    if not isinstance(state, dict):
        raise SegcheckError(f"checkpoint {path} holds a {type(state).__name__}, expected a state dict of tensors")
    return state


def _is_tensor_dict(state: dict) -> bool:
    return bool(state) and all(isinstance(v, torch.Tensor) for v in state.values())


def state_mismatch(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> str | None:
    """A one-line description of how ``state`` does not fit ``model``, or None if it fits exactly."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [
        f"{k} {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in sorted(set(state) & set(expected))
        if state[k].shape != expected[k].shape
    ]
    problems = []
    if shapes:
        problems.append(f"shape mismatch: {_listed(shapes)}")
    if missing:
        problems.append(f"missing keys: {_listed(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_listed(unexpected)}")
    return "; ".join(problems) or None


def _listed(items: list[str], most: int = 6) -> str:
    more = f" (+{len(items) - most} more)" if len(items) > most else ""
    return ", ".join(items[:most]) + more


WRAPPER_PREFIXES = ("module.", "model.", "net.")  # DataParallel/DDP, Lightning, common training wrappers


def wrapper_prefix(keys, expected) -> str | None:
    """The wrapper prefix (``module.``, ``model.``, ...) whose removal makes ``keys`` exactly the
    ``expected`` names, or None (no prefix is stripped unless every key then matches)."""
    keys, expected = list(keys), set(expected)
    if set(keys) == expected:
        return None
    for prefix in WRAPPER_PREFIXES:
        if keys and all(k.startswith(prefix) for k in keys) and {k[len(prefix) :] for k in keys} == expected:
            return prefix
    return None


def load_into(model: torch.nn.Module, path: Path) -> torch.nn.Module:
    """Load the checkpoint at ``path`` into ``model`` strictly; raise naming every mismatch.
    A wrapper prefix is stripped only when that makes every key match (``wrapper_prefix``)."""
    state = read_state_dict(path)
    prefix = wrapper_prefix(state, model.state_dict())
    if prefix:
        state = {k[len(prefix) :]: v for k, v in state.items()}
    problem = state_mismatch(model, state)
    if problem:
        common = next((p for p in WRAPPER_PREFIXES if state and all(k.startswith(p) for k in state)), None)
        hint = f" (every key starts with {common!r}, but without it the keys still do not match)" if common else ""
        raise SegcheckError(
            f"checkpoint {path} does not fit the model ({problem}){hint}; check --model, --model-arg and the "
            "number of classes (the dataset's classes must be the ones the checkpoint was trained on)"
        )
    model.load_state_dict(state, strict=True)
    return model


def load_trusted(model: torch.nn.Module, path: Path) -> torch.nn.Module:
    """Unpickle ``path`` with code execution (only on the user's explicit trust): a whole pickled
    model replaces ``model``; a state dict (also wrapped) is loaded into it strictly."""
    import warnings

    warnings.warn(f"--trust-checkpoint: {path} is unpickled with code execution", stacklevel=2)
    obj = torch.load(path, map_location="cpu", weights_only=False)
    if isinstance(obj, torch.nn.Module):
        return obj
    state = _unwrap(obj, path)
    prefix = wrapper_prefix(state, model.state_dict())
    state = {k[len(prefix) :]: v for k, v in state.items()} if prefix else state
    problem = state_mismatch(model, state)
    if problem:
        raise SegcheckError(f"checkpoint {path} does not fit the model ({problem})")
    model.load_state_dict(state, strict=True)
    return model


@hookimpl(trylast=True)
def segcheck_load_checkpoint(model, path):
    """The built-in loader: state dicts in safetensors or PyTorch files, strictly."""
    return load_into(model, Path(path))


def save(model: torch.nn.Module, path: Path, sidecar: dict) -> Path:
    """Write ``model``'s weights as safetensors at ``path`` and ``sidecar`` as ``path``.yaml."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path))
    sidecar_path(path).write_text(yaml.safe_dump(sidecar, sort_keys=False))
    return path


def sidecar_path(path: Path) -> Path:
    return Path(path).with_suffix(".yaml")


def read_sidecar(path: Path) -> dict | None:
    """The YAML sidecar written next to a checkpoint by ``save``, or None if there is none."""
    side = sidecar_path(path)
    if not side.is_file():
        return None
    from segcheck.config import read_yaml

    data = read_yaml(side, "checkpoint sidecar", "; fix or delete it")
    if not isinstance(data, dict):
        raise SegcheckError(f"checkpoint sidecar {side} is not a YAML mapping; delete or fix it")
    return data
