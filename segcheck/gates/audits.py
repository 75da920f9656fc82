"""Audits: cheap structural checks of the model and the data, each with its own verdict."""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
import torch.nn.functional as F

from segcheck import SegcheckError
from segcheck.gates.result import GateResult
from segcheck.model import SegModel
from segcheck.target import Target
from segcheck.train.loop import criterion
from segcheck.train.recipes import get as get_recipe


def _probe(target: Target) -> torch.Tensor:
    images, _ = target.eval_set
    return target.model.normalize(images[:1])


def head_matches_classes(target: Target, cfg: dict | None = None) -> GateResult:
    """The model's output channels equal the dataset's classes (one channel for binary models)."""
    spec, model = target.spec, target.model
    with torch.no_grad():
        channels = model.logits(_probe(target)).shape[1]
    expected = 1 if model.binary else spec.num_classes
    passed = channels == expected
    message = f"head has {channels} channels, dataset has {spec.num_classes} classes (expected {expected} channels)"
    if not passed:
        message += (": the checkpoint was trained for another label set, or NUM_CLASSES is wrong; "
                    "evaluate with the dataset the model was trained on")
    return GateResult("head_matches_classes", channels, expected, passed, message, rule="value == threshold",
                      details={"classes": list(spec.classes)})


def output_size(target: Target, cfg: dict | None = None) -> GateResult:
    """Logits come out at input size, from a raw output that is the input or an integer downscale of it."""
    x = _probe(target)
    with torch.no_grad():
        raw = target.model.raw(x).shape[-2:]
        final = target.model.logits(x).shape[-2:]
    size = tuple(x.shape[-2:])
    stride = size[0] / raw[0] if raw[0] else float("inf")
    consistent = raw[0] <= size[0] and raw[1] <= size[1] and abs(size[1] / raw[1] - stride) / stride < 0.1
    passed = tuple(final) == size and consistent
    message = f"input {size}, raw output {tuple(raw)}, adapted logits {tuple(final)}"
    if not passed:
        message += (": the raw output is larger than the input or has another aspect ratio, so pixels cannot be "
                    "aligned with labels; check the decoder's strides and final upsampling")
    return GateResult("output_size", float(passed), 1.0, passed, message, rule="raw is a uniform downscale",
                      details={"input": size, "raw": tuple(raw), "stride": stride})


def finite_outputs(target: Target, cfg: dict | None = None) -> GateResult:
    """Every logit on the eval images and on uniform noise is finite (no NaN/inf)."""
    images, _ = target.eval_set
    _, clean_finite = target.clean
    noise = np.random.default_rng(0).uniform(0, 255, size=images[:4].shape).astype(np.float32)
    _, noise_finite = target.model.predict_pixels(noise, target.config["eval"]["batch_size"])
    passed = clean_finite and noise_finite
    message = f"logits finite on eval images: {clean_finite}, on uniform noise: {noise_finite}"
    if not passed:
        message += ": NaN/inf logits; check the checkpoint (diverged training), input normalization and fp16 overflow"
    return GateResult("finite_outputs", float(passed), 1.0, passed, message, rule="all finite")


def label_integrity(target: Target, cfg: dict | None = None) -> GateResult:
    """Eval masks hold only class ids, ignore_index or the anomaly id, and none is empty."""
    images, masks = target.eval_set
    spec = target.spec
    allowed = set(range(spec.num_classes)) | {spec.ignore_index}
    if spec.anomaly_index is not None:
        allowed.add(spec.anomaly_index)
    values = set(np.unique(masks).tolist())
    bad = sorted(values - allowed)
    labelled = (masks != spec.ignore_index).reshape(len(masks), -1).sum(1)
    empty = int((labelled == 0).sum())
    size_ok = images.shape[:3] == masks.shape
    passed = not bad and not empty and size_ok
    problems = []
    if bad:
        problems.append(f"labels {bad[:10]} outside 0..{spec.num_classes - 1}/ignore {spec.ignore_index} "
                        "(0/255 binary masks? 1-indexed labels? labelIds instead of trainIds?)")
    if empty:
        problems.append(f"{empty} masks have no labelled pixel")
    if not size_ok:
        problems.append(f"image size {images.shape[1:3]} != mask size {masks.shape[1:]}")
    message = (f"{len(masks)} masks, label values {sorted(values)[:12]}"
               + (": " + "; ".join(problems) if problems else ": all within the dataset's classes"))
    return GateResult("label_integrity", float(len(bad) + empty), 0.0, passed, message, rule="problems == 0",
                      details={"values": sorted(values), "empty_masks": empty})


