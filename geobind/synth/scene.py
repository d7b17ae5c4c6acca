"""Land cover and multispectral rendering of one synthetic scene.

A scene is a pure function of its :class:`Layout` and of ground coordinates in metres, so it is
rendered strip by strip (bounded memory, any size) and a strip equals the same rows of a whole-scene
render.
Band order is R, G, B and optionally NIR; values are uint8 in [1, 255], 0 is nodata.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from geobind.synth._noise import fbm, hash2, rand2, smoothstep, worley

__all__ = ["CLASSES", "CLASS_COLORS", "Layout", "make_layout", "point_detail", "render_rows"]

#: Land-cover classes; their ids in truth rasters are 1..8 (0 is nodata).
CLASSES: tuple[str, ...] = (
    "water",
    "beach",
    "forest",
    "farmland",
    "grassland",
    "residential",
    "industrial",
    "highway",
)
#: Display colours (RGB 0-255) for land-cover maps, by class id - 1.
CLASS_COLORS: tuple[tuple[int, int, int], ...] = (
    (31, 120, 180),
    (240, 220, 150),
    (27, 100, 40),
    (220, 180, 60),
    (150, 210, 110),
    (220, 60, 60),
    (130, 130, 140),
    (40, 40, 40),
)
WATER, BEACH, FOREST, FARMLAND, GRASSLAND, RESIDENTIAL, INDUSTRIAL, HIGHWAY = range(1, 9)
_LAND = np.array([FOREST, FARMLAND, GRASSLAND, RESIDENTIAL, INDUSTRIAL], dtype=np.uint8)
_CAR_COLORS = np.array(
    [
        [0.85, 0.85, 0.85],
        [0.08, 0.08, 0.09],
        [0.70, 0.10, 0.10],
        [0.15, 0.25, 0.60],
        [0.55, 0.56, 0.58],
        [0.85, 0.75, 0.20],
    ],
    dtype=np.float32,
)


@dataclass(frozen=True)
class Layout:
    """Everything that decides how a scene looks, in ground metres from its top-left corner."""

    seed: int
    width: int
    height: int
    ground_gsd: float
    region_m: float
    water_level: float
    beach_level: float
    highways: tuple[tuple[float, float, float], ...]  # (angle rad, offset m, half width m)
    street_angle: float
    haze: float
    gain: tuple[float, float, float, float]  # per-band sensor/atmosphere gain of this scene
    cloud_level: float  # > 1 means no cloud
    nodata_corner: int
    nodata_extent: float


def _coarse_grid(width: int, height: int, gsd: float, step_m: float = 8.0):
    n_x = max(8, int(width * gsd / step_m))
    n_y = max(8, int(height * gsd / step_m))
    xs = (np.arange(n_x) + 0.5) * (width * gsd / n_x)
    ys = (np.arange(n_y) + 0.5) * (height * gsd / n_y)
    return np.meshgrid(xs, ys)


def make_layout(
    seed: int,
    width: int,
    height: int,
    ground_gsd: float,
    *,
    region_m: float,
    n_highways: int,
    highway_half_width: float,
    cloud_cover: float,
) -> Layout:
    """Draw a scene layout; water and beach levels are quantiles so every scene has both."""
    rng = np.random.default_rng(seed)
    gx, gy = _coarse_grid(width, height, ground_gsd)
    w = fbm(gx, gy, 6 * region_m, seed + 4, 4)
    water_level = float(np.quantile(w, 0.87))
    beach_level = float(np.quantile(w, 0.82))
    span_x, span_y = width * ground_gsd, height * ground_gsd
    highways = []
    for _ in range(n_highways):
        angle = float(rng.uniform(0, np.pi))
        px = rng.uniform(0.25, 0.75) * span_x
        py = rng.uniform(0.25, 0.75) * span_y
        offset = float(px * np.cos(angle) + py * np.sin(angle))
        highways.append((angle, offset, float(highway_half_width * rng.uniform(0.9, 1.15))))
    if cloud_cover > 0:
        c = fbm(gx, gy, 180.0, seed + 30, 5)
        cloud_level = float(np.quantile(c, 1 - cloud_cover))
    else:
        cloud_level = 2.0
    return Layout(
        seed=seed,
        width=width,
        height=height,
        ground_gsd=ground_gsd,
        region_m=region_m,
        water_level=water_level,
        beach_level=beach_level,
        highways=tuple(highways),
        street_angle=float(rng.uniform(0, np.pi / 2)),
        haze=float(rng.uniform(0.0, 0.25)),
        gain=tuple(float(g) for g in rng.uniform(0.85, 1.15, 4)),
        cloud_level=cloud_level,
        nodata_corner=int(rng.integers(4)),
        nodata_extent=float(rng.uniform(0.25, 0.4)),
    )


def _highway_coords(x, y, hw):
    angle, offset, half = hw
    s = x * np.cos(angle) + y * np.sin(angle) - offset
    t = -x * np.sin(angle) + y * np.cos(angle)
    return s, t, half


def landcover(x: np.ndarray, y: np.ndarray, lay: Layout) -> np.ndarray:
    """Class id (1..8) at ground coordinates ``x``, ``y`` (metres)."""
    return _landcover_regions(x, y, lay)[0]


def _landcover_regions(x, y, lay: Layout):
    """Class ids and the land-cover region (Worley cell) each pixel belongs to."""
    s = lay.seed
    warp = 0.35 * lay.region_m
    wx = x + warp * (2 * fbm(x, y, lay.region_m, s + 1, 3) - 1)
    wy = y + warp * (2 * fbm(x, y, lay.region_m, s + 11, 3) - 1)
    rx, ry, _, _ = worley(wx, wy, lay.region_m, s + 2)
    pick = (rand2(rx, ry, s + 3) * len(_LAND)).astype(np.int64)
    cls = _LAND[np.minimum(pick, len(_LAND) - 1)]
    w = fbm(x, y, 6 * lay.region_m, s + 4, 4)
    sandy = fbm(x, y, 2 * lay.region_m, s + 5, 2) > 0.35
    cls = np.where((w > lay.beach_level) & sandy, BEACH, cls)
    cls = np.where(w > lay.water_level, WATER, cls)
    for hw in lay.highways:
        sd, _, half = _highway_coords(x, y, hw)
        cls = np.where(np.abs(sd) < half, HIGHWAY, cls)
    return cls.astype(np.uint8), rx, ry


def _crowns(x, y, cell, seed, density=1.0):
    """Tree crowns on a jittered grid: (inside crown, shade, shadow mask, per-tree random)."""
    ix = np.floor(x / cell)
    iy = np.floor(y / cell)
    r0 = rand2(ix, iy, seed)
    cx = (ix + 0.5 + 0.2 * (rand2(ix, iy, seed + 1) - 0.5)) * cell
    cy = (iy + 0.5 + 0.2 * (rand2(ix, iy, seed + 2) - 0.5)) * cell
    r = cell * (0.3 + 0.1 * rand2(ix, iy, seed + 3))
    dx, dy = (x - cx), (y - cy)
    d = np.hypot(dx, dy)
    present = r0 < density
    inside = (d < r) & present
    shade = 0.8 + 0.3 * np.clip(-(dx + dy) / (1.42 * r), -1, 1) + 0.2 * (1 - d / r)
    shadow = (np.hypot(dx - 0.5 * r, dy - 0.5 * r) < r) & ~inside & present
    return inside, shade.astype(np.float32), shadow, r0


def _mix(mask, a, b):
    return np.where(mask[:, None], a, b)


def _rgbn(rgb, nir):
    out = np.empty((len(nir), 4), dtype=np.float32)
    out[:, :3] = rgb
    out[:, 3] = nir
    return out


def _water(x, y, lay):
    w = fbm(x, y, 6 * lay.region_m, lay.seed + 4, 4)
    depth = np.clip((w - lay.water_level) / 0.08, 0, 1)[:, None]
    shallow = np.array([0.16, 0.36, 0.40], np.float32)
    deep = np.array([0.03, 0.10, 0.20], np.float32)
    ripple = 0.025 * np.sin((0.8 * x + 0.6 * y) / 1.1 + 6 * fbm(x, y, 20, lay.seed + 40, 2))
    rgb = shallow * (1 - depth) + deep * depth + ripple[:, None].astype(np.float32)
    return _rgbn(rgb, np.full(len(x), 0.02, np.float32))


def _beach(x, y, lay):
    w = fbm(x, y, 6 * lay.region_m, lay.seed + 4, 4)
    wet = np.clip((w - lay.beach_level) / max(lay.water_level - lay.beach_level, 1e-6), 0, 1)
    grain = 0.9 + 0.15 * fbm(x, y, 3, lay.seed + 41, 2)
    rgb = np.array([0.82, 0.75, 0.58], np.float32) * (grain * (1 - 0.3 * wet**2))[:, None]
    return _rgbn(rgb, 0.45 * grain)


def _forest(x, y, lay):
    inside, shade, shadow, _r0 = _crowns(x, y, 5.0, lay.seed + 50)
    tint = 0.8 + 0.4 * rand2(np.floor(x / 5.0), np.floor(y / 5.0), lay.seed + 51)
    patch = 0.85 + 0.3 * fbm(x, y, 40, lay.seed + 52, 2)
    tree = np.array([0.10, 0.27, 0.09], np.float32) * (shade * tint * patch)[:, None]
    ground = np.array([0.07, 0.13, 0.05], np.float32) * np.where(shadow, 0.55, 1.0)[:, None]
    rgb = _mix(inside, tree, ground)
    return _rgbn(rgb, np.where(inside, 0.55 * shade, 0.3).astype(np.float32))


_CROPS = np.array(
    [[0.76, 0.66, 0.36], [0.33, 0.52, 0.18], [0.46, 0.35, 0.24], [0.56, 0.70, 0.34]], np.float32
)
_CROP_NIR = np.array([0.35, 0.6, 0.2, 0.55], np.float32)


def _farmland(x, y, lay):
    px, py, _, edge = worley(x, y, 55.0, lay.seed + 60)
    crop = (hash2(px, py, lay.seed + 61) % 4).astype(np.int64)
    angle = rand2(px, py, lay.seed + 62) * np.pi
    period = 1.8 + 2.0 * rand2(px, py, lay.seed + 63)
    u = x * np.cos(angle) + y * np.sin(angle)
    rows = 0.5 + 0.5 * np.sin(2 * np.pi * u / period)
    grain = 0.9 + 0.15 * fbm(x, y, 6, lay.seed + 64, 2)
    rgb = _CROPS[crop] * ((0.82 + 0.22 * rows) * grain)[:, None]
    track = edge < 1.2
    rgb = _mix(track, np.array([0.58, 0.50, 0.40], np.float32), rgb)
    return _rgbn(rgb, np.where(track, 0.3, _CROP_NIR[crop] * grain).astype(np.float32))


def _grassland(x, y, lay):
    tone = 0.8 + 0.4 * fbm(x, y, 12, lay.seed + 70, 3)
    mow = 1 + 0.04 * np.sign(np.sin(x / 2.5))
    rgb = np.array([0.30, 0.50, 0.22], np.float32) * (tone * mow)[:, None]
    inside, shade, shadow, _ = _crowns(x, y, 22.0, lay.seed + 71, density=0.25)
    rgb = _mix(inside, np.array([0.12, 0.30, 0.10], np.float32) * shade[:, None], rgb)
    rgb = _mix(shadow, rgb * 0.6, rgb)
    path = np.abs(fbm(x, y, 60, lay.seed + 72, 2) - 0.5) < 0.012
    rgb = _mix(path & ~inside, np.array([0.70, 0.65, 0.55], np.float32), rgb)
    return _rgbn(rgb, np.where(path, 0.3, 0.45 * tone).astype(np.float32))


_ROOFS = np.array(
    [[0.62, 0.30, 0.22], [0.30, 0.30, 0.33], [0.47, 0.31, 0.21], [0.62, 0.62, 0.62]], np.float32
)


def _rotated(x, y, angle):
    return x * np.cos(angle) + y * np.sin(angle), -x * np.sin(angle) + y * np.cos(angle)


_RES_PERIOD, _RES_STREET, _RES_LOT = 44.0, 7.0, 18.5


def _residential_lots(x, y, lay):
    """Street-grid coordinates: (uu, vv) within a block, and (lx, ly), the house lot's indices."""
    u, v = _rotated(x, y, lay.street_angle)
    uu, vv = np.mod(u, _RES_PERIOD), np.mod(v, _RES_PERIOD)
    lx = np.floor(u / _RES_PERIOD) * 2 + np.clip(np.floor((uu - _RES_STREET) / _RES_LOT), 0, 1)
    ly = np.floor(v / _RES_PERIOD) * 2 + np.clip(np.floor((vv - _RES_STREET) / _RES_LOT), 0, 1)
    return uu, vv, lx, ly


