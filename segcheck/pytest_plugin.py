"""segcheck's pytest plugin: options, markers, the gate parametrization, fixtures and records.

Loaded through the ``pytest11`` entry point. It is inert in a run that collects no segcheck
suite, gives no segcheck option and asks for no segcheck fixture (another project's tests): no
torch import, no header line, no file, xdist's own scheduling. Plugins, models and data are
resolved on first use, or at start-up when a gate suite runs (``pytest suites/gates``,
``pytest --pyargs segcheck.suites.gates``) or a segcheck option is given (a wrong name, a
missing file or an unloadable checkpoint of a single target is then a usage error before any
test).
"""

from __future__ import annotations

import pytest

from segcheck import SegcheckError
from segcheck.pytest_options import add_options
from segcheck.pytest_state import TARGET_OPTIONS, SegcheckState, suite_conftests
from segcheck.report import GateRecord

STATE = pytest.StashKey[SegcheckState]()
GATE_ID = pytest.StashKey[dict]()  # {"gate": name, "target": id} of a gate test
RECORD = pytest.StashKey[GateRecord]()
FIGURES = pytest.StashKey[list]()  # the gate's figures (Figure.to_dict() form), for the reports
TARGET_FIGURES = pytest.StashKey[dict]()  # {target id: its per-image grid figures}, drawn by its first gate test


def pytest_addoption(parser):
    add_options(parser)


def _state(config: pytest.Config) -> SegcheckState:
    return config.stash[STATE]


def pytest_configure(config: pytest.Config):
    config.addinivalue_line("markers", "gate: a segcheck validity gate")
    config.addinivalue_line("markers", "train: a gate that trains a model (slow; deselect with -m 'not train')")
    config.addinivalue_line("markers", "gpu: needs CUDA; skipped when CUDA is not available")
    config.addinivalue_line("markers", "fleet: a gate over several targets")
    for option, kind in (("segcheck_html", "html"), ("segcheck_md", "md")):
        _check_page_option(config, option, kind)
    state = config.stash[STATE] = SegcheckState(config)
    config.pluginmanager.register(state, "segcheck-state")
    try:
        if config.getoption("segcheck_plugin"):
            _ = state.session  # load the named plugins now: a broken one is a usage error
    except SegcheckError as exc:
        raise pytest.UsageError(str(exc)) from None
    targets_named = any(config.getoption(o) for o in TARGET_OPTIONS) or _gate_suite_requested(config)
    writes = targets_named or any(config.getoption(o) for o in REPORT_OPTIONS)
    if writes and not hasattr(config, "workerinput") and not config.option.collectonly:
        _check_outputs(state, targets_named)
    if targets_named:
        _resolve_single_target(state)


REPORT_OPTIONS = ("segcheck_report", "segcheck_html", "segcheck_md", "segcheck_overwrite")


def _check_outputs(state: SegcheckState, with_targets: bool) -> None:
    """The files the run writes may be written (``SegcheckState.check_outputs``): a usage
    error before any test otherwise. Checked on the controller, where they are written."""
    try:
        specs = list(state.targets.values()) if with_targets else []
    except SegcheckError:
        specs = []  # the target's own error is reported next, by _resolve_single_target
    try:
        state.check_outputs(specs)
    except SegcheckError as exc:
        raise pytest.UsageError(str(exc)) from None


def _check_page_option(config: pytest.Config, option: str, kind: str) -> None:
    """--segcheck-html/--segcheck-md must name a file of their kind (a usage error otherwise)."""
    from segcheck.render import page_format

    path = config.getoption(option)
    if path is None:
        return
    flag = "--" + option.replace("_", "-")
    try:
        given = page_format(path)
    except SegcheckError:
        given = None
    if given != kind:
        raise pytest.UsageError(f"{flag} {path}: expected a .{kind} file name; e.g. {flag} report.{kind}")


def _resolve_single_target(state: SegcheckState) -> None:
    """Resolve a run's only target now (if not done yet): anything wrong with it is a usage error
    before any test. With a manifest or a shard (or several targets), each target's first gate
    reports its own problem and the others go on."""
    try:
        if len(state.targets) == 1 and not state.named_targets:
            state.resolve(next(iter(state.targets)))
    except SegcheckError as exc:
        raise pytest.UsageError(str(exc)) from None


def _gate_suite_requested(config: pytest.Config) -> bool:
    """Whether the command line names a gate suite (its conftest says so: ``suite_conftests``)."""
    return bool(suite_conftests(config))


def _active(config: pytest.Config) -> bool:
    """Whether this run tests a segcheck target: its session is open (a gate suite, a segcheck
    option or a segcheck fixture opened it). An inactive run is another project's: inert."""
    return "session" in vars(_state(config))


