"""Reports with pictures: --segcheck-html / --segcheck-md, `segcheck report render`, pytest-html extras."""

from __future__ import annotations

import base64
import binascii
import html
import io
import json
import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segcheck import SegcheckError, cli, figures, gate_figures, perturb
from segcheck import config as segconfig
from segcheck.gates.registered import run
from segcheck.gates.result import GateResult
from segcheck.render import NO_FIGURES, render
from segcheck.report import GateRecord, write_json
from tests.conftest import REPO, build_target

GATES = str(REPO / "suites" / "gates")
CHEAP = ["-m", "not train", "-k", "noise_input or prediction_collapse or head_matches_classes", "--eval-size", "4"]


class _Images(HTMLParser):
    def __init__(self):
        super().__init__()
        self.sources: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.sources.append(dict(attrs).get("src", ""))


def page_images(page: str, folder=None) -> list[bytes]:
    """The bytes of every <img> of ``page``: a PNG or JPEG data URI (an embedded thumbnail), or,
    with ``folder``, a relative path to a file beside the page; each must open in PIL."""
    parser = _Images()
    parser.feed(page)
    images = []
    for src in parser.sources:
        if folder is not None and not src.startswith("data:"):
            data = (folder / src).read_bytes()
        else:
            assert re.match(r"data:image/(png|jpeg);base64,", src), src[:80]
            try:
                data = base64.b64decode(src.split(",", 1)[1], validate=True)
            except binascii.Error as exc:
                pytest.fail(f"an <img> data URI is not base64: {exc}")
        with Image.open(io.BytesIO(data)) as image:
            image.verify()
        images.append(data)
    return images


def listed_figures(report: dict) -> list[str]:
    """Every figure path the JSON report lists, of its targets and of its gates."""
    paths = [p for t in report["targets"].values() for p in t.get("figures", [])]
    return paths + [p for g in report["gates"] for p in g["figures"]]