def _industrial_lots(x, y, lay):
    u, v = _rotated(x, y, lay.street_angle + 0.3)
    return u, v, np.floor(u / 80.0), np.floor(v / 80.0)


def point_detail(x: float, y: float, lay: Layout, cls: int) -> int:
    """A place-specific attribute seen both from above and on the ground, in 0..3.

    Farmland: the crop of the parcel; residential: the roof colour of the house lot; industrial:
    the roof colour of the warehouse lot; other classes: 0. Photos use it, so a photo's details
    match the chip of its place, as in real paired data.

    Example:
        >>> lay = make_layout(1, 64, 64, 1.0, region_m=60, n_highways=0,
        ...                   highway_half_width=10, cloud_cover=0)
        >>> point_detail(10.5, 10.5, lay, FARMLAND) in range(4)
        True
    """
    xs, ys = np.array([x], np.float32), np.array([y], np.float32)
    if cls == FARMLAND:
        px, py, _, _ = worley(xs, ys, 55.0, lay.seed + 60)
        return int(hash2(px, py, lay.seed + 61)[0] % 4)
    if cls == RESIDENTIAL:
        _, _, lx, ly = _residential_lots(xs, ys, lay)
        return int(hash2(lx, ly, lay.seed + 82)[0] % 4)
    if cls == INDUSTRIAL:
        _, _, lx, ly = _industrial_lots(xs, ys, lay)
        return int(hash2(lx, ly, lay.seed + 93)[0] % 3)
    return 0


