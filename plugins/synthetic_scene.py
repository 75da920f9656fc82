"""The procedural painter behind ``synthetic-streets``: a scene (canvas, label map and the
image's own random generator) and the functions that draw each class onto it, in order.

Every drawing reads only the scene's generator, so a scene is the same in every process.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass

import numpy as np

CLASSES = ("road", "sidewalk", "building", "vegetation", "sky", "car", "person", "pole")
ROAD, SIDEWALK, BUILDING, VEGETATION, SKY, CAR, PERSON, POLE = range(len(CLASSES))
ANOMALY_INDEX = len(CLASSES)

_BUILDING_COLOURS = ((160, 75, 55), (185, 140, 95), (120, 85, 60), (190, 100, 70))
_SKIN_COLOURS = ((232, 192, 160), (200, 150, 110), (150, 100, 70), (100, 68, 50))
_ANOMALY_COLOURS = ((235, 40, 205), (40, 235, 235), (250, 140, 0), (145, 40, 225), (175, 255, 0), (255, 105, 180))


def _hsv(rng: np.random.Generator, s: tuple[float, float], v: tuple[float, float]) -> np.ndarray:
    """A random-hue RGB colour (0-255) with saturation and value drawn from the given ranges."""
    return 255 * np.array(colorsys.hsv_to_rgb(rng.random(), rng.uniform(*s), rng.uniform(*v)), dtype=np.float32)


def _jitter(rng: np.random.Generator, colour, amount: float) -> np.ndarray:
    return np.asarray(colour, dtype=np.float32) + rng.uniform(-amount, amount, size=3).astype(np.float32)


@dataclass(frozen=True)
class Look:
    """How much a scene's appearance gives its classes away (the ``shortcut`` variant's knobs;
    the defaults are ``synthetic-streets-shortcut``).

    ``cue``: the probability that a surface keeps its class's own colour and texture; otherwise
    it takes a colour from the image's shared palette of ``palette`` muted colours and a random
    grain, whatever its class (0: appearance says nothing per surface, only shapes do; 1: the
    standard look's colours). ``clutter``: the mean number of unlabelled stains (posters,
    patches, puddles in palette colours, half of them patterned with the grids and stripes of
    windows, tiles and lane marks) over any class. ``lighting``: strength 0-1 of the
    per-image light (gain 1 +- 0.45, colour cast +- 0.2, a brightness ramp +- 35% across the
    image, up to two shadow bands at x0.5), all scaled by it. ``noise``: the standard deviation
    (0-255 scale) of per-pixel sensor noise added last. The layout prior is unchanged.
    """

    cue: float = 0.0
    clutter: float = 12.0
    lighting: float = 1.0
    palette: int = 5
    noise: float = 30.0

    def __post_init__(self):
        for name in ("cue", "lighting"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in 0..1, got {getattr(self, name)!r}")
        if self.clutter < 0 or self.palette < 1 or self.noise < 0:
            raise ValueError(
                f"clutter and noise must be >= 0 and palette >= 1, got clutter={self.clutter!r}, "
                f"noise={self.noise!r}, palette={self.palette!r}"
            )

    def describe(self) -> str:
        return (
            f"cue={self.cue:g},clutter={self.clutter:g},lighting={self.lighting:g},palette={self.palette},"
            f"noise={self.noise:g}"
        )


class _Scene:
    """One image under construction: a label map and a material map, composed at the end.

    ``paint`` only records which material covers which pixels; ``render`` turns materials
    into colours in one vectorized pass (material 0 is the sky gradient). With a ``look``,
    each painted surface keeps its class colour with probability ``look.cue`` and otherwise
    takes a palette colour (drawn from a second generator, so the layout is the standard one).
    """

    def __init__(self, rng: np.random.Generator, height: int, width: int, look: Look | None = None, style=None):
        self.rng = rng
        self.look = look
        self.style = style  # the look's own generator: palette, re-colouring, clutter and light
        if look is not None:
            self.palette = [_hsv(style, (0.0, 0.45), (0.25, 0.85)) for _ in range(look.palette)]
        self.h, self.w = height, width
        self.scale = height / 64
        self.yy = np.arange(height, dtype=np.float32)[:, None]
        self.xx = np.arange(width, dtype=np.float32)[None, :]
        self.label = np.full((height, width), SKY, dtype=np.int64)
        self.material = np.zeros((height, width), dtype=np.intp)
        self.materials: list[tuple[np.ndarray, float, float]] = [(np.zeros(3, np.float32), 0.0, 0.0)]
        self.sky = np.zeros((height, 1, 3), dtype=np.float32)

    def paint(self, mask: np.ndarray, label: int, colour, grain: float = 0.0, colour_noise: float = 0.0) -> None:
        """Cover ``mask`` with ``label`` and a material: ``colour`` plus luminance ``grain`` and
        per-channel ``colour_noise`` (standard deviations in 0-255 units)."""
        if self.look is not None and self.style.random() >= self.look.cue:
            colour, grain, colour_noise = self.shared_material()
        self._cover(mask, colour, grain, colour_noise)
        np.putmask(self.label, np.broadcast_to(mask, self.label.shape), label)

    def stain(self, mask: np.ndarray) -> None:
        """Cover ``mask`` with a shared material and leave its labels as they are (clutter)."""
        self._cover(mask, *self.shared_material())

    def shared_material(self) -> tuple[np.ndarray, float, float]:
        """A palette colour (jittered) with a random grain: what any class may look like."""
        style = self.style
        colour = _jitter(style, self.palette[style.integers(len(self.palette))], 12)
        return colour, float(style.uniform(2, 22)), float(style.uniform(0, 10))

    def _cover(self, mask: np.ndarray, colour, grain: float, colour_noise: float) -> None:
        if mask.shape != self.label.shape:
            mask = np.broadcast_to(mask, self.label.shape)
        np.putmask(self.material, mask, len(self.materials))
        self.materials.append((np.asarray(colour, dtype=np.float32), grain, colour_noise))

    def render(self) -> np.ndarray:
        """The float RGB image (H, W, 3), 0-255 scale before clipping."""
        colours, grain, colour_noise = (np.array(v, dtype=np.float32) for v in zip(*self.materials))
        noise = (self.rng.random((self.h, self.w, 3), dtype=np.float32) - 0.5) * np.float32(12**0.5)
        image = colours[self.material]
        image += grain[self.material][..., None] * noise[..., :1] + colour_noise[self.material][..., None] * noise
        np.copyto(image, self.sky, where=(self.material == 0)[..., None])
        return image

    def box(self, y0: float, y1: float, x0: float, x1: float) -> np.ndarray:
        """Boolean mask of the half-open box rows [y0, y1), cols [x0, x1)."""
        return (self.yy >= y0) & (self.yy < y1) & (self.xx >= x0) & (self.xx < x1)

    def ellipse(self, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
        return ((self.yy - cy) / ry) ** 2 + ((self.xx - cx) / rx) ** 2 < 1.0


class _Street:
    """The ground geometry: horizon row and, per row, road centre, road and sidewalk half-widths."""

    def __init__(self, scene: _Scene):
        rng, h, w = scene.rng, scene.h, scene.w
        self.height = h
        self.horizon = int(round(h * rng.uniform(0.30, 0.50)))
        rows = np.arange(h, dtype=np.float32)
        self.depth = np.clip((rows - self.horizon + 0.5) / (h - self.horizon), 0.0, 1.0)  # 0 far .. 1 near
        vanish, bottom = w * rng.uniform(0.35, 0.65), w * rng.uniform(0.30, 0.70)
        self.centre = vanish + self.depth * (bottom - vanish)
        self.half_road = w * (0.02 + self.depth * rng.uniform(0.28, 0.45))
        self.half_walk = self.half_road + w * self.depth * rng.uniform(0.10, 0.35)

    def row(self, depth: float) -> int:
        """The image row at ``depth`` (0 horizon .. 1 bottom row)."""
        return min(self.height - 1, self.horizon + int(depth * (self.height - self.horizon)))


def _draw_sky(scene: _Scene, street: _Street) -> None:
    rng = scene.rng
    top = _jitter(rng, (70, 125, 215), 20)
    low = _jitter(rng, (170, 205, 245), 15)
    if scene.look is not None and scene.style.random() >= scene.look.cue:  # an overcast or hazy sky
        top, low = scene.shared_material()[0], scene.shared_material()[0]
    t = np.clip(scene.yy / max(street.horizon, 1), 0.0, 1.0)[..., None]
    scene.sky = top + (low - top) * t


def _draw_buildings(scene: _Scene, street: _Street) -> None:
    rng, w, s, horizon = scene.rng, scene.w, scene.scale, street.horizon
    x = -rng.uniform(0.0, 0.15) * w
    while x < w:
        width = rng.uniform(0.12, 0.30) * w
        if rng.random() < 0.8:
            top = horizon - rng.uniform(0.35, 1.0) * horizon
            body = scene.box(top, horizon, x, x + width)
            scene.paint(body, BUILDING, _jitter(rng, _BUILDING_COLOURS[rng.integers(len(_BUILDING_COLOURS))], 15), 5)
            py, px = (max(3, round(rng.uniform(4, 7) * s)) for _ in range(2))
            windows = body & ((scene.yy - top) % py >= 1) & ((scene.yy - top) % py < 1 + py // 2)
            windows &= ((scene.xx - x) % px >= 1) & ((scene.xx - x) % px < 1 + px // 2) & (scene.xx < x + width - 1)
            scene.paint(windows, BUILDING, _jitter(rng, (45, 55, 72), 10), 3)
        x += width


def _draw_vegetation(scene: _Scene, street: _Street) -> None:
    rng, h = scene.rng, scene.h
    for _ in range(rng.integers(0, 4)):
        ry = rng.uniform(0.12, 0.25) * h
        cy = street.horizon - ry * rng.uniform(0.3, 0.9)
        tree = scene.ellipse(cy, rng.uniform(0, scene.w), ry, ry * rng.uniform(0.7, 1.3))
        scene.paint(tree, VEGETATION, _jitter(rng, (50, 120, 45), 18), 22, 12)


def _draw_ground(scene: _Scene, street: _Street) -> None:
    rng, s = scene.rng, scene.scale
    ground = scene.yy >= street.horizon
    offset = np.abs(scene.xx - street.centre[:, None])
    road = ground & (offset < street.half_road[:, None])
    walk = ground & ~road & (offset < street.half_walk[:, None])
    scene.paint(ground & ~road & ~walk, VEGETATION, _jitter(rng, (90, 135, 50), 18), 22, 12)

    tile = max(3, round(rng.uniform(4, 6) * s))
    colour = _jitter(rng, (180, 178, 172), 12)
    scene.paint(walk, SIDEWALK, colour, 4)
    grout = walk & ((scene.xx % tile < 1) | (scene.yy % tile < 1))
    scene.paint(grout, SIDEWALK, colour - 40, 4)

    gray = rng.uniform(65, 95)
    scene.paint(road, ROAD, (gray, gray, gray + 3), 9)
    if rng.random() < 0.7:
        dash = max(2, round(3 * s))
        mark = road & (offset < np.maximum(0.6, 0.05 * street.half_road)[:, None])
        mark &= ((scene.yy - street.horizon) // dash) % 2 == 0
        paint = (230, 230, 220) if rng.random() < 0.6 else (225, 190, 60)
        scene.paint(mark, ROAD, _jitter(rng, paint, 10), 4)


def _car(scene: _Scene, street: _Street, depth: float) -> None:
    rng, bottom = scene.rng, street.row(depth) + 1
    height = (0.12 + 0.25 * depth) * scene.h
    width = height * rng.uniform(1.3, 2.0)
    row = bottom - 1
    x0 = street.centre[row] + rng.uniform(-0.7, 0.7) * street.half_road[row] - width / 2
    top, waist, x1 = bottom - height, bottom - 0.6 * height, x0 + width
    body = scene.box(waist, bottom, x0, x1)
    cabin = scene.box(top, waist, x0 + 0.15 * width, x1 - 0.15 * width)
    scene.paint(body | cabin, CAR, _hsv(rng, (0.75, 1.0), (0.65, 1.0)), 4)
    glass = scene.box(top + 0.1 * height, waist, x0 + 0.2 * width, x1 - 0.2 * width)
    scene.paint(glass, CAR, _jitter(rng, (35, 40, 52), 8), 3)
    wheel_top = bottom - 0.2 * height
    wheels = scene.box(wheel_top, bottom, x0 + 0.1 * width, x0 + 0.3 * width)
    wheels |= scene.box(wheel_top, bottom, x1 - 0.3 * width, x1 - 0.1 * width)
    scene.paint(wheels, CAR, (20, 20, 22), 3)


def _sidewalk_x(scene: _Scene, street: _Street, row: int) -> float:
    """A random column on the left or right sidewalk at ``row``."""
    rng = scene.rng
    inner, outer = street.half_road[row], street.half_walk[row]
    side = 1 if rng.random() < 0.5 else -1
    return street.centre[row] + side * (inner + rng.uniform(0.2, 0.8) * (outer - inner))


def _person(scene: _Scene, street: _Street, depth: float) -> None:
    rng, bottom = scene.rng, street.row(depth) + 1
    height = (0.20 + 0.35 * depth) * scene.h
    width = max(2.0, height / 4)
    x0 = _sidewalk_x(scene, street, bottom - 1) - width / 2
    x1, neck, hips = x0 + width, bottom - 0.82 * height, bottom - 0.4 * height
    head = scene.box(bottom - height, neck, x0 + 0.2 * width, x1 - 0.2 * width)
    scene.paint(head, PERSON, _jitter(rng, _SKIN_COLOURS[rng.integers(len(_SKIN_COLOURS))], 10), 3)
    scene.paint(scene.box(neck, hips, x0, x1), PERSON, _hsv(rng, (0.4, 0.9), (0.3, 0.9)), 4)
    legs = scene.box(hips, bottom, x0, x0 + 0.45 * width) | scene.box(hips, bottom, x1 - 0.45 * width, x1)
    scene.paint(legs, PERSON, _hsv(rng, (0.2, 0.6), (0.15, 0.4)), 3)


def _pole(scene: _Scene, street: _Street, depth: float) -> None:
    rng, bottom = scene.rng, street.row(depth) + 1
    height = (0.45 + 0.5 * depth) * scene.h
    width = max(2, round(rng.uniform(1.5, 2.5) * scene.scale))
    x0 = round(_sidewalk_x(scene, street, bottom - 1))
    gray = rng.uniform(50, 72)
    scene.paint(scene.box(bottom - height, bottom, x0, x0 + width), POLE, (gray, gray, gray + 4), 3)


def _draw_objects(scene: _Scene, street: _Street) -> None:
    """Cars on the road, people and poles on the sidewalks, drawn far to near."""
    rng = scene.rng
    kinds = [_car] * rng.integers(0, 4) + [_person] * rng.integers(0, 4) + [_pole] * rng.integers(0, 3)
    depths = rng.uniform(0.2, 1.0, size=len(kinds))
    for order in np.argsort(depths, kind="stable"):
        kinds[order](scene, street, float(depths[order]))


def _draw_anomalies(scene: _Scene, street: _Street, rng: np.random.Generator) -> None:
    """1-3 out-of-distribution objects with striped, unusually coloured texture, label 8."""
    h = scene.h
    for _ in range(rng.integers(1, 4)):
        depth = rng.uniform(0.3, 1.0)
        bottom = street.row(depth) + 1
        row = bottom - 1
        cx = street.centre[row] + rng.uniform(-1, 1) * street.half_walk[row]
        size = (0.12 + 0.2 * depth) * h
        if rng.random() < 0.5:  # a four-legged animal seen from the side
            length = size * rng.uniform(1.2, 1.8)
            cy = bottom - 0.6 * size
            shape = scene.ellipse(cy, cx, 0.25 * size, 0.5 * length)
            head_x = cx + (0.5 if rng.random() < 0.5 else -0.5) * length
            shape |= scene.ellipse(cy - 0.25 * size, head_x, 0.18 * size, 0.18 * size)
            leg = max(1.0, 0.08 * length)
            for frac in (-0.4, -0.25, 0.2, 0.35):
                shape |= scene.box(cy, bottom, cx + frac * length, cx + frac * length + leg)
        else:  # an irregular blob
            angle = np.arctan2(scene.yy - (bottom - size / 2), scene.xx - cx)
            radius = size / 2 * (1 + 0.3 * np.sin(rng.integers(3, 7) * angle + rng.uniform(0, 2 * np.pi)))
            shape = np.hypot(scene.yy - (bottom - size / 2), scene.xx - cx) < radius
        first, second = rng.choice(len(_ANOMALY_COLOURS), size=2, replace=False)
        theta, period = rng.uniform(0, np.pi), max(2.0, rng.uniform(2, 4) * scene.scale)
        stripes = ((scene.xx * np.cos(theta) + scene.yy * np.sin(theta)) // period) % 2 == 0
        scene.paint(shape & stripes, ANOMALY_INDEX, _ANOMALY_COLOURS[first], 6)
        scene.paint(shape & ~stripes, ANOMALY_INDEX, _ANOMALY_COLOURS[second], 6)


def _draw_clutter(scene: _Scene, street: _Street) -> None:
    """The look's stains: boxes and ellipses in palette colours over any class, unlabelled."""
    style, h, w = scene.style, scene.h, scene.w
    for _ in range(style.poisson(scene.look.clutter)):
        cy, cx = style.uniform(0, h), style.uniform(0, w)
        ry, rx = style.uniform(0.03, 0.15) * h, style.uniform(0.03, 0.15) * w
        shape = scene.ellipse(cy, cx, ry, rx) if style.random() < 0.5 else scene.box(cy - ry, cy + ry, cx - rx, cx + rx)
        scene.stain(shape)
        if style.random() < 0.5:  # a patterned stain: the grids and stripes of windows, tiles and lane marks
            period = max(3, round(style.uniform(3, 7) * scene.scale))
            pattern = (
                (scene.yy % period < 1) | (scene.xx % period < 1) if style.random() < 0.5 else scene.yy % period < 2
            )
            scene.stain(shape & pattern)


