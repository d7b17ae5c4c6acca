"""Ground-level photos and their captions, rendered from the land cover around a point.

A photo shows what a person standing at the point would see: sky and horizon, the class underfoot
in the foreground and the next most common class nearby in the background. A share of photos are
distractors (indoor scenes, close-ups, or a view that does not match the place), as in crowd-sourced
photo archives.
"""

from __future__ import annotations

import numpy as np

from geobind.synth._noise import value_noise
from geobind.synth.scene import _CROPS as _CROP  # the same palettes as seen from above
from geobind.synth.scene import (
    _INDUSTRIAL_ROOFS,
    _ROOFS,
    BEACH,
    CLASSES,
    FARMLAND,
    FOREST,
    GRASSLAND,
    HIGHWAY,
    INDUSTRIAL,
    RESIDENTIAL,
    WATER,
)

__all__ = ["CLASS_PHRASES", "caption", "render_photo"]

#: How captions name each class (ids 1..8); also good zero-shot prompts for the world.
CLASS_PHRASES: dict[int, tuple[str, ...]] = {
    WATER: ("a lake", "calm open water", "a lake shore", "the water of a wide lake"),
    BEACH: ("a sandy beach", "a lake shore with sand", "a beach by the water", "a sandy shore"),
    FOREST: ("a dense forest", "tall trees in a forest", "a thick woodland", "a shady forest path"),
    FARMLAND: ("farm fields", "rows of crops", "farmland with crop rows", "a ploughed field"),
    GRASSLAND: ("a grassy park", "an open meadow", "a green lawn with a few trees", "a park"),
    RESIDENTIAL: (
        "a residential street",
        "suburban houses",
        "a quiet neighbourhood with houses",
        "a street with houses",
    ),
    INDUSTRIAL: (
        "an industrial area",
        "a warehouse with a parking lot",
        "factories and a car park",
        "an industrial estate",
    ),
    HIGHWAY: (
        "a busy highway",
        "a motorway with traffic",
        "a multi-lane road full of cars",
        "cars on a busy highway",
    ),
}
#: Phrases for the place-specific detail (see :func:`geobind.synth.scene.point_detail`).
_DETAIL_PHRASES: dict[int, tuple[str, ...]] = {
    FARMLAND: (
        "golden wheat fields",
        "green crop fields",
        "ploughed brown fields",
        "young green crops",
    ),
    RESIDENTIAL: (
        "houses with red roofs",
        "houses with grey roofs",
        "houses with brown roofs",
        "houses with white roofs",
    ),
    INDUSTRIAL: ("a white warehouse", "a blue-grey warehouse", "a beige warehouse"),
}
_BACKGROUND: dict[int, str] = {
    WATER: "water",
    BEACH: "a beach",
    FOREST: "trees",
    FARMLAND: "fields",
    GRASSLAND: "meadows",
    RESIDENTIAL: "houses",
    INDUSTRIAL: "warehouses",
    HIGHWAY: "a highway",
}
_TEMPLATES = (
    "a photo of {a}",
    "{A}",
    "{A} on a {weather} day",
    "{A}, with {b} in the background",
    "a view of {a} near {b}",
    "a picture taken at {a}",
    "{A} under a {weather} sky",
)
_DISTRACTORS = {
    "indoor": ("a photo of a living room", "an indoor room with a window", "a kitchen indoors"),
    "closeup": ("a close-up of a flower", "a close-up photo of a plate of food", "a close-up"),
}
_SKY_CLEAR = np.array([0.36, 0.56, 0.90], np.float32)
_SKY_GREY = np.array([0.70, 0.72, 0.75], np.float32)
_HORIZON = np.array([0.78, 0.86, 0.95], np.float32)
_COLOURS = {
    "water": np.array([0.10, 0.30, 0.50], np.float32),
    "sand": np.array([0.85, 0.78, 0.60], np.float32),
    "leaf": np.array([0.10, 0.30, 0.10], np.float32),
    "trunk": np.array([0.30, 0.20, 0.12], np.float32),
    "grass": np.array([0.32, 0.55, 0.22], np.float32),
    "asphalt": np.array([0.28, 0.28, 0.30], np.float32),
    "concrete": np.array([0.62, 0.62, 0.64], np.float32),
    "white": np.array([0.92, 0.92, 0.90], np.float32),
}
_WALL = np.array([[0.90, 0.86, 0.76], [0.80, 0.72, 0.60], [0.95, 0.95, 0.93]], np.float32)
_CAR = np.array(
    [[0.85, 0.85, 0.85], [0.1, 0.1, 0.1], [0.7, 0.1, 0.1], [0.15, 0.25, 0.6], [0.55, 0.56, 0.58]],
    np.float32,
)


