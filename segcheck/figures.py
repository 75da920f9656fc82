"""Figures for the HTML and Markdown reports: PNG images drawn from a target and its results.

A :class:`Figure` is plain data (a name, a title, PNG bytes or a note saying why there are
none), so it travels from xdist workers with the test report. Image grids (masks, overlays,
confidence and score heat maps) need only Pillow; plots with axes (curves, histograms) need
matplotlib, the ``report`` extra: without it a plot is a Figure whose note says so.

Masks are coloured with one fixed palette (:func:`class_colours`, by class index); pixels
that no metric counts are black (ignore), white (anomaly) or grey (inlier without a class).
"""

from __future__ import annotations

import base64
import colorsys
import io
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

#: eval images shown per image grid
IMAGES = 3
NO_MATPLOTLIB = "install segcheck[report] for plots (matplotlib is not installed)"

# distinct colours for class indices 0..17 (Tableau 20 without its greys); later indices by hue
_BASE_PALETTE = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
    (227, 119, 194), (188, 189, 34), (23, 190, 207), (174, 199, 232), (255, 187, 120), (152, 223, 138),
    (255, 152, 150), (197, 176, 213), (196, 156, 148), (247, 182, 210), (219, 219, 141), (158, 218, 229),
)  # fmt: skip
IGNORE_COLOUR, ANOMALY_COLOUR, INLIER_COLOUR = (0, 0, 0), (255, 255, 255), (128, 128, 128)
WRONG_COLOUR, RIGHT_COLOUR = (230, 25, 25), (215, 215, 215)
# viridis at 0, 0.25, 0.5, 0.75, 1 (heat maps: low dark blue, high yellow)
_RAMP = np.array([(68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37)], np.float32)


@dataclass(frozen=True)
class Figure:
    """One picture of a report: ``png`` bytes, or None with ``note`` saying what is missing and
    why. ``name`` is a file-name stem, unique among one gate's figures; ``title`` says what it shows."""

    name: str
    title: str
    png: bytes | None = None
    note: str = ""

    def to_dict(self) -> dict:
        png = base64.b64encode(self.png).decode("ascii") if self.png is not None else None
        return {"name": self.name, "title": self.title, "png": png, "note": self.note}

    @classmethod
    def from_dict(cls, data: dict) -> Figure:
        png = base64.b64decode(data["png"]) if data.get("png") is not None else None
        return cls(data["name"], data["title"], png, data.get("note", ""))


def missing(name: str, title: str, why: str) -> Figure:
    """A figure that could not be drawn, saying ``why``."""
    return Figure(name, title, None, why)


# --- colours ------------------------------------------------------------------------------
def class_colours(count: int) -> np.ndarray:
    """RGB colours (count, 3) uint8 of class indices 0..count-1: the same index, the same colour."""
    colours = list(_BASE_PALETTE[:count])
    for i in range(len(colours), count):  # golden-ratio hues, alternating value: distinct and never grey
        r, g, b = colorsys.hsv_to_rgb((i * 0.618034) % 1.0, 0.75, 0.95 if i % 2 else 0.7)
        colours.append((round(r * 255), round(g * 255), round(b * 255)))
    return np.array(colours, np.uint8).reshape(-1, 3)


def _special(spec) -> list[tuple[int, str, tuple[int, int, int]]]:
    out = [(spec.ignore_index, "ignore", IGNORE_COLOUR)]
    if spec.anomaly_index is not None:
        out.append((spec.anomaly_index, "anomaly", ANOMALY_COLOUR))
    if spec.inlier_index is not None:
        out.append((spec.inlier_index, "inlier (no class)", INLIER_COLOUR))
    return out


def colour_mask(labels: np.ndarray, spec) -> np.ndarray:
    """RGB (H, W, 3) uint8 of a label map: class colours, and the special colours of ``spec``'s
    ignore/anomaly/inlier values (any other value, a wrong label, is black too)."""
    labels = np.asarray(labels)
    palette = class_colours(spec.num_classes)
    out = np.zeros((*labels.shape, 3), np.uint8)
    known = (labels >= 0) & (labels < spec.num_classes)
    out[known] = palette[labels[known]]
    for value, _, colour in _special(spec):
        out[labels == value] = colour
    return out