def _residential(x, y, lay):
    street, lot = _RES_STREET, _RES_LOT
    uu, vv, lx, ly = _residential_lots(x, y, lay)
    is_street = (uu < street) | (vv < street)
    kerb = is_street & ((uu < 1) | ((uu > street - 1) & (uu < street)) | (vv < 1))
    lu = np.mod(uu - street, lot) - lot / 2
    lv = np.mod(vv - street, lot) - lot / 2
    s = lay.seed + 80
    hu = 3.5 + 2.0 * rand2(lx, ly, s)
    hv = 3.0 + 2.0 * rand2(lx, ly, s + 1)
    house = (np.abs(lu) < hu) & (np.abs(lv) < hv) & ~is_street
    roof = _ROOFS[(hash2(lx, ly, s + 2) % 4).astype(np.int64)]
    roof = roof * (1 + 0.13 * np.sign(lv))[:, None]
    garden = (
        np.array([0.28, 0.45, 0.20], np.float32) * (0.8 + 0.35 * fbm(x, y, 5, s + 3, 2))[:, None]
    )
    pool = (rand2(lx, ly, s + 4) < 0.18) & (np.abs(lu + 6.5) < 1.6) & (np.abs(lv - 6.5) < 1.1)
    garden = _mix(pool, np.array([0.25, 0.62, 0.75], np.float32), garden)
    asphalt = _mix(kerb, np.array([0.6, 0.6, 0.58], np.float32), np.array([0.33, 0.33, 0.35]))
    rgb = _mix(is_street, asphalt, _mix(house, roof, garden))
    nir = np.where(is_street | house, 0.22, np.where(pool, 0.05, 0.45))
    return _rgbn(rgb, nir.astype(np.float32))