def caption(rng: np.random.Generator, fg: int, bg: int, weather: str, detail: int = 0) -> str:
    """A templated, varied caption for a photo of class ``fg`` with ``bg`` in the background."""
    a = str(rng.choice(CLASS_PHRASES[fg]))
    if fg in _DETAIL_PHRASES and rng.random() < 0.5:
        a = _DETAIL_PHRASES[fg][detail]
    templates = _TEMPLATES if bg != fg else [t for t in _TEMPLATES if "{b}" not in t]
    return str(rng.choice(templates)).format(
        a=a, A=a[0].upper() + a[1:], b=_BACKGROUND[bg], weather=weather
    )


class _Canvas:
    """A float RGB image with normalised coordinates u (left→right) and v (top→bottom)."""

    def __init__(self, size: int):
        self.img = np.zeros((size, size, 3), np.float32)
        c = (np.arange(size, dtype=np.float32) + 0.5) / size
        self.u, self.v = np.meshgrid(c, c)
        self.size = size

    def fill(self, mask, colour):
        self.img[mask] = colour

    def rect(self, u0, v0, u1, v1, colour):
        self.fill((self.u >= u0) & (self.u < u1) & (self.v >= v0) & (self.v < v1), colour)

    def ellipse(self, cu, cv, ru, rv, colour):
        self.fill(((self.u - cu) / ru) ** 2 + ((self.v - cv) / rv) ** 2 < 1, colour)

    def texture(self, mask, scale, seed, amount):
        n = value_noise(self.u * self.size, self.v * self.size, scale, seed)
        self.img[mask] *= (1 - amount / 2 + amount * n[mask])[:, None]


def _sky(c: _Canvas, rng, horizon: float, overcast: float):
    sky = c.v < horizon
    t = np.clip(c.v / max(horizon, 1e-3), 0, 1)[..., None]
    top = _SKY_CLEAR * (1 - overcast) + _SKY_GREY * overcast
    c.img[:] = np.where(sky[..., None], top * (1 - t) + _HORIZON * t, c.img)
    clouds = value_noise(c.u * 8, c.v * 24, 1.0, int(rng.integers(1 << 30)))
    cloudy = sky & (clouds > 0.75 - 0.3 * overcast)
    c.img[cloudy] = c.img[cloudy] * 0.3 + 0.7 * np.float32(0.95)


def _background(c: _Canvas, rng, cls: int, horizon: float):
    """A band just above the horizon showing the neighbouring land cover."""
    if cls in (WATER, BEACH):
        c.rect(0, horizon - 0.02, 1, horizon, _COLOURS["water"] * 1.2)
    elif cls == FOREST:
        h = 0.08 + 0.08 * value_noise(c.u * 40, c.v * 0, 1.0, int(rng.integers(1 << 30)))
        c.fill((c.v > horizon - h) & (c.v < horizon), _COLOURS["leaf"] * 0.8)
    elif cls in (RESIDENTIAL, INDUSTRIAL):
        u = 0.0
        while u < 1:
            w = rng.uniform(0.06, 0.2) * (2 if cls == INDUSTRIAL else 1)
            h = rng.uniform(0.04, 0.12)
            colour = _WALL[rng.integers(3)] * (0.8 if cls == INDUSTRIAL else 1)
            c.rect(u, horizon - h, u + w, horizon, colour)
            if cls == INDUSTRIAL and rng.random() < 0.4:
                c.rect(
                    u + w / 2,
                    horizon - h - 0.12,
                    u + w / 2 + 0.02,
                    horizon - h,
                    _COLOURS["concrete"],
                )
            u += w + rng.uniform(0.0, 0.05)
    elif cls == HIGHWAY:
        c.rect(0, horizon - 0.015, 1, horizon, _COLOURS["concrete"])
    else:
        hills = 0.04 * value_noise(c.u * 6, c.v * 0, 1.0, int(rng.integers(1 << 30)))
        colour = _COLOURS["grass"] if cls == GRASSLAND else _CROP[rng.integers(3)]
        c.fill((c.v > horizon - hills) & (c.v < horizon), colour * 0.9)