def pytest_report_header(config: pytest.Config) -> list[str]:
    state = _state(config)
    if not _active(config):
        return []
    try:
        targets = state.targets
    except SegcheckError as exc:  # a gate needing them fails with this line; the header only says it
        return [f"segcheck: no target: {exc}"]
    lines = [
        f"segcheck: gates of {name} absent: {note}"
        for name, note in state.plugins.absent.items()
        if name.startswith("segcheck.gates.")
    ]
    if state.shard is not None:
        share, n = len(targets), len(state.shard["fleet_targets"])
        lines.append(f"segcheck shard {state.shard['index']}/{state.shard['count']}: {share} of {n} targets")
    for target_id, spec in targets.items():
        described = state.described.get(target_id)
        named = "segcheck" if len(targets) == 1 else f"segcheck: {target_id}"
        if described is None:
            lines.append(
                f"segcheck: {target_id}: model {spec.model}, dataset {spec.dataset} (resolved when its gates run)"
            )
        else:
            shown = ("normalization", "spec", "settings")
            parts = ", ".join(f"{k} {v}" for k, v in described.items() if v and k not in shown)
            n = described["normalization"]
            normalization = f"mean {_rounded(n['mean'])}, std {_rounded(n['std'])} from {n['source']}"
            if len(targets) == 1:
                lines += [f"segcheck: {parts}", f"segcheck normalization: {normalization}"]
            else:  # one line per target of a fleet
                lines.append(f"segcheck: {target_id}: {parts}; normalization {normalization}")
        lines += _settings_line(state, target_id, named)
        if spec.trust_checkpoint:
            lines.append(
                f"segcheck WARNING: --trust-checkpoint: {spec.checkpoint} may run code when unpickled; "
                "use it only for files you trust"
            )
    return lines


def _rounded(values) -> str:
    """``(0.4, 0.456, 0.398)``: float32 statistics read back as float64, shown to 4 significant digits."""
    return "(" + ", ".join(f"{float(v):.4g}" for v in values) + ")"


def _settings_line(state: SegcheckState, target_id: str, named: str) -> list[str]:
    """The target's settings that are not defaults, each with its source, on one line; nothing
    when all are defaults, or when its dataset's declarations cannot be read yet (its first
    gate says why)."""
    try:
        settings = state.settings_of(target_id)
    except SegcheckError:
        return []
    if not settings:  # the defaults: nothing to say (the JSON report lists every setting)
        return []
    listed = "; ".join(f"{key} = {value} ({source})" for key, (value, source) in settings.items())
    return [f"{named} settings: {listed}"]


def pytest_generate_tests(metafunc: pytest.Metafunc):
    """A test asking for ``segcheck_gate`` runs once per (target, registered gate of its suite)."""
    if "segcheck_gate" not in metafunc.fixturenames:
        return
    state = _state(metafunc.config)
    suite = getattr(metafunc.module, "SEGCHECK_SUITE", "gates")
    try:
        targets, gates = list(state.targets), state.plugins.gates.gates(suite)
    except SegcheckError as exc:
        raise pytest.UsageError(str(exc)) from None
    if not gates:
        raise pytest.UsageError(
            f"no gate is registered for suite {suite!r} ({metafunc.module.__file__}); register gates with "
            f"suite={suite!r}, or check that the plugin that adds them is loaded (segcheck list)"
        )
    params = []
    for target_id in targets:
        for gate in sorted(gates, key=lambda g: bool({"train", "gpu"} & set(g.markers))):
            marks = [getattr(pytest.mark, m) for m in gate.markers]
            ident = f"{target_id}:{gate.name}" if state.named_targets else gate.name
            params.append(pytest.param((target_id, gate.name), marks=marks, id=ident))
    metafunc.parametrize("segcheck_gate", params, indirect=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]):
    """Name each gate test's gate and target; in a segcheck run, skip other ``gpu`` tests without
    CUDA (gate tests are skipped where every need is decided: ``segcheck.gates.unmet_need``);
    another project's ``gpu`` marker is its own business."""
    gpu_items = [i for i in items if i.get_closest_marker("gpu") and i.get_closest_marker("gate") is None]
    if gpu_items and (_active(config) or any(i.get_closest_marker("gate") for i in items)):
        import torch

        if not torch.cuda.is_available():
            for item in gpu_items:
                item.add_marker(pytest.mark.skip(reason="needs CUDA; none available on this machine"))
    state = _state(config)
    if any(i.get_closest_marker("gate") for i in items) and not state.failed:
        _resolve_single_target(state)
    for item in items:
        marker = item.get_closest_marker("gate")
        if marker is None:
            continue
        params = item.callspec.params if hasattr(item, "callspec") else {}
        if "segcheck_gate" in params:
            target_id, name = params["segcheck_gate"]
        else:
            target_id, name = state.default_target_id(), _gate_name(item, marker)
        item.stash[GATE_ID] = {"gate": name, "target": target_id}


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """``-n N`` (xdist's ``load``) in a segcheck run: each target's gates on one worker
    (``segcheck.xdist_scheduling``). Another project's run keeps xdist's own scheduling."""
    if config.getoption("dist") != "load" or not _active(config):
        return None  # the user chose a distribution mode, or this is not a segcheck run; keep it
    from segcheck.xdist_scheduling import TargetScheduling

    state = _state(config)
    try:
        targets = list(state.targets)
    except SegcheckError:
        targets = []
    return TargetScheduling(config, log, targets)


