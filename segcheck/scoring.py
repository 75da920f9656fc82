"""Per-pixel anomaly scorers: ``scorer(logits, **context) -> scores``, higher = more anomalous.

``logits`` are (B, C, H, W) at input size; a scorer returns (B, H, W) floats. Besides the
logits a scorer may ask, by naming them as keyword parameters, for any of :data:`CONTEXT`:
``temperature`` (the ``anomaly.temperature`` setting), ``class_stats`` (:class:`ClassStats`
of the model on the training split, computed once per target and only when a scorer asks),
``inputs`` (the normalized input batch, (B, 3, H, W)) and ``module`` (the ``nn.Module``, e.g.
to read features with a hook). The built-ins register through ``segcheck_register_scorers``
exactly like a user's scorer.
"""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from segcheck import SegcheckError
from segcheck.hookspecs import hookimpl
from segcheck.registry import Registry

#: what a scorer may ask for besides the logits
CONTEXT = ("temperature", "class_stats", "inputs", "module")


@dataclass(frozen=True)
class ClassStats:
    """Per-class mean and std of the max logit over the pixels predicted as that class.

    ``pixels[c]`` is how many pixels the statistics of class ``c`` rest on; a class never
    predicted gets the statistics of all pixels (``fallback`` names those classes).
    """

    mean: torch.Tensor
    std: torch.Tensor
    pixels: tuple[int, ...]
    fallback: tuple[int, ...] = ()


@dataclass(frozen=True)
class LogitStatistics:
    """What the built-in scorers read from logits (B, C, H, W), per pixel: the max logit and
    its class, the log-sum-exp, and the softmax mean of the logits ``sum_c p_c x_c``."""

    top: torch.Tensor
    argmax: torch.Tensor
    logsumexp: torch.Tensor
    mean_logit: torch.Tensor


STATISTICS_PIXELS = 1 << 20  # pixels of the exp(x - max) temporary of logit_statistics
_LAST: list = []  # [(weak reference to the logits, their version, LogitStatistics)]: one batch


def logit_statistics(logits: torch.Tensor) -> LogitStatistics:
    """:class:`LogitStatistics` of ``logits`` (B, C, H, W), computed once per batch and shared by
    the built-in scorers: exp(x - max) summed in float32 as softmax does (within ~1e-6 of torch's
    own softmax and logsumexp kernels, and several times faster on the channels-last logits that
    convolutions give)."""
    if _LAST and _LAST[0][0]() is logits and _LAST[0][1] == logits._version:
        return _LAST[0][2]
    top, argmax = logits.max(1)
    last = logits.movedim(1, -1)  # (B, H, W, C): the classes contiguous for channels-last logits
    total, weighted = torch.empty_like(top), torch.empty_like(top)
    rows = max(1, STATISTICS_PIXELS // max(1, last.shape[0] * last.shape[2]))
    for h in range(0, last.shape[1], rows):  # a band of rows at a time: the exp never held whole
        part = last[:, h : h + rows]
        e = (part - top[:, h : h + rows].unsqueeze(-1)).exp_()
        total[:, h : h + rows] = e.sum(-1)
        weighted[:, h : h + rows] = torch.einsum("bhwc,bhwc->bhw", e, part)
    stats = LogitStatistics(top, argmax, top + total.log(), weighted / total)
    _LAST[:] = [(weakref.ref(logits), logits._version, stats)]
    return stats


def msp(logits: torch.Tensor) -> torch.Tensor:
    """Negative maximum softmax probability (Hendrycks & Gimpel 2017): ``-exp(max - logsumexp)``."""
    s = logit_statistics(logits)
    return -torch.exp(s.top - s.logsumexp)


def max_logit(logits: torch.Tensor) -> torch.Tensor:
    """Negative maximum logit (Hendrycks et al. 2022, the StreetHazards paper)."""
    return -logit_statistics(logits).top


def energy(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Free energy ``-T logsumexp(logits / T)`` (Liu et al. 2020)."""
    if temperature == 1:
        return -logit_statistics(logits).logsumexp
    return -temperature * torch.logsumexp(logits / temperature, 1)


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Shannon entropy of the softmax, in nats: ``logsumexp - sum_c p_c x_c``."""
    s = logit_statistics(logits)
    return s.logsumexp - s.mean_logit


def standardized_max_logit(logits: torch.Tensor, class_stats: ClassStats) -> torch.Tensor:
    """Negative max logit standardized by the predicted class's max-logit mean and std on the
    training split (Jung et al. 2021, without their boundary suppression and dilated smoothing)."""
    s = logit_statistics(logits)
    mean, std = class_stats.mean.to(logits.device), class_stats.std.to(logits.device)
    return -(s.top - mean[s.argmax]) / std[s.argmax]


def context_names(scorer: Callable, name: str = "?") -> tuple[str, ...]:
    """The context a scorer asks for; an error when it asks for something there is none of."""
    params = list(inspect.signature(scorer).parameters.values())
    if not params or params[0].kind not in (params[0].POSITIONAL_ONLY, params[0].POSITIONAL_OR_KEYWORD):
        raise SegcheckError(f"scorer {name!r} must take the logits as its first positional argument")
    asked = []
    for p in params[1:]:
        if p.kind is p.VAR_KEYWORD:
            return CONTEXT
        if p.name in CONTEXT:
            asked.append(p.name)
        elif p.default is p.empty:
            raise SegcheckError(
                f"scorer {name!r} asks for {p.name!r}, which segcheck does not provide; a scorer may ask for "
                f"{', '.join(CONTEXT)}"
            )
    return tuple(asked)


def score(scorer: Callable, logits: torch.Tensor, context: Mapping, name: str = "?") -> torch.Tensor:
    """``scorer`` on ``logits`` with the context it asks for (looked up in ``context`` only when
    asked, so a mapping may compute ``class_stats`` on first access), checked: (B, H, W) floats."""
    out = scorer(logits, **{k: context[k] for k in context_names(scorer, name)})
    expected = (logits.shape[0], *logits.shape[2:])
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != expected:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise SegcheckError(f"scorer {name!r} returned {got}; expected a tensor of shape {expected} (B, H, W)")
    return out.float()


class ScorerRegistry(Registry):
    """The scorer registry: ``registry.add(name, scorer, description=...)``; a scorer asking
    for context segcheck does not provide is an error when it registers."""

    def __init__(self):
        super().__init__("scorer", ("description",))

    def add(self, name: str, obj: Callable, **meta) -> None:
        if callable(obj):
            context_names(obj, name)
        super().add(name, obj, **meta)

    def functions(self) -> dict[str, Callable]:
        """``{name: scorer}`` in registration order."""
        return {e.name: e.obj for e in self._entries.values()}


BUILTIN_SCORERS = {
    "msp": msp,
    "max_logit": max_logit,
    "energy": energy,
    "entropy": entropy,
    "sml": standardized_max_logit,
}


@hookimpl
def segcheck_register_scorers(registry):
    for name, function in BUILTIN_SCORERS.items():
        registry.add(name, function)