_INDUSTRIAL_ROOFS = np.array(
    [[0.75, 0.75, 0.77], [0.55, 0.60, 0.68], [0.62, 0.58, 0.55]], np.float32
)


def _cars_in(mask_stall, stall_id_u, stall_id_v, along, across, seed, prob):
    """Cars: 1.8 x 4.3 m rectangles centred in stalls; returns (car mask, colour rows)."""
    present = rand2(stall_id_u, stall_id_v, seed) < prob
    car = mask_stall & present & (np.abs(along) < 0.9) & (np.abs(across) < 2.15)
    colour = _CAR_COLORS[(hash2(stall_id_u, stall_id_v, seed + 1) % len(_CAR_COLORS)).astype(int)]
    return car, colour


def _industrial(x, y, lay):
    period = 80.0
    u, v, lx, ly = _industrial_lots(x, y, lay)
    lu, lv = np.mod(u, period) - period / 2, np.mod(v, period) - period / 2
    s = lay.seed + 90
    has = rand2(lx, ly, s) < 0.75
    hu = 14 + 12 * rand2(lx, ly, s + 1)
    hv = 12 + 12 * rand2(lx, ly, s + 2)
    building = has & (np.abs(lu) < hu) & (np.abs(lv) < hv)
    roof = _INDUSTRIAL_ROOFS[(hash2(lx, ly, s + 3) % 3).astype(np.int64)]
    gx, gy = np.floor(u / 7.0), np.floor(v / 7.0)
    hvac = (rand2(gx, gy, s + 4) < 0.3) & (np.mod(u, 7.0) < 1.4) & (np.mod(v, 7.0) < 1.4)
    roof = _mix(hvac, np.array([0.25, 0.25, 0.27], np.float32), roof)
    # parking: rows of stalls 2.6 m wide, 5 m deep, two rows per 16 m with an aisle between
    rv = np.mod(v, 16.0)
    in_row = (rv < 5.0) | ((rv > 11.0) & (rv < 16.0))
    su = np.floor(u / 2.6)
    sv = np.floor(v / 16.0) * 2 + (rv > 8)
    line = in_row & (np.mod(u, 2.6) < 0.12)
    along = np.mod(u, 2.6) - 1.3
    across = np.where(rv < 8, rv - 2.5, rv - 13.5)
    car, car_col = _cars_in(in_row & ~line, su, sv, along, across, s + 5, 0.6)
    lot = np.array([0.40, 0.40, 0.42], np.float32) * (0.9 + 0.2 * fbm(x, y, 15, s + 6, 2))[:, None]
    lot = _mix(line, np.array([0.85, 0.85, 0.85], np.float32), lot)
    lot = _mix(car, car_col, lot)
    rgb = _mix(building, roof, lot)
    return _rgbn(rgb, np.where(building, 0.28, 0.2).astype(np.float32))