def _gate_name(item: pytest.Item, marker: pytest.Mark) -> str:
    """The gate a hand-written gate test checks: ``gate(name="{param}")``, else the test's name
    without ``test_`` (and its parameters)."""
    function = getattr(item, "originalname", item.name).removeprefix("test_")
    param = item.callspec.id if hasattr(item, "callspec") else ""
    default = "{function}[{param}]" if param else "{function}"
    return marker.kwargs.get("name", default).format(function=function, param=param)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None):
    """After a target's last gate test (the next test is another target's gate, or there is
    none), its model and data are let go: a worker holds one target at a time. Under xdist the
    scheduler keeps a target's gates together on one worker, which knows its next test."""
    try:
        return (yield)
    finally:
        ident = item.stash.get(GATE_ID, None)
        following = None if nextitem is None else nextitem.stash.get(GATE_ID, None)
        if ident is not None and (nextitem is None or (following and following["target"] != ident["target"])):
            _state(item.config).release()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call):
    """Gate tests' reports carry their gate and target, and the call report the typed record."""
    report = yield
    ident = item.stash.get(GATE_ID, None)
    if ident is not None:
        report.segcheck_gate = ident
        described = _state(item.config).described.get(ident["target"])
        if described is not None:
            report.segcheck_described = {ident["target"]: described}
        record = item.stash.get(RECORD, None)
        if record is not None and report.when == "call":
            report.segcheck_record = _agreeing(record, report).to_dict()
        if report.when == "call":
            _attach_figures(item, report)
    return report


def _attach_figures(item: pytest.Item, report: pytest.TestReport) -> None:
    """The figures a gate test drew travel on its call report (to the controller under xdist),
    and with pytest-html active they are its report's extras too."""
    figures, targets = item.stash.get(FIGURES, None), item.stash.get(TARGET_FIGURES, None)
    if figures:
        report.segcheck_figures = figures
    if targets:
        report.segcheck_target_figures = targets
    if (figures or targets) and item.config.pluginmanager.hasplugin("html"):
        from pytest_html import extras

        drawn = [*(f for fs in (targets or {}).values() for f in fs), *(figures or [])]
        report.extras = [
            *getattr(report, "extras", []),
            *(
                extras.png(f["png"], name=f["title"]) if f["png"] else extras.text(f["note"], name=f["title"])
                for f in drawn
            ),
        ]


def _agreeing(record: GateRecord, report: pytest.TestReport) -> GateRecord:
    """The record, its outcome made to agree with the test's (a recorded pass followed by a
    failing assert, an expected failure, a strict XPASS)."""
    from segcheck.pytest_state import _reason

    if hasattr(report, "wasxfail"):
        record.outcome = "xfailed" if report.skipped else "failed"
        record.message = f"{_reason(report)}; {record.message}"
    elif report.failed and record.outcome == "passed":
        record.outcome, record.message = "failed", f"the test failed after its gate passed: {_reason(report)}"
    return record


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):
    """In a gate, a SegcheckError (bad checkpoint, unreadable data, ...) is one line, not a
    traceback, and so is any other exception (naming the model when it raised inside it) unless
    ``--tb=long`` asks for the traceback; a long forward pass of a gate says so as it ends."""
    from segcheck import progress

    progress.SINK = _progress_sink(item)
    try:
        return (yield)
    except SegcheckError as exc:
        if item.get_closest_marker("gate") is None or item.get_closest_marker("xfail") is not None:
            raise  # not a gate, or an expected failure that xfail(raises=...) must see as it is
        message = str(exc)
    except Exception as exc:
        gated = item.get_closest_marker("gate") is not None and item.get_closest_marker("xfail") is None
        if not gated or item.config.getoption("tbstyle", "auto") == "long":
            raise
        ident = item.stash.get(GATE_ID, None) or {"gate": item.name}
        who = "the model" if _raised_in_a_module(exc) else "it"
        text = " ".join(str(exc).split()).rstrip(".")
        message = f"gate {ident['gate']}: {who} raised {type(exc).__name__}: {text}; see --tb=long"
    finally:
        progress.SINK = None
    pytest.fail(message, pytrace=False)  # outside the except: no "during handling" chain


