"""Safe, strict checkpoint I/O: safetensors, or ``torch.load(weights_only=True)`` state dicts.

Checkpoints are untrusted input: nothing here executes a pickle. Loading is strict: missing
and unexpected keys and shape mismatches are reported by name, never skipped.

A checkpoint may also be a folder (for models registered with ``checkpoint_folder=True``), as
Hugging Face ``save_pretrained`` writes one: its weights are ``model.safetensors``, or the
shards ``model.safetensors.index.json`` names, or ``pytorch_model.bin`` (weights only; also
sharded, ``pytorch_model.bin.index.json``); its sidecar is ``<folder>/segcheck.yaml``; its
``preprocessor_config.json`` (or the image processor in its ``processor_config.json``) says
the normalization the weights were trained with (:func:`folder_normalization`). Key prefixes
of a folder are matched exactly (no wrapper prefix is stripped: ``save_pretrained`` writes the
model's own names).
"""

from __future__ import annotations

import json
import math
import pickle
import zipfile
from collections import Counter
from pathlib import Path

import torch
import yaml

from segcheck import SegcheckError
from segcheck.hookspecs import hookimpl

WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "module")
SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")
#: the weights of a checkpoint folder, by preference (``save_pretrained``'s names); ``.index.json`` names shards
FOLDER_WEIGHTS = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
FOLDER_SIDECAR = "segcheck.yaml"
PREPROCESSOR = "preprocessor_config.json"
PROCESSOR = "processor_config.json"  # a processor's save_pretrained (transformers 5): its image_processor inside


def _unreadable_safetensors(path: Path, exc: Exception) -> SegcheckError:
    return SegcheckError(f"checkpoint {path} is not a readable safetensors file ({exc}); re-save it")


def read_state_dict(path: Path, *, mmap: bool = False) -> dict[str, torch.Tensor]:
    """The tensors stored at ``path`` (unwrapping ``{"state_dict": ...}``-style containers).

    ``mmap``: map a (zip-format) ``.pt`` file instead of reading it; tensors' data is read
    only when touched.
    """
    path = Path(path)
    if path.is_dir():
        return _read_folder(path)
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


def folder_weight_files(folder: Path) -> list[Path]:
    """The weight files of checkpoint folder ``folder``: the first of :data:`FOLDER_WEIGHTS`
    present, an index replaced by the shards it names (each checked to exist)."""
    folder = Path(folder)
    index = _folder_index(folder)
    if index is None:
        return [folder / _folder_weights_name(folder)]
    shards = sorted(set(_weight_map(index).values()))
    missing = [s for s in shards if not (folder / s).is_file()]
    if missing:
        raise SegcheckError(
            f"checkpoint folder {folder}: {index.name} names shards that are missing: {_listed(missing)}"
        )
    return [folder / s for s in shards]


def _folder_weights_name(folder: Path) -> str:
    name = next((n for n in FOLDER_WEIGHTS if (folder / n).is_file()), None)
    if name is None:
        raise SegcheckError(
            f"checkpoint folder {folder} holds no weights; expected one of {', '.join(FOLDER_WEIGHTS)} "
            "(save_pretrained writes them), or pass --checkpoint PATH to a weights file"
        )
    return name


def _folder_index(folder: Path) -> Path | None:
    """The shard index of checkpoint folder ``folder`` when its preferred weights are sharded, else None."""
    name = _folder_weights_name(folder)
    return folder / name if name.endswith(".index.json") else None


def _weight_map(index: Path) -> dict[str, str]:
    """The ``weight_map`` (key -> shard file name) of a sharded checkpoint's index, checked."""
    try:
        data = json.loads(index.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SegcheckError(f"checkpoint index {index} is not readable JSON ({exc}); re-save the checkpoint") from exc
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict) or not weight_map or not all(isinstance(v, str) for v in weight_map.values()):
        raise SegcheckError(
            f"checkpoint index {index} has no 'weight_map' of key -> shard file; re-save the checkpoint"
        )
    if any(Path(v).name != v for v in weight_map.values()):
        raise SegcheckError(f"checkpoint index {index} names shards outside its folder; expected plain file names")
    return weight_map


