"""Registered gates: the descriptor every gate plugin adds, and the one place that decides
whether a target meets a gate's needs (a SKIP with the reason) before running it."""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from segcheck import SegcheckError
from segcheck.gates import diagnosis
from segcheck.gates.result import GateResult, NotApplicable, TargetProblem
from segcheck.registry import Registry
from segcheck.report import unjudged
from segcheck.wording import listed

#: what a gate may need of its target: an unmet need is a SKIP with its reason, except
#: ``finite_logits`` (the gate judges the model's predictions): unmet, the gate is an ERROR, and
#: with ``labels``, a head whose channels do not fit the classes is a SKIP pointing to
#: head_matches_classes;
#: ``labels``: eval masks with labelled pixels (masks that hold none: an ERROR, once a target);
#: ``masks``: eval masks, whatever they hold (a gate that audits them);
#: ``varied_prediction``: a pass on a clean prediction of one class everywhere, or on a
#: prediction that does not depend on the input, is a SKIP;
#: ``prompts``: a prompted model on a prompted dataset (a gate without it skips a prompted model);
#: ``reads_images``: a model that reads its images, i.e. passes every gate of :data:`READING_GATES`
#: on this target (measured through those gates' own functions and settings, once per target:
#: :func:`measured`); a failure of one is a SKIP naming it
NEEDS = (
    "labels",
    "masks",
    "prompts",
    "train_split",
    "held_out_split",
    "fresh_model",
    "cuda",
    "finite_logits",
    "varied_prediction",
    "reads_images",
)
#: the gates whose passes say that a model reads its images (need ``reads_images``)
READING_GATES = ("noise_input", "prediction_collapse")
#: cost markers: pytest markers the gate's test carries (``-m "not train"``)
MARKERS = ("train", "gpu", "fleet")
GATE_META = ("section", "defaults", "needs", "markers", "suite", "description", "figures", "min_images", "docs")
#: the plugins whose gates are segcheck's own: a failure of theirs points to its page of segcheck's docs
BUILTIN_GATE_PLUGINS = ("segcheck.", "segcheck_plugins.")


@dataclass(frozen=True)
class Gate:
    """A registered gate: ``function(target, cfg) -> GateResult``, reading settings section
    ``section`` (``cfg`` is ``{}`` without one; ``defaults`` define a section of its own),
    needing ``needs``, marked ``markers``, run by the suite ``suite`` (``gates``, ``anomaly``,
    ``prompted``), from ``plugin``; ``description`` defaults to the docstring's first line.
    ``figures(target, result, cfg) -> list[segcheck.figures.Figure]``, when given, draws the
    result's pictures for the HTML/Markdown reports (called only when a report asks for them).
    ``min_images``: the fewest eval images the gate can judge (fewer: a SKIP saying so).
    ``docs``: the page (a path or URL) its failure messages point to; segcheck's own gates
    point to ``gates/<family>.md`` of segcheck's docs without it (:func:`docs_page`)."""

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
    min_images: int = 1
    docs: str = ""


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
            Gate(e.name, e.obj, plugin=e.plugin, **{"description": summary(e.obj), **e.meta})
            for e in self._entries.values()
            if suite is None or e.meta.get("suite", "gates") == suite
        ]


def family(name: str) -> str:
    """A gate's family: its name without the ``[...]`` of a parametrized gate
    (``perturbation_stability[jpeg]`` -> ``perturbation_stability``); one docs page each."""
    return name.split("[", 1)[0]


def docs_page(gate: Gate) -> str | None:
    """The docs page a failure of ``gate`` points to: its ``docs`` metadata, else for one of
    segcheck's own gates ``gates/<family>.md`` (a path inside segcheck's docs site, ``docs/``
    in the repository), else None (a third-party gate that names no page)."""
    if gate.docs:
        return gate.docs
    if gate.plugin.startswith(BUILTIN_GATE_PLUGINS):
        return f"gates/{family(gate.name)}.md"
    return None


def pointed(gate: Gate, result: GateResult) -> GateResult:
    """``result``, its message ending with ``docs: <page>`` when it failed and ``gate`` has a
    page: the one place a failure message gets its pointer, so the terminal, the JSON and the
    HTML report lead to the explanation."""
    page = docs_page(gate)
    if result.passed or page is None:
        return result
    return replace(result, message=f"{result.message.rstrip()}; docs: {page}")


def summary(function) -> str:
    """A gate's default description: the first paragraph of its docstring, as one line (a
    docstring's first line may end mid-sentence), its reST roles and literals as plain text."""
    paragraph = (getattr(function, "__doc__", None) or "").strip().split("\n\n")[0]
    text = " ".join(line.strip() for line in paragraph.splitlines())
    return re.sub(r"(?::\w+:)?``?([^`]+)``?", r"\1", text)


def unmet_need(gate: Gate, target, config: dict) -> str | None:
    """Why ``target`` cannot be judged by ``gate`` (the SKIP reason), or None when it can."""
    data, model = target.data, target.model
    cfg = config.get(gate.section, {}) if gate.section else {}
    if "prompts" in gate.needs and not (getattr(model, "prompted", False) and data.spec.prompted):
        return f"{gate.name} judges a text-prompted model on a dataset with prompts; this target is closed-set"
    if "prompts" not in gate.needs and getattr(model, "prompted", False):
        return f"{gate.name} is a closed-set gate; this model takes a text prompt (run suites/prompted)"
    if len(data.images) < gate.min_images:
        n = len(data.images)
        why = f"split {data.split!r} holds {n}" if n < data.size else f"eval.size {data.size}: raise it"
        return f"{gate.name} needs at least {gate.min_images} eval images; the eval sample has {n} ({why})"
    mismatch = model.head_mismatch(data) if {"finite_logits", "labels"} <= set(gate.needs) else None
    if mismatch:
        return f"{gate.name} judges predictions, but {mismatch} (see head_matches_classes)"
    for need in gate.needs:
        if need in ("labels", "masks") and data.masks is None:
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
        if need == "reads_images":
            why = _not_reading(gate, target, config)
            if why:
                return why
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