def _lighting(scene: _Scene, image: np.ndarray) -> np.ndarray:
    """The look's light on the rendered float image (gain, colour cast, a ramp, shadow bands),
    then its sensor noise."""
    style, strength = scene.style, scene.look.lighting
    gain = 1 + strength * style.uniform(-0.45, 0.45)
    cast = 1 + strength * style.uniform(-0.2, 0.2, size=3)
    angle = style.uniform(0, 2 * np.pi)
    ramp = (np.cos(angle) * (scene.xx / scene.w - 0.5) + np.sin(angle) * (scene.yy / scene.h - 0.5)) * 2
    light = gain * (1 + strength * style.uniform(0, 0.35) * ramp)
    for _ in range(style.integers(0, 3)):  # a shadow band across the scene (a building's, a tree's)
        theta, offset = style.uniform(0, np.pi), style.uniform(-0.5, 0.5) * scene.w
        across = np.cos(theta) * (scene.xx - scene.w / 2) + np.sin(theta) * (scene.yy - scene.h / 2) - offset
        band = np.abs(across) < style.uniform(0.05, 0.2) * scene.w
        light = light * np.where(band, 1 - strength * style.uniform(0.2, 0.5), 1.0)
    image = image * (light[..., None] * cast).astype(np.float32)
    if scene.look.noise:
        image += style.normal(0.0, scene.look.noise, size=image.shape).astype(np.float32)
    return image


def _photometric_jitter(scene: _Scene) -> np.ndarray:
    """Per-image brightness, colour balance and offset (then the look's light); the uint8 image."""
    rng = scene.rng
    gain = rng.uniform(0.8, 1.2) * (1 + rng.uniform(-0.08, 0.08, size=3)).astype(np.float32)
    image = scene.render() * gain + rng.uniform(-10, 10)
    if scene.look is not None:
        image = _lighting(scene, image)
    return np.clip(image, 0, 255).astype(np.uint8)
