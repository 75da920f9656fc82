"""``segcheck.check``: chosen gates on an ``nn.Module`` and arrays, from the user's own tests.

    result = segcheck.check(net, images, masks, classes=("dark", "bright"), mean=..., std=...,
                            gates=["finite_outputs", "prediction_collapse"])
    result.assert_passed()  # AssertionError listing every gate that failed or errored, with its message

No pytest run, no report file: the gates are the registered ones (built-ins, installed plugins,
``plugins=``), run and judged exactly as in the suites (``segcheck.gates.registered``).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence

import torch

from segcheck import SegcheckError
from segcheck import config as segconfig
from segcheck.data import DatasetSpec, EvalData
from segcheck.gates.registered import NotApplicable, TargetProblem, run, unmet_need
from segcheck.model import ModelUnderTest, Normalization
from segcheck.report import GateRecord, summary_table
from segcheck.session import open_session
from segcheck.target import Target, resolve_device

#: what did not pass: the outcomes ``assert_passed`` fails on
NOT_PASSED = ("failed", "error")


class CheckResult(list):
    """The :class:`~segcheck.report.GateRecord` of each gate :func:`check` ran, in order (a list).
    ``target`` is what was judged; ``exceptions`` maps a gate that raised something other than
    a segcheck error to it (its record is an ``error``)."""

    def __init__(self, records: Iterable[GateRecord], target: Target, exceptions: dict[str, BaseException]):
        super().__init__(records)
        self.target = target
        self.exceptions = exceptions

    @property
    def passed(self) -> bool:
        """True when no gate failed or errored (skipped gates are no failure)."""
        return not self.failures

    @property
    def failures(self) -> list[GateRecord]:
        """The records of the gates that failed or errored."""
        return [r for r in self if r.outcome in NOT_PASSED]

    def get(self, gate: str) -> GateRecord:
        """The record of ``gate``; an error naming the gates that ran when it did not."""
        for record in self:
            if record.gate == gate:
                return record
        raise KeyError(f"gate {gate!r} did not run here; these did: {', '.join(r.gate for r in self)}")

    def table(self) -> str:
        """The records as the suites' terminal table: gate, target, measured, threshold, verdict."""
        return "\n".join(summary_table(list(self)))

    def assert_passed(self) -> CheckResult:
        """Raise AssertionError listing each gate that failed or errored with its message (chained
        to the first exception a gate raised, so its traceback shows); return self otherwise."""
        __tracebackhide__ = True
        failures = self.failures
        if not failures:
            return self
        lines = [f"{r.verdict} {r.gate}: {r.message}" for r in failures]
        message = f"{len(failures)} of {len(self)} segcheck gates did not pass:\n" + "\n".join(lines)
        first = next((self.exceptions[r.gate] for r in failures if r.gate in self.exceptions), None)
        raise AssertionError(message) from first

    def __str__(self) -> str:
        return self.table()


