"""The bundled trainer: a flat loop (data, augment, criterion, train_one_epoch, evaluate, train)."""

from __future__ import annotations

import contextlib
import functools
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from segcheck import SegcheckError, __version__, checkpoint
from segcheck.data import DatasetSpec, EvalData
from segcheck.loss import pixel_loss
from segcheck.model import SegModel, first_normalization, output_tensor
from segcheck.target import build_module, resolve_device
from segcheck.train import augment
from segcheck.train.recipes import Recipe
from segcheck.train.recipes import get as get_recipe

NOISE_SIGMA = 0.05  # pixel scale 0-1, for the consistency loss
AUX_WEIGHT = 0.5  # torchvision's auxiliary-loss weight


@dataclass(frozen=True)
class TrainResult:
    path: Path
    val_miou: float
    seconds: float
    images_per_second: float


def forward(model: torch.nn.Module, x: torch.Tensor, recipe: Recipe, std: torch.Tensor) -> list:
    """One forward pass over the clean batch plus the recipe's extra views, split back.

    Returns ``[clean]``, then a noisy copy (sigma 0.05 in pixel scale) when the recipe uses
    consistency, then pure noise when it uses outlier exposure: a single pass keeps DDP and
    batch-norm statistics simple.
    """
    views = [x]
    if recipe.consistency:
        views.append(x + torch.randn_like(x) * (NOISE_SIGMA / std))
    if recipe.outlier_exposure:
        views.append(torch.randn_like(x))
    output = model(torch.cat(views) if len(views) > 1 else x)
    return _split(output, len(views))


def _split(output, n: int) -> list:
    if n == 1:
        return [output]
    if isinstance(output, dict):
        parts = {k: v.chunk(n) for k, v in output.items() if v is not None}
        return [{k: v[i] for k, v in parts.items()} for i in range(n)]
    return list(output_tensor(output).chunk(n))