def _ground(c: _Canvas, rng, cls: int, horizon: float, detail: int = 0):
    """The foreground: the land cover underfoot, in rough perspective."""
    below = c.v >= horizon
    depth = np.clip((c.v - horizon) / max(1 - horizon, 1e-3), 1e-3, 1)  # 0 at horizon, 1 at bottom
    seed = int(rng.integers(1 << 30))
    if cls == WATER:
        c.fill(below, _COLOURS["water"])
        waves = np.sin(40 / depth + 6 * c.u * depth) > 0.6
        c.fill(below & waves, _COLOURS["water"] * 1.5)
        c.texture(below, 6, seed, 0.3)
    elif cls == BEACH:
        shore = horizon + rng.uniform(0.1, 0.3) * (1 - horizon)
        c.fill(below, _COLOURS["water"])
        c.fill(c.v >= shore, _COLOURS["sand"])
        c.texture(c.v >= shore, 3, seed, 0.2)
        for _ in range(rng.integers(0, 3)):
            cu, cv = rng.uniform(0.1, 0.9), rng.uniform(shore + 0.05, 0.95)
            c.ellipse(cu, cv - 0.08, 0.08, 0.03, _CAR[rng.integers(len(_CAR))])
            c.rect(cu - 0.005, cv - 0.08, cu + 0.005, cv, _COLOURS["white"])
    elif cls == FOREST:
        c.fill(below, _COLOURS["trunk"] * 0.7)
        c.texture(below, 4, seed, 0.5)
        for _ in range(rng.integers(6, 12)):
            u0, w = rng.uniform(0, 1), rng.uniform(0.02, 0.07)
            c.rect(u0, 0, u0 + w, horizon + rng.uniform(0.05, 0.3), _COLOURS["trunk"])
        canopy = value_noise(c.u * 64, c.v * 64, 6, seed + 1) > c.v / max(horizon, 0.2) - 0.1
        c.fill(canopy, _COLOURS["leaf"])
        c.texture(canopy, 5, seed + 2, 0.6)
    elif cls == FARMLAND:
        crop = _CROP[detail]
        c.fill(below, crop)
        vanish = rng.uniform(0.2, 0.8)
        rows = np.sin(rng.uniform(25, 60) * np.arctan2(c.u - vanish, depth)) > 0
        c.fill(below & rows, crop * 0.7)
    elif cls == GRASSLAND:
        c.fill(below, _COLOURS["grass"])
        c.texture(below, 4, seed, 0.4)
        for _ in range(rng.integers(1, 4)):
            cu, cv = rng.uniform(0.05, 0.95), horizon + rng.uniform(0.02, 0.15)
            c.rect(cu - 0.01, cv - 0.05, cu + 0.01, cv + 0.03, _COLOURS["trunk"])
            c.ellipse(cu, cv - 0.08, 0.06, 0.07, _COLOURS["leaf"] * 1.3)
        flowers = below & (value_noise(c.u * 96, c.v * 96, 1.5, seed + 3) > 0.9)
        c.fill(flowers, np.array([0.9, 0.85, 0.3], np.float32))
    elif cls == RESIDENTIAL:
        c.fill(below, _COLOURS["grass"])
        c.fill(below & (c.v > horizon + 0.45 * (1 - horizon)), _COLOURS["asphalt"])
        u = rng.uniform(-0.1, 0.05)
        while u < 1:
            w = rng.uniform(0.2, 0.35)
            top = horizon - rng.uniform(0.05, 0.15)
            base = horizon + 0.3 * (1 - horizon)
            c.rect(u, top, u + w, base, _WALL[rng.integers(3)])
            roof = (c.v < top) & (c.v > top - 0.12 + 0.24 * np.abs(c.u - (u + w / 2)) / w * 1.0)
            colour = _ROOFS[detail] if rng.random() < 0.8 else _ROOFS[rng.integers(len(_ROOFS))]
            c.fill(roof & (c.u > u) & (c.u < u + w), colour)
            for wu in (u + 0.2 * w, u + 0.6 * w):
                c.rect(wu, top + 0.05, wu + 0.15 * w, top + 0.12, np.array([0.2, 0.3, 0.4]))
            u += w + rng.uniform(0.05, 0.12)
        if rng.random() < 0.6:
            cu = rng.uniform(0.1, 0.7)
            c.rect(cu, 0.8, cu + 0.25, 0.9, _CAR[rng.integers(len(_CAR))])
    elif cls == INDUSTRIAL:
        c.fill(below, _COLOURS["asphalt"] * 1.2)
        top = horizon - rng.uniform(0.15, 0.3)
        base = horizon + 0.25 * (1 - horizon)
        wall = (c.v > top) & (c.v < base)
        cladding = _INDUSTRIAL_ROOFS[detail]
        c.fill(wall, cladding)
        c.fill(wall & (np.sin(c.u * 300) > 0.7), cladding * 0.85)
        for _ in range(rng.integers(1, 4)):
            du = rng.uniform(0, 0.85)
            c.rect(du, base - 0.15, du + 0.12, base, _COLOURS["asphalt"] * 0.6)
        for _ in range(rng.integers(1, 3)):
            cu = rng.uniform(0, 0.95)
            c.rect(cu, top - 0.25, cu + 0.04, top, _COLOURS["concrete"] * 0.7)
        for k in range(rng.integers(2, 6)):
            cu = 0.05 + 0.2 * k
            c.rect(cu, 0.82, cu + 0.15, 0.9, _CAR[rng.integers(len(_CAR))])
    elif cls == HIGHWAY:
        c.fill(below, _COLOURS["grass"] * 0.9)
        vanish = rng.uniform(0.35, 0.65)
        half = 0.02 + 0.7 * depth
        road = below & (np.abs(c.u - vanish) < half)
        c.fill(road, _COLOURS["asphalt"])
        lanes = rng.integers(2, 4)
        for k in range(1, lanes):
            line = road & (np.abs(c.u - vanish - half * (2 * k / lanes - 1)) < 0.006 + 0.01 * depth)
            c.fill(line & (np.sin(30 / depth) > 0), _COLOURS["white"])
        for _ in range(rng.integers(4, 9)):
            d = rng.uniform(0.1, 0.9)
            lane = rng.uniform(-0.8, 0.8)
            cv = horizon + d * (1 - horizon)
            cu = vanish + lane * (0.02 + 0.7 * d)
            w = 0.03 + 0.15 * d
            c.rect(cu - w / 2, cv - 0.6 * w, cu + w / 2, cv, _CAR[rng.integers(len(_CAR))])
        c.rect(0, horizon - 0.01, 1, horizon + 0.01, _COLOURS["concrete"])


