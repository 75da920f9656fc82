"""segcheck's pytest plugin: options, fixtures, markers, the summary table and the JSON report.

Loaded through the ``pytest11`` entry point. It stays cheap for test runs that use no
segcheck fixture: plugins, models and data are resolved on first use, or at start-up when
a segcheck option is given explicitly (so a wrong name is a usage error before any test).
"""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path

import pytest

from segcheck import SegcheckError
from segcheck import config as segconfig

STATE = pytest.StashKey["SegcheckState"]()
GATE_TEST = "segcheck_gate_test"  # user property of gate tests: the name of the gate they check
TARGET_OPTIONS = ("segcheck_model", "segcheck_dataset", "segcheck_checkpoint", "segcheck_data_root")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise pytest.UsageError(f"--eval-size expects a positive integer, got {text!r}")
    return value


def pytest_addoption(parser):
    group = parser.getgroup("segcheck", "segcheck: validity gates for segmentation models")
    group.addoption("--model", dest="segcheck_model", metavar="NAME",
                    help="registered model to test (default: unet; `segcheck list` shows all)")
    group.addoption("--checkpoint", dest="segcheck_checkpoint", metavar="PATH",
                    help="weights (.safetensors, .pt, .pth); default: the model's bundled checkpoint; "
                         "'none' for random init")
    group.addoption("--dataset", dest="segcheck_dataset", metavar="NAME",
                    help="registered dataset (default: synthetic-streets)")
    group.addoption("--data-root", dest="segcheck_data_root", metavar="DIR", help="dataset folder, for file datasets")
    group.addoption("--device", dest="segcheck_device", choices=("auto", "cpu", "cuda"),
                    help="where the model runs (default: auto = cuda if available)")
    group.addoption("--plugin", dest="segcheck_plugin", action="append", default=[], metavar="PATH_OR_MODULE",
                    help="a .py file or module implementing segcheck hooks (repeatable)")
    group.addoption("--segcheck-config", dest="segcheck_config", metavar="FILE.yaml",
                    help="thresholds and settings (default: segcheck.yaml in the rootdir, if present)")
    group.addoption("--eval-size", dest="segcheck_eval_size", type=_positive_int, metavar="N",
                    help="images in the eval sample (default: 32)")
    group.addoption("--segcheck-report", dest="segcheck_report", metavar="PATH.json",
                    help="where to write the JSON report (default: segcheck-report.json when gates ran)")