def criterion(
    outputs: list,
    x: torch.Tensor,
    y: torch.Tensor,
    recipe: Recipe,
    spec: DatasetSpec,
    binary: bool = False,
    class_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """The recipe's loss for one batch: ``pixel_loss`` (+ AUX_WEIGHT x aux) + consistency +
    reconstruction + OE."""
    clean, extra = outputs[0], list(outputs[1:])
    logits = _at_size(output_tensor(clean), y.shape[-2:]).float()
    loss = pixel_loss(logits, y, spec, binary, class_weights)
    if isinstance(clean, dict) and clean.get("aux") is not None:
        loss = loss + AUX_WEIGHT * pixel_loss(
            _at_size(clean["aux"], y.shape[-2:]).float(), y, spec, binary, class_weights
        )
    if recipe.recon:
        if not isinstance(clean, dict) or "recon" not in clean:
            raise SegcheckError(
                "recipe uses recon but the model returned no 'recon' output; its builder must accept recon_head=True"
            )
        loss = loss + recipe.recon * F.mse_loss(_at_size(clean["recon"], x.shape[-2:]).float(), x)
    if recipe.consistency:
        noisy = _at_size(output_tensor(extra.pop(0)), y.shape[-2:]).float()
        kl = F.kl_div(noisy.log_softmax(1), logits.log_softmax(1).detach(), log_target=True, reduction="none")
        loss = loss + recipe.consistency * kl.sum(1).mean()
    if recipe.outlier_exposure:
        noise_logits = output_tensor(extra.pop(0)).float()
        loss = loss + recipe.outlier_exposure * -(noise_logits.log_softmax(1).mean())
    return loss


def _at_size(t: torch.Tensor, size) -> torch.Tensor:
    return t if t.shape[-2:] == size else F.interpolate(t, size=size, mode="bilinear", align_corners=False)


def train_one_epoch(model, segmodel, loader, optimizer, scheduler, recipe, spec, g, device, bar) -> float:
    model.train()
    total, seen = 0.0, 0
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
    for images, masks in loader:
        if recipe.photometric:
            images = augment.photometric(images, g)
        x = segmodel.normalize(images.to(device, non_blocking=True))
        y = masks.to(device, non_blocking=True).long()
        if recipe.flips:
            x, y = augment.flips(x, y, g)
        if recipe.rolls:
            x, y = augment.rolls(x, y, g)
        if recipe.scale_crops:
            x, y = augment.scale_crops(x, y, g, spec.ignore_index)
        if device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        with amp:
            loss = criterion(forward(model, x, recipe, segmodel.std), x, y, recipe, spec, segmodel.binary)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        total += float(loss.detach()) * len(x)
        seen += len(x)
        bar.update(len(x))
        bar.set_postfix(loss=f"{total / seen:.3f}")
    return total / max(seen, 1)


def fit(
    segmodel: SegModel,
    batch: Callable[[int], tuple[torch.Tensor, torch.Tensor]],
    steps: int,
    lr: float,
    spec: DatasetSpec,
    stop: Callable[[int], bool] | None = None,
    class_weights: torch.Tensor | None = None,
) -> int:
    """Train ``segmodel.module`` with the naive recipe's loss on ``batch(step)`` -> (normalized x, y).

    ``class_weights`` weight the loss per class. Runs at most ``steps`` Adam steps; after each,
    ``stop(step)`` may end training early (it is called with the module in eval mode). Returns
    the number of steps taken.
    """
    module = segmodel.module
    optimizer = torch.optim.Adam(module.parameters(), lr=lr)
    naive = get_recipe("naive")
    for step in range(1, steps + 1):
        module.train()
        x, y = batch(step)
        loss = criterion([module(x)], x, y, naive, spec, segmodel.binary, class_weights)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if stop is not None:
            module.eval()
            if stop(step):
                return step
    module.eval()
    return steps


def evaluate(segmodel: SegModel, data: EvalData) -> float:
    """mIoU of ``segmodel`` on the eval sample ``data``."""
    segmodel.module.eval()
    return data.score(segmodel.predict_pixels(data.images, data.batch_size)[0])


def _splits(plugins, dataset: str, data_root: Path | None):
    """``split -> SegDataset`` of registered ``dataset`` (a file dataset needs ``data_root``)."""
    entry = plugins.datasets.get(dataset)
    if entry.meta.get("needs_root") and data_root is None:
        raise SegcheckError(f"dataset {dataset!r} reads files: pass --data-root DIR")
    return functools.partial(entry.obj, data_root)


def _eval_sample(config: dict) -> dict:
    ev = config["eval"]
    return {"split": ev["split"], "size": ev["size"], "seed": ev["seed"], "batch_size": ev["batch_size"]}


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
    **overrides,
) -> TrainResult:
    """Train registered ``model`` on registered ``dataset`` and save safetensors + YAML sidecar.

    ``overrides`` change recipe settings (e.g. ``epochs=3``). Deterministic for a seed on CPU:
    every epoch reseeds its shuffling, augmentation and noise from ``(seed, epoch)``, so a run
    resumed (``resume=True``) from ``out``'s ``.resume.pt`` state ends with the same weights.
    Under ``torchrun`` it trains with DistributedDataParallel; rank 0 writes the files.
    """
    recipe = (get_recipe(recipe) if isinstance(recipe, str) else recipe).with_(**overrides)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rank, world = _distributed()
    from segcheck.session import open_session  # the session loads the gates, which use this module

    session = open_session(plugin_specs)
    entry, splits = session.plugins.models.get(model), _splits(session.plugins, dataset, data_root)
    train_data = splits("train")
    spec, dev = train_data.spec, torch.device(resolve_device(device))
    if dev.type == "cuda" and world > 1:
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(dev)
    model_kwargs = {}
    if recipe.recon:
        model_kwargs["recon_head"] = True
    if entry.meta.get("aux_prefix"):
        model_kwargs["aux_loss"] = True
    torch.manual_seed(seed)
    module = build_module(entry, spec.num_classes, **model_kwargs)
    norm = first_normalization(
        (spec.mean, spec.std, "dataset"), (entry.meta.get("mean"), entry.meta.get("std"), "model")
    )
    segmodel = SegModel(
        module,
        mean=norm.mean,
        std=norm.std,
        binary=bool(entry.meta.get("binary")),
        divisible_by=entry.meta.get("divisible_by", 1),
        device=dev,
    )
    if dev.type == "cuda":
        module.to(memory_format=torch.channels_last)
    net = module
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(module, device_ids=[dev.index] if dev.type == "cuda" else None)
    train_set = _Pairs(train_data)
    sampler = torch.utils.data.DistributedSampler(train_set, seed=seed, drop_last=True) if world > 1 else None
    steps_per_epoch = len(train_set) // world // recipe.batch_size
    optimizer = torch.optim.AdamW(module.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=recipe.lr, total_steps=recipe.epochs * steps_per_epoch
    )
    state_path = out.with_suffix(".resume.pt")
    first_epoch = _restore(state_path, module, optimizer, scheduler, recipe) if resume else 0
    start = time.perf_counter()
    per_epoch = steps_per_epoch * recipe.batch_size  # images one rank sees per epoch
    done = (recipe.epochs - first_epoch) * per_epoch * world
    with tqdm(
        total=recipe.epochs * per_epoch,
        initial=first_epoch * per_epoch,
        unit="img",
        disable=not progress or rank != 0,
        desc=f"train {model} ({recipe.name})",
    ) as bar:
        for epoch in range(first_epoch, recipe.epochs):
            epoch_seed = seed * 100_003 + epoch  # each epoch reseeded: resuming replays it exactly
            torch.manual_seed(epoch_seed)
            g = torch.Generator().manual_seed(epoch_seed)
            if sampler is not None:
                sampler.set_epoch(epoch)
            loader = torch.utils.data.DataLoader(
                train_set,
                batch_size=recipe.batch_size,
                shuffle=sampler is None,
                sampler=sampler,
                drop_last=True,
                generator=torch.Generator().manual_seed(epoch_seed),
                num_workers=4 if dev.type == "cuda" else 0,
                pin_memory=dev.type == "cuda",
            )
            train_one_epoch(net, segmodel, loader, optimizer, scheduler, recipe, spec, g, dev, bar)
            if rank == 0:
                torch.save(
                    {
                        "epoch": epoch + 1,
                        "model": module.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "recipe": recipe.to_dict(),
                    },
                    state_path,
                )
    seconds = time.perf_counter() - start
    val_miou = evaluate(segmodel, EvalData.from_dataset(splits, **_eval_sample(session.config)))
    if rank == 0:
        sidecar = {
            "model": model,
            "dataset": dataset,
            "data_identity": train_set.dataset.identity,
            "classes": list(spec.classes),
            "mean": segmodel.mean.flatten().tolist(),
            "std": segmodel.std.flatten().tolist(),
            "model_kwargs": model_kwargs,
            "recipe": recipe.to_dict(),
            "seed": seed,
            "val_miou": round(val_miou, 4),
            "segcheck": __version__,
        }
        checkpoint.save(module, out, sidecar)
        state_path.unlink(missing_ok=True)
    return TrainResult(out, val_miou, seconds, done / seconds if seconds else float("nan"))


def _restore(path: Path, module, optimizer, scheduler, recipe: Recipe) -> int:
    """Load a ``.resume.pt`` state (weights_only); return the epoch to continue from."""
    if not path.is_file():
        raise SegcheckError(f"nothing to resume: {path} does not exist (it is written after each epoch)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state["recipe"] != recipe.to_dict():
        raise SegcheckError(
            f"{path} was written by recipe {state['recipe']}, not {recipe.to_dict()}; "
            "resume with the same recipe and flags, or start afresh"
        )
    module.load_state_dict(state["model"], strict=True)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    return int(state["epoch"])


class _Pairs(torch.utils.data.Dataset):
    """A SegDataset as tensors (uint8 image (H, W, 3), int64 mask) for the DataLoader."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        image, mask = self.dataset[i]
        return torch.from_numpy(np.ascontiguousarray(image)), torch.from_numpy(np.asarray(mask, dtype=np.int64))
