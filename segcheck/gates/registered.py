"""Registered gates: the descriptor every gate plugin adds, and the one place that decides
whether a target meets a gate's needs (a SKIP with the reason) before running it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from segcheck import SegcheckError
from segcheck.gates.result import GateResult
from segcheck.registry import Registry
from segcheck.report import non_finite_pass

#: what a gate may need of its target: an unmet need is a SKIP with its reason, except
#: ``finite_logits`` (the gate judges the model's predictions): unmet, the gate is an ERROR;
#: ``varied_prediction``: a pass on a clean prediction of one class everywhere is a SKIP;
#: ``prompts``: a prompted model on a prompted dataset (a gate without it skips a prompted model)
NEEDS = (
    "labels",
    "prompts",
    "train_split",
    "held_out_split",
    "fresh_model",
    "cuda",
    "finite_logits",
    "varied_prediction",
)
#: cost markers: pytest markers the gate's test carries (``-m "not train"``)
MARKERS = ("train", "gpu", "fleet")
GATE_META = ("section", "defaults", "needs", "markers", "suite", "description", "figures")


class NotApplicable(SegcheckError):
    """Raised by a gate that finds, once it looks, that the target gives it nothing to judge
    (e.g. a held-out split that holds the eval images themselves): a SKIP with this reason."""


@dataclass(frozen=True)
class Gate:
    """A registered gate: ``function(target, cfg) -> GateResult``, reading settings section
    ``section`` (``cfg`` is ``{}`` without one; ``defaults`` define a section of its own),
    needing ``needs``, marked ``markers``, run by the suite ``suite`` (``gates``, ``anomaly``,
    ``prompted``), from ``plugin``; ``description`` defaults to the docstring's first line.
    ``figures(target, result, cfg) -> list[segcheck.figures.Figure]``, when given, draws the
    result's pictures for the HTML/Markdown reports (called only when a report asks for them)."""

    name: str
    function: Callable[..., GateResult]
    section: str | None = None
    defaults: dict | None = None
    needs: tuple[str, ...] = ()
    markers: tuple[str, ...] = ()
    suite: str = "gates"
    description: str = ""
    plugin: str = "?"
    figures: Callable[..., list] | None = None


class GateRegistry(Registry):
    """The gate registry: ``registry.add(name, function, section=, needs=, markers=, suite=)``;
    unknown needs or markers are errors naming the known ones."""

    def __init__(self):
        super().__init__("gate", GATE_META)

    def add(self, name: str, obj: Callable[..., Any], **meta: Any) -> None:
        for key, known in (("needs", NEEDS), ("markers", MARKERS)):
            values = meta.get(key, ())
            values = (values,) if isinstance(values, str) else tuple(values)
            unknown = sorted(set(values) - set(known))
            if unknown:
                raise SegcheckError(
                    f"gate {name!r} from plugin {self._plugin} has unknown {key} {unknown}; known: {', '.join(known)}"
                )
            meta[key] = values
        super().add(name, obj, **meta)

    def gates(self, suite: str | None = None) -> list[Gate]:
        """Every registered gate (of ``suite``), in registration order within each plugin."""
        return [
            Gate(e.name, e.obj, plugin=e.plugin, **{"description": first_line(e.obj), **e.meta})
            for e in self._entries.values()
            if suite is None or e.meta.get("suite", "gates") == suite
        ]


def first_line(function) -> str:
    """A gate's default description: the first line of its docstring."""
    return ((getattr(function, "__doc__", None) or "").strip().splitlines() or [""])[0]


def unmet_need(gate: Gate, target, config: dict) -> str | None:
    """Why ``target`` cannot be judged by ``gate`` (the SKIP reason), or None when it can."""
    data, model = target.data, target.model
    cfg = config.get(gate.section, {}) if gate.section else {}
    if "prompts" in gate.needs and not (getattr(model, "prompted", False) and data.spec.prompted):
        return f"{gate.name} judges a text-prompted model on a dataset with prompts; this target is closed-set"
    if "prompts" not in gate.needs and getattr(model, "prompted", False):
        return f"{gate.name} is a closed-set gate; this model takes a text prompt (run suites/prompted)"
    for need in gate.needs:
        if need == "labels" and data.masks is None:
            return f"{gate.name} needs labelled eval masks; the eval split {data.split!r} has none"
        if need == "labels" and not data.spec.class_labels:
            return (
                f"{gate.name} needs class labels; this dataset's masks mark only in-distribution, anomaly "
                "and void pixels (an anomaly-only layout: run suites/anomaly)"
            )
        if need == "train_split" and not data.has_split("train"):
            return f"{gate.name} needs a 'train' split; this data has only {data.split!r}"
        if need == "train_split" and not data.spec.labelled("train"):
            return f"{gate.name} needs training masks; this dataset's 'train' split is unlabelled"
        if need == "fresh_model" and model.builder is None:
            return f"{gate.name} trains a fresh copy of the architecture; this model has no builder"
        if need == "cuda" and not torch.cuda.is_available():
            return "needs CUDA; none available on this machine"
        if need == "held_out_split":
            split, default = cfg.get("split"), (gate.defaults or _defaults(gate.section)).get("split")
            if split == default and not data.has_split(split):
                return (
                    f"dataset has no {split!r} split to compare with; set {gate.section}.split to another "
                    "split to run this gate"
                )
            if split == default and not data.spec.labelled(split):
                return (
                    f"the dataset's {split!r} split is unlabelled (no masks to score); set {gate.section}.split "
                    "to a labelled split to run this gate"
                )
    return None


def _defaults(section: str | None) -> dict:
    from segcheck.config import DEFAULTS

    return DEFAULTS.get(section or "", {})


def run(gate: Gate, target, config: dict) -> GateResult:
    """``gate`` on ``target`` with its settings from ``config`` (a SegcheckError propagates)."""
    if gate.section and gate.section not in config:
        raise SegcheckError(
            f"gate {gate.name!r} from plugin {gate.plugin} reads settings section {gate.section!r}, "
            "which nothing defines; register it with defaults={...}"
        )
    if "finite_logits" in gate.needs and not target.predictions.finite:
        raise SegcheckError(
            f"{gate.name} cannot judge this model: its logits on the eval images are not finite "
            "(NaN/inf; see finite_outputs)"
        )
    result = gate.function(target, config[gate.section] if gate.section else {})
    if not isinstance(result, GateResult):
        raise SegcheckError(
            f"gate {gate.name!r} from plugin {gate.plugin} returned {type(result).__name__}, "
            "expected a segcheck.gates.GateResult"
        )
    if result.passed and "varied_prediction" in gate.needs:
        _not_trivially(gate, target)
    problem = non_finite_pass(gate.name, result.value, result.threshold) if result.passed else None
    if problem:
        raise SegcheckError(problem)
    return result


def _not_trivially(gate: Gate, target) -> None:
    """A passing agreement gate whose clean prediction is one class everywhere proves nothing:
    a SKIP saying so (a failing one stays a failure: its prediction did change)."""
    classes = np.unique(target.predictions.labels)
    if len(classes) < 2:
        spec = target.data.spec
        name = spec.classes[classes[0]] if len(classes) and 0 <= classes[0] < spec.num_classes else "?"
        raise NotApplicable(
            f"{gate.name} compares predictions, but the clean prediction is one class everywhere ({name!r}): "
            "agreement there is trivially high (see prediction_collapse)"
        )