# --- audits with settings (each reads its own config section) --------------------------------

def _fresh_module(target: Target, seed: int, **kwargs) -> torch.nn.Module:
    """A new module from the builder, initialized under ``seed`` without touching the global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return target.build_module(**kwargs)


def _batch(target: Target, count: int) -> tuple[np.ndarray, np.ndarray]:
    images, masks = target.eval_set
    return images[:count], masks[:count]


def _padded(model, x: torch.Tensor, y: torch.Tensor, ignore_index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``x`` padded (replicate) and ``y`` padded with ``ignore_index`` to multiples of ``divisible_by``."""
    d = model.divisible_by
    pad_h, pad_w = -x.shape[-2] % d, -x.shape[-1] % d
    if not (pad_h or pad_w):
        return x, y
    return (F.pad(x, (0, pad_w, 0, pad_h), mode="replicate"),
            F.pad(y, (0, pad_w, 0, pad_h), value=ignore_index))


def _training_loss(target: Target, model, images: np.ndarray, masks: np.ndarray):
    """The naive recipe's training loss of ``model.module`` (whatever mode it is in) on one batch."""
    x, y = _padded(model, model.normalize(images), torch.from_numpy(masks).to(model.device), target.spec.ignore_index)
    return criterion([model.module(x)], x, y, get_recipe("naive"), target.spec, model.binary)


def loss_at_init(target: Target, cfg: dict) -> GateResult:
    """The loss of a fresh model from the builder is about ln(C) (ln 2 for binary models).

    A randomly initialized head gives near-uniform class probabilities, so the per-pixel
    cross-entropy starts near ln(C); logits with standard deviation s add about s^2/2.
    Passes when |loss - ln C| <= ``cfg["tolerance"]`` x ln C: the default 0.5 admits logit
    spreads up to about 1.4 (ordinary initializations give 0.3-1) and fails on inits whose
    logits are an order of magnitude too large (unnormalized 0-255 inputs, a head scaled
    up, no normalization layers) or on a loss far below chance before training (pretrained
    head weights loaded, labels leaking into the input). The module runs in train mode on
    the first ``cfg["images"]`` eval images, initialized under ``cfg["seed"]``.
    """
    module = _fresh_module(target, cfg["seed"])
    segmodel = target.wrap(module)
    module.train()
    images, masks = _batch(target, cfg["images"])
    with torch.no_grad():
        loss = float(_training_loss(target, segmodel, images, masks))
    module.eval()
    classes = 2 if segmodel.binary else target.spec.num_classes
    expected = math.log(classes)
    deviation = abs(loss - expected) if math.isfinite(loss) else float("inf")
    limit = cfg["tolerance"] * expected
    passed = deviation <= limit
    measured = (f"loss at initialization {loss:.3f} vs ln({classes}) = {expected:.3f}: |difference| {deviation:.3f} "
                f"(max {limit:.3f} = {cfg['tolerance']:g} x ln {classes})")
    if passed:
        message = measured
    elif not math.isfinite(loss) or loss > expected:
        message = (f"{measured}: the fresh model is confidently wrong before training; its logits are far too large "
                   "(inputs not normalized, a head initialized with large weights, missing normalization layers)")
    else:
        message = (f"{measured}: the fresh model already beats chance before training; the builder loads trained head "
                   "weights, or the labels leak into the input")
    return GateResult("loss_at_init", deviation, limit, passed, message, rule="value <= threshold",
                      details={"loss": loss, "expected": expected, "classes": classes, "images": len(images)})