def _indoor(c: _Canvas, rng):
    c.img[:] = _WALL[rng.integers(3)] * rng.uniform(0.6, 1.0)
    floor = rng.uniform(0.6, 0.8)
    c.rect(0, floor, 1, 1, np.array([0.45, 0.30, 0.18]))
    wu = rng.uniform(0.1, 0.6)
    c.rect(wu, 0.15, wu + 0.3, 0.45, _SKY_CLEAR)
    tu = rng.uniform(0.0, 0.6)
    c.rect(tu, floor - 0.15, tu + 0.35, floor - 0.1, np.array([0.35, 0.22, 0.12]))
    c.rect(tu + 0.02, floor - 0.1, tu + 0.05, floor + 0.05, np.array([0.35, 0.22, 0.12]))


def _closeup(c: _Canvas, rng):
    c.img[:] = rng.uniform(0.2, 0.8, 3).astype(np.float32)
    c.texture(c.u >= 0, 24, int(rng.integers(1 << 30)), 0.3)
    c.ellipse(rng.uniform(0.35, 0.65), rng.uniform(0.35, 0.65), 0.3, 0.25, rng.uniform(0, 1, 3))


def render_photo(
    rng: np.random.Generator,
    fg: int,
    bg: int,
    size: int,
    distractor: str | None = None,
    detail: int = 0,
) -> tuple[np.ndarray, str]:
    """Render one photo: returns ``(uint8 (size, size, 3), caption)``.

    ``distractor`` is ``None`` for a faithful view, ``"indoor"``, ``"closeup"`` or ``"wrong"``
    (a faithful-looking view of another class, captioned as what it shows). ``detail`` is the
    place-specific attribute of :func:`~geobind.synth.scene.point_detail` (crop, roof colour).

    Example:
        >>> import numpy as np
        >>> img, text = render_photo(np.random.default_rng(0), 8, 3, 64)
        >>> img.shape, img.dtype
        ((64, 64, 3), dtype('uint8'))
    """
    c = _Canvas(size)
    if distractor in ("indoor", "closeup"):
        (_indoor if distractor == "indoor" else _closeup)(c, rng)
        text = str(rng.choice(_DISTRACTORS[distractor]))
    else:
        if distractor == "wrong":
            fg = int(rng.choice([k for k in range(1, len(CLASSES) + 1) if k != fg]))
            detail = int(rng.integers(3))
        overcast = float(rng.uniform(0, 1) ** 2)
        horizon = float(rng.uniform(0.35, 0.55))
        _sky(c, rng, horizon, overcast)
        _background(c, rng, bg, horizon)
        _ground(c, rng, fg, horizon, detail)
        weather = "cloudy" if overcast > 0.5 else ("hazy" if overcast > 0.2 else "sunny")
        text = caption(rng, fg, bg, weather, detail)
    c.img *= np.float32(rng.uniform(0.75, 1.2))
    c.img += rng.normal(0, 0.02, c.img.shape).astype(np.float32)
    img = np.clip(np.rint(c.img * 255), 0, 255).astype(np.uint8)
    if rng.random() < 0.5:
        img = img[:, ::-1]
    return np.ascontiguousarray(img), text
