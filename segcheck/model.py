"""Adapter: any segmentation ``nn.Module`` -> logits (B, C, H, W) at input size; the model under test."""

from __future__ import annotations

import copy
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from segcheck import SegcheckError
from segcheck.data import IMAGENET_MEAN, IMAGENET_STD, normalization_ok


def output_tensor(output) -> torch.Tensor:
    """The logits in a model's raw output: a tensor, a dict with ``"out"`` (or ``"logits"``: a
    Hugging Face ``ModelOutput``, or a split of one), ``.logits``, or a tuple whose first item
    is the mask."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, dict) and ("out" in output or "logits" in output):
        return output["out"] if "out" in output else output["logits"]
    if hasattr(output, "logits"):
        return output.logits
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]  # (mask, aux) as smp returns with aux_params
    what = type(output).__name__
    if isinstance(output, dict):
        what += f" with keys {sorted(map(str, output))[:6]}"
    elif isinstance(output, (tuple, list)):
        what += f" of {len(output)} item(s)" + (f", the first a {type(output[0]).__name__}" if output else "")
    raise SegcheckError(
        f"model output is a {what}; expected a tensor, a dict with 'out' or 'logits', an object with .logits "
        "or a tuple whose first item is the mask logits"
    )


class SegModel:
    """A module with its input normalization, giving logits at input size.

    ``binary`` models have one sigmoid channel for two classes; ``predict`` thresholds
    it at ``threshold``. Inputs whose sides are not multiples of ``divisible_by`` are
    padded (replicate) and the logits cropped back. A ``prompted`` module is called as
    ``module(x, prompts)`` with one text prompt per image (its plugin turns text into what
    the network needs); every call then takes ``prompts``, and no other call does.
    """

    def __init__(
        self,
        module: torch.nn.Module,
        *,
        mean,
        std,
        binary: bool = False,
        divisible_by: int = 1,
        device: str | torch.device = "cpu",
        threshold: float = 0.5,
        prompted: bool = False,
    ):
        _check_not_meta(module)
        self.module = module.to(device).eval()
        self.prompted = prompted
        self.device = torch.device(device)
        self.mean = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self.binary = binary
        self.divisible_by = max(1, int(divisible_by))
        self.threshold = threshold

    def normalize(self, pixels) -> torch.Tensor:
        """Pixels (N, H, W, 3) in 0..255 (uint8 or float) -> normalized float (N, 3, H, W) on device."""
        x = torch.as_tensor(np.asarray(pixels) if not isinstance(pixels, torch.Tensor) else pixels)
        x = x.to(self.device, torch.float32).permute(0, 3, 1, 2) / 255.0
        return (x - self.mean) / self.std

    def pad(self, x: torch.Tensor, y: torch.Tensor | None = None, ignore_index: int = 255):
        """``x`` (B, C, H, W) padded at the bottom and right to multiples of ``divisible_by``
        (replicate), the size every call of the module gets; with masks ``y`` (B, H, W) also
        ``y`` padded with ``ignore_index``, as a pair."""
        d = self.divisible_by
        pad_h, pad_w = -x.shape[-2] % d, -x.shape[-1] % d
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
            y = None if y is None else F.pad(y, (0, pad_w, 0, pad_h), value=ignore_index)
        return x if y is None else (x, y)

    def call(self, x: torch.Tensor, prompts=None, module=None):
        """``module`` (default: this one) on ``x`` as it is, with ``prompts`` when prompted:
        the raw output; an error when prompts are missing, unwanted or not one per image."""
        module = self.module if module is None else module
        if not self.prompted:
            if prompts is not None:
                raise SegcheckError("this model takes no text prompt; call it without prompts")
            return module(x)
        if prompts is None or isinstance(prompts, str) or len(prompts) != len(x):
            given = "none" if prompts is None else (repr(prompts) if isinstance(prompts, str) else len(prompts))
            raise SegcheckError(f"a prompted model takes one text prompt per image: {len(x)} images, prompts {given}")
        return module(x, list(prompts))

    def raw(self, x: torch.Tensor, prompts=None) -> torch.Tensor:
        """The module's own logits for normalized ``x`` padded by :meth:`pad`, before any resizing."""
        return output_tensor(self.call(self.pad(x), prompts))

    def logits(self, x: torch.Tensor, prompts=None, module=None) -> torch.Tensor:
        """Logits (B, C, H, W) for normalized ``x`` (B, 3, H, W) (and one prompt per image when
        prompted) of ``module`` (default: this one, e.g. a copy in another mode); gradients flow."""
        h, w = x.shape[-2:]
        x = self.pad(x)
        out = output_tensor(self.call(x, prompts, module))
        if out.shape[-2:] != x.shape[-2:]:
            out = F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return out[..., :h, :w]

    def labels(self, logits: torch.Tensor) -> torch.Tensor:
        """Class map (B, H, W) from logits, in the smallest integer type of the classes
        (uint8 up to 256 channels, else int32)."""
        if self.binary:
            return (torch.sigmoid(logits[:, 0]) > self.threshold).to(torch.uint8)
        return channel_argmax(logits).to(torch.uint8 if logits.shape[1] <= 256 else torch.int32)

    @torch.no_grad()
    def predict(self, x: torch.Tensor, batch_size: int = 8, prompts=None) -> tuple[np.ndarray, bool]:
        """Class maps (N, H, W) (:meth:`labels`' type) for normalized ``x`` (``prompts``: one per
        image, when prompted), and whether every logit was finite."""
        labels, finite = [], True
        for start in range(0, len(x), batch_size):
            part = None if prompts is None else prompts[start : start + batch_size]
            out = self.logits(x[start : start + batch_size].to(self.device), part)
            finite &= all_finite(out)
            labels.append(self.labels(out).cpu().numpy())
            del out  # not alive while the next batch is computed
        return np.concatenate(labels), finite

    def predict_pixels(self, pixels, batch_size: int = 8, prompts=None) -> tuple[np.ndarray, bool]:
        """``predict`` for pixel-scale images (N, H, W, 3), normalizing batch by batch; a long
        pass reports its progress (``segcheck.progress``)."""
        batches = (pixels[start : start + batch_size] for start in range(0, len(pixels), batch_size))
        return self.predict_batches(batches, len(pixels), prompts)

    def predict_batches(self, batches, count: int, prompts=None) -> tuple[np.ndarray, bool]:
        """Class maps (``count``, H, W) of an iterable of pixel-scale batches (N_i, H, W, 3), made
        one at a time (a corruption, noise, a shift: never the whole set at once), and whether
        every logit was finite; ``prompts``: one per image of all batches, when prompted."""
        from segcheck.progress import forward_pass

        labels, finite, done_count = None, True, 0
        with forward_pass(count) as done:
            for pixels in batches:
                part = None if prompts is None else prompts[done_count : done_count + len(pixels)]
                out, ok = self.predict(self.normalize(pixels), len(pixels), part)
                if labels is None:
                    labels = np.empty((count, *out.shape[1:]), out.dtype)
                labels[done_count : done_count + len(out)] = out
                done_count += len(out)
                finite &= ok
                done(len(out))
        if labels is None:
            raise SegcheckError("no images to predict")
        return labels, finite

    @torch.no_grad()
    def probabilities(self, pixels, batch_size: int = 8, prompts=None) -> np.ndarray:
        """Foreground probabilities (N, H, W) float32 of a binary model for pixel-scale images
        (N, H, W, 3), or for an iterable of such batches (made one at a time)."""
        if not self.binary:
            raise SegcheckError("probabilities are those of a binary (one sigmoid channel) model")
        batches = pixels
        if isinstance(pixels, np.ndarray | torch.Tensor):
            batches = (pixels[start : start + batch_size] for start in range(0, len(pixels), batch_size))
        out, done = [], 0
        for batch in batches:
            part = None if prompts is None else prompts[done : done + len(batch)]
            logits = self.logits(self.normalize(batch), part)
            out.append(torch.sigmoid(logits[:, 0].float()).cpu().numpy())
            done += len(batch)
        return np.concatenate(out)