def gradient_coverage(target: Target, cfg: dict) -> GateResult:
    """Every trainable parameter of a fresh model receives a non-zero gradient from one batch.

    The model is built fresh (with ``aux_loss=True`` when the model's meta has an
    ``aux_prefix``, so an auxiliary head exists), run in train mode on the first
    ``cfg["images"]`` eval images, and the training loss (``train.loop.criterion``: CE + 0.5 x aux CE) is
    differentiated. Parameters whose gradient is missing or all zero are named.
    """
    kwargs = {"aux_loss": True} if target.model_entry.meta.get("aux_prefix") else {}
    module = _fresh_module(target, cfg["seed"], **kwargs)
    segmodel = target.wrap(module)
    module.train()
    images, masks = _batch(target, cfg["images"])
    named = [(name, p) for name, p in module.named_parameters() if p.requires_grad]
    loss = _training_loss(target, segmodel, images, masks)
    grads = (torch.autograd.grad(loss, [p for _, p in named], allow_unused=True) if loss.requires_grad
             else [None] * len(named))
    module.eval()
    dead = [name for (name, _), g in zip(named, grads) if g is None or not bool(torch.any(g != 0))]
    passed = not dead
    measured = f"{len(named) - len(dead)} of {len(named)} trainable parameter tensors receive a gradient"
    if passed:
        message = measured
    else:
        shown = ", ".join(dead[:8]) + (f", ... ({len(dead)} in all)" if len(dead) > 8 else "")
        message = (f"{measured}; none reaches {shown}: these weights never train; a head or branch that the forward "
                   "pass or the loss does not use (an auxiliary head left out of the loss), or a detached graph")
    return GateResult("gradient_coverage", float(len(dead)), 0.0, passed, message, rule="value <= threshold",
                      details={"without_gradient": dead, "trainable": len(named), "builder_kwargs": kwargs})


def _logit_tolerance(cfg: dict, logits: torch.Tensor) -> float:
    return cfg["atol"] + cfg["rtol"] * float(logits.abs().max())


def batch_independence(target: Target, cfg: dict) -> GateResult:
    """In eval mode an image's logits alone equal its logits inside a batch.

    Compares the first ``cfg["images"]`` eval images as one batch and one by one; passes
    when max |difference| <= ``cfg["atol"]`` + ``cfg["rtol"]`` x max |logit|.
    """
    model = target.model
    images, _ = _batch(target, cfg["images"])
    x = model.normalize(images)
    with torch.no_grad():
        together = model.logits(x)
        alone = torch.cat([model.logits(x[i:i + 1]) for i in range(len(x))])
    return _same_logits("batch_independence", model, together, alone, cfg,
                        f"between a batch of {len(x)} and single images",
                        "an image's prediction depends on the other images in its batch; normalization uses "
                        "batch statistics in eval mode (BatchNorm left in train mode, track_running_stats=False)")


def deterministic_eval(target: Target, cfg: dict) -> GateResult:
    """Two evaluation passes over the same images give the same logits.

    Runs the first ``cfg["images"]`` eval images twice in eval mode; passes when
    max |difference| <= ``cfg["atol"]`` + ``cfg["rtol"]`` x max |logit|.
    """
    model = target.model
    images, _ = _batch(target, cfg["images"])
    x = model.normalize(images)
    with torch.no_grad():
        first, second = model.logits(x), model.logits(x)
    return _same_logits("deterministic_eval", model, first, second, cfg, "between two eval passes",
                        "evaluation is random; dropout or other sampling stays active in eval mode "
                        "(F.dropout without training=self.training), or non-deterministic kernels")


def _same_logits(name: str, model, a: torch.Tensor, b: torch.Tensor, cfg: dict, between: str,
                 cause: str) -> GateResult:
    """Pass when max |a - b| <= the tolerance of ``cfg``; the message names ``cause`` on failure."""
    diff = float((a - b).abs().max()) if torch.isfinite(a).all() else float("inf")
    limit = _logit_tolerance(cfg, a)
    changed = float((model.labels(a) != model.labels(b)).float().mean())
    passed = diff <= limit
    measured = f"max |logit difference| {between} {diff:.3g} (max {limit:.3g}), {changed:.2%} of pixels change class"
    message = measured if passed else f"{measured}: {cause}"
    return GateResult(name, diff, limit, passed, message, rule="value <= threshold",
                      details={"images": len(a), "changed_pixels": changed})