def legend(spec, *label_maps: np.ndarray) -> list[tuple[str, tuple[int, int, int]]]:
    """(name, colour) of every class and special value that occurs in ``label_maps``."""
    present = set()
    for m in label_maps:
        present |= {int(v) for v in np.unique(np.asarray(m))}
    palette = class_colours(spec.num_classes)
    entries = [
        (f"{c} {spec.classes[c]}", tuple(int(v) for v in palette[c]))
        for c in sorted(present)
        if 0 <= c < spec.num_classes
    ]
    return entries + [(name, colour) for value, name, colour in _special(spec) if value in present]


def heat(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """RGB (H, W, 3) uint8 of ``values`` on a viridis-like ramp from ``low`` to ``high`` (NaN: black)."""
    values = np.asarray(values, np.float64)
    t = np.clip((values - low) / (high - low), 0, 1) if high > low else np.zeros_like(values)
    t = np.nan_to_num(t, nan=0.0) * (len(_RAMP) - 1)
    i = np.minimum(t.astype(np.int64), len(_RAMP) - 2)
    f = (t - i)[..., None]
    out = (_RAMP[i] * (1 - f) + _RAMP[i + 1] * f).astype(np.uint8)
    out[np.isnan(values)] = 0
    return out


def overlay(image: np.ndarray, colours: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """``colours`` blended over ``image`` (both RGB uint8, same size) with weight ``alpha``."""
    return (image.astype(np.float32) * (1 - alpha) + colours.astype(np.float32) * alpha).astype(np.uint8)


def error_map(pred: np.ndarray, mask: np.ndarray, spec) -> np.ndarray:
    """RGB: red where ``pred`` differs from ``mask`` on counted pixels, light grey where it agrees,
    black where no metric counts the pixel."""
    counted = spec.counted(mask)
    out = np.zeros((*mask.shape, 3), np.uint8)
    out[counted & (pred == mask)] = RIGHT_COLOUR
    out[counted & (pred != mask)] = WRONG_COLOUR
    return out


ERROR_LEGEND = [("error: wrong", WRONG_COLOUR), ("error: right", RIGHT_COLOUR), ("error: not scored", IGNORE_COLOUR)]


def changed_map(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """RGB: red where label maps ``a`` and ``b`` differ, light grey where they agree."""
    out = np.full((*a.shape, 3), RIGHT_COLOUR, np.uint8)
    out[a != b] = WRONG_COLOUR
    return out


# --- image grids (Pillow only) --------------------------------------------------------------
def _font(size: int = 13):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: the fixed bitmap font
        return ImageFont.load_default()


def _text_width(draw: ImageDraw.ImageDraw, text: str, font) -> int:
    return int(draw.textlength(text, font=font))


def _wrapped(draw, text: str, font, width: int) -> list[str]:
    """``text`` broken into lines no wider than ``width`` pixels (long words are left whole)."""
    lines = []
    for paragraph in text.split("\n"):
        words, line = paragraph.split(" "), ""
        for word in words:
            candidate = f"{line} {word}".strip()
            if line and _text_width(draw, candidate, font) > width:
                lines.append(line)
                line = word
            else:
                line = candidate
        lines.append(line)
    return lines


def _panel_scale(height: int, width: int) -> float:
    """Display scale of a panel: small images enlarged (whole multiples) to about 128 px tall
    but at most 400 px wide, large ones shrunk to at most 320 px wide."""
    if height < 112 and width < 200:
        return float(max(1, min(-(-128 // height), 400 // width)))
    return min(1.0, 320 / width)


def _as_image(panel: np.ndarray, scale: float) -> Image.Image:
    image = Image.fromarray(np.ascontiguousarray(panel))
    if scale != 1.0:
        size = (max(1, round(panel.shape[1] * scale)), max(1, round(panel.shape[0] * scale)))
        image = image.resize(size, Image.NEAREST if scale > 1 else Image.BILINEAR)
    return image


def grid(
    title: str,
    headers: Sequence[str],
    rows: Sequence[Sequence[np.ndarray]],
    *,
    row_labels: Sequence[str] | None = None,
    legend_entries: Sequence[tuple[str, tuple[int, int, int]]] = (),
    ramps: Sequence[tuple[str, float, float]] = (),
) -> bytes:
    """A PNG of RGB panels (uint8 (H, W, 3), one size) in ``rows`` under column ``headers``, with
    a ``title``, optional labels left of the rows, a colour legend and colour ramps
    ``(what, low, high)`` for heat-map columns."""
    font, small = _font(14), _font(12)
    h, w = rows[0][0].shape[:2]
    scale = _panel_scale(h, w)
    ph, pw = max(1, round(h * scale)), max(1, round(w * scale))
    gap, margin = 6, 10
    label_w = 120 if row_labels else 0
    columns = len(headers)
    width = margin * 2 + label_w + columns * pw + (columns - 1) * gap
    scratch = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    title_lines = _wrapped(scratch, title, font, width - 2 * margin)
    header_lines = [_wrapped(scratch, hd, small, pw) for hd in headers]
    header_h = 15 * max(len(x) for x in header_lines) + 4
    legend_rows = _legend_layout(scratch, small, legend_entries, ramps, width - 2 * margin)
    legend_h = 20 * len(legend_rows) + (6 if legend_rows else 0)
    top = margin + 18 * len(title_lines) + 4
    height = top + header_h + len(rows) * (ph + gap) + legend_h + margin
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for i, line in enumerate(title_lines):
        draw.text((margin, margin + 18 * i), line, fill=(0, 0, 0), font=font)
    x0 = margin + label_w
    for c, lines in enumerate(header_lines):
        for i, line in enumerate(lines):
            draw.text((x0 + c * (pw + gap), top + 15 * i), line, fill=(40, 40, 40), font=small)
    y = top + header_h
    for r, row in enumerate(rows):
        if row_labels:
            for i, line in enumerate(_wrapped(draw, row_labels[r], small, label_w - 6)):
                draw.text((margin, y + 15 * i), line, fill=(40, 40, 40), font=small)
        for c, panel in enumerate(row):
            canvas.paste(_as_image(panel, scale), (x0 + c * (pw + gap), y))
        y += ph + gap
    _draw_legend(canvas, small, legend_rows, margin, y + 4)
    return png_bytes(canvas)


def _legend_layout(draw, font, entries, ramps, width: int) -> list[list[tuple]]:
    """Legend items (kind, ..., item width) flowed into rows no wider than ``width``."""
    items = [("swatch", name, colour, 22 + _text_width(draw, name, font)) for name, colour in entries]
    for what, low, high in ramps:
        text = f"{what}: {low:.3g}"
        items.append(
            ("ramp", text, f"{high:.3g}", _text_width(draw, text, font) + 96 + _text_width(draw, "0.000", font))
        )
    rows, row, used = [], [], 0
    for item in items:
        if row and used + item[-1] + 14 > width:
            rows.append(row)
            row, used = [], 0
        row.append(item)
        used += item[-1] + 14
    return rows + ([row] if row else [])


def _draw_legend(canvas: Image.Image, font, rows, x0: int, y: int) -> None:
    draw = ImageDraw.Draw(canvas)
    for row in rows:
        x = x0
        for item in row:
            if item[0] == "swatch":
                _, name, colour, w = item
                draw.rectangle((x, y + 2, x + 14, y + 16), fill=tuple(colour), outline=(90, 90, 90))
                draw.text((x + 20, y + 2), name, fill=(0, 0, 0), font=font)
            else:
                _, text, high, w = item
                draw.text((x, y + 2), text, fill=(0, 0, 0), font=font)
                rx = x + _text_width(draw, text, font) + 6
                strip = heat(np.tile(np.linspace(0, 1, 80), (14, 1)), 0, 1)
                canvas.paste(Image.fromarray(strip), (rx, y + 2))
                draw.text((rx + 86, y + 2), high, fill=(0, 0, 0), font=font)
            x += w + 14
        y += 20


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


# --- plots (matplotlib, optional) -------------------------------------------------------------
def plot(name: str, title: str, draw: Callable, size: tuple[float, float] = (6.4, 3.6)) -> Figure:
    """A Figure drawn by ``draw(figure)`` on a new matplotlib figure of ``size`` inches (the
    object API on an Agg canvas: no pyplot state, no display); without matplotlib a Figure
    whose note says to install the ``report`` extra."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure as MplFigure
    except ImportError:
        return missing(name, title, f"{title}: {NO_MATPLOTLIB}")
    figure = MplFigure(figsize=size, dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    draw(figure)
    figure.suptitle(title, fontsize=10)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return Figure(name, title, buffer.getvalue())


def rgb(colour: Sequence[int]) -> tuple[float, float, float]:
    """A 0-255 colour as matplotlib's 0-1 triple."""
    return tuple(c / 255 for c in colour)


# --- drawing safely, and the report's figure files -------------------------------------------
def drawn(what: str, function: Callable, *args) -> list[Figure]:
    """``function(*args)``'s figures; one that raises, or returns something else, is a note
    saying so (a figure never fails a gate, and is never silently missing)."""
    try:
        figures = function(*args)
    except Exception as exc:  # any bug or data oddity in drawing: reported in the figure's place
        return [missing("error", what, f"{what}: the figure could not be drawn: {type(exc).__name__}: {exc}")]
    if not isinstance(figures, list) or not all(isinstance(f, Figure) for f in figures):
        return [missing("error", what, f"{what}: the figure function returned {type(figures).__name__}, not [Figure]")]
    return figures


def slug(text: str) -> str:
    """``text`` as a file-name part: runs of characters other than letters, digits, ``.-_`` become ``_``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "_"


class FigureFiles:
    """The PNG files of one JSON report: in ``<report stem>.figures/`` beside it, one folder per
    target, named by gate and figure; paths are returned relative to the report's folder. The
    first write of a run removes the PNGs that the earlier segcheck report at ``report_path``
    lists in that folder; nothing else there is touched. Written by one process (the controller)."""

    def __init__(self, report_path: Path):
        self.report_path = Path(report_path)
        self.base = self.report_path.parent
        self.folder = self.base / f"{self.report_path.stem}.figures"
        self._folders: dict[str, Path] = {}  # target id -> its folder
        self._cleared = False

    def _clear(self) -> None:
        """Remove the earlier report's PNG files (those inside :attr:`folder` only)."""
        import json

        from segcheck.outputs import inside, report_version

        if not self.folder.is_dir() or report_version(self.report_path) is None:
            return
        earlier = json.loads(self.report_path.read_text(encoding="utf-8"))
        entries = [*(earlier.get("targets") or {}).values(), *(earlier.get("gates") or [])]
        for entry in entries:
            for listed in (entry.get("figures") or []) if isinstance(entry, dict) else ():
                file = self.base / str(listed)
                if file.suffix == ".png" and file.is_file() and inside(file, self.folder):
                    file.unlink()

    def _target_folder(self, target: str) -> Path:
        if target not in self._folders:
            name, taken = slug(target), {p.name for p in self._folders.values()}
            n = 2
            while name in taken:  # two ids with the same slug ("a:b", "a/b")
                name, n = f"{slug(target)}-{n}", n + 1
            self._folders[target] = self.folder / name
        return self._folders[target]

    def write(self, target: str, owner: str, figures: Sequence[dict]) -> tuple[list[str], list[str]]:
        """Write ``figures`` (:meth:`Figure.to_dict` form) of ``owner`` (a gate, or ``target``):
        (relative paths of the PNGs written, notes of the figures without one)."""
        if not self._cleared:
            self._clear()
            self._cleared = True
        paths, notes = [], []
        for data in figures:
            figure = Figure.from_dict(data)
            if figure.png is None:
                notes.append(figure.note)
                continue
            path = self._target_folder(target) / f"{slug(owner)}.{slug(figure.name)}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(figure.png)
            paths.append(path.relative_to(self.base).as_posix())
        return paths, notes
