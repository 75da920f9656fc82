"""``segcheck train``: any registered model on any registered dataset, saved as safetensors
with a YAML sidecar; deterministic per seed, resumable per epoch, DDP under torchrun."""

from __future__ import annotations

import functools
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel
from tqdm import tqdm

from segcheck import SegcheckError, __version__, checkpoint
from segcheck.config import eval_sample
from segcheck.data import EvalData
from segcheck.model import SegModel, architecture_normalization
from segcheck.target import build_module, declared_settings, guarded, module_meta, resolve_device
from segcheck.train import loop
from segcheck.train.recipes import Recipe
from segcheck.train.recipes import get as get_recipe


@dataclass(frozen=True)
class TrainResult:
    path: Path
    val_miou: float
    seconds: float
    images_per_second: float
    #: a prompted model's foreground IoU per concept on the eval sample (None otherwise)
    val_foreground_iou: dict | None = None


def _splits(plugins, dataset: str, data_root: Path | None):
    """``split -> SegDataset`` of registered ``dataset`` (a file dataset needs ``data_root``)."""
    entry = plugins.datasets.get(dataset)
    if entry.meta.get("needs_root") and data_root is None:
        raise SegcheckError(f"dataset {dataset!r} reads files: pass --data-root DIR")
    return functools.partial(entry.obj, data_root)


def _distributed() -> tuple[int, int]:
    """(rank, world size) under ``torchrun`` (process group initialized), else (0, 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), world


def train(
    model: str,
    dataset: str,
    recipe: str | Recipe = "naive",
    *,
    out: Path,
    device: str = "auto",
    seed: int = 0,
    data_root: Path | None = None,
    plugin_specs=(),
    progress: bool = True,
    resume: bool = False,
    init: Path | None = None,
    model_args: dict | None = None,
    overwrite: bool = False,
    **overrides,
) -> TrainResult:
    """Train registered ``model`` on registered ``dataset`` and save safetensors + YAML sidecar.

    ``overrides`` change recipe settings (e.g. ``epochs=3``); ``model_args`` reach the
    model's builder (``--model-arg``) and are saved in the sidecar. Deterministic for a seed on CPU:
    every epoch reseeds its shuffling, augmentation and noise from ``(seed, epoch)``, so a run
    resumed (``resume=True``) from ``out``'s ``.resume.pt`` state ends with the same weights.
    ``init``: a checkpoint (safetensors, or a weights-only ``.pt``) whose weights the model
    starts from instead of its initialization (fine-tuning: a fresh optimizer and schedule);
    it must fit the model strictly, its sidecar's classes (when it has one) must be the dataset's,
    and the new sidecar names it. ``out`` must end in ``.safetensors``; it, its ``.yaml`` sidecar and
    its ``.resume.pt`` state are replaced only when segcheck wrote them, unless ``overwrite``
    (:mod:`segcheck.outputs`), and this is checked before anything trains.
    Under ``torchrun`` it trains with DistributedDataParallel; rank 0 writes the files.
    """
    # one flat loop read top to bottom, as torchvision's references/segmentation train.py
    recipe = (get_recipe(recipe) if isinstance(recipe, str) else recipe).with_(**overrides)
    out = writable(_check_out(Path(out), init, data_root, overwrite=overwrite, resume=resume))
    rank, world = _distributed()
    from segcheck.session import open_session  # the session loads the gates, which use the loop

    session = open_session(plugin_specs)
    entry, splits = session.plugins.models.get(model), _splits(session.plugins, dataset, data_root)
    train_set = _Pairs(splits("train"))
    _check_batches(len(train_set), world, recipe.batch_size)
    if init is not None:
        _check_init_classes(Path(init), dataset, list(train_set.dataset.spec.classes))
    weights = loop.class_weights(recipe, train_set.dataset)
    dev = _device(device, world)
    torch.manual_seed(seed)
    segmodel, model_kwargs = _fresh(entry, train_set.dataset.spec, recipe, dev, model_args or {})
    module = segmodel.module
    if init is not None:
        checkpoint.load_into(module, Path(init))
    net = module
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(module, device_ids=[dev.index] if dev.type == "cuda" else None)
    sampler = torch.utils.data.DistributedSampler(train_set, seed=seed, drop_last=True) if world > 1 else None
    steps_per_epoch = len(train_set) // world // recipe.batch_size
    optimizer = torch.optim.AdamW(module.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=recipe.lr, total_steps=recipe.epochs * steps_per_epoch
    )
    averaged = AveragedModel(module, use_buffers=True) if recipe.average_epochs else None
    state_path = out.with_suffix(".resume.pt")
    first_epoch = _restore(state_path, module, optimizer, scheduler, recipe, averaged) if resume else 0
    start = time.perf_counter()
    per_epoch = steps_per_epoch * recipe.batch_size  # images one rank sees per epoch
    bar = tqdm(
        total=recipe.epochs * per_epoch,
        initial=first_epoch * per_epoch,
        unit="img",
        disable=not progress or rank != 0,
        desc=f"train {model} ({recipe.name})",
    )
    with bar:
        for epoch in range(first_epoch, recipe.epochs):
            epoch_seed = seed * 100_003 + epoch  # each epoch reseeded: resuming replays it exactly
            torch.manual_seed(epoch_seed)
            if sampler is not None:
                sampler.set_epoch(epoch)
            loader = _loader(train_set, recipe.batch_size, sampler, epoch_seed, dev)
            g = torch.Generator().manual_seed(epoch_seed)
            loop.train_one_epoch(
                net, segmodel, loader, optimizer, scheduler, recipe, train_set.dataset.spec, g, dev, bar, weights
            )
            if averaged is not None and epoch >= recipe.epochs - recipe.average_epochs:
                averaged.update_parameters(module)
            if rank == 0:
                _save_state(state_path, epoch + 1, module, optimizer, scheduler, recipe, averaged)
    if averaged is not None:  # the saved and judged weights are the mean
        module.load_state_dict(averaged.module.state_dict())
    seconds = time.perf_counter() - start
    config = session.settings(declared_settings(session.plugins, dataset, data_root))[0]
    val_data = EvalData.from_dataset(splits, **eval_sample(config))
    val_miou = loop.evaluate(segmodel, val_data)
    foreground = loop.foreground_iou(segmodel, val_data) if segmodel.prompted else None
    if rank == 0:
        sidecar = _sidecar(model, dataset, train_set.dataset, segmodel, model_kwargs, recipe, seed, val_miou)
        if init is not None:
            sidecar["init"] = Path(init).name
        if foreground is not None:
            sidecar["val_foreground_iou"] = {c: round(v, 4) for c, v in foreground.items()}
        checkpoint.save(module, out, sidecar)
        state_path.unlink(missing_ok=True)
    done = (recipe.epochs - first_epoch) * per_epoch * world
    return TrainResult(out, val_miou, seconds, done / seconds if seconds else float("nan"), foreground)


def _check_out(out: Path, init: Path | None, data_root: Path | None, *, overwrite: bool, resume: bool) -> Path:
    """``out``, once ``segcheck.outputs`` lets training write it, its sidecar and its resume state
    (the state is what ``resume`` continues from, so it is checked only without it). A trained
    checkpoint is never replaced without ``overwrite``, even one segcheck wrote: it took a run."""
    from segcheck.outputs import check_output, refuse

    inputs = [init, checkpoint.sidecar_path(init)] if init is not None else []
    rule = {"inputs": inputs, "data_roots": [data_root], "overwrite": overwrite}
    check_output(out, "--out", suffixes=(".safetensors",), **rule)
    if out.exists() and not overwrite:
        raise SegcheckError(
            f"--out {out} exists: a trained checkpoint is not replaced without a word; choose another path, or pass "
            "--overwrite to replace it and its sidecar"
        )
    refuse(checkpoint.sidecar_path(out), f"--out {out}: its sidecar", **rule)
    if not resume:
        refuse(out.with_suffix(".resume.pt"), f"--out {out}: its resume state", **rule)
    return out


def _check_batches(images: int, world: int, batch_size: int) -> None:
    """Raise (one line) when one rank's share of the training split is not one whole batch."""
    if images // world // batch_size == 0:
        share = f"{images} images," + (f" {images // world} per process," if world > 1 else "")
        raise SegcheckError(
            f"the training split has {share} fewer than one batch of {batch_size}; "
            f"pass --batch-size {max(1, images // world)} or less, or train on more images"
        )