def _highway(x, y, lay, hw):
    sd, t, half = _highway_coords(x, y, hw)
    a = np.abs(sd)
    median, lane_w = 1.5, 3.6
    n_lanes = max(1, int((half - median - 2.0) // lane_w))
    road_edge = median + n_lanes * lane_w
    lane = np.floor((a - median) / lane_w)
    in_lane = (a >= median) & (a < road_edge)
    pos = np.mod(a - median, lane_w)
    s = lay.seed + 100
    asphalt = np.array([0.22, 0.22, 0.24], np.float32) * (0.9 + 0.2 * fbm(x, y, 25, s, 2))[:, None]
    dash = in_lane & (lane > 0) & (pos < 0.15) & (np.mod(t, 12.0) < 4.0)
    edge = np.abs(a - road_edge) < 0.15
    side = np.sign(sd)
    cell = np.floor(t / 10.0 + 0.37 * lane)
    along = np.mod(t / 10.0 + 0.37 * lane, 1.0) * 10.0 - 5.0
    car, car_col = _cars_in(
        in_lane, cell * 2 + (side > 0), lane, pos - lane_w / 2, along, s + 1, 0.5
    )
    rgb = asphalt
    rgb = _mix(a < median, np.array([0.42, 0.45, 0.38], np.float32), rgb)
    rgb = _mix(dash | edge, np.array([0.9, 0.9, 0.88], np.float32), rgb)
    rgb = _mix(car, car_col, rgb)
    rgb = _mix(a > road_edge + 0.2, np.array([0.30, 0.42, 0.22], np.float32), rgb)
    return _rgbn(rgb, np.where(a > road_edge + 0.2, 0.4, 0.15).astype(np.float32))


_RENDER = {
    WATER: _water,
    BEACH: _beach,
    FOREST: _forest,
    FARMLAND: _farmland,
    GRASSLAND: _grassland,
    RESIDENTIAL: _residential,
    INDUSTRIAL: _industrial,
}


def _nodata(cols, rows, lay):
    cu = cols / lay.width
    cv = rows / lay.height
    if lay.nodata_corner in (1, 3):
        cu = 1 - cu
    if lay.nodata_corner in (2, 3):
        cv = 1 - cv
    return (cu + cv) < lay.nodata_extent


def render_rows(lay: Layout, row0: int, row1: int, bands: int) -> tuple[np.ndarray, np.ndarray]:
    """Render rows ``[row0, row1)``: ``(image (bands, h, w) uint8, landcover (h, w) uint8)``."""
    rows = np.arange(row0, row1, dtype=np.float64) + 0.5
    cols = np.arange(lay.width, dtype=np.float64) + 0.5
    cgrid, rgrid = np.meshgrid(cols, rows)
    x = (cgrid * lay.ground_gsd).astype(np.float32)
    y = (rgrid * lay.ground_gsd).astype(np.float32)
    cls, rx, ry = _landcover_regions(x, y, lay)
    out = np.zeros((*cls.shape, 4), dtype=np.float32)
    for k, fn in _RENDER.items():
        m = cls == k
        if m.any():
            out[m] = fn(x[m], y[m], lay)
    if lay.highways:
        on = cls == HIGHWAY
        which = np.argmin(
            [np.abs(_highway_coords(x[on], y[on], hw)[0]) - hw[2] for hw in lay.highways], axis=0
        )
        xs, ys = x[on], y[on]
        vals = np.zeros((on.sum(), 4), np.float32)
        for i, hw in enumerate(lay.highways):
            sel = which == i
            vals[sel] = _highway(xs[sel], ys[sel], lay, hw)
        out[on] = vals
    s = lay.seed
    light = 0.85 + 0.3 * fbm(x, y, 400, s + 20, 3)
    out *= light[..., None] * np.array(lay.gain, np.float32)
    # Colour varies between patches of one class (species, phenology, materials, soil) and drifts
    # slowly across the scene (atmosphere), so mean colour alone does not give the class.
    patch = 0.8 + 0.4 * rand2(rx, ry, s + 24)
    for b in range(3):
        out[..., b] *= (
            patch
            * (0.9 + 0.2 * rand2(rx, ry, s + 25 + b))
            * (0.85 + 0.3 * fbm(x, y, 350, s + 22 + b, 2))
        )
    haze = (lay.haze * (0.5 + fbm(x, y, 600, s + 21, 2)))[..., None]
    out = out * (1 - haze) + haze * np.array([0.72, 0.76, 0.82, 0.5], np.float32)
    if lay.cloud_level <= 1:
        cloud = smoothstep(lay.cloud_level, lay.cloud_level + 0.06, fbm(x, y, 180, s + 30, 5))
        shade = smoothstep(
            lay.cloud_level, lay.cloud_level + 0.06, fbm(x + 35, y + 35, 180, s + 30, 5)
        )
        out *= (1 - 0.5 * shade * (1 - cloud))[..., None]
        out = out * (1 - cloud[..., None]) + cloud[..., None] * np.array(
            [0.93, 0.94, 0.95, 0.8], np.float32
        )
    noise = rand2(cgrid.astype(np.int64), rgrid.astype(np.int64), s + 31) - 0.5
    out += (0.02 * noise)[..., None]
    img = np.clip(np.rint(out * 255), 1, 255).astype(np.uint8)
    nodata = _nodata(cgrid, rgrid, lay)
    img[nodata] = 0
    cls[nodata] = 0
    return np.moveaxis(img[..., :bands], -1, 0), cls