def measured(target, name: str, function: Callable[..., GateResult], cfg: dict) -> GateResult:
    """``function(target, cfg)``, the gate ``name``'s measurement, once per target, settings and
    weights (``ModelUnderTest.memo``): a gate that needs another's verdict and that gate's own
    test share one measurement, whichever runs first."""
    key = f"gate {name} {sorted(cfg.items())!r}"
    return target.model.memo(key, target.data, lambda: function(target, cfg))


def _not_reading(gate: Gate, target, config: dict) -> str | None:
    """Why ``target``'s model does not read its images (a gate of :data:`READING_GATES` fails on
    it), or None. Logits that are not finite and eval masks without a labelled pixel are left to
    :func:`run`, which makes them an ERROR (the target's problem, not advice about the model)."""
    from segcheck.gates.collapse import prediction_collapse
    from segcheck.gates.noise import noise_input

    data = target.data
    if not target.predictions.finite or (data.masks is not None and not data.labelled_pixels):
        return None
    functions = {"noise_input": noise_input, "prediction_collapse": prediction_collapse}
    for name in READING_GATES:
        try:
            result = measured(target, name, functions[name], config[name])
        except SegcheckError as exc:
            return f"{gate.name} needs a model that reads its images, and {name} could not tell: {exc}"
        if not result.passed:
            return (
                f"{gate.name} judges labels by the model's own predictions, but {name} fails on this target "
                f"({result.message}); a model that does not read its images would flag everything: fix {name} first"
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
    if "labels" in gate.needs and target.data.masks is not None and not target.data.labelled_pixels:
        raise TargetProblem("no labelled pixels", _no_labelled_pixels(target.data))
    cfg = config[gate.section] if gate.section else {}
    if gate.name in READING_GATES and gate.section:  # also measured for the need reads_images: once
        result = measured(target, gate.name, gate.function, cfg)
    else:
        result = gate.function(target, cfg)
    _check_result(gate, result)
    if result.passed and "varied_prediction" in gate.needs:
        _not_trivially(gate, target)
    problem = unjudged(gate.name, result.value, result.threshold, result.passed, result.message)
    if problem:
        raise SegcheckError(problem)
    return pointed(gate, result)


def _no_labelled_pixels(data) -> str:
    values = np.unique(data.masks).tolist()
    shown = listed(values)
    return (
        f"no labelled pixel in the eval sample: its {len(data.masks)} masks of split {data.split!r} hold only "
        f"{shown} (ignore_index {data.spec.ignore_index}"
        + (f", anomaly {data.spec.anomaly_index}" if data.spec.anomaly_index is not None else "")
        + "), so nothing can be scored; check the masks and the dataset's label mapping (label_integrity)"
    )


#: rules of the form ``value OP threshold`` (what follows a comma, or "and", adds conditions)
_RULE = re.compile(r"value (>=|<=|==|<|>) threshold")
_OPERATORS = {">=": operator.ge, "<=": operator.le, "==": operator.eq, "<": operator.lt, ">": operator.gt}


def _check_result(gate: Gate, result) -> None:
    """``result`` is a GateResult of this gate (its registered name), and its verdict agrees
    with its rule: a pass satisfies ``value OP threshold``, and a rule that is only that decides
    the verdict."""
    where = f"gate {gate.name!r} from plugin {gate.plugin}"
    if not isinstance(result, GateResult):
        raise SegcheckError(f"{where} returned {type(result).__name__}, expected a segcheck.gates.GateResult")
    if result.name != gate.name:
        raise SegcheckError(
            f"{where} returned a result named {result.name!r}; a gate's result carries its registered name "
            f"(GateResult({gate.name!r}, ...))"
        )
    rule = _RULE.match(result.rule or "")
    if rule is None or not (_is_number(result.value) and _is_number(result.threshold)):
        return
    holds = bool(_OPERATORS[rule.group(1)](float(result.value), float(result.threshold)))
    if (result.passed and not holds) or (rule.group(0) == result.rule and result.passed != holds):
        verdict = "passed" if result.passed else "failed"
        raise SegcheckError(
            f"{where} says it {verdict}, but its value {result.value} against {result.threshold} "
            f"{'satisfies' if holds else 'does not satisfy'} its rule {result.rule!r}; fix the gate's verdict"
        )


def _is_number(value) -> bool:
    return isinstance(value, int | float | np.number) and not isinstance(value, bool | np.bool_)


def _not_trivially(gate: Gate, target) -> None:
    """A passing agreement gate whose clean prediction is one class everywhere, or does not
    depend on the input at all, proves nothing: a SKIP saying so (a failing one stays a
    failure: its prediction did change)."""
    name = diagnosis.one_class(target)
    if name is not None:
        raise NotApplicable(
            f"{gate.name} compares predictions, but the clean prediction is one class everywhere ({name!r}): "
            "agreement there is trivially high (see prediction_collapse)"
        )
    if diagnosis.input_independent(target):
        raise NotApplicable(
            f"{gate.name} compares predictions, but the prediction does not depend on the input (every eval image "
            "and a constant gray image give the same label map): agreement there is trivially 1 (see noise_input, "
            "input_gradient)"
        )
