"""The training loop's pieces, flat and importable: forward (with the recipe's extra views),
criterion, train_one_epoch, fit (the gates' small loop) and evaluate."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from segcheck import SegcheckError, perturb
from segcheck.data import DatasetSpec, EvalData
from segcheck.loss import dice_loss, pixel_contrast_loss, pixel_loss
from segcheck.model import SegModel, output_tensor, seeded
from segcheck.train import augment
from segcheck.train.recipes import Recipe
from segcheck.train.recipes import get as get_recipe

NOISE_SIGMA = 0.05  # pixel scale 0-1, for the consistency loss
AUX_WEIGHT = 0.5  # torchvision's auxiliary-loss weight


def forward(
    model: torch.nn.Module, x: torch.Tensor, recipe: Recipe, std: torch.Tensor, prompts=None, view=None
) -> list:
    """One forward pass over the clean batch plus the recipe's extra views, split back.

    Returns ``[clean]``, then a noisy copy (sigma 0.05 in pixel scale) when the recipe uses
    consistency, then ``view`` (the photometric view, same shape as ``x``) when it uses
    photometric consistency, then pure noise when it uses outlier exposure: a single pass keeps
    DDP and batch-norm statistics simple. A prompted model gets ``prompts`` (one per image) for
    every view.
    """
    views = [x]
    if recipe.consistency:
        views.append(x + torch.randn_like(x) * (NOISE_SIGMA / std))
    if recipe.photometric_consistency:
        if view is None or view.shape != x.shape:
            raise SegcheckError("recipe uses photometric_consistency, but no photometric view of the batch was given")
        views.append(view)
    if recipe.outlier_exposure:
        views.append(torch.randn_like(x))
    batch = torch.cat(views) if len(views) > 1 else x
    output = model(batch) if prompts is None else model(batch, list(prompts) * len(views))
    return _split(output, len(views))


def _split(output, n: int) -> list:
    if n == 1:
        return [output]
    if isinstance(output, dict):  # torchvision's {"out", "aux"}, a Hugging Face ModelOutput, recon heads
        parts = {k: v.chunk(n) for k, v in output.items() if isinstance(v, torch.Tensor)}
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
    pasted: torch.Tensor | None = None,
    view_shift: tuple[int, int] | None = None,
) -> torch.Tensor:
    """The recipe's loss for one batch: ``pixel_loss`` (+ AUX_WEIGHT x aux) + input-gradient
    penalty + consistency + photometric consistency + reconstruction + pixel contrast + OE + entropy maximization on the
    ``pasted`` outlier pixels (B, H, W). The input-gradient penalty needs ``x`` to require grad.
    ``view_shift`` ``(offset, axis)``: the photometric view was translated so (``augment.view_shift``)."""
    clean, extra = outputs[0], list(outputs[1:])
    logits = _at_size(output_tensor(clean), y.shape[-2:]).float()
    if (recipe.balanced or recipe.focal) and not binary:
        raise SegcheckError(
            f"recipe {recipe.name!r} uses balanced/focal, which are losses of a binary (one sigmoid channel) model"
        )
    loss = pixel_loss(logits, y, spec, binary, class_weights, focal=recipe.focal)
    if recipe.input_gradient:
        if not x.requires_grad:
            raise SegcheckError("recipe uses input_gradient, but the input batch does not require grad")
        (grad,) = torch.autograd.grad(loss, x, create_graph=True)
        loss = loss + recipe.input_gradient * torch.exp(-grad.float().norm())
    if recipe.dice:
        loss = loss + recipe.dice * dice_loss(logits, y, spec, binary)
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
    if recipe.contrastive:
        if not isinstance(clean, dict) or "embed" not in clean:
            raise SegcheckError(
                "recipe uses contrastive but the model returned no 'embed' output; its builder must accept "
                "embed_head=True"
            )
        loss = loss + recipe.contrastive * pixel_contrast_loss(_at_size(clean["embed"], y.shape[-2:]), y, spec)
    if recipe.consistency:
        loss = loss + recipe.consistency * _kl_from_clean(logits, extra.pop(0))
    if recipe.photometric_consistency:
        loss = loss + recipe.photometric_consistency * _kl_from_clean(logits, extra.pop(0), view_shift)
    if recipe.outlier_exposure:
        noise_logits = output_tensor(extra.pop(0)).float()
        loss = loss + recipe.outlier_exposure * -(noise_logits.log_softmax(1).mean())
    if recipe.outlier_paste and binary:
        raise SegcheckError("outlier_paste needs a softmax over classes; a binary (one-channel) model has none")
    if recipe.outlier_paste and pasted is not None and pasted.any():
        uniform = -logits.log_softmax(1).mean(1)  # cross-entropy to the uniform distribution, per pixel
        loss = loss + recipe.outlier_paste * uniform[pasted].mean()
    return loss


def _kl_from_clean(logits: torch.Tensor, view_output, shift: tuple[int, int] | None = None) -> torch.Tensor:
    """KL(clean || view) per pixel, summed over classes and averaged over pixels; the clean
    ``logits`` (B, K, H, W) are the fixed target (detached). A view translated by ``shift``
    ``(offset, axis)`` is compared with the clean logits translated alike, where both hold content."""
    view = _at_size(output_tensor(view_output), logits.shape[-2:]).float()
    target = logits.detach()
    if shift is not None:
        offset, axis = shift
        moved, _ = perturb.valid_slices(4, offset, axis)
        view, target = view[moved], perturb.shift(target, offset, axis)[moved]
    kl = F.kl_div(view.log_softmax(1), target.log_softmax(1), log_target=True, reduction="none")
    return kl.sum(1).mean()


def _at_size(t: torch.Tensor, size) -> torch.Tensor:
    return t if t.shape[-2:] == size else F.interpolate(t, size=size, mode="bilinear", align_corners=False)


def sample_prompts(concepts: torch.Tensor, spec: DatasetSpec, g: torch.Generator) -> list[str]:
    """One prompt per sample: a random one of its concept's prompts (concepts are indices into
    ``spec.concepts``)."""
    prompts = []
    for concept in concepts.tolist():
        choices = spec.prompts_of(spec.concepts[concept])
        prompts.append(choices[int(torch.randint(len(choices), (1,), generator=g))])
    return prompts


def class_weights(recipe: Recipe, dataset, samples: int = 256) -> torch.Tensor | None:
    """``recipe.balanced``: the weights (1, (1 - f) / f) of a binary dataset, ``f`` the foreground
    fraction of the counted pixels of its first ``samples`` masks; otherwise None."""
    if not recipe.balanced:
        return None
    spec, positive, counted = dataset.spec, 0, 0
    for i in range(min(samples, len(dataset))):
        mask = torch.as_tensor(dataset[i][1])
        keep = spec.counted(mask)
        positive, counted = positive + int((mask[keep] == 1).sum()), counted + int(keep.sum())
    if positive == 0:
        raise SegcheckError(f"recipe {recipe.name!r} balances the positives, but the first {samples} masks have none")
    fraction = positive / counted
    return torch.tensor([1.0, (1 - fraction) / fraction])


def train_one_epoch(
    model, segmodel, loader, optimizer, scheduler, recipe, spec, g, device, bar, class_weights=None
) -> float:
    model.train()
    total, seen = 0.0, 0
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
    for batch in loader:
        images, masks = batch[:2]
        prompts = sample_prompts(batch[2], spec, g) if len(batch) > 2 else None
        if recipe.photometric:
            images = augment.photometric(images, g)
        x = segmodel.normalize(images.to(device, non_blocking=True))
        y = masks.to(device, non_blocking=True).long()
        view = None
        if recipe.photometric_consistency:  # stacked on the channels, the view moves with the image
            view = augment.photometric(images, g, p=1.0)
            if recipe.jpeg_views:
                view = augment.jpeg_views(images, view, g, recipe.jpeg_views)
            if recipe.jpeg_on_views:  # a round trip of the view itself, on top of its photometric change
                view = augment.jpeg_views(view, view, g, recipe.jpeg_on_views)
            view = segmodel.normalize(view.to(device, non_blocking=True))
            x = torch.cat([x, view], 1)
        if recipe.flips:
            x, y = augment.flips(x, y, g)
        if recipe.rolls:
            x, y = augment.rolls(x, y, g)
        if recipe.shifts:
            x, y = augment.shifts(x, y, g, spec.ignore_index)
        if recipe.scale_crops:
            x, y = augment.scale_crops(x, y, g, spec.ignore_index)
        if view is not None:
            x, view = x.chunk(2, 1)
        pasted = None
        if recipe.outlier_paste:
            x, pasted = augment.paste_outliers(x, g, segmodel.mean, segmodel.std)
            y = y.masked_fill(pasted, spec.ignore_index)
            if view is not None:
                view = torch.where(pasted[:, None], x, view)
        moved = augment.view_shift(x.shape[-2:], g, recipe.view_shift) if view is not None else None
        if moved is not None:  # the view translated (pasted shapes with it); its KL target is moved alike
            view = perturb.shift(view, *moved)
        x, y = segmodel.pad(x, y, spec.ignore_index)
        if view is not None:
            view = segmodel.pad(view)
        if pasted is not None:
            pasted = F.pad(pasted, (0, x.shape[-1] - pasted.shape[-1], 0, x.shape[-2] - pasted.shape[-2]))
        if device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        if recipe.input_gradient:
            x.requires_grad_(True)
        with amp:
            outputs = forward(model, x, recipe, segmodel.std, prompts, view)
            loss = criterion(
                outputs, x, y, recipe, spec, segmodel.binary, class_weights, pasted=pasted, view_shift=moved
            )
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
    seed: int = 0,
) -> int:
    """Train ``segmodel.module`` with the naive recipe's loss on ``batch(step)`` -> (normalized x, y).

    ``class_weights`` weight the loss per class. Runs at most ``steps`` Adam steps; after each,
    ``stop(step)`` may end training early (it is called with the module in eval mode). Inputs
    are padded to ``divisible_by`` (masks with ignore), and the random draws of train mode
    (dropout, drop-path) come from ``seed``, not the global RNG. Returns the steps taken.
    """
    with seeded(seed, segmodel.device):
        return _fit(segmodel, batch, steps, lr, spec, stop, class_weights)


def _fit(segmodel, batch, steps, lr, spec, stop, class_weights) -> int:
    module = segmodel.module
    optimizer = torch.optim.Adam(module.parameters(), lr=lr)
    naive = get_recipe("naive")
    for step in range(1, steps + 1):
        module.train()
        x, y = segmodel.pad(*batch(step), spec.ignore_index)
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


def foreground_iou(segmodel: SegModel, data: EvalData) -> dict[str, float]:
    """A prompted model's foreground IoU per concept on ``data`` (canonical prompts): what it is
    judged by, where a two-class mIoU hides a collapse to background."""
    from segcheck.gates.prompted import confusion, scores

    segmodel.module.eval()
    pred = segmodel.predict_pixels(data.images, data.batch_size, data.prompts())[0] == 1
    concepts = np.array(data.concepts)
    return {
        c: scores(confusion(pred[concepts == c], data.masks[concepts == c], data.spec))["iou"]
        for c in data.spec.concepts
        if (concepts == c).any()
    }


def evaluate(segmodel: SegModel, data: EvalData) -> float:
    """mIoU of ``segmodel`` on the eval sample ``data`` (a prompted model: canonical prompts)."""
    segmodel.module.eval()
    prompts = data.prompts() if segmodel.prompted else None
    return data.score(segmodel.predict_pixels(data.images, data.batch_size, prompts)[0])