class SegcheckState:
    """Per-run state: the merged config, lazily loaded plugins and target, and gate results."""

    def __init__(self, config: pytest.Config):
        self.pytest_config = config
        opt = config.getoption
        path = opt("segcheck_config")
        if path is None and (config.rootpath / "segcheck.yaml").is_file():
            path = config.rootpath / "segcheck.yaml"
        overrides = {"target": {k: v for k, v in (("model", opt("segcheck_model")),
                                                  ("dataset", opt("segcheck_dataset")),
                                                  ("device", opt("segcheck_device"))) if v is not None}}
        if opt("segcheck_eval_size"):
            overrides["eval"] = {"size": opt("segcheck_eval_size")}
        self.config_path = path
        self.config = segconfig.load(path, overrides)
        self.results: list[dict] = []
        self._by_test: dict[str, list[dict]] = {}  # test node id -> its records

    @cached_property
    def plugins(self):
        from segcheck import plugins

        loaded = plugins.load(self.pytest_config.getoption("segcheck_plugin"))
        loaded.manager.hook.segcheck_configure(config=self.config)
        return loaded

    @cached_property
    def target(self):
        from segcheck.target import Target

        opt = self.pytest_config.getoption
        t = self.config["target"]
        return Target(
            self.plugins, self.config, t["model"], t["dataset"],
            checkpoint=Path(opt("segcheck_checkpoint")) if opt("segcheck_checkpoint") else None,
            data_root=Path(opt("segcheck_data_root")) if opt("segcheck_data_root") else None,
            device=t["device"],
        )

    # --- pytest hooks of this run (the state is registered as a plugin) --------------------
    def pytest_runtest_logreport(self, report: pytest.TestReport):
        """Collect gate records; with xdist they arrive here from the workers' reports. A gate
        test that errors or skips without recording its gate is reported too, and one that
        recorded a pass and then errors (teardown) becomes an error: none is dropped or doubled."""
        # records are made during the call; later reports carry the same user properties again
        records = [r for key, r in report.user_properties if key == "segcheck_gate"] if report.when == "call" else []
        if records:
            self.results.extend(records)
            self._by_test[report.nodeid] = records
        name = next((value for key, value in report.user_properties if key == GATE_TEST), None)
        if name is None or not (report.failed or report.skipped) or records:
            return
        earlier = self._by_test.get(report.nodeid)
        if earlier is None:
            record = _unrecorded(report, name, self.config["target"]["model"])
            self.results.append(record)
            self._by_test[report.nodeid] = [record]
        elif report.failed:
            for record in earlier:
                if record["outcome"] != "error":
                    record.update(passed=False, outcome="error", message=_reason(report))

    def pytest_terminal_summary(self, terminalreporter, config: pytest.Config):
        if hasattr(config, "workerinput") or not self.results:
            return
        from segcheck.report import summary_table, write_json

        results = sorted(self.results, key=lambda r: (r["model"], r["test"]))
        terminalreporter.section("segcheck gates")
        for line in summary_table(results):
            terminalreporter.write_line(line)
        path = Path(config.getoption("segcheck_report") or config.rootpath / "segcheck-report.json")
        try:
            described = self.target.describe()
        except SegcheckError as exc:
            described = {"error": str(exc)}
        write_json(path, described, segconfig.thresholds(self.config), results)
        terminalreporter.write_line(f"segcheck report: {path}")


def _reason(report: pytest.TestReport) -> str:
    """The one-line reason of a failed, skipped or xfailed report."""
    if hasattr(report, "wasxfail"):
        return f"expected failure: {report.wasxfail}" if report.wasxfail else "expected failure"
    if report.skipped and isinstance(report.longrepr, (tuple, list)):
        message = report.longrepr[2]
    else:
        crash = getattr(report.longrepr, "reprcrash", None)
        lines = (crash.message if crash is not None else report.longreprtext).strip().splitlines() or ["?"]
        message = lines[-1] if crash is None else lines[0]
    for prefix in ("Skipped: ", "Failed: ", "segcheck.SegcheckError: ", "SegcheckError: "):
        message = message.removeprefix(prefix)
    return message


def _unrecorded(report: pytest.TestReport, name: str, model: str) -> dict:
    """The report record of a gate test that failed or skipped before recording a result."""
    outcome = "xfailed" if hasattr(report, "wasxfail") else "skipped" if report.skipped else "error"
    return {"name": name, "model": model, "test": report.nodeid, "value": None, "threshold": None,
            "rule": "-", "passed": False, "outcome": outcome, "message": _reason(report), "details": {}}


def _state(config: pytest.Config) -> SegcheckState:
    return config.stash[STATE]


def pytest_configure(config: pytest.Config):
    config.addinivalue_line("markers", "gate: a segcheck validity gate")
    config.addinivalue_line("markers", "train: a gate that trains a model (slow; deselect with -m 'not train')")
    config.addinivalue_line("markers", "gpu: needs CUDA; skipped when CUDA is not available")
    try:
        state = config.stash[STATE] = SegcheckState(config)
        config.pluginmanager.register(state, "segcheck-state")
        # resolve now what was asked for explicitly: a wrong name or path is a usage error before any test
        if config.getoption("segcheck_plugin"):
            state.plugins
        if any(config.getoption(o) for o in TARGET_OPTIONS) or _gate_suite_requested(config):
            state.target
    except SegcheckError as exc:
        raise pytest.UsageError(str(exc)) from None
    if getattr(config.option, "dist", "no") == "load":
        config.option.dist = "loadgroup"  # keep each model's gates on one worker (shared predictions)


