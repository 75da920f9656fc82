"""What is under test: ``TargetSpec`` (plain data, one manifest row), resolved into a ``Target``
(a ``ModelUnderTest`` on its ``EvalData``), which is what every gate takes."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from segcheck import SegcheckError
from segcheck import checkpoint as ckpt
from segcheck.config import eval_sample
from segcheck.data import EvalData, SegDataset
from segcheck.model import (
    ModelUnderTest,
    Normalization,
    Predictions,
    architecture_normalization,
    first_normalization,
    reinitialized,
    seeded,
)
from segcheck.registry import Entry

if TYPE_CHECKING:
    from segcheck.plugins import Plugins


class FrozenMapping(tuple):
    """A mapping made hashable: its sorted (key, value) pairs; :func:`thawed` turns it back."""


def hashable(value):
    """``value`` made hashable: lists become tuples, mappings :class:`FrozenMapping`."""
    if isinstance(value, list | tuple):
        return tuple(hashable(v) for v in value)
    if isinstance(value, dict):
        return FrozenMapping(sorted((str(k), hashable(v)) for k, v in value.items()))
    return value


def thawed(value):
    """The plain YAML value again (lists and dicts) of a :func:`hashable` one, for builders."""
    if isinstance(value, FrozenMapping):
        return {k: thawed(v) for k, v in value}
    if isinstance(value, tuple):
        return [thawed(v) for v in value]
    return value


@dataclass(frozen=True)
class TargetSpec:
    """A model, its checkpoint and a dataset, by name and path: hashable, nothing loaded.

    ``checkpoint`` None is a randomly initialized model, always (the bundled checkpoint is
    looked up before, by :func:`bundled_checkpoint`). ``model_args`` reach the model's
    builder as keyword arguments; ``mean``/``std`` are an explicit normalization (it wins
    over every other source); ``tags`` are free-form labels (strategy, architecture, ...).
    ``trust_checkpoint`` lets a pickled checkpoint run its code (a whole pickled model).
    ``init_seed`` seeds the module's initialization (what a random-init target is).
    """

    model: str
    dataset: str
    checkpoint: Path | None = None
    data_root: Path | None = None
    device: str = "auto"
    model_args: tuple[tuple[str, object], ...] = ()
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    tags: tuple[tuple[str, str], ...] = ()
    name: str | None = None
    trust_checkpoint: bool = False
    init_seed: int = 0

    @property
    def id(self) -> str:
        """The target's name in test ids, tables and reports (its ``name``, else the model's)."""
        return self.name or self.model


@dataclass(frozen=True, eq=False)
class Target:
    """A model under test and the eval data it is judged on: the argument of every gate.
    ``scorers`` are the anomaly scorers its anomaly gates use (None: segcheck's built-ins)."""

    model: ModelUnderTest
    data: EvalData
    id: str = "target"
    spec: TargetSpec | None = field(default=None, repr=False)
    scorers: dict | None = field(default=None, repr=False)

    @property
    def predictions(self) -> Predictions:
        """The model's one shared forward pass over the eval images (labels, finite, mIoU)."""
        return self.model.predictions(self.data)

    def describe(self) -> dict[str, object]:
        """What is under test, for report headers: provenance, data and normalization."""
        described = dict(self.model.provenance)
        described.setdefault("dataset", self.data.identity)
        n, asked = len(self.data.images), self.data.size
        described["eval_sample"] = f"{n} image{'s' if n != 1 else ''} of split {self.data.split!r}" + (
            f" (eval.size {asked}: the split holds {n})" if n < asked else ""
        )
        described["batch"] = (
            f"{self.data.batch_size} a forward pass, {self.data.backward_batch} with a backward (eval.batch_size, "
            f"eval.batch_pixels {self.data.batch_pixels}, eval.backward_pixels {self.data.backward_pixels})"
        )
        described.update(
            device=str(self.model.device),
            normalization={
                "mean": list(self.model.normalization.mean),
                "std": list(self.model.normalization.std),
                "source": self.model.normalization.source,
            },
        )
        if self.spec is not None and self.spec.tags:
            described["tags"] = dict(self.spec.tags)
        return described


def resolve_device(name: str) -> str:
    """``auto`` -> ``cuda`` when available else ``cpu``; ``cuda`` without CUDA is an error."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise SegcheckError("--device cuda was requested but CUDA is not available here; use --device cpu or auto")
    if name not in ("cpu", "cuda"):
        raise SegcheckError(f"unknown device {name!r}; use auto, cpu or cuda")
    return name


def bundled_checkpoint(plugins: Plugins, model: str, dataset: str, given: str | Path | None) -> Path | None:
    """The checkpoint a run means: ``given`` as a path, None for ``"none"`` (random init), or
    when nothing is given the model's bundled checkpoint for ``dataset`` (an error if it has none).
    A model named by its callable (``module:callable``) bundles what the callable returns: None."""
    if given is not None:
        return None if str(given) == "none" else Path(given)
    entry = plugins.models.get(model)
    if model in plugins.models.referenced:
        return None
    found = (entry.meta.get("checkpoints") or {}).get(dataset)
    if found is None:
        raise SegcheckError(
            f"model {model!r} bundles no checkpoint for dataset {dataset!r}; pass --checkpoint PATH "
            "(or --checkpoint none to test a randomly initialized model)"
        )
    return Path(found)


def dataset_splits(plugins: Plugins, spec: TargetSpec):
    """``split -> dataset`` of ``spec``'s dataset (its registry factory on ``spec.data_root``);
    a dataset that reads files without a data root is an error."""
    entry = plugins.datasets.get(spec.dataset)
    if entry.meta.get("needs_root") and spec.data_root is None:
        raise SegcheckError(f"dataset {spec.dataset!r} reads files: pass --data-root DIR")
    return functools.partial(entry.obj, spec.data_root)


def declared_settings(plugins: Plugins, dataset: str, data_root: Path | None) -> list[tuple[str, dict]]:
    """The settings dataset ``dataset`` declares (registry meta ``settings``: a mapping, or a
    function of the data root giving ``(mapping, where)``), as layers for ``Session.settings``."""
    declared = plugins.datasets.get(dataset).meta.get("settings")
    if callable(declared):
        values, where = guarded(f"dataset {dataset!r}: its declared settings", declared, root=data_root)
    else:
        values, where = declared, f"dataset {dataset!r}"
    return [(where or f"dataset {dataset!r}", values)] if values else []


def eval_data(plugins: Plugins, spec: TargetSpec, config: dict) -> EvalData:
    """The seeded eval sample of ``spec``'s dataset (``config["eval"]``), with its other splits."""
    entry = plugins.datasets.get(spec.dataset)
    splits = dataset_splits(plugins, spec)
    data = guarded(f"dataset {spec.dataset!r}", EvalData.from_dataset, splits=splits, **eval_sample(config))
    data.identity = f"{spec.dataset} (from {entry.plugin})"
    return data


def build_module(entry: Entry, num_classes: int, **kwargs) -> torch.nn.Module:
    """A new module from a model entry, sized for ``num_classes`` (one channel for binary
    models, or the model's declared ``num_classes``: a head that does not fit the data then
    fails head_matches_classes with both numbers instead of being silently resized)."""
    channels = 1 if entry.meta.get("binary") else entry.meta.get("num_classes", num_classes)
    return entry.obj(channels, **kwargs)


def load_model(plugins: Plugins, spec: TargetSpec, data: EvalData | SegDataset) -> ModelUnderTest:
    """The model under test: built, its checkpoint loaded strictly, normalized by precedence.
    A checkpoint folder (``checkpoint_folder`` models) is also the architecture: the builder
    gets ``config=<folder>`` unless a ``config`` model arg is given. Only ``data.spec`` is read
    (the model is sized and checked for it), so a dataset split will do as well as eval data."""
    entry = plugins.models.get(spec.model)
    path = spec.checkpoint
    check_checkpoint_path(entry, path)
    check_prompted(entry, spec, data)
    folder = path is not None and Path(path).is_dir()
    sidecar = ckpt.read_sidecar(path) if path is not None else None
    same = [n for n in plugins.models.names() if plugins.models.get(n).obj is entry.obj]  # e.g. mypkg-net, mypkg:build
    _check_sidecar_classes(sidecar, path, spec, data, entry.meta.get("wraps"), same)
    architecture = dict((sidecar or {}).get("model_kwargs") or {}) | {k: thawed(v) for k, v in spec.model_args}
    if folder:
        architecture.setdefault("config", Path(path))
    builder = functools.partial(build_module, entry, data.spec.num_classes, **architecture)
    with seeded(spec.init_seed):  # a random-init target is the same model every run
        module = guarded(f"model {spec.model!r}: its builder", builder, **_loading_kwargs(entry, spec, sidecar))
    if spec.model in plugins.models.referenced:  # the callable may return trained weights: fresh copies are reset
        why = f"fresh copies of {spec.model} are its module re-initialized"
        builder = functools.partial(_reset_build, builder, why)
    if path is not None and spec.trust_checkpoint and path.suffix != ".safetensors" and not folder:
        module = guarded(f"unpickling trusted checkpoint {path}", ckpt.load_trusted, model=module, path=path)
    elif path is not None:
        load = plugins.manager.hook.segcheck_load_checkpoint
        module = guarded(f"loading checkpoint {path}", load, model=module, path=path)
        if module is None:
            raise SegcheckError(f"no plugin could load checkpoint {path}")
    explicit = (spec.mean, spec.std, "explicit setting (--mean/--std or eval.mean/std)")
    fresh = architecture_normalization(data.spec, entry.meta, spec.dataset, spec.model, (spec.mean, spec.std))
    provenance = {
        "model": f"{spec.model} (from {entry.plugin})",
        "checkpoint": _checkpoint_note(
            spec, path, module, spec.model in plugins.models.referenced or bool(entry.meta.get("builds_weights"))
        ),
        "data_root": str(spec.data_root) if spec.data_root else None,
    }
    if spec.model_args:
        provenance["model_args"] = dict(spec.model_args)
    meta = module_meta(entry.meta, module)
    return ModelUnderTest(
        module,
        normalization=first_normalization(
            explicit, *_trained_normalization(sidecar, path, explicit), (fresh.mean, fresh.std, fresh.source)
        ),
        fresh_normalization=fresh,
        builder=builder,
        meta=meta,
        provenance=provenance,
        binary=bool(meta.get("binary")),
        divisible_by=meta.get("divisible_by", 1),
        device=resolve_device(spec.device),
        prompted=bool(meta.get("prompted")),
    )


def check_prompted(entry: Entry, spec: TargetSpec, data: EvalData) -> None:
    """A prompted model needs a dataset with prompts, and a dataset with prompts a prompted
    model (a model per prompt would be judged on every concept's masks without a word)."""
    model_prompted, data_prompted = bool(entry.meta.get("prompted")), data.spec.prompted
    if model_prompted and not data_prompted:
        raise SegcheckError(
            f"model {spec.model!r} takes a text prompt, but dataset {spec.dataset!r} declares no prompts; "
            "use a prompted dataset (prompted-folder with prompts in dataset.yaml, synthetic-drywall)"
        )
    if data_prompted and not model_prompted:
        raise SegcheckError(
            f"dataset {spec.dataset!r} asks for concepts by prompt ({', '.join(data.spec.concepts)}), but model "
            f"{spec.model!r} takes no prompt; register it with prompted=True and a forward(x, prompts)"
        )
    if model_prompted and not entry.meta.get("binary"):
        raise SegcheckError(f"model {spec.model!r} is prompted, so it must be binary (one sigmoid channel)")


#: model metadata that may be a function of the built module (it depends on the model args)
MODULE_META = ("divisible_by", "frozen")


def module_meta(meta: dict, module: torch.nn.Module) -> dict:
    """``meta`` with its :data:`MODULE_META` callables applied to ``module`` (e.g. an
    encoder's output stride as ``divisible_by``), checked: a whole number >= 1, a tuple of
    parameter-name prefixes."""
    resolved = dict(meta)
    for key in MODULE_META:
        if callable(resolved.get(key)):
            resolved[key] = guarded(f"model metadata {key}", resolved[key], module=module)
    d = resolved.get("divisible_by", 1)
    if isinstance(d, bool) or not isinstance(d, int) or d < 1:
        raise SegcheckError(f"model metadata divisible_by is {d!r}; expected a whole number >= 1")
    frozen = resolved.get("frozen", ())
    if isinstance(frozen, str) or not all(isinstance(p, str) for p in frozen):
        raise SegcheckError(f"model metadata frozen is {frozen!r}; expected a tuple of parameter-name prefixes")
    resolved["frozen"] = tuple(frozen)
    return resolved


def _trained_normalization(sidecar: dict | None, path, explicit) -> list[tuple[object, object, str]]:
    """The normalization sources of trained weights, first first: the checkpoint's sidecar, then
    a checkpoint folder's image processor settings (``ckpt.folder_normalization``; read only when no
    earlier source is complete)."""
    found = [sidecar_normalization(sidecar, path)]
    if path is not None and Path(path).is_dir() and None in explicit[:2] and None in found[0][:2]:
        found.append(ckpt.folder_normalization(path))
    return found


def _checkpoint_note(spec: TargetSpec, path: Path | None, module: torch.nn.Module, referenced: bool = False) -> str:
    """The checkpoint as the report names it, saying when a wrapper prefix was stripped (a model
    named by its callable, or whose builder sets its weights, without a checkpoint: the module as
    the builder returns it)."""
    if path is None and referenced:
        return f"none: the module as {spec.model} returns it (built under target.init_seed {spec.init_seed})"
    if path is None:
        return f"none (random init, target.init_seed {spec.init_seed})"
    if Path(path).is_dir():
        files = ", ".join(f.name for f in ckpt.folder_weight_files(path))
        return f"{path} (checkpoint folder: {files}; key prefixes matched exactly)"
    if spec.trust_checkpoint and path.suffix != ".safetensors":
        return f"{path} (TRUSTED: unpickled with code execution, --trust-checkpoint)"
    if path.suffix not in ckpt.SUFFIXES:
        return str(path)
    try:
        prefix = ckpt.wrapper_prefix(ckpt.state_dict_keys(path), module.state_dict())
    except SegcheckError:  # a format only the plugin that loaded it reads
        return str(path)
    return f"{path} (key prefix {prefix!r} stripped: without it every key matches)" if prefix else str(path)


def guarded(what: str, function, **kwargs):
    """``function(**kwargs)``; an exception other than a SegcheckError becomes one line saying ``what`` failed."""
    try:
        return function(**kwargs)
    except SegcheckError:
        raise
    except MemoryError as exc:
        raise SegcheckError(
            f"{what} ran out of memory ({str(exc) or 'the allocation that failed gave no size'}); lower eval.size or "
            "eval.batch_size, or resize the images (--eval-resize)"
        ) from exc
    except Exception as exc:
        raise SegcheckError(f"{what} raised {type(exc).__name__}: {exc}") from exc


def resolve(plugins: Plugins, spec: TargetSpec, config: dict) -> Target:
    """Load what ``spec`` names: its eval data, then its model, and probe the model once on the
    first eval image (:meth:`ModelUnderTest.head_channels`). Any problem is one SegcheckError,
    and names and paths are checked before anything is loaded."""
    entry = plugins.models.get(spec.model)
    plugins.datasets.get(spec.dataset)
    resolve_device(spec.device)
    check_checkpoint_path(entry, spec.checkpoint)
    data = eval_data(plugins, spec, config)
    model = load_model(plugins, spec, data)
    model.head_channels(data)
    return Target(model, data, spec.id, spec, plugins.scorers.functions())


def check_checkpoint_path(entry: Entry, path: Path | None) -> None:
    """``path`` is a weights file, or a checkpoint folder holding weights for a model registered
    with ``checkpoint_folder``; anything else raises."""
    if path is not None and Path(path).is_dir() and entry.meta.get("checkpoint_folder"):
        ckpt.folder_weight_files(path)
    elif path is not None and not Path(path).is_file():
        what = "is a folder" if Path(path).is_dir() else "does not exist"
        raise SegcheckError(f"checkpoint {path} {what}; pass --checkpoint PATH to a weights file")


def _reset_build(builder, why: str, **kwargs) -> torch.nn.Module:
    """``builder(**kwargs)`` with its parameters re-initialized (:func:`segcheck.model.reinitialized`)."""
    return reinitialized(builder(**kwargs), why)


def _check_sidecar_classes(sidecar: dict | None, path, spec: TargetSpec, data: EvalData, wraps=None, same=()) -> None:
    """The sidecar's model (the target's, one the target's model ``wraps``, or one registered
    with the ``same`` builder) and classes are the target's: else its weights, mean and std
    belong to another model."""
    trained = (sidecar or {}).get("model")
    if trained is not None and str(trained) not in (spec.model, wraps, *same):
        raise SegcheckError(
            f"checkpoint {path} was trained as model {trained!r} (its sidecar {ckpt.sidecar_path(path).name} says "
            f"so), but it is loaded into model {spec.model!r}; pass --model {trained}, or the checkpoint of "
            f"{spec.model!r} (a wrapper of {trained!r} registers with wraps={trained!r})"
        )
    classes = (sidecar or {}).get("classes")
    if classes is not None and list(classes) != list(data.spec.classes):
        raise SegcheckError(
            f"checkpoint {path} was trained on {len(classes)} classes {classes[:6]}..., but dataset "
            f"{spec.dataset!r} has {data.spec.num_classes} {list(data.spec.classes)[:6]}...; evaluate on the "
            "label set it was trained for"
        )


def _loading_kwargs(entry: Entry, spec: TargetSpec, sidecar: dict | None) -> dict:
    """Builder kwargs only the checkpoint needs: an auxiliary head when its keys hold one (a
    trusted pickle, or a file only a plugin reads, is not looked into here: its loader decides)."""
    prefix, path = entry.meta.get("aux_prefix"), spec.checkpoint
    if path is None or not prefix or (sidecar and "model_kwargs" in sidecar) or path.suffix not in ckpt.SUFFIXES:
        return {}
    if spec.trust_checkpoint:
        return {}
    try:
        keys = ckpt.state_dict_keys(path)
    except SegcheckError:
        return {}
    return {"aux_loss": any(k.startswith(prefix) or k.split(".", 1)[-1].startswith(prefix) for k in keys)}


def sidecar_normalization(sidecar: dict | None, path) -> tuple[object, object, str]:
    """(mean, std, source) of a checkpoint's sidecar, checked: three numbers each in 0..1, std > 0."""
    sidecar = sidecar or {}
    values = [sidecar.get("mean"), sidecar.get("std")]
    for name, value in zip(("mean", "std"), values):
        low = 0 if name == "mean" else 1e-6  # a std must be > 0
        ok = value is None or (
            isinstance(value, list)
            and len(value) == 3
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and low <= v <= 1 for v in value)
        )
        if not ok:
            raise SegcheckError(
                f"checkpoint sidecar of {path} has {name} {value!r}; expected three "
                f"numbers in {'0' if name == 'mean' else '(0'}..1 (pixel scale 0-1, e.g. "
                f"0.485, not 123.675), or no {name} entry"
            )
    return values[0], values[1], f"checkpoint sidecar {ckpt.sidecar_path(path)}" if path is not None else ""


__all__ = ["EvalData", "ModelUnderTest", "Normalization", "Target", "TargetSpec", "bundled_checkpoint", "resolve"]
