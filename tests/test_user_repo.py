"""segcheck in a user's own repository (issue 32): the suites run from any folder (``segcheck
check``, ``pytest --pyargs``), models and datasets named by their callable, user code importable
as users expect, the report in the invocation folder, and inert in another project's pytest run."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from segcheck import SegcheckError, __version__, cli, plugins
from segcheck.registry import Registry
from tests.conftest import REPO

GATES = str(REPO / "suites" / "gates")
BIN = Path(sys.executable).parent
NETS = """
import torch

def build(num_classes, width=4):
    return torch.nn.Sequential(torch.nn.Conv2d(3, width, 3, padding=1), torch.nn.ReLU(),
                               torch.nn.Conv2d(width, num_classes, 1))

NOT_CALLABLE = 3
"""
TINY = ("--eval-size", "4", "-p", "no:cacheprovider")


@pytest.fixture
def restored_sys_path(monkeypatch):
    """sys.path as it was after the test (importing user code adds folders to it)."""
    monkeypatch.setattr(sys, "path", list(sys.path))


# --- the suites, from any folder ---------------------------------------------------------------
def test_the_repository_path_collects_each_gate_once_with_the_same_ids_as_pyargs(pytester):
    by_path = pytester.runpytest(GATES, "--collect-only", "-q", "-p", "no:cacheprovider")
    by_name = pytester.runpytest("--pyargs", "segcheck.suites.gates", "--collect-only", "-q", "-p", "no:cacheprovider")
    ids = [sorted(line.split("::", 1)[1] for line in r.outlines if "::" in line) for r in (by_path, by_name)]
    assert ids[0] == ids[1] and len(ids[0]) == len(set(ids[0])) > 20
    assert all(line.startswith("suites/gates/test_gates.py::") for line in by_path.outlines if "::" in line)


def test_segcheck_check_runs_the_installed_suite_from_another_folder(pytester):
    """No checkout in sight: the header says what is under test, the report lands in the
    invocation folder, pytest's options and exit codes pass through."""
    result = pytester.run(BIN / "segcheck", "check", "gates", "-k", "finite_outputs or head_matches", *TINY)
    assert result.ret == 0, result.stdout.str() + result.stderr.str()
    result.stdout.fnmatch_lines(["segcheck: model unet*checkpoint*", "*2 passed, * deselected*"])
    report = json.loads((pytester.path / "segcheck-report.json").read_text())
    assert {g["gate"] for g in report["gates"]} == {"finite_outputs", "head_matches_classes"}
    failing = pytester.run(BIN / "segcheck", "check", "gates", "-k", "noise_input", "--checkpoint", "none", *TINY)
    assert failing.ret == pytest.ExitCode.TESTS_FAILED
    usage = pytester.run(BIN / "segcheck", "check", "gates", "--model", "nope")
    assert usage.ret == pytest.ExitCode.USAGE_ERROR


def test_pytest_pyargs_resolves_the_target_at_start_up_like_the_path_form(pytester):
    """The suite's conftest is read before any test under --pyargs too: a wrong name is a usage
    error, and the prompted suite gets its own default target."""
    result = pytester.runpytest_subprocess("--pyargs", "segcheck.suites.gates", "--model", "nope")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*unknown model 'nope'; known models:*"])
    prompted = pytester.runpytest_subprocess("--pyargs", "segcheck.suites.prompted", "--collect-only")
    prompted.stdout.fnmatch_lines(["segcheck: model unet-prompted*dataset synthetic-drywall*"])


def test_an_unknown_suite_is_one_line_and_exit_2(capsys):
    assert cli.main(["check", "gate"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unknown suite 'gate'; expected one of gates, anomaly, prompted, metrics" in err


def test_version(capsys):
    with pytest.raises(SystemExit) as exit:
        cli.main(["--version"])
    assert exit.value.code == 0 and capsys.readouterr().out.strip() == f"segcheck {__version__}"


def test_the_report_goes_to_the_invocation_folder_not_the_rootdir(pytester, monkeypatch):
    """Run from a folder below the rootdir (this repository, found from the suite's path)."""
    work = pytester.mkdir("work")
    monkeypatch.chdir(work)
    result = pytester.runpytest(GATES, "-k", "finite_outputs", *TINY)
    assert result.ret == 0, result.stdout.str()
    assert (work / "segcheck-report.json").is_file() and not (REPO / "segcheck-report.json").exists()


# --- zero code: models and datasets by their callable ----------------------------------------
def test_model_and_dataset_named_by_callable_run_and_the_report_names_them(pytester):
    pytester.makepyfile(nets=NETS)
    pytester.mkpydir("userdata")
    (pytester.path / "userdata" / "loaders.py").write_text(
        "from segcheck_plugins.synthetic_streets import SyntheticStreets\n\n"
        "def load(root, split):\n    return SyntheticStreets(split, length=8)\n"
    )
    report = pytester.path / "r.json"
    result = pytester.runpytest(
        GATES, "--model", "nets.py:build", "--model-arg", "width=6", "--dataset", "userdata.loaders:load",
        "-k", "finite_outputs or head_matches", "--segcheck-report", str(report), *TINY,
    )  # fmt: skip
    assert result.ret == 0, result.stdout.str()
    (target,) = json.loads(report.read_text())["targets"].values()
    assert target["model"] == f"nets.py:build (from {pytester.path / 'nets.py'})"
    assert target["dataset"].startswith("userdata.loaders:load (from userdata.loaders)")
    assert target["checkpoint"].startswith("none: the module as nets.py:build returns it")
    assert target["spec"]["model_args"] == {"width": 6}


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "nets.py:nope"], "model 'nets.py:nope': nets.py has no attribute 'nope'; its callables: build"),
        (["--model", "nets.py:NOT_CALLABLE"], "model 'nets.py:NOT_CALLABLE': nets.py:NOT_CALLABLE is a int, not*"),
        (["--model", "gone.py:build"], "unknown model 'gone.py:build': not a registered model (known models: *"),
        (["--model", "nomodule.sub:build"], "*module nomodule.sub cannot be imported (No module named 'nomodule')*"),
        (["--dataset", "nets.py:nope"], "dataset 'nets.py:nope': nets.py has no attribute 'nope'*"),
    ],
)
def test_a_callable_that_is_not_there_is_one_line(pytester, args, message):
    pytester.makepyfile(nets=NETS)
    result = pytester.runpytest(GATES, *args, *TINY)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert len([line for line in result.stderr.lines if line.strip()]) == 1, result.stderr.str()
    result.stderr.fnmatch_lines([f"ERROR: {message}"])