def _read_folder(folder: Path) -> dict[str, torch.Tensor]:
    """The tensors of checkpoint folder ``folder``; each shard of a sharded one holds exactly
    the keys its index assigns it."""
    index = _folder_index(folder)
    files = folder_weight_files(folder)
    if index is None:
        return read_state_dict(files[0])
    weight_map = _weight_map(index)
    state: dict[str, torch.Tensor] = {}
    for file in files:
        part = read_state_dict(file)
        assigned = {k for k, v in weight_map.items() if v == file.name}
        if set(part) != assigned:
            extra, absent = sorted(set(part) - assigned), sorted(assigned - set(part))
            raise SegcheckError(
                f"checkpoint shard {file} does not hold the keys {index.name} assigns it "
                f"(not in the index: {_listed(extra) or 'none'}; absent: {_listed(absent) or 'none'}); re-save it"
            )
        state.update(part)
    return state


def folder_normalization(folder: Path) -> tuple[object, object, str]:
    """(mean, std, source) the weights of checkpoint folder ``folder`` were trained with, from its
    ``preprocessor_config.json`` (Hugging Face's image processor settings), else the
    ``image_processor`` of its ``processor_config.json`` (what a processor's ``save_pretrained``
    writes in transformers 5), or (None, None, "") without either. Its pixels are
    ``p * rescale_factor`` (1/255 unless ``do_rescale`` is false), then
    ``(x - image_mean) / image_std`` when ``do_normalize`` is true (a processor that saves no
    ``do_normalize`` does not normalize): as segcheck's mean/std on 0-1 pixels."""
    path, data = _image_processor(Path(folder))
    if data is None:
        return None, None, ""
    factor = data.get("rescale_factor", 1 / 255) if data.get("do_rescale", True) else 1.0
    normalize = data.get("do_normalize") is True
    mean, std = (data.get("image_mean"), data.get("image_std")) if normalize else ([0.0] * 3, [1.0] * 3)
    for name, value, size in (("rescale_factor", [factor], 1), ("image_mean", mean, 3), ("image_std", std, 3)):
        numbers = isinstance(value, list) and len(value) == size and all(map(_finite_number, value))
        if not numbers or (name != "image_mean" and min(value) <= 0):
            expected = "a number > 0" if size == 1 else "three numbers" + ("" if name == "image_mean" else " > 0")
            raise SegcheckError(f"{path} has {name} {value if size == 3 else factor!r}; expected {expected}")
    scale = 255 * factor  # segcheck's pixels are p / 255: x = (p / 255 - mean / scale) / (std / scale)
    how = "image_mean/image_std" if normalize else "no do_normalize: 0-1 pixels, mean 0, std 1"
    where = PREPROCESSOR if path.name == PREPROCESSOR else f"{path.name} (its image_processor)"
    return [m / scale for m in mean], [s / scale for s in std], f"{where} of checkpoint folder {folder} ({how})"


def _image_processor(folder: Path) -> tuple[Path | None, dict | None]:
    """(file, settings) of the image processor saved in ``folder`` (:func:`folder_normalization`),
    (None, None) when it holds none."""
    path = next((folder / name for name in (PREPROCESSOR, PROCESSOR) if (folder / name).is_file()), None)
    if path is None:
        return None, None
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SegcheckError(f"{path} is not readable JSON ({exc}); fix or delete it") from exc
    if isinstance(data, dict) and path.name == PROCESSOR:
        data = data.get("image_processor")  # a processor without one (text only) says nothing of pixels
        if data is None:
            return None, None
    if not isinstance(data, dict):
        raise SegcheckError(f"{path} is not a JSON object of image processor settings; fix or delete it")
    return path, data


def _finite_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def state_dict_keys(path: Path) -> list[str]:
    """The parameter names stored at ``path``, without reading the tensors' data where possible."""
    path = Path(path)
    if path.is_dir():
        return [key for file in folder_weight_files(path) for key in state_dict_keys(file)]
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
    """Load the checkpoint at ``path`` (a file or a checkpoint folder) into ``model`` strictly;
    raise naming every mismatch (:func:`load_state`)."""
    return load_state(model, read_state_dict(path), path)