@pytest.fixture(scope="module")
def cheap_run(tmp_path_factory):
    """One pytest run of three cheap gates of the embedded default, writing JSON, HTML and
    Markdown (and pytest-html's page when it is installed)."""
    out = tmp_path_factory.mktemp("html")
    args = [sys.executable, "-m", "pytest", GATES, "-p", "no:cacheprovider", "-p", "no:xdist", *CHEAP]
    args += ["--segcheck-report", str(out / "run.json"), "--segcheck-html", str(out / "run.html")]
    args += ["--segcheck-md", str(out / "md" / "run.md")]
    pytest_html = _has("pytest_html")
    if pytest_html:
        args += ["--html", str(out / "pytest.html"), "--self-contained-html"]
    done = subprocess.run(args, cwd=out, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out, json.loads((out / "run.json").read_text()), done.stdout, pytest_html


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def test_the_html_page_embeds_failures_as_thumbnails_and_links_every_figure_beside_it(cheap_run):
    out, report, stdout, _ = cheap_run
    page = (out / "run.html").read_text()
    listed = listed_figures(report)
    assert {"run.figures/unet/target.predictions.png", "run.figures/unet/noise_input.panels.png"} <= set(listed)
    assert len(page_images(page, folder=out)) >= len(listed)
    linked = set(re.findall(r"""(?:src|href)=["'](?!data:|#)([^"']+)""", page))
    assert linked == set(listed)  # nothing external: only the figure files beside the page, each of them
    failing = [g for g in report["gates"] if g["outcome"] == "failed"]
    embedded = re.findall(r'src="data:image/(?:png|jpeg);base64,([^"]+)"', page)
    for path in (p for g in failing for p in g["figures"]):  # a failure's figures are on the page itself
        assert f'<a href="{path}"><img src="data:' in page
        assert all(len(base64.b64decode(d)) <= (out / path).stat().st_size for d in embedded)
    assert 'style="color:#1a7f37;background:#dafbe1">PASS</span>' in page
    assert "normalization" in page and "checkpoint sidecar" in page
    assert "<th>noise_input</th><td>max_miou=0.1000, max_ratio=0.7000, seed=0</td>" in page  # every setting
    notes = [n for g in report["gates"] for n in g["figure_notes"]]
    assert all(figures.NO_MATPLOTLIB in n for n in notes) and (notes == []) == _has("matplotlib")
    assert f"segcheck page: {out / 'run.html'}" in stdout


def test_the_first_screen_is_the_answer(tmp_path):
    gate = lambda t, g, o, v: {"target": t, "gate": g, "test": f"x::{g}", "outcome": o, "value": v, "threshold": 0.5}  # noqa: E731
    gates = [gate("a", "g1", "passed", 0.9), gate("a", "g2", "failed", 0.1), gate("b", "g1", "failed", 0.2)]
    gates += [gate("b", "g2", "passed", 0.8)]
    targets = {"a": {"model": "m", "tags": {"recipe": "naive"}}, "b": {"model": "m", "tags": {"recipe": "robust"}}}
    fleet = {"targets": [], "fleet_spread": ["g1 fails on 1 of 2 targets: " + "a long finding " * 20 + "end"]}
    fleet["gates"] = [gate("m", "cross_dataset", "failed", 0.3)]  # a fleet gate fails the run too
    report = {"segcheck": "0", "targets": targets, "thresholds": {"noise_input.max_miou": 0.2}, "gates": gates}
    (tmp_path / "r.json").write_text(json.dumps({**report, "fleet": fleet}))
    page = render(tmp_path / "r.json", tmp_path / "r.html").read_text()
    counts, matrix = page.index('class="counts"'), page.index('<h2 id="matrix">Fleet matrix</h2>')
    failures, passes = page.index("<h2>Failures and errors (3)</h2>"), page.index("<h2>Passed (2)</h2>")
    assert page.index('data-verdict="FAIL"><h3>', failures) < passes and "cross_dataset" in page[failures:passes]
    assert counts < matrix < failures < passes < page.index("<h2>What was tested</h2>")
    assert ">3 failed</span>" in page and ">2 passed</span>" in page
    assert '<details class="line" id="gate-0-a-g1" data-target="a" data-verdict="PASS">' in page  # collapsed
    assert 'onclick="segcheckSort(this)"' in page and "<td>naive</td>" in page and "<td>robust</td>" in page
    assert "a long finding " * 20 + "end" in page  # the finding whole, not cut
    changed = page[page.index("<h2>Settings that differ") : page.index("every setting")]
    assert "noise_input.max_miou" in changed and "0.2000" in changed and "max_ratio" not in changed


def test_markdown_links_png_files_beside_it(cheap_run):
    out, report, _, _ = cheap_run
    page = (out / "md" / "run.md").read_text()
    links = re.findall(r"\]\(([^)]+\.png)\)", page)  # a failure's figures shown, the others linked
    assert len(links) == len(listed_figures(report)) > 0
    for link in links:
        assert link.startswith("run.figures/")
        with Image.open(out / "md" / link) as image:
            image.verify()
    assert "| noise_input | unet |" in page


def test_rerendering_the_json_gives_the_same_page(cheap_run, tmp_path, capsys):
    out, _, _, _ = cheap_run
    assert cli.main(["report", "render", str(out / "run.json"), "-o", str(out / "again.html")]) == 0
    assert (out / "again.html").read_text() == (out / "run.html").read_text()
    assert cli.main(["report", "render", str(out / "run.json"), "-o", str(tmp_path / "elsewhere.html")]) == 0
    elsewhere = (tmp_path / "elsewhere.html").read_text()  # links to the figures from where the page is
    assert set(re.findall(r'href="([^"#]+)"', elsewhere)) == {
        os.path.relpath(out / p, tmp_path) for p in listed_figures(json.loads((out / "run.json").read_text()))
    }
    assert cli.main(["report", str(out / "run.json"), "-o", str(tmp_path / "short.md")]) == 0  # the short form
    assert (tmp_path / "short.figures" / "unet" / "noise_input.panels.png").is_file()
    assert cli.main(["report", "render", str(out / "run.json"), "-o", str(tmp_path / "x.pdf")]) == 2
    assert "name it .html or .md" in capsys.readouterr().err


def test_pytest_html_gets_the_same_figures_as_extras(cheap_run):
    out, report, _, pytest_html = cheap_run
    if not pytest_html:
        pytest.skip("pytest-html is not installed")
    page = (out / "pytest.html").read_text()
    for path in listed_figures(report):
        assert base64.b64encode((out / path).read_bytes()).decode() in page


ISSUE_38 = ["-m", "not train", "-k", "calibration or corruption_robustness or error_analysis", "--eval-size", "4"]


def test_the_page_shows_the_reliability_diagram_severities_confusion_matrix_and_worst_images(tmp_path):
    """``pytest suites/gates --segcheck-html``: the calibration, corruption and error-analysis
    figures are images of the page (and of the Markdown), their tables are sections of both, and
    the JSON carries the tables."""
    pytest.importorskip("matplotlib")
    args = [sys.executable, "-m", "pytest", GATES, "-p", "no:cacheprovider", "-p", "no:xdist", *ISSUE_38]
    args += ["--segcheck-report", str(tmp_path / "run.json"), "--segcheck-html", str(tmp_path / "run.html")]
    args += ["--segcheck-md", str(tmp_path / "run.md")]
    done = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    page, markdown = (tmp_path / "run.html").read_text(), (tmp_path / "run.md").read_text()
    parser = _Images()
    parser.feed(page)
    assert len(parser.sources) == len(page_images(page, folder=tmp_path))  # every <img> an image PIL opens
    shown = re.findall(r'<img [^>]*alt="([^"]+)"', page)
    wanted = {
        "calibration.reliability",  # the reliability diagram
        "corruption_robustness.severities",  # mIoU per corruption and ImageNet-C severity
        "corruption_robustness.examples",
        "error_analysis.confusion",  # the normalized confusion matrix
        "error_analysis.per_class",
        "error_analysis.worst_images",  # input | ground truth | prediction | error
    }
    assert wanted <= set(shown), shown
    assert wanted <= {Path(link).stem for link in re.findall(r"\]\(([^)]+\.png)\)", markdown)}  # shown or linked
    for title in ("Corruptions: mIoU per ImageNet-C severity", "Error analysis: per-class IoU and Boundary IoU"):
        assert title in page and f"## {title}" in markdown
    assert "<tr><th>class</th><th>Boundary IoU</th><th>IoU</th>" in page  # the row's name first
    assert "| corruption | parameters | relative robustness | severity 1 |" in markdown
    report = json.loads((tmp_path / "run.json").read_text())
    robustness, errors = report["robustness"]["unet"], report["error_analysis"]["unet"]
    assert [row["corruption"] for row in robustness["mIoU per severity"]] == list(perturb.CORRUPTIONS)
    assert 0 < robustness["mRR"] <= 1.05 and len(errors["worst images"]) == 4
    assert "segcheck corruptions: mIoU per ImageNet-C severity" in done.stdout
    assert "segcheck error analysis: per-class IoU and Boundary IoU" in done.stdout


def test_a_missing_figure_file_and_a_run_without_figures_are_notes(tmp_path):
    gate = {"target": "t", "gate": "g", "test": "x::g", "outcome": "failed", "value": 0.5, "threshold": 0.9}
    report = {"segcheck": "0", "targets": {"t": {"model": "m"}}, "thresholds": {"g.min": 0.9}, "gates": [gate]}
    (tmp_path / "plain.json").write_text(json.dumps(report))
    page = render(tmp_path / "plain.json", tmp_path / "plain.html").read_text()
    assert html.escape(NO_FIGURES) in page
    assert 'style="color:#cf222e;background:#ffebe9">1 failed<' in page
    gate["figures"] = ["gone.figures/t/g.plot.png"]
    (tmp_path / "gone.json").write_text(json.dumps(report))
    page = render(tmp_path / "gone.json", tmp_path / "gone.html").read_text()
    assert "figure file gone.figures/t/g.plot.png is missing" in page
    md = render(tmp_path / "gone.json", tmp_path / "gone.md").read_text()
    assert "**figure missing:** figure file gone.figures/t/g.plot.png is missing" in md
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(SegcheckError, match="not a segcheck report"):
        render(tmp_path / "bad.json", tmp_path / "bad.html")


def test_a_fleet_section_renders_as_a_table_of_its_rows(tmp_path):
    rows = [
        {"target": "naive", "real_miou": 0.41, "noise_miou": 0.32, "failed": ["noise_input"], "verdict": "FAIL"},
        {"target": "robust", "real_miou": 0.44, "noise_miou": 0.05, "failed": [], "verdict": "PASS"},
    ]
    fleet = {"rows": rows, "tags": {"strategy": {"mean_real_miou": 0.425, "spread": 0.03}}, "findings": ["x"]}
    report = {"targets": {}, "thresholds": {}, "gates": [], "fleet": fleet}
    (tmp_path / "fleet.json").write_text(json.dumps(report))
    page = render(tmp_path / "fleet.json", tmp_path / "fleet.html").read_text()
    assert "<h2>Fleet view</h2>" in page  # beside the matrix: the view's other tables
    assert "<th>target</th><th>real_miou</th><th>noise_miou</th><th>failed</th><th>verdict</th>" in page
    assert '<td class="num">0.3200</td><td>noise_input</td><td class="verdict" style="color:#cf222e' in page
    md = render(tmp_path / "fleet.json", tmp_path / "fleet.md").read_text()
    assert '| naive | 0.4100 | 0.3200 | ["noise_input"] | FAIL |' in md


def test_a_page_option_needs_its_suffix(pytester):
    result = pytester.runpytest("--segcheck-html", "report.txt")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--segcheck-html report.txt: expected a .html file name*"])


# --- figure functions, without pytest ---------------------------------------------------------
@pytest.fixture(scope="module")
def small_target(loaded_plugins):
    overrides = {
        "eval": {"size": 2},
        "anomaly": {"max_images": 4, "stats_images": 4},
        "positional_prior": {"train_samples": 16},
    }
    config = segconfig.load(overrides=overrides)
    return build_target(loaded_plugins, config, "unet", "synthetic-streets"), config


@pytest.mark.parametrize(
    "name", ["perturbation_stability[gaussian_noise]", "positional_prior", "anomaly_detection[msp]"]
)
def test_gate_figures_are_pngs(small_target, loaded_plugins, name):
    target, config = small_target
    gate = next(g for g in loaded_plugins.gates.gates() if g.name == name)
    cfg = config[gate.section]
    drawn = figures.drawn(name, gate.figures, target, run(gate, target, config), cfg)
    assert drawn and all(f.png is not None or figures.NO_MATPLOTLIB in f.note for f in drawn), drawn
    for f in drawn:
        if f.png is not None:
            with Image.open(io.BytesIO(f.png)) as image:
                assert image.width > 200 and image.height > 100


def test_without_matplotlib_plots_are_notes_and_the_page_still_renders(
    small_target, loaded_plugins, monkeypatch, tmp_path
):
    for name in ["matplotlib", *(m for m in sys.modules if m.startswith("matplotlib."))]:
        monkeypatch.setitem(sys.modules, name, None)  # `import matplotlib...` raises ImportError
    target, config = small_target
    gate = next(g for g in loaded_plugins.gates.gates() if g.name == "noise_input")
    result = run(gate, target, config)
    drawn = figures.drawn(gate.name, gate.figures, target, result, config["noise_input"])
    assert [(f.name, f.png is not None) for f in drawn] == [("panels", True), ("miou", False)]  # grids need only PIL
    assert drawn[1].note == f"mIoU on real images vs noise (and the constant-class floor): {figures.NO_MATPLOTLIB}"
    files = figures.FigureFiles(tmp_path / "run.json")
    record = GateRecord.from_result(result, "unet", "t::noise_input")
    record.figures, record.figure_notes = files.write("unet", gate.name, [f.to_dict() for f in drawn])
    write_json(tmp_path / "run.json", {"unet": target.describe()}, {}, [record])
    page = render(tmp_path / "run.json", tmp_path / "run.html").read_text()
    assert len(page_images(page, folder=tmp_path)) == 1
    assert f"figure missing: {html.escape(drawn[1].note)}" in page


def test_overfit_and_binary_sweep_figures_come_from_details_alone(small_target):
    target, config = small_target
    details = {"history": [0.2, 0.6, 0.93], "per_class_iou": {"road": 0.99, "pole": 0.7}, "epochs": 3, "steps": 15}
    result = GateResult("overfit_tiny", 0.93, 0.9, True, "m", details=details)
    (history,) = figures.drawn("overfit_tiny", gate_figures.overfit_tiny, target, result, config["overfit_tiny"])
    sweep = {"threshold_sweep": {"0.1": 0.2, "0.5": 0.6, "0.9": 0.1}, "threshold": 0.5, "best_threshold": 0.5}
    curve = gate_figures.threshold_sweep(sweep)  # keys as the JSON has them
    for f in (history, curve):
        assert f.png is not None or figures.NO_MATPLOTLIB in f.note


def test_a_figure_that_raises_is_a_note():
    def broken(*args):
        raise KeyError("history")

    (note,) = figures.drawn("overfit_tiny", broken, None)
    assert note.png is None and note.note == "overfit_tiny: the figure could not be drawn: KeyError: 'history'"


def test_the_palette_is_fixed_and_keeps_black_white_and_grey_for_uncounted_pixels():
    colours = figures.class_colours(40)
    assert len({tuple(c) for c in colours}) == 40
    assert (figures.class_colours(5) == colours[:5]).all()
    special = {figures.IGNORE_COLOUR, figures.ANOMALY_COLOUR, figures.INLIER_COLOUR}
    assert not special & {tuple(int(v) for v in c) for c in colours}
    assert all(np.ptp(c.astype(int)) > 30 for c in colours)  # no grey


def test_roc_and_pr_points_lie_on_scikit_learns_curves():
    from sklearn.metrics import precision_recall_curve, roc_curve

    from segcheck.metrics import OODMetrics

    rng = np.random.default_rng(0)
    labels = rng.random(5000) < 0.1
    scores = rng.normal(size=5000) + labels * 1.5
    curves = OODMetrics(exact=True).update(scores, labels).curves(points=50)
    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    precision, recall, _ = precision_recall_curve(labels, scores)
    roc = {(round(a, 9), round(b, 9)) for a, b in zip(fpr, tpr)}
    pr = {(round(a, 9), round(b, 9)) for a, b in zip(recall, precision)}
    assert {(round(a, 9), round(b, 9)) for a, b in zip(curves["fpr"], curves["tpr"])} <= roc
    assert {(round(a, 9), round(b, 9)) for a, b in zip(curves["recall"], curves["precision"])} <= pr
    assert 50 <= len(curves["fpr"]) <= 101 and curves["tpr"][-1] == curves["fpr"][-1] == 1.0


def test_a_large_failing_figure_is_a_jpeg_thumbnail_linking_to_the_full_png(tmp_path):
    from segcheck.render_html import THUMB_WIDTH

    folder = tmp_path / "r.figures" / "t"
    folder.mkdir(parents=True)
    noisy = np.random.default_rng(0).integers(0, 255, (500, 1400, 3), dtype=np.uint8)  # compresses poorly
    Image.fromarray(noisy).save(folder / "g.panels.png")
    gate = {"target": "t", "gate": "g", "test": "x::g", "outcome": "failed", "value": 0.5, "threshold": 0.9}
    gate["figures"] = ["r.figures/t/g.panels.png"]
    (tmp_path / "r.json").write_text(
        json.dumps({"segcheck": "0", "targets": {"t": {}}, "thresholds": {}, "gates": [gate]})
    )
    page = render(tmp_path / "r.json", tmp_path / "r.html").read_text()
    (thumb,) = re.findall(r'<a href="r.figures/t/g.panels.png"><img src="data:image/jpeg;base64,([^"]+)"', page)
    with Image.open(io.BytesIO(base64.b64decode(thumb))) as image:
        assert image.format == "JPEG" and image.width == THUMB_WIDTH < 1400
    assert len(page) < (folder / "g.panels.png").stat().st_size  # the page is smaller than the figure alone