def _gate_suite_requested(config: pytest.Config) -> bool:
    """Whether the command line names a gate suite (its conftest, loaded before configure, says so)."""
    return any(getattr(plugin, "SEGCHECK_GATE_SUITE", False) for plugin in config.pluginmanager.get_plugins())


def pytest_report_header(config: pytest.Config) -> list[str]:
    state = _state(config)
    if "target" not in vars(state):
        t = state.config["target"]
        return [f"segcheck: model {t['model']}, dataset {t['dataset']}, device {t['device']} "
                "(resolved when a gate runs)"]
    described = ", ".join(f"{k} {v}" for k, v in state.target.describe().items() if v)
    thresholds = ", ".join(f"{k}={v}" for k, v in segconfig.thresholds(state.config).items())
    return [f"segcheck: {described}", f"segcheck thresholds: {thresholds}"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]):
    gpu_items = [item for item in items if item.get_closest_marker("gpu")]
    if gpu_items:
        import torch

        if not torch.cuda.is_available():
            for item in gpu_items:
                item.add_marker(pytest.mark.skip(reason="needs CUDA; none available on this machine"))
    model = _state(config).config["target"]["model"]
    for item in items:
        marker = item.get_closest_marker("gate")
        if marker:
            item.add_marker(pytest.mark.xdist_group(f"segcheck-{model}"))
            item.user_properties.append((GATE_TEST, _gate_name(item, marker)))


def _gate_name(item: pytest.Item, marker: pytest.Mark) -> str:
    """The gate a test checks, as its records name it: ``gate(name="{param}")`` for a test
    parametrized over gates, else the test's name without ``test_`` (and its parameters)."""
    function = getattr(item, "originalname", item.name).removeprefix("test_")
    param = item.callspec.id if hasattr(item, "callspec") else ""
    default = "{function}[{param}]" if param else "{function}"
    return marker.kwargs.get("name", default).format(function=function, param=param)


@pytest.fixture(scope="session")
def segcheck_config(pytestconfig) -> dict:
    """The merged configuration: defaults, segcheck.yaml, command line, segcheck_configure hooks."""
    return _state(pytestconfig).config


@pytest.fixture(scope="session")
def segcheck_plugins(pytestconfig):
    """The loaded plugins (``.manager``, ``.models``, ``.datasets``, ``.metrics``)."""
    return _resolved(pytestconfig, "plugins")


@pytest.fixture(scope="session")
def segcheck_target(pytestconfig):
    """The model under test on its eval set (``segcheck.target.Target``), shared by every gate."""
    return _resolved(pytestconfig, "target")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):
    """In a gate, a SegcheckError (bad checkpoint, unreadable data, ...) is one line, not a traceback."""
    try:
        return (yield)
    except SegcheckError as exc:
        if item.get_closest_marker("gate") is None or item.get_closest_marker("xfail") is not None:
            raise  # not a gate, or an expected failure that xfail(raises=...) must see as it is
        message = str(exc)
    pytest.fail(message, pytrace=False)  # outside the except: no "during handling" chain


def _resolved(config: pytest.Config, name: str):
    try:
        return getattr(_state(config), name)
    except SegcheckError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture
def gate(request):
    """``gate(result)``: record a GateResult for the summary and report, then assert it passed."""

    def check(result):
        __tracebackhide__ = True
        record = json.loads(json.dumps(result.to_dict(), default=_jsonable))
        record["model"] = _state(request.config).config["target"]["model"]
        record["test"] = request.node.nodeid
        record["outcome"] = "passed" if result.passed else "failed"
        request.node.user_properties.append(("segcheck_gate", record))
        if not result.passed:
            pytest.fail(f"{result.name}: {result.message}", pytrace=False)
        return result

    return check


def _jsonable(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to the JSON report")