def input_normalization(target: Target, cfg: dict) -> GateResult:
    """The normalized eval inputs have per-channel mean near 0 and standard deviation near 1.

    Correctly normalized data has mean 0 and std 1 per channel; other data normalized with
    ImageNet statistics stays within about +-0.7 and 0.5-1.5. Passes when every channel has
    |mean| <= ``cfg["max_abs_mean"]`` and ``cfg["min_std"]`` <= std <= ``cfg["max_std"]``:
    the defaults (1.0, 0.25, 4.0) leave room for such shifts but catch mistakes of a factor
    255 (mean/std given in 0-255 scale, or inputs normalized twice: std ~0.005; inputs fed
    in 0-255: std ~50+) and images stored as 0-1 values (std ~0).
    """
    images, _ = target.eval_set
    x = target.model.normalize(images).double()
    mean = x.mean(dim=(0, 2, 3)).cpu().numpy()
    std = x.std(dim=(0, 2, 3)).cpu().numpy()
    low, high = int(images.min()), int(images.max())
    worst_mean = float(np.abs(mean).max())
    ok_mean = worst_mean <= cfg["max_abs_mean"]
    ok_std = bool(np.all(std >= cfg["min_std"]) and np.all(std <= cfg["max_std"]))
    passed = ok_mean and ok_std
    fmt = lambda v: "(" + ", ".join(f"{a:.3g}" for a in v) + ")"  # noqa: E731
    measured = (f"normalized input mean {fmt(mean)}, std {fmt(std)} per channel (bounds |mean| <= "
                f"{cfg['max_abs_mean']:g}, std {cfg['min_std']:g}..{cfg['max_std']:g}); pixel range {low}..{high}")
    if passed:
        message = measured
    elif high <= 1:
        message = (f"{measured}: the images hold only 0/1 values; they were stored as 0-1 floats and cast to uint8 "
                   "(scale them to 0-255)")
    elif np.any(std < cfg["min_std"]):
        message = (f"{measured}: inputs are squashed to a tiny range; mean/std were given in 0-255 scale while "
                   "segcheck divides by 255 first, or the images were normalized twice")
    else:
        message = (f"{measured}: inputs are far from zero mean/unit variance; the model gets 0-255 values or the "
                   "mean/std do not belong to this data")
    return GateResult("input_normalization", worst_mean, cfg["max_abs_mean"], passed, message,
                      rule=f"value <= threshold, std {cfg['min_std']}..{cfg['max_std']}",
                      details={"mean": mean.tolist(), "std": std.tolist(), "pixel_range": [low, high]})


def cpu_cuda_agreement(target: Target, cfg: dict, device: str = "cuda") -> GateResult:
    """The model predicts the same classes on the CPU and on ``device`` (CUDA by default).

    Copies of the module under test run the first ``cfg["images"]`` eval images on both;
    passes when the fraction of pixels with the same class is >= ``cfg["min_agreement"]``.
    The max |logit difference| is reported (TF32/cuDNN give small differences by design).
    Raises ``SegcheckError`` when ``device`` is CUDA and CUDA is not available.
    """
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SegcheckError("cpu_cuda_agreement needs CUDA, which is not available here (run it on a GPU machine)")
    base = target.model
    images, _ = _batch(target, cfg["images"])
    outputs = {}
    for where in ("cpu", device):
        model = SegModel(copy.deepcopy(base.module), mean=base.mean.flatten().tolist(), std=base.std.flatten().tolist(),
                         binary=base.binary, divisible_by=base.divisible_by, device=where, threshold=base.threshold)
        with torch.no_grad():
            outputs[where] = model.logits(model.normalize(images)).float().cpu()
    cpu, other = outputs["cpu"], outputs[device]
    agreement = float((base.labels(cpu) == base.labels(other)).float().mean())
    diff = float((cpu - other).abs().max())
    passed = agreement >= cfg["min_agreement"]
    measured = (f"class agreement cpu vs {device} {agreement:.4f} (min {cfg['min_agreement']:g}), "
                f"max |logit difference| {diff:.3g}")
    if passed:
        message = measured
    else:
        message = (f"{measured}: the model computes something else on {device}; device-dependent code paths, "
                   "half precision overflow, or uninitialized memory in a custom kernel")
    return GateResult("cpu_cuda_agreement", agreement, cfg["min_agreement"], passed, message, rule="value >= threshold",
                      details={"images": len(images), "max_logit_difference": diff, "device": device})