def test_registered_names_and_prefixes_keep_priority_over_callables(restored_sys_path):
    registry = Registry("model", references=True, hints={"hf:": "plugin hf is absent"})
    with registry.provided_by("smp plugin"):
        registry.add("smp:Unet", lambda num_classes: None)
    with pytest.raises(SegcheckError, match=r"^unknown model 'smp:Nope'; known models: smp:Unet$"):
        registry.get("smp:Nope")  # smp: is a registered prefix: no module smp is looked for
    with pytest.raises(SegcheckError, match="unknown model 'hf:x': plugin hf is absent"):
        registry.get("hf:x")
    entry = registry.get("json:dumps")  # any other module:callable is imported
    assert entry.plugin == "json" and registry.referenced == {"json:dumps"}
    assert "os.path:join" not in registry and not Registry("model").references


def test_a_plugin_file_may_import_the_users_module_beside_it_under_the_pytest_script(pytester):
    """``pytest`` (the console script) does not put the invocation folder on sys.path, as
    ``python -m pytest`` does; segcheck makes a --plugin file's folder and it importable."""
    pytester.makepyfile(mymodel="import torch\n\nclass Net(torch.nn.Conv2d):\n    pass\n")
    plugin_dir = pytester.mkdir("plugins")
    (plugin_dir / "mymodel_plugin.py").write_text(
        textwrap.dedent(
            """
            from mymodel import Net
            from segcheck.hookspecs import hookimpl
            from helper import CHANNELS  # beside this file

            @hookimpl
            def segcheck_register_models(registry):
                registry.add("mynet", lambda num_classes: Net(CHANNELS, num_classes, 1))
            """
        )
    )
    (plugin_dir / "helper.py").write_text("CHANNELS = 3\n")
    args = ("--plugin", "plugins/mymodel_plugin.py", "--model", "mynet", "--checkpoint", "none", "-k", "finite")
    result = pytester.run(BIN / "pytest", GATES, *args, *TINY)
    assert result.ret == 0, result.stdout.str() + result.stderr.str()


def test_a_checkpoint_segcheck_trained_loads_into_the_same_builder_named_by_callable(tmp_path, restored_sys_path):
    """The sidecar names the registered model; the same builder by its callable is the same model."""
    from segcheck.checkpoint import save
    from segcheck.manifest import target_spec
    from segcheck.target import load_model
    from segcheck_plugins.synthetic_streets import SyntheticStreets
    from segcheck_plugins.unet import build_unet

    data = SyntheticStreets("val", length=2)
    path = tmp_path / "unet.safetensors"
    save(build_unet(8, width=4), path, {"model": "unet", "classes": list(data.spec.classes)})
    loaded = plugins.load()
    row = {"model": "segcheck_plugins.unet:build_unet", "dataset": "synthetic-streets", "checkpoint": str(path)}
    model = load_model(loaded, target_spec(loaded, {**row, "model_args": {"width": 4}}), data)
    assert model.provenance["model"] == "segcheck_plugins.unet:build_unet (from segcheck_plugins.unet)"


# --- inert elsewhere ---------------------------------------------------------------------------
UNRELATED = """
import pytest

def test_one():
    assert 1 + 1 == 2

@pytest.mark.gpu  # this project's own marker: segcheck leaves it alone
def test_on_their_gpu():
    pass
"""
RECORD_MODULES = """
import json, sys

def pytest_sessionfinish(session):
    with open("modules.json", "w") as f:
        json.dump(sorted(sys.modules), f)
"""


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_inert_in_another_projects_run(pytester, workers):
    """segcheck installed (its pytest11 entry point loads the plugin, named here too): an
    unrelated project's run imports no torch, prints no segcheck line, writes no file."""
    pytester.makepyfile(test_unrelated=UNRELATED)
    pytester.makeconftest(RECORD_MODULES)
    result = pytester.runpytest_subprocess("-p", "segcheck.pytest_plugin", "-p", "no:cacheprovider", *workers)
    assert result.ret == 0, result.stdout.str() + result.stderr.str()
    result.assert_outcomes(passed=2)  # their gpu test ran: not skipped for want of CUDA
    modules = json.loads((pytester.path / "modules.json").read_text())
    assert "segcheck.pytest_plugin" in modules and "torch" not in modules
    end = next(i for i, line in enumerate(result.stdout.lines) if "collected" in line or "workers" in line)
    header = result.stdout.lines[:end]
    assert not [line for line in header if "segcheck" in line.lower() and not line.startswith("plugins:")], header
    written = [p.name for p in pytester.path.iterdir() if p.suffix in (".json", ".html", ".md") or "segcheck" in p.name]
    assert written == ["modules.json"]
    if workers:
        assert "segcheck target" not in result.stdout.str()


def test_import_segcheck_imports_no_torch():
    code = "import sys, segcheck, segcheck.pytest_plugin; assert 'torch' not in sys.modules; print(segcheck.check)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "function check" in out