def load_state(model: torch.nn.Module, state: dict[str, torch.Tensor], path: Path) -> torch.nn.Module:
    """Load ``state`` (read from checkpoint ``path``) into ``model`` strictly; raise naming every
    mismatch and how the key prefixes differ. A wrapper prefix is stripped only from a file and
    only when that makes every key match (``wrapper_prefix``); a folder's prefixes must match exactly."""
    folder = Path(path).is_dir()
    prefix = None if folder else wrapper_prefix(state, model.state_dict())
    if prefix:
        state = {k[len(prefix) :]: v for k, v in state.items()}
    problem = state_mismatch(model, state)
    if problem:
        common = next((p for p in WRAPPER_PREFIXES if state and all(k.startswith(p) for k in state)), None)
        differ = prefix_difference(state, model.state_dict())
        if common and not folder:
            hint = f" (every key starts with {common!r}, but without it the keys still do not match)"
        elif differ:
            exact = "; a checkpoint folder's key prefixes are matched exactly" if folder else ""
            hint = f" ({differ}{exact}: it was saved from another module or class)"
        else:
            hint = ""
        raise SegcheckError(
            f"checkpoint {path} does not fit the model ({problem}){hint}; check --model, --model-arg and the "
            "number of classes (the dataset's classes must be the ones the checkpoint was trained on)"
        )
    model.load_state_dict(state, strict=True)
    return model


def prefix_difference(keys, expected) -> str | None:
    """How the key prefixes of ``keys`` differ from the ``expected`` names, in words, or None:
    the prefix most unmatched keys carry that the expected ones lack (or the reverse), else
    the first components of both when they differ."""
    unexpected, missing = set(keys) - set(expected), set(expected) - set(keys)
    if not unexpected or not missing:
        return None
    for longer, shorter, ours in ((unexpected, missing, True), (missing, unexpected, False)):
        shift = _extra_prefix(longer, shorter)
        if shift:
            extra, example = shift
            mine, theirs = (extra + example, example) if ours else (example, extra + example)
            return f"its keys start with {mine!r} where the model's start with {theirs!r}"
    tops = lambda names: sorted({n.split(".", 1)[0] + "." for n in names})  # noqa: E731
    if tops(unexpected) != tops(missing):
        theirs, ours = _listed(tops(unexpected), 4), _listed(tops(missing), 4)
        return f"its unmatched keys start with {theirs}, the model's with {ours}"
    return None


def _extra_prefix(longer: set[str], shorter: set[str]) -> tuple[str, str] | None:
    """(p, q): the prefix p such that p + k of ``longer`` is a name k of ``shorter`` for most of
    ``shorter``, and q the first component most of those k start with; None when no prefix
    explains half of ``shorter``. Ties go to the alphabetically first."""
    counts: Counter = Counter()
    follows: Counter = Counter()
    for key in sorted(longer):
        parts = key.split(".")
        for i in range(1, len(parts)):
            if ".".join(parts[i:]) in shorter:
                extra = ".".join(parts[:i]) + "."
                counts[extra] += 1
                follows[extra, parts[i] + "."] += 1
                break
    if not counts:
        return None
    extra = min(counts, key=lambda p: (-counts[p], p))
    if 2 * counts[extra] < len(shorter):
        return None
    first = min((q for p, q in follows if p == extra), key=lambda q: (-follows[extra, q], q))
    return extra, first


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
    """The built-in loader: state dicts in safetensors or PyTorch files, or a checkpoint folder, strictly."""
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
    """``<file>.yaml`` beside a checkpoint file; ``<folder>/segcheck.yaml`` inside a checkpoint folder."""
    path = Path(path)
    return path / FOLDER_SIDECAR if path.is_dir() else path.with_suffix(".yaml")


def read_sidecar(path: Path) -> dict | None:
    """The YAML sidecar of a checkpoint (written next to a file by ``save``; ``segcheck.yaml``
    inside a folder: :func:`sidecar_path`), or None if there is none."""
    side = sidecar_path(path)
    if not side.is_file():
        return None
    from segcheck.config import read_yaml

    data = read_yaml(side, "checkpoint sidecar", "; fix or delete it")
    if not isinstance(data, dict):
        raise SegcheckError(f"checkpoint sidecar {side} is not a YAML mapping; delete or fix it")
    return data
