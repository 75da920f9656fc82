"""The HTML page of a saved run, first screen first: the verdict counts, a filter by target and
outcome, the fleet matrix (targets x gates, sortable, with tags and the fleet finding in full),
the failures and errors in full, then every pass and skip collapsed to one line, the eval
images, what was tested and the settings that differ from the defaults.

Size scales with a fleet: a failing gate's figures are embedded as compressed thumbnails (JPEG,
at most ``THUMB_WIDTH`` px wide) linking to the full-size PNG beside the page; a passing gate's
figures are only linked (loaded when its line is opened). The page needs no network, CSS or JS
from elsewhere; the full-size figures are the files the JSON report lists.
"""

from __future__ import annotations

import base64
import functools
import html
import io
import json
import os
from pathlib import Path

from segcheck.report import GateRecord, _fmt

THUMB_WIDTH = 960
#: a PNG this small is embedded as it is: recompressing it saves little
EMBED_AS_IS = 48_000
VERDICT_STYLE = {
    "PASS": ("#1a7f37", "#dafbe1"),
    "FAIL": ("#cf222e", "#ffebe9"),
    "ERROR": ("#9a3412", "#ffedd5"),
    "SKIP": ("#57606a", "#eaeef2"),
    "XFAIL": ("#7d4e00", "#fff8c5"),
}
OUTCOME_ORDER = ("FAIL", "ERROR", "XFAIL", "PASS", "SKIP")
CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px auto;max-width:1400px;
padding:0 16px;color:#1f2328;line-height:1.4}
h1{margin-bottom:4px}h2{border-bottom:1px solid #d0d7de;padding-bottom:4px;margin-top:28px}
table{border-collapse:collapse;margin:8px 0}th,td{border:1px solid #d0d7de;padding:3px 8px;text-align:left;
vertical-align:top}th{background:#f6f8fa}td.num{text-align:right;font-variant-numeric:tabular-nums}
.verdict{font-weight:600;text-align:center}.badge{font-size:0.8em;padding:2px 8px;border-radius:10px;
margin-right:8px;vertical-align:middle;font-weight:600}
.counts{font-size:1.1em;margin:8px 0}.counts .badge{font-size:1em;padding:4px 12px}
.filters{background:#f6f8fa;border:1px solid #d0d7de;border-radius:6px;padding:6px 12px;margin:8px 0}
.filters label{margin-right:12px}
section.gate{border:1px solid #d0d7de;border-left:6px solid #cf222e;border-radius:6px;padding:4px 16px 12px;
margin:12px 0}section.gate.ERROR{border-left-color:#9a3412}section.gate h3{margin:8px 0}
details.line{border-bottom:1px solid #eaeef2;padding:3px 0}details.line>summary{cursor:pointer}
details.line>div{padding:4px 16px 8px}.measured{color:#57606a}.note{background:#fff8c5;border:1px solid #d4a72c;
padding:4px 8px;border-radius:4px}figure{margin:8px 0}img{max-width:100%;height:auto;border:1px solid #eaeef2}
pre{background:#f6f8fa;padding:8px;overflow-x:auto;font-size:0.85em}details{margin-top:4px}
.scroll{overflow-x:auto}table.matrix{font-size:0.8em}table.matrix th,table.matrix td{padding:1px 5px;
white-space:nowrap}table.matrix td.cell{text-align:center;font-weight:600;min-width:1.6em}
table.matrix th{cursor:pointer}table.matrix th.gate{writing-mode:vertical-rl;transform:rotate(180deg);
vertical-align:bottom;font-weight:normal}
.finding{background:#fff8c5;border:1px solid #d4a72c;border-radius:4px;padding:6px 10px;margin:6px 0;
white-space:normal;overflow-wrap:anywhere}.hidden{display:none}
"""
SCRIPT = """
function segcheckFilter(){
  const target=document.getElementById('f-target').value;
  const shown=new Set([...document.querySelectorAll('.f-outcome:checked')].map(b=>b.value));
  document.querySelectorAll('[data-verdict]').forEach(el=>{
    const ok=(target===''||el.dataset.target===target)&&shown.has(el.dataset.verdict);
    el.classList.toggle('hidden',!ok);});
  document.querySelectorAll('tr[data-row]').forEach(el=>{
    el.classList.toggle('hidden',target!==''&&el.dataset.row!==target);});
}
function segcheckSort(th){
  const table=th.closest('table'),col=[...th.parentNode.children].indexOf(th);
  const rows=[...table.querySelectorAll('tr[data-row]')];
  const dir=th.dataset.dir==='asc'?'desc':'asc';th.dataset.dir=dir;
  const key=r=>{const c=r.children[col];return c.dataset.key!==undefined?c.dataset.key:c.textContent.trim();};
  rows.sort((a,b)=>{const x=key(a),y=key(b),nx=parseFloat(x),ny=parseFloat(y);
    const c=(!isNaN(nx)&&!isNaN(ny))?nx-ny:x.localeCompare(y);return dir==='asc'?c:-c;});
  rows.forEach(r=>table.appendChild(r));
}
"""
#: a verdict's sort key in the matrix: failures first when sorted ascending
VERDICT_KEY = {"FAIL": "0", "ERROR": "1", "XFAIL": "2", "SKIP": "3", "PASS": "4"}


def page(p, out: Path) -> str:
    """The HTML page of the report held by ``p`` (a ``render.Page``), written to ``out``."""
    e = html.escape
    records = p.records
    by_outcome = {v: [(i, r) for i, r in enumerate(records) if r.verdict == v] for v in OUTCOME_ORDER}
    links = _Links(p.base, Path(out).parent)
    parts = [
        "<!DOCTYPE html>",
        f'<html lang="en"><head><meta charset="utf-8">{p.mark}',
        f"<title>segcheck report: {e(_short(list(p.targets)) or 'no targets')}</title>",
        f"<style>{CSS}</style></head><body>",
        "<h1>segcheck report</h1>",
        _counts(records, len(p.targets), p.report.get("segcheck", "?")),
        _filters(list(p.targets)),
    ]
    fleet = p.report.get("fleet")
    if len(p.targets) > 1:
        parts += ['<h2 id="matrix">Fleet matrix</h2>', _matrix(p, fleet)]
    failed = by_outcome["FAIL"] + by_outcome["ERROR"] + by_outcome["XFAIL"]
    expected = f", {len(by_outcome['XFAIL'])} expected" if by_outcome["XFAIL"] else ""  # listed with them
    parts.append(f"<h2>Failures and errors ({len(by_outcome['FAIL']) + len(by_outcome['ERROR'])}{expected})</h2>")
    if not failed:
        parts.append("<p>None: every gate that could judge its target passed.</p>")
    for i, r in failed:
        parts.append(_gate_section(p, r, p.anchors[i], links))
    for verdict, title in (("PASS", "Passed"), ("SKIP", "Skipped")):
        if by_outcome[verdict]:
            parts.append(f"<h2>{title} ({len(by_outcome[verdict])})</h2>")
            parts += [_gate_line(p, r, p.anchors[i], links) for i, r in by_outcome[verdict]]
    if not p.any_figures():
        parts.append(f'<p class="note">{e(p.no_figures)}</p>')
    grids = [(t, shown) for t, d in p.targets.items() if isinstance(d, dict) and (shown := p.figures(d))]
    if grids:
        parts.append("<h2>Eval images</h2>")
        for target, shown in grids:
            embed = any(r.verdict in ("FAIL", "ERROR") for r in records if r.target == target)
            figures = "".join(links.figure(*f, embed=embed) for f in shown)
            parts.append(f'<details class="line" {"open" if embed else ""}><summary>{e(target)}</summary>')
            parts.append(f"<div>{figures}</div></details>")
    for title, value in p.extra_sections():
        if title == "Fleet":
            value = {k: v for k, v in value.items() if k not in ("targets", "fleet_spread")}
            if not value:
                continue
            title = "Fleet view"
        parts += [f"<h2>{e(title)}</h2>", _value(value)]
    parts.append("<h2>What was tested</h2>")
    for target, described in p.targets.items():
        facts = p.facts(described if isinstance(described, dict) else {"note": described})
        parts.append(f'<details class="line"><summary>{e(target)}</summary><div>{_rows(facts)}</div></details>')
    changed, every = p.settings()
    parts += ["<h2>Settings that differ from the defaults</h2>", _rows(changed) if changed else "<p>None.</p>"]
    parts.append(f'<details class="line"><summary>every setting ({len(every)} sections)</summary>')
    parts.append(f"<div>{_rows(every)}</div></details>")
    parts += [f"<script>{SCRIPT}</script>", "</body></html>"]
    return "\n".join(parts) + "\n"


def _short(names: list[str], most: int = 4) -> str:
    return ", ".join(names[:most]) + (f" and {len(names) - most} more" if len(names) > most else "")


def _counts(records: list[GateRecord], targets: int, version) -> str:
    words = {"FAIL": "failed", "ERROR": "errors", "XFAIL": "expected failures", "PASS": "passed", "SKIP": "skipped"}
    counted = {v: sum(r.verdict == v for r in records) for v in OUTCOME_ORDER}
    chips = " ".join(badge(v, f"{n} {words[v]}") for v, n in counted.items() if n)
    over = f"over {targets} target{'s' if targets != 1 else ''}" if targets else "no target"
    about = f'<span class="measured">{over} &middot; segcheck {html.escape(str(version))}</span>'
    return f'<p class="counts">{chips or "no gates ran"} {about}</p>'


def _filters(targets: list[str]) -> str:
    options = '<option value="">every target</option>' + "".join(
        f'<option value="{html.escape(t)}">{html.escape(t)}</option>' for t in targets
    )
    boxes = "".join(
        f'<label><input type="checkbox" class="f-outcome" value="{v}" checked onchange="segcheckFilter()"> '
        f"{v.lower()}</label>"
        for v in OUTCOME_ORDER
    )
    return (
        f'<div class="filters"><label>target <select id="f-target" onchange="segcheckFilter()">{options}</select>'
        f"</label> show: {boxes}</div>"
    )


def _matrix(p, fleet: dict | None) -> str:
    """Targets x gates coloured by verdict, with each target's tags and real/noise mIoU; a click
    on a column header sorts by it; the fleet finding in full below."""
    e = html.escape
    rows = {row["target"]: row for row in (fleet or {}).get("targets") or []}
    failing = lambda g: -sum(r.verdict in ("FAIL", "ERROR") for r in p.records if r.gate == g)  # noqa: E731
    gates = sorted(dict.fromkeys(r.gate for r in p.records), key=failing)  # the gates that fail, first
    tags = sorted({k for t, d in p.targets.items() for k in ((rows.get(t) or d or {}).get("tags") or {})})
    cells = {(r.target, r.gate): (i, r) for i, r in enumerate(p.records)}
    head = ["target", *tags, "real mIoU", "noise mIoU", "failed"]
    out = ['<div class="scroll"><table class="matrix"><tr>']
    out += [f'<th onclick="segcheckSort(this)" title="sort">{e(h)}</th>' for h in head]
    out += [f'<th class="gate" onclick="segcheckSort(this)" title="{e(g)}: sort">{e(g)}</th>' for g in gates]
    out.append("</tr>")
    worst = lambda t: -sum(r.verdict in ("FAIL", "ERROR") for r in p.records if r.target == t)  # noqa: E731
    for target in sorted(p.targets, key=worst):  # the targets that fail most, first
        described, row = p.targets[target], rows.get(target) or {}
        tagged = row.get("tags") or (described.get("tags") if isinstance(described, dict) else None) or {}
        failed = sum(
            1
            for g in gates
            if cells.get((target, g), (0, None))[1] and cells[(target, g)][1].verdict in ("FAIL", "ERROR")
        )
        out.append(f'<tr data-row="{e(target)}"><th>{e(target)}</th>')
        out += [f"<td>{e(str(tagged.get(k, '')))}</td>" for k in tags]
        out += [_number(row.get("real_miou")), _number(row.get("noise_miou")), f'<td class="num">{failed}</td>']
        for gate in gates:
            found = cells.get((target, gate))
            if found is None:
                out.append('<td data-key="9"></td>')
                continue
            i, r = found
            colour, background = VERDICT_STYLE.get(r.verdict, ("#1f2328", "#ffffff"))
            value = "" if r.value is None else f": {_fmt(r.value)}"
            out.append(
                f'<td class="cell" data-key="{VERDICT_KEY.get(r.verdict, "5")}" style="color:{colour};'
                f'background:{background}" title="{e(gate)}{e(value)}"><a href="#{p.anchors[i]}" '
                f'style="color:inherit;text-decoration:none">{e(r.verdict[0])}</a></td>'
            )
        out.append("</tr>")
    out.append("</table></div>")
    findings = (fleet or {}).get("fleet_spread") or []
    out += [f'<p class="finding">fleet_spread: {e(str(f))}</p>' for f in findings]
    return "".join(out)


def _number(value) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f'<td class="num">{html.escape(_fmt(float(value)))}</td>'
    return '<td class="num" data-key="-1">-</td>'


def _measured(r: GateRecord) -> str:
    if r.value is None:
        return ""
    return f"measured {_fmt(r.value)}; passes when {r.rule.replace('threshold', _fmt(r.threshold))}"


def _gate_section(p, r: GateRecord, anchor: str, links: _Links) -> str:
    e = html.escape
    out = [
        f'<section class="gate {e(r.verdict)}" id="{anchor}" data-target="{e(r.target)}" data-verdict="{r.verdict}">'
    ]
    out.append(f"<h3>{badge(r.verdict)}{e(r.gate)} <small>({e(r.target)})</small></h3>")
    if r.value is not None:
        out.append(f'<p class="measured">{e(_measured(r))}</p>')
    out.append(f"<p>{e(r.message)}</p>")
    out += [links.figure(*f, embed=True) for f in p.figures(r.to_dict())]
    out.append(_details(r))
    out.append(f'<p class="measured">test: {e(r.test)}</p></section>')
    return "".join(out)


def _gate_line(p, r: GateRecord, anchor: str, links: _Links) -> str:
    """A pass or skip as one line, its message, figures (linked, loaded when opened) and details inside."""
    e = html.escape
    said = _measured(r) if r.value is not None else r.message
    out = [
        f'<details class="line" id="{anchor}" data-target="{e(r.target)}" data-verdict="{r.verdict}">',
        f"<summary>{badge(r.verdict)}<b>{e(r.gate)}</b> ({e(r.target)}) "
        f'<span class="measured">{e(said)}</span></summary><div>',
    ]
    if r.value is not None:
        out.append(f"<p>{e(r.message)}</p>")
    out += [links.figure(*f, embed=False) for f in p.figures(r.to_dict())]
    out.append(_details(r))
    out.append(f'<p class="measured">test: {e(r.test)}</p></div></details>')
    return "".join(out)


def _details(r: GateRecord) -> str:
    if not r.details:
        return ""
    text = html.escape(json.dumps(r.details, indent=1, sort_keys=True))
    return f"<details><summary>details</summary><pre>{text}</pre></details>"


class _Links:
    """Figures as the page shows them: a thumbnail (embedded) or the file itself (lazy), each
    linking to the full-size PNG relative to the page's folder."""

    def __init__(self, base: Path, page_folder: Path):
        self.base, self.page_folder = Path(base), Path(page_folder)

    def figure(self, kind: str, text: str, file: Path | None, embed: bool) -> str:
        if kind == "note":
            return f'<p class="note">figure missing: {html.escape(text)}</p>'
        href = html.escape(Path(os.path.relpath(file.resolve(), self.page_folder.resolve())).as_posix())
        name = html.escape(Path(text).stem)
        if embed:
            mime, data = thumbnail(str(file.resolve()), file.stat().st_mtime_ns)
            src = f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
            image = f'<img src="{src}" alt="{name}" title="{name}: full size in {href}">'
        else:
            image = f'<img loading="lazy" src="{href}" alt="{name}" title="{name}">'
        return f'<figure><a href="{href}">{image}</a></figure>'


@functools.lru_cache(maxsize=512)
def thumbnail(path: str, _mtime: int) -> tuple[str, bytes]:
    """``(mime, bytes)`` of the figure at ``path`` for embedding: as it is when small, else a
    JPEG at most ``THUMB_WIDTH`` px wide (the same bytes for the same file)."""
    raw = Path(path).read_bytes()
    if len(raw) <= EMBED_AS_IS:
        return "image/png", raw
    from PIL import Image

    with Image.open(io.BytesIO(raw)) as image:
        image = image.convert("RGB")
        if image.width > THUMB_WIDTH:
            image = image.resize((THUMB_WIDTH, round(image.height * THUMB_WIDTH / image.width)), Image.LANCZOS)
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=75, optimize=True)
    return ("image/jpeg", buffer.getvalue()) if buffer.tell() < len(raw) else ("image/png", raw)


def badge(verdict: str, text: str | None = None) -> str:
    """``text`` (by default the verdict) on the verdict's colours."""
    colour, background = VERDICT_STYLE.get(verdict, ("#1f2328", "#ffffff"))
    shown = html.escape(verdict if text is None else text)
    return f'<span class="badge" style="color:{colour};background:{background}">{shown}</span>'


def verdict_cell(verdict: str) -> str:
    colour, background = VERDICT_STYLE.get(verdict, ("#1f2328", "#ffffff"))
    return f'<td class="verdict" style="color:{colour};background:{background}">{html.escape(verdict)}</td>'


def plain(value) -> str:
    """A JSON value as one line of text: floats formatted, mappings as ``k=v``, lists joined."""
    if isinstance(value, float):
        return _fmt(value)
    if isinstance(value, dict):
        return ", ".join(f"{k}={plain(v)}" for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(plain(v) for v in value)
    return str(value)


#: columns that name a table's row, shown first (the JSON report's keys are sorted)
LEADING_COLUMNS = ("target", "class", "corruption", "scorer", "concept", "prompt", "image")


def columns(rows: list[dict]) -> list:
    """The columns of a table of ``rows``: every key, those naming the row first."""
    found = list(dict.fromkeys(k for row in rows for k in row))
    return [c for c in LEADING_COLUMNS if c in found] + [c for c in found if c not in LEADING_COLUMNS]


def _rows(rows: list[tuple[str, str]]) -> str:
    cells = "".join(f"<tr><th>{html.escape(a)}</th><td>{html.escape(b)}</td></tr>" for a, b in rows)
    return f"<table>{cells}</table>" if rows else "<p>(none)</p>"


def _value(value) -> str:
    """Any JSON value as HTML: a list of objects as a table (one column per key), an object as
    rows of key and value, verdict strings coloured."""
    if isinstance(value, dict):
        cells = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{_value(v)}</td></tr>" for k, v in value.items())
        return f"<table>{cells}</table>"
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        shown = columns(value)
        head = "".join(f"<th>{html.escape(str(c))}</th>" for c in shown)
        body = "".join("<tr>" + "".join(_cell(row.get(c)) for c in shown) + "</tr>" for row in value)
        return f"<table><tr>{head}</tr>{body}</table>"
    if isinstance(value, list):
        return html.escape(", ".join(plain(v) for v in value))
    return html.escape(plain(value))


def _cell(value) -> str:
    if isinstance(value, str) and value in VERDICT_STYLE:
        return verdict_cell(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f'<td class="num">{html.escape(plain(value))}</td>'
    return f"<td>{_value(value) if value is not None else ''}</td>"