def all_finite(x: torch.Tensor) -> bool:
    """Whether every value of ``x`` is finite: its min and max are (both propagate NaN), read in
    one pass without a mask of its size (``isfinite(x).all()`` is 30x slower on large logits)."""
    if not x.numel():
        return True
    order = sorted(range(x.dim()), key=lambda d: -x.stride(d))  # its memory order (channels-last logits too)
    dense = x.permute(order)
    low, high = torch.aminmax(dense if dense.is_contiguous() else x)
    return bool(torch.isfinite(low) and torch.isfinite(high))


def channel_argmax(logits: torch.Tensor) -> torch.Tensor:
    """``logits.argmax(1)``, the same indices (the first maximum on ties, NaN wins), through
    ``max(1)``: about 3x faster on the CPU for logits (B, C, H, W)."""
    return logits.max(1).indices


def _check_not_meta(module: torch.nn.Module) -> None:
    """Weights on the meta device have no values: one line saying so, before anything moves them."""
    empty = [name for name, t in (*module.named_parameters(), *module.named_buffers()) if t.is_meta]
    if empty:
        shown = ", ".join(empty[:3]) + (f" and {len(empty) - 3} more" if len(empty) > 3 else "")
        raise SegcheckError(
            f"the model's weights are on the meta device, without values ({shown}); its builder must return a "
            "module with real weights (e.g. to_empty(device='cpu') before loading a checkpoint)"
        )