def _check_init_classes(init: Path, dataset: str, classes: list[str]) -> None:
    """Raise (one line) when ``init``'s sidecar lists other classes, or another order, than the training data."""
    sidecar = checkpoint.read_sidecar(init)
    given = (sidecar or {}).get("classes")
    if given is not None and list(given) != classes:
        raise SegcheckError(
            f"--init {init} was trained on classes {_short(list(given))}, but dataset {dataset!r} has "
            f"{_short(classes)}; fine-tune on data with the same classes in the same order, or train without --init"
        )


def _short(items: list, most: int = 6) -> str:
    """``items`` as a list, at most ``most`` of them shown."""
    shown = ", ".join(map(str, items[:most]))
    return f"[{shown}{', ...' if len(items) > most else ''}] ({len(items)})"


def writable(out: Path) -> Path:
    """``out``, once its folder exists and takes files (checked before any training starts)."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        probe = out.parent / f".{out.name}.segcheck-probe"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise SegcheckError(
            f"--out {out}: cannot write there ({exc.strerror or exc}); choose a folder you can write to"
        ) from None
    if out.is_dir():
        raise SegcheckError(f"--out {out} is a folder; give a file path such as {out / 'model.safetensors'}")
    return out


def _save_state(path: Path, epoch: int, module, optimizer, scheduler, recipe: Recipe, averaged=None) -> None:
    """What ``resume=True`` continues from: weights, optimizer, scheduler (and the running weight
    average, when the recipe averages) after ``epoch`` epochs."""
    state = {
        "epoch": epoch,
        "model": module.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "recipe": recipe.to_dict(),
    }
    if averaged is not None:
        state["averaged"] = averaged.state_dict()
    torch.save(state, path)


def _sidecar(
    model: str, dataset: str, data, segmodel, model_kwargs: dict, recipe: Recipe, seed: int, val_miou: float
) -> dict:
    """The checkpoint's YAML sidecar: what it is, what it was trained on and with, how it scored."""
    prompts = {"prompts": {c: list(p) for c, p in data.spec.prompts}} if data.spec.prompted else {}
    return {
        "model": model,
        "dataset": dataset,
        "data_identity": data.identity,
        "classes": list(data.spec.classes),
        **prompts,
        "mean": segmodel.mean.flatten().tolist(),
        "std": segmodel.std.flatten().tolist(),
        "model_kwargs": model_kwargs,
        "recipe": recipe.to_dict(),
        "seed": seed,
        "val_miou": round(val_miou, 4),
        "segcheck": __version__,
    }


