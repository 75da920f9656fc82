"""A saved run as a page people look at: the JSON report and its figure files rendered as one
HTML file (``segcheck.render_html``: thumbnails embedded, the full-size PNGs beside it, no
external CSS or JS) or as Markdown with the PNG files beside it. pytest writes
``--segcheck-html``/``--segcheck-md`` through :func:`render` from the JSON it has just
written, so ``segcheck report render run.json -o run.html`` gives the same page again.

A page holds, failures first: the verdict counts, each failing gate with its message, figures
and details, the other gates one line each, the ``fleet`` section when the report has one, the
anomaly scorer, prompt, error-analysis (per-class IoU and Boundary IoU, absent classes as
"absent") and corruption (mIoU per ImageNet-C severity, mRR) tables, each target's per-image
grid, what was tested (each target's description, normalization and its source) and the
settings that differ from the defaults. A figure that could not be drawn, or whose file is
gone, is a note in its place.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import MISSING, fields
from pathlib import Path

from segcheck import SegcheckError, __version__, render_html
from segcheck import config as segconfig
from segcheck.outputs import check_figures_folder, check_output, html_mark, md_mark
from segcheck.render_html import plain as _plain
from segcheck.report import GateRecord, _fmt, summary_table

FORMATS = {".html": "html", ".htm": "html", ".md": "md", ".markdown": "md"}
NO_FIGURES = (
    "This run drew no figures: run pytest with --segcheck-html PATH or --segcheck-md PATH to draw them "
    "(they are written beside the JSON report and re-rendered from it)."
)


def page_format(path: Path) -> str:
    """``html`` or ``md``, by ``path``'s suffix; another suffix is an error naming the known ones."""
    kind = FORMATS.get(Path(path).suffix.lower())
    if kind is None:
        raise SegcheckError(
            f"cannot tell which report to write from {Path(path).name!r}; name it .html or .md (known: "
            f"{', '.join(FORMATS)})"
        )
    return kind


def check_page(out: Path, flag: str, **rule) -> None:
    """Raise (one line) unless a page may be written at ``out`` (its suffix, and
    ``segcheck.outputs.check_output`` with ``rule``), and, for Markdown, its figures folder
    ``<stem>.figures/`` (segcheck's when a segcheck page or report of that stem sits beside it)."""
    out = Path(out)
    page_format(out)
    check_output(out, flag, **rule)
    if page_format(out) == "md":
        overwrite = {k: rule[k] for k in ("overwrite", "overwrite_flag") if k in rule}
        owners = (out, out.with_suffix(".json"))
        check_figures_folder(out.parent / f"{out.stem}.figures", f"{flag} {out}", owners, **overwrite)


def load(path: Path) -> dict:
    """The JSON report at ``path``, checked to be one (a ``gates`` list)."""
    path = Path(path)
    try:
        report = json.loads(path.read_text())
    except FileNotFoundError:
        raise SegcheckError(f"no JSON report at {path}; pass the file pytest wrote with --segcheck-report") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SegcheckError(f"cannot read {path} as a JSON report ({exc}); pass a segcheck JSON report") from None
    if not isinstance(report, dict) or not isinstance(report.get("gates"), list):
        raise SegcheckError(f"{path} is JSON but not a segcheck report (no 'gates' list); pass a segcheck JSON report")
    written = report.get("segcheck")
    if _newer(written, __version__):
        raise SegcheckError(
            f"{path} was written by segcheck {written}, newer than this segcheck {__version__}; render it with "
            f"segcheck {written} or later (pip install -U segcheck)"
        )
    required = [f.name for f in fields(GateRecord) if f.default is MISSING and f.default_factory is MISSING]
    for i, entry in enumerate(report["gates"]):
        missing = [name for name in required if not isinstance(entry, dict) or name not in entry]
        if missing:
            raise SegcheckError(
                f"{path}: gate entry {i} has no {', '.join(map(repr, missing))}; every entry of 'gates' needs "
                f"{', '.join(required)}: pass a report that segcheck wrote, unedited"
            )
    return report


def _newer(version, than: str) -> bool:
    """Whether ``version`` (a report's ``segcheck`` field) names a release after ``than``; False when
    it is absent or not a version."""
    from packaging.version import InvalidVersion, Version

    try:
        return isinstance(version, str) and Version(version) > Version(than)
    except InvalidVersion:
        return False


