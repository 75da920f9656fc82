"""A saved run as a page people look at: the JSON report and its figure files rendered as one
self-contained HTML file (images as data URIs, no external CSS or JS) or as Markdown with
the PNG files beside it. pytest writes ``--segcheck-html``/``--segcheck-md`` through
:func:`render` from the JSON it has just written, so ``segcheck report render run.json -o
run.html`` gives the same page again.

A page holds: what was tested (each target's description, normalization and its source),
the thresholds, the summary table, a ``fleet`` section when the report has one (any table of
rows), the anomaly scorer, prompt, error-analysis (per-class IoU and Boundary IoU, absent
classes as "absent") and corruption (mIoU per ImageNet-C severity, mRR) tables, each target's
per-image grid, and per gate its verdict,
message, figures and details. A figure that could not be drawn, or whose file is gone, is a
note in its place.
"""

from __future__ import annotations

import base64
import html
import json
import shutil
from pathlib import Path

from segcheck import SegcheckError
from segcheck.outputs import check_figures_folder, check_output, html_mark, md_mark
from segcheck.report import GateRecord, _fmt, summary_table

FORMATS = {".html": "html", ".htm": "html", ".md": "md", ".markdown": "md"}
NO_FIGURES = (
    "This run drew no figures: run pytest with --segcheck-html PATH or --segcheck-md PATH to draw them "
    "(they are written beside the JSON report and re-rendered from it)."
)
VERDICT_STYLE = {
    "PASS": ("#1a7f37", "#dafbe1"),
    "FAIL": ("#cf222e", "#ffebe9"),
    "ERROR": ("#9a3412", "#ffedd5"),
    "SKIP": ("#57606a", "#eaeef2"),
    "XFAIL": ("#7d4e00", "#fff8c5"),
}
CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px auto;max-width:1400px;
padding:0 16px;color:#1f2328;line-height:1.4}
h1{margin-bottom:4px}h2{border-bottom:1px solid #d0d7de;padding-bottom:4px;margin-top:32px}
table{border-collapse:collapse;margin:8px 0}th,td{border:1px solid #d0d7de;padding:3px 8px;text-align:left;
vertical-align:top}th{background:#f6f8fa}td.num{text-align:right;font-variant-numeric:tabular-nums}
.verdict{font-weight:600;text-align:center}.badge{font-size:0.8em;padding:2px 8px;border-radius:10px;
margin-left:8px;vertical-align:middle}
section.gate{border:1px solid #d0d7de;border-radius:6px;padding:4px 16px 12px;margin:16px 0}
section.gate h3{margin:8px 0}.measured{color:#57606a}.note{background:#fff8c5;border:1px solid #d4a72c;
padding:4px 8px;border-radius:4px}figure{margin:8px 0}img{max-width:100%;height:auto;border:1px solid #eaeef2}
pre{background:#f6f8fa;padding:8px;overflow-x:auto;font-size:0.85em}details{margin-top:6px}
.tally{color:#57606a}
"""


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
    return report


def render(report_path: Path, out: Path) -> Path:
    """Write the page of the JSON report ``report_path`` to ``out`` (HTML or Markdown by suffix)."""
    report_path, out = Path(report_path), Path(out)
    kind = page_format(out)
    report = load(report_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    page = Page(report, report_path.parent)
    out.write_text(page.html() if kind == "html" else page.markdown(out))
    return out


class Page:
    """The content of one report page, from the JSON report and the folder its figure paths are relative to."""

    def __init__(self, report: dict, base: Path):
        self.report, self.base = report, Path(base)
        self.records = [GateRecord.from_dict(g) for g in report["gates"]]
        self.targets: dict[str, dict] = report.get("targets") or {}

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
        sections: dict[str, list[str]] = {}
        for key, value in (self.report.get("thresholds") or {}).items():
            section, _, name = key.partition(".")
            sections.setdefault(section, []).append(f"{name or section}={_plain(value)}")
        return [(section, ", ".join(items)) for section, items in sections.items()]

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

    # --- HTML -----------------------------------------------------------------------------
    def html(self) -> str:
        e = html.escape
        out = [
            "<!DOCTYPE html>",
            f'<html lang="en"><head><meta charset="utf-8">{html_mark()}',
            f"<title>segcheck report: {e(', '.join(self.targets) or 'no targets')}</title>",
            f"<style>{CSS}</style></head><body>",
            "<h1>segcheck report</h1>",
            f'<p class="tally">{e(self.tally())} &middot; segcheck {e(str(self.report.get("segcheck", "?")))}</p>',
            "<h2>What was tested</h2>",
        ]
        for target, described in self.targets.items():
            out.append(f"<h3>{e(target)}</h3>")
            out.append(_html_rows(self.facts(described if isinstance(described, dict) else {"note": described})))
        out += ["<h2>Thresholds and settings</h2>", _html_rows(self.thresholds())]
        out += ["<h2>Summary</h2>", '<table class="summary"><tr>']
        out.append("".join(f"<th>{h}</th>" for h in ("gate", "target", "measured", "threshold", "verdict")) + "</tr>")
        for (gate, target, measured, threshold, verdict), anchor in zip(self.summary(), self._anchors()):
            out.append(
                f'<tr><td><a href="#{anchor}">{e(gate)}</a></td><td>{e(target)}</td><td class="num">{e(measured)}</td>'
                f"<td>{e(threshold)}</td>{_html_verdict(verdict)}</tr>"
            )
        out.append("</table>")
        for title, value in self.extra_sections():
            out += [f"<h2>{e(title)}</h2>", _html_value(value)]
        if not self.any_figures():
            out.append(f'<p class="note">{e(NO_FIGURES)}</p>')
        for target, described in self.targets.items():
            shown = self.figures(described) if isinstance(described, dict) else []
            if shown:
                out += [f"<h2>{e(target)}: eval images</h2>", *(_html_figure(*f) for f in shown)]
        out.append("<h2>Gates</h2>")
        for r, anchor in zip(self.records, self._anchors()):
            out.append(f'<section class="gate" id="{anchor}">')
            out.append(f"<h3>{e(r.gate)} <small>({e(r.target)})</small>{_html_badge(r.verdict)}</h3>")
            if r.value is not None:
                rule = r.rule.replace("threshold", _fmt(r.threshold))
                out.append(f'<p class="measured">measured {e(_fmt(r.value))}; passes when {e(rule)}</p>')
            out.append(f"<p>{e(r.message)}</p>")
            out += [_html_figure(*f) for f in self.figures(r.to_dict())]
            if r.details:
                details = json.dumps(r.details, indent=1, sort_keys=True)
                out.append(f"<details><summary>details</summary><pre>{e(details)}</pre></details>")
            out.append(f'<p class="measured">test: {e(r.test)}</p></section>')
        out.append("</body></html>")
        return "\n".join(out) + "\n"

    def _anchors(self) -> list[str]:
        from segcheck.figures import slug

        return [f"gate-{i}-{slug(r.target)}-{slug(r.gate)}" for i, r in enumerate(self.records)]

    # --- Markdown ---------------------------------------------------------------------------
    def markdown(self, out: Path) -> str:
        """The Markdown page for ``out``; its figures are copied to ``<out stem>.figures/`` beside it."""
        folder = out.parent / f"{out.stem}.figures"
        lines = [
            md_mark(),
            "# segcheck report",
            "",
            f"{self.tally()} · segcheck {self.report.get('segcheck', '?')}",
            "",
        ]
        lines += ["## What was tested", ""]
        for target, described in self.targets.items():
            lines += [f"### {target}", ""]
            lines += _md_table(("what", "value"), self.facts(described if isinstance(described, dict) else {}))
        lines += ["## Thresholds and settings", "", *_md_table(("section", "settings"), self.thresholds())]
        lines += [
            "## Summary",
            "",
            *_md_table(("gate", "target", "measured", "threshold", "verdict"), self._md_summary()),
        ]
        for title, value in self.extra_sections():
            lines += [f"## {title}", "", *_md_value(value), ""]
        if not self.any_figures():
            lines += [f"> {NO_FIGURES}", ""]
        for target, described in self.targets.items():
            shown = self.figures(described) if isinstance(described, dict) else []
            if shown:
                lines += [f"## {target}: eval images", ""]
                lines += [self._md_figure(f, folder, out.parent) for f in shown] + [""]
        lines += ["## Gates", ""]
        for r in self.records:
            lines += [f"### {r.gate} ({r.target}): **{r.verdict}**", ""]
            if r.value is not None:
                lines += [f"measured {_fmt(r.value)}; passes when {r.rule.replace('threshold', _fmt(r.threshold))}", ""]
            lines += [_md_escape(r.message), ""]
            for f in self.figures(r.to_dict()):
                lines += [self._md_figure(f, folder, out.parent), ""]
        return "\n".join(lines).rstrip() + "\n"

    def _md_summary(self) -> list[tuple]:
        return [(g, t, m, th, f"**{v}**" if v != "PASS" else v) for g, t, m, th, v in self.summary()]

    def _md_figure(self, figure: tuple[str, str, Path | None], folder: Path, base: Path) -> str:
        kind, text, file = figure
        if kind == "note":
            return f"> **figure missing:** {_md_escape(text)}"
        parts = Path(text).parts
        dest = folder.joinpath(*(parts[1:] if len(parts) > 1 else parts))
        if dest.resolve() != file.resolve():
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(file, dest)
        return f"![{Path(text).stem}]({dest.relative_to(base).as_posix()})"


#: columns that name a table's row, shown first (the JSON report's keys are sorted)
LEADING_COLUMNS = ("target", "class", "corruption", "scorer", "concept", "prompt", "image")


def _columns(rows: list[dict]) -> list:
    """The columns of a table of ``rows``: every key, those naming the row first."""
    columns = list(dict.fromkeys(k for row in rows for k in row))
    return [c for c in LEADING_COLUMNS if c in columns] + [c for c in columns if c not in LEADING_COLUMNS]


# --- HTML helpers -----------------------------------------------------------------------------
def _plain(value) -> str:
    if isinstance(value, float):
        return _fmt(value)
    if isinstance(value, dict):
        return ", ".join(f"{k}={_plain(v)}" for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(_plain(v) for v in value)
    return str(value)


def _html_rows(rows: list[tuple[str, str]]) -> str:
    cells = "".join(f"<tr><th>{html.escape(a)}</th><td>{html.escape(b)}</td></tr>" for a, b in rows)
    return f"<table>{cells}</table>" if rows else "<p>(none)</p>"


def _html_verdict(verdict: str) -> str:
    colour, background = VERDICT_STYLE.get(verdict, ("#1f2328", "#ffffff"))
    return f'<td class="verdict" style="color:{colour};background:{background}">{html.escape(verdict)}</td>'


def _html_badge(verdict: str) -> str:
    colour, background = VERDICT_STYLE.get(verdict, ("#1f2328", "#ffffff"))
    return f'<span class="badge" style="color:{colour};background:{background}">{html.escape(verdict)}</span>'


def _html_figure(kind: str, text: str, file: Path | None) -> str:
    if kind == "note":
        return f'<p class="note">figure missing: {html.escape(text)}</p>'
    data = base64.b64encode(file.read_bytes()).decode("ascii")
    name = html.escape(Path(text).stem)
    return f'<figure><img src="data:image/png;base64,{data}" alt="{name}" title="{name}"></figure>'


def _html_value(value) -> str:
    """Any JSON value as HTML: a list of objects as a table (one column per key), an object as
    rows of key and value, verdict strings coloured."""
    if isinstance(value, dict):
        cells = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{_html_value(v)}</td></tr>" for k, v in value.items())
        return f"<table>{cells}</table>"
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        columns = _columns(value)
        head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
        body = "".join("<tr>" + "".join(_html_cell(row.get(c)) for c in columns) + "</tr>" for row in value)
        return f"<table><tr>{head}</tr>{body}</table>"
    if isinstance(value, list):
        return html.escape(", ".join(_plain(v) for v in value))
    return html.escape(_plain(value))


def _html_cell(value) -> str:
    if isinstance(value, str) and value in VERDICT_STYLE:
        return _html_verdict(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f'<td class="num">{html.escape(_plain(value))}</td>'
    return f"<td>{_html_value(value) if value is not None else ''}</td>"


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
        columns = _columns(value)
        return _md_table(tuple(columns), [tuple(_md_cell(row.get(c)) for c in columns) for row in value])
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