def _device(name: str, world: int) -> torch.device:
    """The device to train on: under torchrun with CUDA, this rank's GPU."""
    dev = torch.device(resolve_device(name))
    if dev.type == "cuda" and world > 1:
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(dev)
    return dev


def _fresh(entry, spec, recipe: Recipe, dev: torch.device, model_args: dict) -> tuple[SegModel, dict]:
    """A new module of ``entry`` built with ``model_args`` and the heads the recipe trains
    (reconstruction, auxiliary), normalized with the dataset's declared mean/std, else the
    model's, else ImageNet's."""
    model_kwargs = dict(model_args)
    if recipe.recon:
        model_kwargs["recon_head"] = True
    if recipe.contrastive:
        model_kwargs["embed_head"] = True
    if entry.meta.get("aux_prefix"):
        model_kwargs["aux_loss"] = True
    module = guarded(
        f"model {entry.name!r}: its builder", build_module, entry=entry, num_classes=spec.num_classes, **model_kwargs
    )
    meta = module_meta(entry.meta, module)
    norm = architecture_normalization(spec, entry.meta, "training data", entry.name)
    segmodel = SegModel(
        module,
        mean=norm.mean,
        std=norm.std,
        binary=bool(meta.get("binary")),
        divisible_by=meta["divisible_by"] if "divisible_by" in meta else 1,
        device=dev,
        prompted=bool(meta.get("prompted")),
    )
    if segmodel.prompted != spec.prompted:
        raise SegcheckError(
            f"model {entry.name!r} {'takes' if segmodel.prompted else 'takes no'} text prompts, but the training "
            f"data {'declares none' if segmodel.prompted else 'asks by prompt'}; train a prompted model on a "
            "prompted dataset (and a closed-set model on a closed-set one)"
        )
    if dev.type == "cuda":
        module.to(memory_format=torch.channels_last)
    return segmodel, model_kwargs


def _loader(train_set, batch_size: int, sampler, epoch_seed: int, dev: torch.device):
    return torch.utils.data.DataLoader(
        train_set,
        batch_size=batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        drop_last=True,
        generator=torch.Generator().manual_seed(epoch_seed),
        num_workers=4 if dev.type == "cuda" else 0,
        pin_memory=dev.type == "cuda",
    )


def _restore(path: Path, module, optimizer, scheduler, recipe: Recipe, averaged=None) -> int:
    """Load a ``.resume.pt`` state (weights_only); return the epoch to continue from."""
    if not path.is_file():
        raise SegcheckError(f"nothing to resume: {path} does not exist (it is written after each epoch)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    # a setting added since the state was written counts at its default (the run did not use it)
    if {**Recipe("").to_dict(), **state["recipe"]} != recipe.to_dict():
        raise SegcheckError(
            f"{path} was written by recipe {state['recipe']}, not {recipe.to_dict()}; "
            "resume with the same recipe and flags, or start afresh"
        )
    module.load_state_dict(state["model"], strict=True)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if averaged is not None:
        averaged.load_state_dict(state["averaged"])
    return int(state["epoch"])


def _tensor(array, dtype) -> torch.Tensor:
    """``array`` as a tensor of ``dtype``, copied when it is read-only (a cached or memory-mapped
    sample): ``torch.from_numpy`` of a read-only array warns, and a write would reach the cache."""
    array = np.ascontiguousarray(array, dtype=dtype)
    return torch.from_numpy(array if array.flags.writeable else array.copy())


class _Pairs(torch.utils.data.Dataset):
    """A SegDataset as tensors (uint8 image (H, W, 3), int64 mask) for the DataLoader; a
    prompted dataset's samples also give their concept's index in ``spec.concepts``."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        image, mask = self.dataset[i]
        pair = _tensor(image, np.uint8), _tensor(mask, np.int64)
        if not self.dataset.spec.prompted:
            return pair
        return (*pair, self.dataset.spec.concepts.index(self.dataset.pair(i)[1]))
