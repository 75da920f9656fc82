"""The bundled trainer: a flat loop (data, augment, criterion, train_one_epoch, evaluate, train)."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from segcheck import SegcheckError, __version__, checkpoint, config as segconfig, plugins as segplugins
from segcheck.evaluate import score
from segcheck.model import SegModel, output_tensor
from segcheck.target import Target
from segcheck.train import augment
from segcheck.train.recipes import Recipe, get as get_recipe

NOISE_SIGMA = 0.05  # pixel scale 0-1, for the consistency loss


@dataclass(frozen=True)
class TrainResult:
    path: Path
    val_miou: float
    seconds: float
    images_per_second: float


def criterion(output, x: torch.Tensor, y: torch.Tensor, model: torch.nn.Module, segmodel: SegModel,
              recipe: Recipe, ignore_index: int) -> torch.Tensor:
    """The recipe's loss for one batch: CE (+0.5 aux CE) + consistency + reconstruction + OE."""
    logits = _at_size(output_tensor(output), y.shape[-2:])
    loss = F.cross_entropy(logits, y, ignore_index=ignore_index)
    if isinstance(output, dict) and output.get("aux") is not None:
        loss = loss + 0.5 * F.cross_entropy(_at_size(output["aux"], y.shape[-2:]), y, ignore_index=ignore_index)
    if recipe.recon:
        if not isinstance(output, dict) or "recon" not in output:
            raise SegcheckError("recipe uses recon but the model returned no 'recon' output; "
                                "its builder must accept recon_head=True")
        loss = loss + recipe.recon * F.mse_loss(_at_size(output["recon"], x.shape[-2:]), x)
    if recipe.consistency:
        noisy = x + torch.randn_like(x) * (NOISE_SIGMA / segmodel.std)
        noisy_logits = _at_size(output_tensor(model(noisy)), y.shape[-2:])
        kl = F.kl_div(noisy_logits.float().log_softmax(1), logits.float().log_softmax(1).detach(),
                      log_target=True, reduction="batchmean") / (y.shape[-1] * y.shape[-2])
        loss = loss + recipe.consistency * kl
    if recipe.outlier_exposure:
        noise = torch.randn_like(x)
        noise_logits = output_tensor(model(noise)).float()
        loss = loss + recipe.outlier_exposure * -(noise_logits.log_softmax(1).mean())
    return loss


def _at_size(t: torch.Tensor, size) -> torch.Tensor:
    return t if t.shape[-2:] == size else F.interpolate(t, size=size, mode="bilinear", align_corners=False)


def train_one_epoch(model, segmodel, loader, optimizer, scheduler, recipe, spec, g, device, bar) -> float:
    model.train()
    total, seen = 0.0, 0
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
    for images, masks in loader:
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
            loss = criterion(model(x), x, y, model, segmodel, recipe, spec.ignore_index)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        total += float(loss.detach()) * len(x)
        seen += len(x)
        bar.update(len(x))
        bar.set_postfix(loss=f"{total / seen:.3f}")
    return total / max(seen, 1)


def evaluate(segmodel: SegModel, target: Target) -> float:
    """mIoU of ``segmodel`` on the target's eval set."""
    segmodel.module.eval()
    images, masks = target.eval_set
    pred, _ = segmodel.predict_pixels(images, target.config["eval"]["batch_size"])
    return score(pred, masks, target.spec)


def train(model: str, dataset: str, recipe: str | Recipe = "naive", *, out: Path, device: str = "auto",
          seed: int = 0, data_root: Path | None = None, plugin_specs=(), progress: bool = True,
          **overrides) -> TrainResult:
    """Train registered ``model`` on registered ``dataset`` and save safetensors + YAML sidecar.

    ``overrides`` change recipe settings (e.g. ``epochs=3``). Deterministic for a seed on CPU.
    """
    recipe = (get_recipe(recipe) if isinstance(recipe, str) else recipe).with_(**overrides)
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    loaded = segplugins.load(plugin_specs)
    target = Target(loaded, segconfig.load(), model, dataset, checkpoint=Path("none"), data_root=data_root,
                    device=device)
    spec, dev = target.spec, torch.device(target.device)
    model_kwargs = {}
    if recipe.recon:
        model_kwargs["recon_head"] = True
    if target.model_entry.meta.get("aux_prefix"):
        model_kwargs["aux_loss"] = True
    module = target.build_module(**model_kwargs)
    segmodel = target.wrap(module)
    if dev.type == "cuda":
        module.to(memory_format=torch.channels_last)
    train_set = target.dataset("train")
    loader = torch.utils.data.DataLoader(
        _Pairs(train_set), batch_size=recipe.batch_size, shuffle=True, drop_last=True,
        generator=torch.Generator().manual_seed(seed), num_workers=4 if dev.type == "cuda" else 0,
        pin_memory=dev.type == "cuda")
    optimizer = torch.optim.AdamW(module.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=recipe.lr, total_steps=recipe.epochs * len(loader))
    start = time.perf_counter()
    with tqdm(total=recipe.epochs * len(loader) * recipe.batch_size, unit="img", disable=not progress,
              desc=f"train {model} ({recipe.name})") as bar:
        for _ in range(recipe.epochs):
            train_one_epoch(module, segmodel, loader, optimizer, scheduler, recipe, spec, g, dev, bar)
    seconds = time.perf_counter() - start
    val_miou = evaluate(segmodel, target)
    sidecar = {
        "model": model, "dataset": dataset, "data_identity": train_set.identity,
        "classes": list(spec.classes), "mean": list(segmodel.mean.flatten().tolist()),
        "std": list(segmodel.std.flatten().tolist()), "model_kwargs": model_kwargs,
        "recipe": recipe.to_dict(), "seed": seed, "val_miou": round(val_miou, 4), "segcheck": __version__,
    }
    path = checkpoint.save(module, Path(out), sidecar)
    images = recipe.epochs * len(loader) * recipe.batch_size
    return TrainResult(path, val_miou, seconds, images / seconds)


class _Pairs(torch.utils.data.Dataset):
    """A SegDataset as tensors (uint8 image (H, W, 3), int64 mask) for the DataLoader."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        image, mask = self.dataset[i]
        return torch.from_numpy(np.ascontiguousarray(image)), torch.from_numpy(np.asarray(mask, dtype=np.int64))
