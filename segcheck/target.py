"""What is under test: a model (with its checkpoint) on an eval set, predictions shared by gates."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from segcheck import SegcheckError, data
from segcheck.evaluate import score
from segcheck.model import SegModel
from segcheck.plugins import Plugins
from segcheck.registry import Entry


def resolve_device(name: str) -> str:
    """``auto`` -> ``cuda`` when available else ``cpu``; ``cuda`` without CUDA is an error."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise SegcheckError("--device cuda was requested but CUDA is not available here; use --device cpu or auto")
    if name not in ("cpu", "cuda"):
        raise SegcheckError(f"unknown device {name!r}; use auto, cpu or cuda")
    return name


def default_checkpoint(model: Entry, dataset_name: str) -> Path | None:
    """The checkpoint a model bundles for ``dataset_name`` (meta ``checkpoints``), if any."""
    return (model.meta.get("checkpoints") or {}).get(dataset_name)


@dataclass
class Target:
    """A model entry, its checkpoint and a dataset, resolved and validated; loads lazily.

    ``checkpoint=None`` means the model's bundled checkpoint for the dataset, and it is an
    error if there is none; ``Path("none")`` means random initialization on purpose.
    """

    plugins: Plugins
    config: dict
    model_name: str
    dataset_name: str
    checkpoint: Path | None = None
    data_root: Path | None = None
    device: str = "cpu"
    model_entry: Entry = field(init=False)
    dataset_entry: Entry = field(init=False)

    def __post_init__(self):
        self.model_entry = self.plugins.models.get(self.model_name)
        self.dataset_entry = self.plugins.datasets.get(self.dataset_name)
        if self.dataset_entry.meta.get("needs_root") and self.data_root is None:
            raise SegcheckError(f"dataset {self.dataset_name!r} reads files: pass --data-root DIR")
        if self.checkpoint is None:
            self.checkpoint = default_checkpoint(self.model_entry, self.dataset_name)
            if self.checkpoint is None:
                raise SegcheckError(
                    f"model {self.model_name!r} bundles no checkpoint for dataset {self.dataset_name!r}; "
                    "pass --checkpoint PATH (or --checkpoint none to test a randomly initialized model)"
                )
        if str(self.checkpoint) == "none":
            self.checkpoint = None
        elif not Path(self.checkpoint).is_file():
            raise SegcheckError(f"checkpoint {self.checkpoint} does not exist; pass --checkpoint PATH to a weights file")
        self.device = resolve_device(self.device)

    # --- data -----------------------------------------------------------------------------
    def dataset(self, split: str) -> data.SegDataset:
        return self.dataset_entry.obj(self.data_root, split)

    @cached_property
    def eval_dataset(self) -> data.SegDataset:
        return self.dataset(self.config["eval"]["split"])

    @property
    def spec(self) -> data.DatasetSpec:
        return self.eval_dataset.spec

    def sample(self, split: str, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Images (N, H, W, 3) uint8 and masks (N, H, W) int64 of a seeded sample of ``split``
        (N = min(size, len(split)), drawn like the eval set)."""
        dataset = self.eval_dataset if split == self.config["eval"]["split"] else self.dataset(split)
        return data.stack(dataset, data.eval_indices(len(dataset), size, seed))

    @cached_property
    def eval_set(self) -> tuple[np.ndarray, np.ndarray]:
        """The seeded eval sample (``config["eval"]``: split, size, seed), see :meth:`sample`."""
        ev = self.config["eval"]
        return self.sample(ev["split"], ev["size"], ev["seed"])

    # --- model ----------------------------------------------------------------------------
    def build_module(self, **kwargs) -> torch.nn.Module:
        """A fresh module from the model's builder, sized for the dataset's classes (or the
        model's declared ``num_classes``: a head that does not fit the data then fails the
        head_matches_classes audit, with both numbers, instead of being silently resized).

        Never the module under test: a builder that hands back that very module (instead of
        building a new one) gets a deep copy, so training or probing a fresh module never
        changes the model that other gates use.
        """
        meta = self.model_entry.meta
        channels = 1 if meta.get("binary") else meta.get("num_classes", self.spec.num_classes)
        module = self.model_entry.obj(channels, **kwargs)
        loaded = self.__dict__.get("model")  # only if already loaded: building never loads it
        return copy.deepcopy(module) if loaded is not None and module is loaded.module else module

    def wrap(self, module: torch.nn.Module, mean=None, std=None) -> SegModel:
        """``module`` as a SegModel; normalization ``mean``/``std`` default to the model's meta,
        then the dataset's."""
        meta = self.model_entry.meta
        return SegModel(
            module,
            mean=mean if mean is not None else meta.get("mean", self.spec.mean),
            std=std if std is not None else meta.get("std", self.spec.std),
            binary=bool(meta.get("binary")),
            divisible_by=meta.get("divisible_by", 1),
            device=self.device,
        )

    @cached_property
    def model(self) -> SegModel:
        """The model under test with its checkpoint loaded (strictly), in eval mode, normalizing
        inputs as the checkpoint was trained (its sidecar's mean/std, when it has them)."""
        kwargs = self._checkpoint_model_kwargs()
        module = self.build_module(**kwargs)
        if self.checkpoint is not None:
            loaded = self.plugins.manager.hook.segcheck_load_checkpoint(model=module, path=self.checkpoint)
            if loaded is None:
                raise SegcheckError(f"no plugin could load checkpoint {self.checkpoint}")
            module = loaded
        return self.wrap(module, *self._checkpoint_normalization())

    def _checkpoint_normalization(self) -> tuple[list[float] | None, list[float] | None]:
        """(mean, std) from the checkpoint's sidecar, checked: three numbers each, std > 0."""
        sidecar = self._sidecar or {}
        values = [sidecar.get("mean"), sidecar.get("std")]
        for name, value in zip(("mean", "std"), values):
            low = 0 if name == "mean" else 1e-6  # a std must be > 0
            ok = value is None or (isinstance(value, list) and len(value) == 3 and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and low <= v <= 1 for v in value))
            if not ok:
                raise SegcheckError(f"checkpoint sidecar of {self.checkpoint} has {name} {value!r}; expected three "
                                    f"numbers in {'0' if name == 'mean' else '(0'}..1 (pixel scale 0-1, e.g. "
                                    f"0.485, not 123.675), or no {name} entry")
        return values[0], values[1]

    @cached_property
    def _sidecar(self) -> dict | None:
        """The checkpoint's YAML sidecar (model kwargs, classes, mean/std), or None."""
        if self.checkpoint is None:
            return None
        from segcheck import checkpoint

        return checkpoint.read_sidecar(self.checkpoint)

    def _checkpoint_model_kwargs(self) -> dict:
        """Builder kwargs the checkpoint needs: from its sidecar, or (aux heads) from its keys."""
        if self.checkpoint is None:
            return {}
        from segcheck import checkpoint

        sidecar = self._sidecar
        if sidecar is not None:
            classes = sidecar.get("classes")
            if classes is not None and list(classes) != list(self.spec.classes):
                raise SegcheckError(
                    f"checkpoint {self.checkpoint} was trained on {len(classes)} classes {classes[:6]}..., "
                    f"but dataset {self.dataset_name!r} has {self.spec.num_classes} {list(self.spec.classes)[:6]}...; "
                    "evaluate on the label set it was trained for"
                )
            if "model_kwargs" in sidecar:
                return dict(sidecar["model_kwargs"] or {})
        prefix = self.model_entry.meta.get("aux_prefix")
        if prefix and self.checkpoint.suffix in checkpoint.SUFFIXES:
            return {"aux_loss": any(k.startswith(prefix) for k in checkpoint.state_dict_keys(self.checkpoint))}
        return {}

    @cached_property
    def clean(self) -> tuple[np.ndarray, bool]:
        """Predicted class maps of the eval images, and whether all logits were finite."""
        images, _ = self.eval_set
        return self.model.predict_pixels(images, self.config["eval"]["batch_size"])

    @cached_property
    def clean_miou(self) -> float:
        """mIoU of :attr:`clean` on the eval masks: the model's real score, which gates compare with."""
        return score(self.clean[0], self.eval_set[1], self.spec)

    def describe(self) -> dict[str, object]:
        """What is under test, for report headers."""
        return {
            "model": f"{self.model_name} (from {self.model_entry.plugin})",
            "checkpoint": str(self.checkpoint) if self.checkpoint else "none (random init)",
            "dataset": f"{self.dataset_name} (from {self.dataset_entry.plugin})",
            "data_root": str(self.data_root) if self.data_root else None,
            "device": self.device,
        }