def check(
    module: torch.nn.Module,
    images,
    masks,
    *,
    classes: Sequence[str],
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    gates: Sequence[str] | None = None,
    settings: Mapping[str, Mapping] | None = None,
    ignore_index: int = 255,
    splits: Mapping[str, object] | None = None,
    builder=None,
    binary: bool = False,
    divisible_by: int = 1,
    device: str = "auto",
    name: str = "model",
    plugins: Sequence[str] = (),
) -> CheckResult:
    """Run ``gates`` on ``module`` judged on ``images`` and ``masks``; return their records.

    ``images`` uint8 (N, H, W, 3) and ``masks`` int (N, H, W) are the eval sample, labelled with
    ``classes`` (names in label order; ``ignore_index`` pixels count nowhere). ``mean``/``std``
    (three numbers each, 0-1 pixel scale) are the normalization the weights were trained with
    (both or neither; neither: ImageNet's). ``gates``: registered gate names (``segcheck list``),
    a family name (``perturbation_stability``) standing for its members; default: every gate of
    the ``gates`` suite without the ``train`` marker. ``settings``: ``{section: {key: value}}``
    over the defaults, checked like ``segcheck.yaml`` (``eval.batch_size`` applies; the arrays
    are the whole sample). ``splits``: ``{split: dataset or sequence of (image, mask)}`` for
    gates that read other splits (``train`` for positional_prior, ``test`` for
    generalization); without them those gates SKIP. Gates that train or audit a fresh copy use
    ``builder(**kwargs) -> nn.Module``; default: ``module`` deep-copied with its parameters
    reset. ``binary``: one sigmoid channel; ``divisible_by``: inputs are padded to a multiple;
    ``device``: auto, cpu or cuda; ``name``: the target's name in the records; ``plugins``:
    ``--plugin`` files or modules (their gates become nameable).

    The module is put in eval mode on ``device``. A skipped gate is a ``skipped`` record, not a
    failure; a gate that raises is an ``error`` record (see ``CheckResult.exceptions``). Bad
    arguments, and a module whose output is not logits (B, C, H, W), raise SegcheckError.
    """
    if (mean is None) != (std is None):
        raise SegcheckError("segcheck.check: give mean and std together (the training normalization), or neither")
    session = open_session(list(plugins))  # plugins, defaults, segcheck_configure hooks: as a run sets up
    loaded, config = session.plugins, copy.deepcopy(session.config)
    segconfig.merge(config, dict(settings or {}), "segcheck.check(settings=...)")
    chosen = _chosen(loaded.gates.gates(), gates, loaded.absent)
    normalization = Normalization(tuple(mean), tuple(std), "segcheck.check(mean=, std=)") if mean is not None else None
    if splits is not None:  # the eval sample is split "val", unless a "val" is given
        splits = {"val": _Pairs(images, masks), **splits}
    spec = DatasetSpec(classes=tuple(classes), ignore_index=ignore_index, splits=tuple(splits or ("val",)))
    data = EvalData(images, masks, spec, batch_size=config["eval"]["batch_size"], splits=splits)
    model = ModelUnderTest(
        module,
        normalization=normalization,
        builder=builder or (lambda **kwargs: module),
        provenance={"model": f"{name} (segcheck.check)"},
        binary=binary,
        divisible_by=divisible_by,
        device=resolve_device(device),
    )
    model.head_channels(data)  # the probe every run makes: output not logits (B, C, H, W) is one line, here
    target = Target(model, data, name, scorers=loaded.scorers.functions())
    records, exceptions, problems = [], {}, {}
    for gate in chosen:
        record, raised = _judged(gate, target, config, problems)
        records.append(record)
        if raised is not None:
            exceptions[gate.name] = raised
    return CheckResult(records, target, exceptions)


class _Pairs:
    """The eval arrays as a split: ``(image, mask)`` pairs."""

    def __init__(self, images, masks):
        self.images, self.masks = images, masks

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        return self.images[index], self.masks[index]


def _chosen(registered: list, names: Sequence[str] | None, absent: Mapping[str, str] | None = None) -> list:
    """The gates ``names`` name (exactly, or as the family ``name[...]``), in the order given; an
    unknown name that an absent optional plugin (``absent``: module -> note) registers says so."""
    if names is None:
        return [g for g in registered if g.suite == "gates" and "train" not in g.markers]
    if isinstance(names, str):
        raise SegcheckError(
            f"segcheck.check: gates is a list of gate names, got the string {names!r}; e.g. [{names!r}]"
        )
    chosen = []
    for name in names:
        found = [g for g in registered if g.name == name or g.name.startswith(f"{name}[")]
        if not found:
            from segcheck.plugins import OPTIONAL_PLUGINS

            for module, note in (absent or {}).items():
                if name.startswith(OPTIONAL_PLUGINS[module][2]):
                    raise SegcheckError(f"segcheck.check: gate {name!r} is absent: plugin {module} {note}")
            known = ", ".join(sorted({g.name.split("[")[0] for g in registered}))
            raise SegcheckError(f"segcheck.check: unknown gate {name!r}; registered gates: {known}")
        chosen += [g for g in found if g not in chosen]
    return chosen


def _judged(gate, target: Target, config: dict, problems: dict) -> tuple[GateRecord, BaseException | None]:
    """The record of ``gate`` on ``target`` (as the suites judge it), and what it raised, if
    anything but a segcheck error. A target problem is an error once, a skip after that."""
    test = f"segcheck.check::{gate.name}"

    def record(outcome: str, message: str) -> GateRecord:
        return GateRecord(target.id, gate.name, test, outcome, message=message)

    reason = unmet_need(gate, target, config)
    if reason:
        return record("skipped", reason), None
    try:
        result = run(gate, target, config)
    except NotApplicable as exc:
        return record("skipped", str(exc)), None
    except TargetProblem as exc:
        first = problems.setdefault(exc.key, gate.name)
        if first != gate.name:
            return record("skipped", f"not run: {exc.key} (see {first})"), None
        return record("error", str(exc)), None
    except SegcheckError as exc:
        return record("error", str(exc)), None
    except Exception as exc:
        text = " ".join(str(exc).split()).rstrip(".")
        return record("error", f"raised {type(exc).__name__}: {text}"), exc
    return GateRecord.from_result(result, target.id, test, gate.name), None