def _raised_in_a_module(exc: BaseException) -> bool:
    """Whether the traceback passes through a torch module's own ``forward`` (not segcheck's code)."""
    import torch

    tb = exc.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        owner = frame.f_locals.get("self")
        if frame.f_code.co_name == "forward" and isinstance(owner, torch.nn.Module):
            return True
        tb = tb.tb_next
    return False


def _progress_sink(item: pytest.Item):
    """A line writer past output capture, naming the gate (None where no terminal is shown)."""
    reporter = item.config.pluginmanager.getplugin("terminalreporter")
    capture = item.config.pluginmanager.getplugin("capturemanager")
    ident = item.stash.get(GATE_ID, None)
    if reporter is None or capture is None or ident is None:
        return None

    def write(line: str) -> None:
        with capture.global_and_fixture_disabled():
            reporter.write_line(f"segcheck: {ident['gate']} [{ident['target']}]: {line}")

    return write


def _record(item: pytest.Item, record: GateRecord) -> None:
    if RECORD in item.stash:
        raise SegcheckError(f"{item.nodeid} recorded two gate results; a gate test checks one gate")
    item.stash[RECORD] = record
    item.user_properties.extend(record.properties())


@pytest.fixture
def segcheck_gate(request):
    """``check()``: run the parametrized (target, gate) pair, record it, assert it passed.
    An unmet need of the gate, or a gate that finds nothing to judge, is a SKIP with the reason."""
    from segcheck.gates.registered import NotApplicable, TargetProblem, run, unmet_need

    target_id, name = request.param
    state = _state(request.config)

    def check():
        __tracebackhide__ = True
        target = state.target_for_gate(target_id)
        if state.target_figures_due(target_id):
            from segcheck import figures, gate_figures

            drawn = figures.drawn(f"{target_id}: per-image grid", gate_figures.predictions, target)
            request.node.stash[TARGET_FIGURES] = {target_id: [f.to_dict() for f in drawn]}
        gate = next(g for g in state.plugins.gates.gates() if g.name == name)
        config = state.config_of(target_id)
        reason = unmet_need(gate, target, config)
        if reason:
            pytest.skip(reason)
        try:
            result = run(gate, target, config)
        except NotApplicable as exc:
            pytest.skip(str(exc))
        except TargetProblem as exc:
            first = state.first_to_meet(target_id, exc.key, gate.name)
            if first != gate.name:
                pytest.skip(f"not run: {exc.key} (see {first})")
            raise
        _record(request.node, GateRecord.from_result(result, target_id, request.node.nodeid, gate.name))
        if state.figures_wanted and gate.figures is not None:
            from segcheck.figures import drawn

            cfg = config[gate.section] if gate.section else {}
            request.node.stash[FIGURES] = [f.to_dict() for f in drawn(gate.name, gate.figures, target, result, cfg)]
        if not result.passed:
            pytest.fail(f"{gate.name}: {result.message}", pytrace=False)
        return result

    return check


@pytest.fixture
def gate(request):
    """``gate(result)``: for a hand-written gate test, record a GateResult and assert it passed."""

    def check(result):
        __tracebackhide__ = True
        ident = request.node.stash.get(GATE_ID, None) or {"target": _state(request.config).default_target_id()}
        _record(request.node, GateRecord.from_result(result, ident["target"], request.node.nodeid))
        if not result.passed:
            pytest.fail(f"{result.name}: {result.message}", pytrace=False)
        return result

    return check


@pytest.fixture(scope="session")
def segcheck_config(pytestconfig) -> dict:
    """The merged configuration: defaults, segcheck.yaml, command line, segcheck_configure hooks."""
    return _resolved(pytestconfig, lambda s: s.config)


@pytest.fixture(scope="session")
def segcheck_plugins(pytestconfig):
    """The loaded plugins (``.manager``, ``.models``, ``.datasets``, ``.metrics``, ``.gates``)."""
    return _resolved(pytestconfig, lambda s: s.plugins)


@pytest.fixture(scope="session")
def segcheck_target(pytestconfig):
    """The (first) target, resolved: ``.model`` (ModelUnderTest) on ``.data`` (EvalData)."""
    return _resolved(pytestconfig, lambda s: s.resolve(next(iter(s.targets))))


def _resolved(config: pytest.Config, get):
    try:
        return get(_state(config))
    except SegcheckError as exc:
        pytest.fail(str(exc), pytrace=False)