def checked_logits(output, inputs: int) -> torch.Tensor:
    """The logits of a raw output for ``inputs`` images, checked to be what every gate relies on:
    a floating-point tensor (B, C, H, W) with one row per image; anything else is one line."""
    logits = output_tensor(output)
    shape = tuple(logits.shape)
    if logits.ndim == 3:
        raise SegcheckError(
            f"the model returned a tensor of shape {shape} for {inputs} image(s): no class dimension; segcheck "
            "judges logits (B, C, H, W), so return the scores before argmax (one channel for a binary model)"
        )
    if logits.ndim != 4 or logits.shape[0] != inputs:
        raise SegcheckError(
            f"the model returned a tensor of shape {shape} for {inputs} image(s); segcheck expects logits "
            f"(B, C, H, W) with B = {inputs}"
        )
    if not logits.is_floating_point():
        raise SegcheckError(
            f"the model returned {str(logits.dtype).removeprefix('torch.')} values; segcheck judges logits (floating "
            "point scores before argmax or thresholding), so return the raw scores"
        )
    return logits


@contextmanager
def seeded(seed: int, device: str | torch.device = "cpu"):
    """Run the block under torch's RNG seeded with ``seed`` (also ``device``'s, when CUDA),
    restoring the global RNG after: dropout and drop-path in train-mode passes, and
    initializations, draw the same numbers whatever ran before."""
    devices = [torch.device(device)] if torch.device(device).type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


@dataclass(frozen=True)
class Normalization:
    """Per-channel ``mean``/``std`` (pixel scale 0-1) and where they came from (``source``)."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    source: str

    def describe(self) -> str:
        fmt = lambda v: "(" + ", ".join(f"{x:.4g}" for x in v) + ")"  # noqa: E731
        return f"mean {fmt(self.mean)}, std {fmt(self.std)} from {self.source}"


IMAGENET = Normalization(IMAGENET_MEAN, IMAGENET_STD, "ImageNet (nothing else declared)")


def first_normalization(*candidates: tuple[object, object, str]) -> Normalization:
    """The first ``(mean, std, source)`` whose mean and std are both given, else ImageNet's."""
    for mean, std, source in candidates:
        if mean is not None and std is not None:
            if not normalization_ok(mean, std):
                raise SegcheckError(
                    f"the normalization from {source} is mean {list(mean)}, std {list(std)}; expected three finite "
                    "numbers each on the 0-1 pixel scale, std > 0"
                )
            return Normalization(tuple(float(v) for v in mean), tuple(float(v) for v in std), source)
    return IMAGENET


def reinitialized(module: torch.nn.Module, why: str = "the builder returned the module under test") -> torch.nn.Module:
    """``module`` with every layer's parameters reset (``reset_parameters``); an error (saying
    ``why`` a reset was needed) when a layer with parameters cannot be reset (its trained
    weights would pass for fresh ones)."""
    for layer in module.modules():
        own = list(layer.parameters(recurse=False))
        if hasattr(layer, "reset_parameters"):
            layer.reset_parameters()
        elif own:
            raise SegcheckError(
                f"{why}, and its {type(layer).__name__} layer cannot be re-initialized; give ModelUnderTest a "
                "builder that builds a new module (a registered model's builder)"
            )
    return module


def architecture_normalization(dataset_spec, meta: dict, dataset: str, model: str, explicit=None) -> Normalization:
    """The normalization of a module without trained weights: ``explicit`` (mean, std) if
    given, else the dataset's declared one, the model's metadata, ImageNet's."""
    mean, std = explicit or (None, None)
    return first_normalization(
        (mean, std, "explicit setting (--mean/--std or eval.mean/std)"),
        (dataset_spec.mean, dataset_spec.std, f"dataset {dataset!r}"),
        (meta.get("mean"), meta.get("std"), f"model {model!r} metadata"),
    )


@dataclass(frozen=True)
class Predictions:
    """One forward pass over an eval set: class maps, whether every logit was finite, the mIoU."""

    labels: np.ndarray
    finite: bool
    miou: float


