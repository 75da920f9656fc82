"""The state of one pytest run of segcheck: its session (plugins, settings), its targets (one
resident at a time), and the gate records, which it reports at the end of the run. Imported by
every pytest run (through the plugin): its module-level imports stay light (no YAML, no torch)."""

from __future__ import annotations

import gc
import importlib
import importlib.util
import weakref
from functools import cached_property
from pathlib import Path

import pytest

from segcheck import SegcheckError
from segcheck.fleet import failed_fleet_gates, fleet_lines, fleet_view, shard_of, spec_row
from segcheck.report import (
    GateRecord,
    anomaly_lines,
    anomaly_tables,
    error_lines,
    error_tables,
    prompt_lines,
    prompt_tables,
    robustness_lines,
    robustness_tables,
    summary_table,
    write_json,
)

# options that name what is under test: given explicitly, the target is resolved at start-up
TARGET_OPTIONS = (
    "segcheck_trust_checkpoint",
    "segcheck_model",
    "segcheck_dataset",
    "segcheck_checkpoint",
    "segcheck_data_root",
    "segcheck_manifest",
    "segcheck_mean",
    "segcheck_std",
    "segcheck_model_arg",
    "segcheck_shard",
)


class SegcheckState:
    """Per-run state. Registered as a pytest plugin, it collects the records of gate tests
    (from xdist workers too) and writes the JSON report at session finish."""

    def __init__(self, config: pytest.Config):
        self.pytest_config = config
        self.records: list[GateRecord] = []
        self.described: dict[str, dict] = {}  # target id -> what it is (from whoever resolved it)
        self._by_test: dict[str, GateRecord] = {}
        self._resident: dict[str, object] = {}  # at most one resolved target
        self.failed: dict[str, str] = {}  # target id -> why it could not be set up
        self._failure_shown: set[str] = set()
        self._target_settings: dict[str, tuple[dict, dict]] = {}  # target id -> (settings, their sources)
        self._problems: dict[tuple[str, str], str] = {}  # (target id, target problem) -> the gate that reported it
        self.fleet: dict | None = None  # the fleet view, computed at session finish (two or more targets)
        self.shard: dict | None = None  # with --shard K/N: {"index": K, "count": N, "fleet_targets": all ids}
        self.target_figures: dict[str, dict] = {}  # target id -> {"figures": paths, "figure_notes": notes}
        self._drawn_targets: set[str] = set()  # targets whose per-image grid this process drew
        self._figure_files = None
        self.pages: list[str] = []  # for the terminal: each HTML/Markdown page written, or why it was not
        self._outputs_checked = False
        self.output_problem: str | None = None  # why this run writes no file (segcheck.outputs), found late

    # --- set-up -----------------------------------------------------------------------------
    @cached_property
    def report_path(self) -> Path:
        """Where the JSON report goes (its figures in ``<stem>.figures/`` beside it): by default
        ``segcheck-report.json`` in the folder pytest was invoked from (not the rootdir, which
        may lie outside the user's project)."""
        given = self.pytest_config.getoption("segcheck_report")
        return Path(given) if given else self.pytest_config.invocation_params.dir / "segcheck-report.json"

    @cached_property
    def figures_wanted(self) -> bool:
        """Whether gates draw figures: an HTML or Markdown report asks for them (segcheck's, or
        pytest-html's ``--html``)."""
        opt = self.pytest_config.getoption
        return bool(opt("segcheck_html") or opt("segcheck_md") or opt("htmlpath", None))

    def check_outputs(self, specs=()) -> None:
        """Raise (one line, :mod:`segcheck.outputs`) unless this run may write its JSON report, the
        report's figures folder and its HTML/Markdown pages; ``specs`` (the targets, when known)
        add their checkpoints as inputs and their data roots."""
        from segcheck.outputs import check_figures_folder, check_output
        from segcheck.render import check_page

        opt = self.pytest_config.getoption
        inputs = [opt("segcheck_checkpoint"), opt("segcheck_manifest"), opt("segcheck_config")]
        inputs += [*(opt("segcheck_plugin") or []), *(s.checkpoint for s in specs)]
        roots = [opt("segcheck_data_root"), *(s.data_root for s in specs)]
        overwrite = {"overwrite": bool(opt("segcheck_overwrite")), "overwrite_flag": "--segcheck-overwrite"}
        rule = {"inputs": [Path(p) for p in inputs if p], "data_roots": [Path(r) for r in roots if r], **overwrite}
        given = opt("segcheck_report")
        flag = "--segcheck-report" if given else "the JSON report"
        elsewhere = "choose another path" if given else "pass --segcheck-report OTHER.json"
        check_output(self.report_path, flag, suffixes=(".json",), elsewhere=elsewhere, **rule)
        if self.figures_wanted:  # FigureFiles' folder
            folder = self.report_path.parent / f"{self.report_path.stem}.figures"
            check_figures_folder(folder, f"{flag} {self.report_path}", [self.report_path], **overwrite)
        for option in ("segcheck_html", "segcheck_md"):
            if opt(option):
                check_page(Path(opt(option)), "--" + option.replace("_", "-"), **rule)
        self._outputs_checked = True

    def outputs_ok(self) -> bool:
        """Whether this run may write its files: :meth:`check_outputs`, once (the controller checks
        at start-up; a run that did not, before its first file); else ``output_problem`` says why."""
        if not self._outputs_checked and self.output_problem is None:
            try:
                self.check_outputs(list(self.targets.values()) if "targets" in vars(self) else [])
            except SegcheckError as exc:
                self.output_problem = str(exc)
        return self.output_problem is None

    def target_figures_due(self, target_id: str) -> bool:
        """True once per target and process: the first gate test of a target draws its per-image grid."""
        if not self.figures_wanted or target_id in self._drawn_targets:
            return False
        self._drawn_targets.add(target_id)
        return True

    @cached_property
    def session(self):
        from segcheck.session import open_session

        opt = self.pytest_config.getoption
        path = opt("segcheck_config")
        if path is None and (self.pytest_config.rootpath / "segcheck.yaml").is_file():
            path = self.pytest_config.rootpath / "segcheck.yaml"
        given = lambda **options: {k: opt(o) for k, o in options.items() if opt(o)}  # noqa: E731
        target = given(model="segcheck_model", dataset="segcheck_dataset", device="segcheck_device")
        evals = given(
            size="segcheck_eval_size", mean="segcheck_mean", std="segcheck_std", resize="segcheck_eval_resize"
        )
        return open_session(opt("segcheck_plugin"), path, {"target": target, "eval": evals}, self.suite_target())

    def suite_target(self) -> dict:
        """The default target of the gate suite on the command line (``SEGCHECK_DEFAULT_TARGET``
        in its conftest, e.g. suites/prompted's prompted model); segcheck's own when suites
        with different defaults run together."""
        suites = [getattr(c, "SEGCHECK_DEFAULT_TARGET", {}) for c in suite_conftests(self.pytest_config)]
        distinct = {tuple(sorted(d.items())) for d in suites}
        return dict(next(iter(distinct))) if len(distinct) == 1 else {}

    @property
    def plugins(self):
        return self.session.plugins

    @property
    def config(self) -> dict:
        return self.session.config

    @cached_property
    def targets(self) -> dict:
        """``{id: TargetSpec}``: the manifest's targets, or the one the options name."""
        from segcheck import config as segconfig
        from segcheck.manifest import read_manifest, target_spec, unique

        opt = self.pytest_config.getoption
        t = self.config["target"]
        mean, std = segconfig.explicit_normalization(self.config)
        row = {
            "model": t["model"],
            "dataset": t["dataset"],
            "device": t["device"],
            "mean": mean,
            "std": std,
            "model_args": dict(opt("segcheck_model_arg") or []),
            "init_seed": t["init_seed"],
        }
        if opt("segcheck_trust_checkpoint"):
            row["trust_checkpoint"] = True
        for key, option in (("checkpoint", "segcheck_checkpoint"), ("data_root", "segcheck_data_root")):
            if opt(option) is not None:
                row[key] = opt(option)
        if opt("segcheck_manifest"):
            if "checkpoint" in row:
                raise SegcheckError(
                    "--checkpoint names one target's weights; with --models-manifest give each row its checkpoint"
                )
            specs = read_manifest(Path(opt("segcheck_manifest")), self.plugins, row)
        else:
            specs = unique([target_spec(self.plugins, row)])
        if opt("segcheck_shard"):
            specs = self._shard(specs, *opt("segcheck_shard"))
        return {s.id: s for s in specs}

    def _shard(self, specs: list, index: int, count: int) -> list:
        """The specs of shard ``index`` of ``count`` (``segcheck.fleet.shard_of``); an empty shard is an error."""
        ids = [s.id for s in specs]
        mine = set(shard_of(ids, index, count))
        if not mine:
            raise SegcheckError(
                f"--shard {index}/{count}: the run has {len(ids)} target(s), so shard {index} gets none; "
                f"use at most {len(ids)} shards"
            )
        self.shard = {"index": index, "count": count, "fleet_targets": sorted(ids)}
        return [s for s in specs if s.id in mine]

    @property
    def named_targets(self) -> bool:
        """Whether test ids and records name the target: a manifest or a shard run (whatever the
        number of targets, so a shard's records are those of the whole run), or several targets."""
        opt = self.pytest_config.getoption
        return bool(opt("segcheck_manifest") or opt("segcheck_shard")) or len(self.targets) > 1

    def resolve(self, target_id: str):
        """The resolved target (model loaded, eval data read); the previous one is let go first."""
        from segcheck.target import resolve

        if target_id not in self._resident:
            self.release()
            spec = self.targets[target_id]
            target = resolve(self.plugins, spec, self.config_of(target_id))
            self._resident[target_id] = target
            settings = {k: {"value": v, "source": src} for k, (v, src) in self.settings_of(target_id).items()}
            self.described[target_id] = {**target.describe(), "spec": spec_row(spec), "settings": settings}
        return self._resident[target_id]

    def config_of(self, target_id: str) -> dict:
        """The settings ``target_id`` is judged with: the run's, with its dataset's declarations."""
        return self._settings(target_id)[0]

    def settings_of(self, target_id: str) -> dict[str, tuple[object, str]]:
        """``{"section.key": (value, source)}`` of ``target_id``'s settings that are not defaults
        (the ``target`` section, which the header states otherwise, left out)."""
        return {k: v for k, v in self._settings(target_id)[1].items() if not k.startswith("target.")}

    def _settings(self, target_id: str) -> tuple[dict, dict]:
        if target_id not in self._target_settings:
            from segcheck.target import declared_settings

            spec = self.targets[target_id]
            declared = declared_settings(self.plugins, spec.dataset, spec.data_root)
            self._target_settings[target_id] = self.session.settings(declared)
        return self._target_settings[target_id]

    def release(self) -> None:
        """Let the resident target go (its model, eval data and forward pass) and collect it now,
        so that a worker holds one target at a time however many it runs."""
        if self._resident:
            (target,) = self._resident.values()
            held = weakref.ref(target)
            del target
            self._resident.clear()
            if held() is not None:  # a reference cycle (a model's, a traceback's) holds it: collect now
                gc.collect()

    def target_for_gate(self, target_id: str):
        """The target a gate test runs on; a target that cannot be set up fails its first gate
        test with the one-line reason and skips the others (none of them passes)."""
        __tracebackhide__ = True
        if target_id not in self.failed:
            try:
                return self.resolve(target_id)
            except SegcheckError as exc:
                spec = self.targets[target_id]
                self.failed[target_id] = str(exc)
                self.described[target_id] = {"error": str(exc), "spec": spec_row(spec)}
                if spec.tags:
                    self.described[target_id]["tags"] = dict(spec.tags)
        if target_id in self._failure_shown:
            pytest.skip(f"not run: target {target_id!r} could not be set up (see its first gate)")
        self._failure_shown.add(target_id)
        pytest.fail(f"target {target_id!r} could not be set up: {self.failed[target_id]}", pytrace=False)

    def first_to_meet(self, target_id: str, problem: str, gate: str) -> str:
        """The first gate of ``target_id`` that met target problem ``problem`` (``gate`` if none
        before it): that gate reports the problem, the later ones point to it."""
        return self._problems.setdefault((target_id, problem), gate)

    def default_target_id(self) -> str:
        """The id of hand-written gate tests' target: the first target (the only one, usually)."""
        try:
            return next(iter(self.targets))
        except SegcheckError:  # reported by whatever needs the target; the id still names it
            from segcheck.config import DEFAULTS

            return self.pytest_config.getoption("segcheck_model") or DEFAULTS["target"]["model"]

    # --- pytest hooks of this run ------------------------------------------------------------
    def pytest_runtest_logreport(self, report: pytest.TestReport):
        """Collect records; with xdist they arrive here from the workers' reports. A gate test
        that errors or skips without recording is reported too, and one that recorded a pass
        and then errors (teardown) becomes an error: none is dropped or doubled. Only the
        controller collects, and only it writes figure files (a worker's reports reach it)."""
        if hasattr(self.pytest_config, "workerinput"):
            return
        self.described.update(getattr(report, "segcheck_described", None) or {})
        data = getattr(report, "segcheck_record", None)
        if data is not None and report.when == "call":
            record = GateRecord.from_dict(data)
            figures = getattr(report, "segcheck_figures", None)
            if figures and self.outputs_ok():
                record.figures, record.figure_notes = self._files().write(record.target, record.gate, figures)
            self.records.append(record)
            self._by_test[report.nodeid] = record
        drawn = getattr(report, "segcheck_target_figures", None) if self.outputs_ok() else None
        for target_id, figures in (drawn or {}).items():
            paths, notes = self._files().write(target_id, "target", figures)
            self.target_figures[target_id] = {"figures": paths, "figure_notes": notes}
        ident = getattr(report, "segcheck_gate", None)
        if ident is None or not (report.failed or report.skipped) or data is not None:
            return
        earlier = self._by_test.get(report.nodeid)
        if earlier is None:
            outcome = "xfailed" if hasattr(report, "wasxfail") else "skipped" if report.skipped else "error"
            record = GateRecord(ident["target"], ident["gate"], report.nodeid, outcome, message=_reason(report))
            self.records.append(record)
            self._by_test[report.nodeid] = record
        elif report.failed and earlier.outcome != "error":
            earlier.outcome, earlier.message = "error", _reason(report)

    def _files(self):
        from segcheck.figures import FigureFiles

        if self._figure_files is None:
            self._figure_files = FigureFiles(self.report_path)
        return self._figure_files

    def pytest_sessionfinish(self, session: pytest.Session):
        """Write the JSON report, then the HTML/Markdown reports rendered from it (on the
        controller; also with ``-p no:terminal``)."""
        if hasattr(self.pytest_config, "workerinput") or not self.records:
            return
        ids = sorted({r.target for r in self.records})
        targets = {
            i: {**(self.described.get(i) or self._spec_description(i)), **self.target_figures.get(i, {})} for i in ids
        }
        self.fleet = self._fleet_view(targets)
        if failed_fleet_gates(self.fleet) and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED  # a failing fleet-level gate fails the run
        if not self.outputs_ok():
            return
        try:
            write_json(
                self.report_path, targets, self._thresholds(), self._sorted(), fleet=self.fleet, shard=self.shard
            )
        except OSError as exc:
            self.output_problem = f"{self.report_path}: cannot write there ({exc.strerror or exc})"
            return
        for option in ("segcheck_html", "segcheck_md"):
            out = self.pytest_config.getoption(option)
            if out:
                from segcheck.render import render

                try:
                    self.pages.append(f"{render(self.report_path, Path(out))}")
                except (SegcheckError, OSError) as exc:
                    self.pages.append(f"{out} NOT written: {exc}")

    def _fleet_view(self, targets: dict) -> dict | None:
        """The fleet view of this run's records (None with one target)."""
        try:
            config, gates = self.config, self.plugins.gates.gates("fleet")
        except SegcheckError:  # reported where the session failed to open; no fleet gates then
            config, gates = {}, []
        return fleet_view(targets, self._sorted(), config, gates)

    def pytest_terminal_summary(self, terminalreporter, config: pytest.Config):
        if hasattr(config, "workerinput") or not self.records:
            return
        terminalreporter.section("segcheck gates")
        for line in summary_table(self._sorted()):
            terminalreporter.write_line(line)
        tables = anomaly_tables(self._sorted())
        if tables:
            terminalreporter.section("segcheck anomaly scorers")
            for line in anomaly_lines(tables):
                terminalreporter.write_line(line)
        prompts = prompt_tables(self._sorted())
        if prompts:
            terminalreporter.section("segcheck prompts: foreground per concept and prompt")
            for line in prompt_lines(prompts):
                terminalreporter.write_line(line)
        for title, tables, lines in (
            ("segcheck error analysis: per-class IoU and Boundary IoU", error_tables, error_lines),
            ("segcheck corruptions: mIoU per ImageNet-C severity", robustness_tables, robustness_lines),
        ):
            found = tables(self._sorted())
            if found:
                terminalreporter.section(title)
                for line in lines(found):
                    terminalreporter.write_line(line)
        if self.fleet is not None:
            terminalreporter.section("segcheck fleet")
            for line in fleet_lines(self.fleet):
                terminalreporter.write_line(line)
            failed = failed_fleet_gates(self.fleet)
            if failed:
                terminalreporter.write_line(f"fleet gates failed: {', '.join(failed)}", red=True)
        if self.output_problem:
            terminalreporter.write_line(f"segcheck report NOT written: {self.output_problem}", red=True)
        else:
            terminalreporter.write_line(f"segcheck report: {self.report_path}")
        for page in self.pages:
            terminalreporter.write_line(f"segcheck page: {page}")

    def _sorted(self) -> list[GateRecord]:
        return sorted(self.records, key=lambda r: (r.target, r.test))

    def _thresholds(self) -> dict:
        from segcheck.config import thresholds

        try:
            return thresholds(self.config)
        except SegcheckError:
            return {}

    def _spec_description(self, target_id: str) -> dict:
        try:
            spec = self.targets.get(target_id)
        except SegcheckError as exc:
            return {"error": str(exc)}
        if spec is None:
            return {}
        return {
            "model": spec.model,
            "dataset": spec.dataset,
            "spec": spec_row(spec),
            **({"tags": dict(spec.tags)} if spec.tags else {}),
        }


def suite_conftests(config: pytest.Config) -> list:
    """The conftest modules of the gate suites this run names (``SEGCHECK_GATE_SUITE``): those
    pytest loaded before configure (a suite's folder on the command line) and, under
    ``--pyargs``, those of the ``segcheck.suites.<name>`` packages named (pytest loads a
    package's conftest only when it collects it; the same module object then)."""
    found = [p for p in config.pluginmanager.get_plugins() if getattr(p, "SEGCHECK_GATE_SUITE", False)]
    if not config.option.pyargs:
        return found
    for arg in config.args:
        parts = str(arg).split("::")[0].split(".")
        if parts[:2] != ["segcheck", "suites"] or len(parts) < 3:
            continue
        name = ".".join([*parts[:3], "conftest"])
        try:
            known = importlib.util.find_spec(name) is not None
        except ImportError:  # no such suite: pytest says so when it collects the argument
            known = False
        module = importlib.import_module(name) if known else None
        if getattr(module, "SEGCHECK_GATE_SUITE", False) and all(module is not f for f in found):
            found.append(module)
    return found


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