def render(report_path: Path, out: Path) -> Path:
    """Write the page of the JSON report ``report_path`` to ``out`` (HTML or Markdown by suffix)."""
    report_path, out = Path(report_path), Path(out)
    kind = page_format(out)
    report = load(report_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    page = Page(report, report_path.parent)
    out.write_text(render_html.page(page, out) if kind == "html" else page.markdown(out))
    return out


class Page:
    """The content of one report page, from the JSON report and the folder its figure paths are relative to."""

    mark = html_mark()
    no_figures = NO_FIGURES

    def __init__(self, report: dict, base: Path):
        self.report, self.base = report, Path(base)
        fleet_gates = (report.get("fleet") or {}).get("gates") or []  # they fail a run as the others do
        self.records = [GateRecord.from_dict(g) for g in [*report["gates"], *fleet_gates]]
        self.targets: dict[str, dict] = report.get("targets") or {}
        self.anchors = self._anchors()

    # --- shared ---------------------------------------------------------------------------
    def tally(self) -> str:
        return summary_table(self.records)[-1] if self.records else "no gates ran"

    def figures(self, entry: dict) -> list[tuple[str, str, Path | None]]:
        """(kind, text, file) of an entry's figures: ``("img", path, file)`` or ``("note", why, None)``."""
        out = []
        for path in entry.get("figures") or []:
            file = self.base / path
            if file.is_file():
                out.append(("img", path, file))
            else:
                out.append(("note", f"figure file {path} is missing (moved or deleted since the run)", None))
        out += [("note", note, None) for note in entry.get("figure_notes") or []]
        return out

    def any_figures(self) -> bool:
        entries = [*(r.to_dict() for r in self.records), *self.targets.values()]
        return any(e.get("figures") or e.get("figure_notes") for e in entries if isinstance(e, dict))

    def facts(self, described: dict) -> list[tuple[str, str]]:
        """(what, value) rows of a target's description: model, checkpoint, data, ..., normalization."""
        rows = []
        for key, value in described.items():
            if key in ("figures", "figure_notes", "normalization") or value in (None, "", {}, []):
                continue
            rows.append((key.replace("_", " "), _plain(value)))
        n = described.get("normalization")
        if isinstance(n, dict):
            numbers = lambda v: "(" + ", ".join(f"{x:.4g}" for x in v) + ")"  # noqa: E731
            rows.append(("normalization", f"mean {numbers(n['mean'])}, std {numbers(n['std'])} from {n['source']}"))
        return rows

    def thresholds(self) -> list[tuple[str, str]]:
        """(section, "key=value, ...") rows of the thresholds and settings used."""
        return self.settings()[1]

    def settings(self) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        """(the settings that differ from segcheck's defaults as ``(section.key, "value from
        source")``, once for all targets when they agree, else per target; every setting used as
        ``(section, "key=value, ...")`` rows)."""
        defaults = segconfig.thresholds(segconfig.DEFAULTS)
        used = self.report.get("thresholds") or {}
        per_target: dict[tuple[str, str], list[str]] = {}
        for target, described in self.targets.items():
            declared = described.get("settings") if isinstance(described, dict) else None
            for key, entry in (declared or {}).items():
                value, source = (entry.get("value"), entry.get("source")) if isinstance(entry, dict) else (entry, "")
                shown = _plain(value) + (f" from {source}" if source else "")
                per_target.setdefault((key, shown), []).append(target)
        everyone = len(self.targets)
        changed = [
            (key if len(targets) == everyone else f"{key} ({', '.join(targets)})", shown)
            for (key, shown), targets in per_target.items()
        ]
        named = {key for key, _ in per_target}
        changed += [
            (key, _plain(value))
            for key, value in used.items()
            if key not in named and defaults.get(key, value) != value
        ]
        changed += [(key, _plain(value)) for key, value in used.items() if key not in named and key not in defaults]
        sections: dict[str, list[str]] = {}
        for key, value in used.items():
            section, _, name = key.partition(".")
            sections.setdefault(section, []).append(f"{name or section}={_plain(value)}")
        return sorted(changed), [(section, ", ".join(items)) for section, items in sections.items()]

    def summary(self) -> list[tuple[str, str, str, str, str]]:
        rows = []
        for r in self.records:
            measured = "-" if r.value is None else _fmt(r.value)
            threshold = "-" if r.value is None else r.rule.replace("threshold", _fmt(r.threshold))
            rows.append((r.gate, r.target, measured, threshold, r.verdict))
        return rows

    def extra_sections(self) -> list[tuple[str, object]]:
        """(title, value) of the report's other tables: the fleet view, the anomaly scorers, the
        prompted models' per-prompt foreground metrics, the error analysis and the corruptions."""
        titles = {
            "fleet": "Fleet",
            "anomaly": "Anomaly scorers",
            "prompted": "Prompts: foreground per concept and prompt",
            "error_analysis": "Error analysis: per-class IoU and Boundary IoU, the worst images",
            "robustness": "Corruptions: mIoU per ImageNet-C severity, mean relative robustness",
        }
        return [(title, self.report[key]) for key, title in titles.items() if self.report.get(key)]

    def _anchors(self) -> list[str]:
        from segcheck.figures import slug

        return [f"gate-{i}-{slug(r.target)}-{slug(r.gate)}" for i, r in enumerate(self.records)]

    # --- Markdown ---------------------------------------------------------------------------
    def markdown(self, out: Path) -> str:
        """The Markdown page for ``out``, failures first: the counts, each failing or erroring gate
        in full, one table row per other gate, then the eval images, what was tested and the
        settings that differ from the defaults; its figures are copied to ``<out stem>.figures/``."""
        folder = out.parent / f"{out.stem}.figures"
        lines = [
            md_mark(),
            "# segcheck report",
            "",
            f"{self.tally()} · segcheck {self.report.get('segcheck', '?')}",
            "",
        ]
        failing = [r for r in self.records if r.verdict in ("FAIL", "ERROR", "XFAIL")]
        lines += [f"## Failures and errors ({sum(r.verdict != 'XFAIL' for r in failing)})", ""]
        if not failing:
            lines += ["None: every gate that could judge its target passed.", ""]
        for r in failing:
            lines += [f"### {r.gate} ({r.target}): **{r.verdict}**", ""]
            if r.value is not None:
                lines += [f"measured {_fmt(r.value)}; passes when {r.rule.replace('threshold', _fmt(r.threshold))}", ""]
            lines += [_md_escape(r.message), ""]
            for f in self.figures(r.to_dict()):
                lines += [self._md_figure(f, folder, out.parent), ""]
        rest = [
            (*row, " ".join(self._md_link(f, folder, out.parent) for f in self.figures(r.to_dict())))
            for row, r in zip(self._md_summary(), self.records)
            if r not in failing
        ]
        if rest:
            lines += ["## Every other gate", ""]
            lines += _md_table(("gate", "target", "measured", "threshold", "verdict", "message", "figures"), rest)
        for title, value in self.extra_sections():
            lines += [f"## {title}", "", *_md_value(value), ""]
        if not self.any_figures():
            lines += [f"> {NO_FIGURES}", ""]
        for target, described in self.targets.items():
            shown = self.figures(described) if isinstance(described, dict) else []
            if shown:
                lines += [f"## {target}: eval images", ""]
                lines += [self._md_figure(f, folder, out.parent) for f in shown] + [""]
        lines += ["## What was tested", ""]
        for target, described in self.targets.items():
            lines += [f"### {target}", ""]
            lines += _md_table(("what", "value"), self.facts(described if isinstance(described, dict) else {}))
        changed, every = self.settings()
        lines += ["## Settings that differ from the defaults", ""]
        lines += _md_table(("setting", "value"), changed) if changed else ["None.", ""]
        lines += ["<details><summary>every setting</summary>", "", *_md_table(("section", "settings"), every)]
        lines += ["</details>", ""]
        return "\n".join(lines).rstrip() + "\n"

    def _md_summary(self) -> list[tuple]:
        rows = zip(self.summary(), self.records)
        return [(g, t, m, th, f"**{v}**" if v != "PASS" else v, r.message) for (g, t, m, th, v), r in rows]

    def _md_figure(self, figure: tuple[str, str, Path | None], folder: Path, base: Path) -> str:
        """The figure shown on the page (copied into ``folder``), or its note."""
        kind, text, _ = figure
        if kind == "note":
            return f"> **figure missing:** {_md_escape(text)}"
        return f"!{self._md_link(figure, folder, base)}"

    def _md_link(self, figure: tuple[str, str, Path | None], folder: Path, base: Path) -> str:
        """``[name](path)`` of the figure copied into ``folder`` (a note: ``figure missing``)."""
        kind, text, file = figure
        if kind == "note":
            return "figure missing"
        parts = Path(text).parts
        dest = folder.joinpath(*(parts[1:] if len(parts) > 1 else parts))
        if dest.resolve() != file.resolve():
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(file, dest)
        return f"[{Path(text).stem}]({dest.relative_to(base).as_posix()})"


# --- Markdown helpers -------------------------------------------------------------------------
def _md_escape(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _md_table(header: tuple, rows: list[tuple]) -> list[str]:
    if not rows:
        return ["(none)", ""]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_md_escape(c) for c in row) + " |" for row in rows]
    return lines + [""]


def _md_value(value, depth: int = 0) -> list[str]:
    """Any JSON value as Markdown: a list of objects as a table, an object as its keys (bold) and values."""
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        shown = render_html.columns(value)
        return _md_table(tuple(shown), [tuple(_md_cell(row.get(c)) for c in shown) for row in value])
    if isinstance(value, dict):
        if all(not isinstance(v, (dict, list)) for v in value.values()):
            return _md_table(("key", "value"), [(str(k), _plain(v)) for k, v in value.items()])
        lines = []
        for k, v in value.items():
            lines += [f"{'  ' * depth}**{k}**", ""] + _md_value(v, depth + 1)
        return lines
    return [_md_escape(_plain(value)), ""]


def _md_cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return _plain(value)