class ModelUnderTest(SegModel):
    """The model under test: the adapted module, its normalization, where it came from, a
    builder for fresh copies of its architecture, and a cache of one forward pass per eval set.

    ``builder(**kwargs) -> nn.Module`` builds a new, untrained module of the same architecture
    and head; gates that train use :meth:`fresh` and never touch this module. ``meta`` is the
    model's registry metadata (e.g. ``aux_prefix``); ``provenance`` says what was loaded, for
    reports. Works on any ``nn.Module`` without plugins, e.g. from a notebook.
    """

    def __init__(
        self,
        module: torch.nn.Module,
        *,
        normalization: Normalization | None = None,
        builder: Callable[..., torch.nn.Module] | None = None,
        meta: dict | None = None,
        provenance: dict | None = None,
        fresh_normalization: Normalization | None = None,
        **adapter,
    ):
        self.normalization = normalization or IMAGENET
        super().__init__(module, mean=self.normalization.mean, std=self.normalization.std, **adapter)
        self.builder = builder
        self.meta = dict(meta or {})
        self.provenance = dict(provenance or {})
        self.fresh_normalization = fresh_normalization or self.normalization
        self._passes: dict[tuple, tuple[object, object]] = {}

    def head_channels(self, data) -> int:
        """The output channels of the module on ``data``'s first eval image: the probe every run
        makes at set-up (one forward pass), which raises one line when the output is not logits
        (B, C, H, W) of a floating type (:func:`checked_logits`)."""

        def probe() -> int:
            x = self.normalize(data.images[:1])
            prompts = data.prompts()[:1] if self.prompted else None
            with torch.no_grad():
                try:
                    output = self.call(self.pad(x), prompts)
                except SegcheckError:
                    raise
                except Exception as exc:
                    raise SegcheckError(
                        f"the model raised {type(exc).__name__} on the first eval image ({x.shape[-2]}x{x.shape[-1]}): "
                        f"{exc}"
                    ) from exc
            return int(checked_logits(output, 1).shape[1])

        return self.memo("probe", data, probe)

    def head_mismatch(self, data) -> str | None:
        """Why the head does not fit ``data``'s classes (one channel for a binary model), or None."""
        channels, expected = self.head_channels(data), 1 if self.binary else data.spec.num_classes
        if channels == expected:
            return None
        return f"the head has {channels} channels for {data.spec.num_classes} classes (expected {expected})"

    def fresh(self, seed: int, **kwargs) -> SegModel:
        """A new, untrained module from the builder (initialized under ``seed`` without touching
        the global RNG), adapted like this model but normalized without the checkpoint's sidecar
        (a fresh module has no trained weights). A builder that hands back the module under
        test itself gets it deep-copied."""
        if self.builder is None:
            raise SegcheckError(
                "this model has no builder, so no fresh copy can be trained; "
                "give ModelUnderTest(builder=...) a function that builds the architecture"
            )
        with seeded(seed):
            module = self.builder(**kwargs)
        if module is self.module:  # a builder that hands back the module under test: copy it, untrained
            with seeded(seed):
                module = reinitialized(copy.deepcopy(module))
        n = self.fresh_normalization
        return SegModel(
            module,
            mean=n.mean,
            std=n.std,
            binary=self.binary,
            divisible_by=self.divisible_by,
            device=self.device,
            threshold=self.threshold,
            prompted=self.prompted,
        )

    def predictions(self, data) -> Predictions:
        """The forward pass over ``data``'s eval images (an ``EvalData``; a prompted model is
        asked with each sample's canonical prompt), computed once and shared (again only if the
        weights changed in place since)."""

        def forward() -> Predictions:
            prompts = data.prompts() if self.prompted else None
            labels, finite = self.predict_pixels(data.images, data.batch_size, prompts)
            # labels past the classes (a head with too many channels): no mIoU; gates that score skip
            scored = data.masks is not None and (not labels.size or int(labels.max()) < data.spec.num_classes)
            miou = data.score(labels) if scored else float("nan")
            return Predictions(labels, finite, miou)

        return self.memo("predictions", data, forward)

    def memo(self, name: str, data, compute: Callable[[], object]) -> object:
        """``compute()`` once per (``name``, ``data`` object, weights): work every gate of this
        target shares, such as a forward pass; results of older weights are dropped."""
        key = (name, id(data), self._weights_version())
        cached = self._passes.get(key)
        if cached is None or cached[0] is not data:
            current = {k: v for k, v in self._passes.items() if k[2] == key[2]}  # results of older weights go
            self._passes = {**current, key: (data, compute())}
            cached = self._passes[key]
        return cached[1]

    def _weights_version(self) -> int:
        """Changes whenever a parameter or buffer is changed in place (an optimizer step, load_state_dict)."""
        return sum(t._version for t in self.module.state_dict(keep_vars=True).values())
