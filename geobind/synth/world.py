"""Generate a synthetic world: scenes, land-cover truth, photos, audio, captions and manifests.

Layout of a generated world folder::

    world.json                 preset, seed, classes, scenes (CRS, transform, size), counts
    scenes/<name>.tif          RGB(+NIR) uint8 GeoTIFF, tiled, deflate, nodata 0
    scenes/<name>_landcover.tif  class ids 1..8 aligned with the scene, nodata 0
    scenes/<name>_coarse.tif   its coarse twin: 10 m, RGB + NIR, another sensor (synth/coarse.py)
    ground/<id>.jpg            ground-level photos
    audio/<id>.wav             48 kHz mono PCM-16 field recordings
    ground.parquet, audio.parquet  GeoParquet manifests (EPSG:4326 points)
    preview.png                contact sheet (with ``preview=True``)

Everything is a pure function of the preset and the seed: two runs give byte-identical files,
whatever the number of worker processes.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from geobind._version import __version__
from geobind.errors import InputDataError, OutputExistsError
from geobind.synth.coarse import write_coarse_twin
from geobind.synth.scene import (
    CLASS_COLORS,
    CLASSES,
    Layout,
    make_layout,
    point_detail,
    render_rows,
)

__all__ = ["PRESETS", "SceneSpec", "World", "WorldPreset", "generate_world", "load_world"]

log = logging.getLogger(__name__)

SAMPLE_RATE = 48_000
_STRIP_ROWS = 256


@dataclass(frozen=True)
class SceneSpec:
    """One scene of a world preset.

    Attributes:
        name: file stem of the scene.
        crs: a projected CRS (``"EPSG:32633"``, ``"EPSG:3857"`` …).
        gsd: pixel size in CRS units.
        width, height: size in pixels.
        center: (lon, lat) of the scene centre.
        bands: 3 (RGB) or 4 (RGB + NIR).
        heldout: every point in a held-out scene is in the ``test`` split.
    """

    name: str
    crs: str
    gsd: float
    width: int
    height: int
    center: tuple[float, float]
    bands: int = 3
    heldout: bool = False


@dataclass(frozen=True)
class WorldPreset:
    """Sizes and counts of a synthetic world."""

    name: str
    scenes: tuple[SceneSpec, ...]
    n_ground: int
    n_audio: int
    photo_size: int
    audio_seconds: float
    chip_m: float  # chip width (ground metres) that splits keep apart
    block_m: float  # side of the square blocks that carry one split each
    region_m: float  # typical size of a land-cover region
    n_highways: int = 2
    highway_half_width: float = 14.0
    cloud_cover: float = 0.03
    distractor_share: float = 0.1
    split_shares: tuple[float, float] = (0.15, 0.15)  # (val, test) shares of blocks


PRESETS: dict[str, WorldPreset] = {
    "tiny": WorldPreset(
        name="tiny",
        scenes=(
            SceneSpec("alpha", "EPSG:32633", 1.0, 384, 384, (15.00, 41.90), bands=4),
            SceneSpec("beta", "EPSG:3857", 0.6, 512, 448, (9.19, 45.46), bands=3),
        ),
        n_ground=160,
        n_audio=48,
        photo_size=64,
        audio_seconds=2.0,
        chip_m=32.0,
        block_m=96.0,
        region_m=70.0,
        n_highways=1,
        highway_half_width=10.0,
    ),
    "demo": WorldPreset(
        name="demo",
        scenes=(
            SceneSpec("alpha", "EPSG:32633", 1.0, 2048, 2048, (15.00, 41.90), bands=4),
            SceneSpec("beta", "EPSG:3857", 0.6, 1536, 1536, (9.19, 45.46), bands=3),
            SceneSpec("gamma", "EPSG:32632", 1.0, 1024, 1024, (7.65, 45.05), bands=4, heldout=True),
        ),
        n_ground=4000,
        n_audio=800,
        photo_size=96,
        audio_seconds=3.0,
        chip_m=64.0,
        block_m=256.0,
        region_m=160.0,
    ),
    "bench": WorldPreset(
        name="bench",
        scenes=(SceneSpec("alpha", "EPSG:32633", 1.0, 8192, 8192, (15.00, 41.90), bands=4),),
        n_ground=400,
        n_audio=100,
        photo_size=96,
        audio_seconds=3.0,
        chip_m=64.0,
        block_m=256.0,
        region_m=160.0,
    ),
}


@dataclass
class World:
    """A generated world on disk.

    Attributes:
        root: the world folder.
        info: the parsed ``world.json``.
    """

    root: Path
    info: dict[str, Any] = field(repr=False)

    @property
    def ground_manifest(self) -> Path:
        """GeoParquet manifest of the ground photos."""
        return self.root / "ground.parquet"

    @property
    def audio_manifest(self) -> Path:
        """GeoParquet manifest of the audio clips."""
        return self.root / "audio.parquet"

    @property
    def scenes(self) -> dict[str, Path]:
        """Scene name → GeoTIFF path."""
        return {s["name"]: self.root / s["path"] for s in self.info["scenes"]}

    @property
    def coarse_scenes(self) -> dict[str, Path]:
        """Scene name → its coarse multispectral twin (10 m, RGB + NIR; see
        :mod:`geobind.synth.coarse`)."""
        return {s["name"]: self.root / s["coarse"]["path"] for s in self.info["scenes"]}

    @property
    def landcover(self) -> dict[str, Path]:
        """Scene name → land-cover truth GeoTIFF path."""
        return {s["name"]: self.root / s["landcover"] for s in self.info["scenes"]}


def load_world(root: str | os.PathLike[str]) -> World:
    """Open a world folder written by :func:`generate_world`.

    Example:
        >>> from geobind.synth import generate_world, load_world
        >>> w = load_world(generate_world(getfixture("tmp_path") / "w", "tiny").root)
        >>> sorted(w.scenes)
        ['alpha', 'beta']
    """
    root = Path(root)
    meta = root / "world.json"
    if not meta.is_file():
        raise InputDataError(
            f"{root} is not a synthetic world (no world.json); "
            f"create one with `geobind synth {root}`"
        )
    return World(root=root, info=json.loads(meta.read_text()))


# --------------------------------------------------------------------------------------- scenes


def _ground_scale(spec: SceneSpec) -> float:
    """Ground metres per CRS unit at the scene centre, by geobind's one rule
    (:meth:`geobind.georef.GeoBox.ground_resolution`: Web Mercator stretches by 1/cos(lat))."""
    from pyproj import CRS

    from geobind.georef import GeoBox

    crs = CRS.from_user_input(spec.crs)
    if not crs.is_projected:
        raise InputDataError(f"scene CRS {crs.to_string()} is not projected; use a UTM or 3857 CRS")
    box = GeoBox((spec.height, spec.width), _scene_transform(spec), crs)
    gx, gy = box.ground_resolution()
    return math.sqrt(gx * gy) / spec.gsd


def _scene_transform(spec: SceneSpec):
    from pyproj import Transformer
    from rasterio.transform import from_origin

    cx, cy = Transformer.from_crs("EPSG:4326", spec.crs, always_xy=True).transform(*spec.center)
    left = np.round((cx - spec.width * spec.gsd / 2) / spec.gsd) * spec.gsd
    top = np.round((cy + spec.height * spec.gsd / 2) / spec.gsd) * spec.gsd
    return from_origin(float(left), float(top), spec.gsd, spec.gsd)


def _render_strip(args: tuple[Layout, int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    lay, r0, r1, bands = args
    return render_rows(lay, r0, r1, bands)


def _tif_profile(spec: SceneSpec, transform, count: int) -> dict[str, Any]:
    return {
        "driver": "GTiff",
        "width": spec.width,
        "height": spec.height,
        "count": count,
        "dtype": "uint8",
        "crs": spec.crs,
        "transform": transform,
        "nodata": 0,
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
        "compress": "deflate",
        "predictor": 2,
        "interleave": "pixel",
    }


def _write_scene(
    spec: SceneSpec, lay: Layout, folder: Path, pmap: Callable, bar
) -> tuple[np.ndarray, Any]:
    import rasterio
    from rasterio.enums import ColorInterp

    transform = _scene_transform(spec)
    landcover = np.zeros((spec.height, spec.width), np.uint8)
    strips = [
        (lay, r, min(r + _STRIP_ROWS, spec.height), spec.bands)
        for r in range(0, spec.height, _STRIP_ROWS)
    ]
    img_path = folder / f"{spec.name}.tif"
    with rasterio.open(img_path, "w", **_tif_profile(spec, transform, spec.bands)) as dst:
        names = ("red", "green", "blue", "nir")[: spec.bands]
        dst.descriptions = names
        dst.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue] + [
            ColorInterp.undefined
        ] * (spec.bands - 3)
        for (_, r0, r1, _), (img, cls) in zip(strips, pmap(_render_strip, strips), strict=True):
            dst.write(img, window=((r0, r1), (0, spec.width)))
            landcover[r0:r1] = cls
            bar.update(1)
    with rasterio.open(
        folder / f"{spec.name}_landcover.tif", "w", **_tif_profile(spec, transform, 1)
    ) as dst:
        dst.write(landcover, 1)
        dst.write_colormap(1, {i + 1: (*c, 255) for i, c in enumerate(CLASS_COLORS)})
        dst.update_tags(classes=json.dumps(dict(enumerate(CLASSES, start=1))))
    return landcover, transform


# --------------------------------------------------------------------------------------- points


@dataclass
class _Points:
    scene: str
    rows: np.ndarray
    cols: np.ndarray
    split: np.ndarray


def _block_splits(spec: SceneSpec, preset: WorldPreset, ground_gsd: float, rng) -> np.ndarray:
    """Split label per block (grid of ``block_m`` squares): at least one val and one test block."""
    nbx = int(np.ceil(spec.width * ground_gsd / preset.block_m))
    nby = int(np.ceil(spec.height * ground_gsd / preset.block_m))
    n = nbx * nby
    labels = np.full(n, "train", dtype=object)
    if spec.heldout:
        labels[:] = "test"
    elif n >= 3:
        order = rng.permutation(n)
        n_val = max(1, round(preset.split_shares[0] * n))
        n_test = max(1, round(preset.split_shares[1] * n))
        labels[order[:n_test]] = "test"
        labels[order[n_test : n_test + n_val]] = "val"
    return labels.reshape(nby, nbx)


def _stratified(classes: np.ndarray, n: int, n_classes: int) -> np.ndarray:
    """Indices of ``n`` candidates, as evenly spread over classes as the candidates allow.

    ``classes`` is assumed shuffled already: the first candidates of each class are taken.
    """
    by_class = [np.flatnonzero(classes == k) for k in range(1, n_classes + 1)]
    take = np.zeros(n_classes, int)
    remaining = n
    while remaining > 0:
        room = np.array([len(b) for b in by_class]) - take
        open_ = np.flatnonzero(room > 0)
        if len(open_) == 0:
            break
        share = max(1, remaining // len(open_))
        for k in open_:
            step = min(share, room[k], remaining)
            take[k] += step
            remaining -= step
            if remaining == 0:
                break
    return np.sort(np.concatenate([b[:t] for b, t in zip(by_class, take, strict=True)]))


def _sample_points(
    spec: SceneSpec,
    preset: WorldPreset,
    landcover: np.ndarray,
    ground_gsd: float,
    counts: tuple[int, int],
    rng: np.random.Generator,
) -> tuple[_Points, _Points]:
    """Ground and audio points at distinct pixel centres, class-stratified, split-buffered."""
    half_chip_px = int(np.ceil(preset.chip_m / 2 / ground_gsd))
    n_cand = 40 * sum(counts) + 1000
    rows = rng.integers(half_chip_px, spec.height - half_chip_px, n_cand)
    cols = rng.integers(half_chip_px, spec.width - half_chip_px, n_cand)
    flat = np.unique(rows * spec.width + cols)
    flat = rng.permutation(flat)
    rows, cols = flat // spec.width, flat % spec.width
    x = (cols + 0.5) * ground_gsd
    y = (rows + 0.5) * ground_gsd
    labels = _block_splits(spec, preset, ground_gsd, rng)

    def label_at(dx: float, dy: float) -> np.ndarray:
        bx = np.clip(np.floor((x + dx) / preset.block_m).astype(int), 0, labels.shape[1] - 1)
        by = np.clip(np.floor((y + dy) / preset.block_m).astype(int), 0, labels.shape[0] - 1)
        return labels[by, bx]

    # A point is kept only when the square of half-side `buf` around it lies in blocks of its own
    # split, so two points of different splits are at least 2 * buf > chip_m apart.
    split = label_at(0, 0)
    buf = preset.chip_m / 2 + 1.0  # +1 m absorbs projection scale changes across the scene
    inner = np.ones(len(x), bool)
    for dx in (-buf, buf):
        for dy in (-buf, buf):
            inner &= label_at(dx, dy) == split
    cls = landcover[rows, cols]
    ok = inner & (cls > 0)
    rows, cols, split, cls = rows[ok], cols[ok], split[ok], cls[ok]
    g = _stratified(cls, counts[0], len(CLASSES))
    rest = np.setdiff1d(np.arange(len(cls)), g)
    a = rest[_stratified(cls[rest], counts[1], len(CLASSES))]
    return (
        _Points(spec.name, rows[g], cols[g], split[g]),
        _Points(spec.name, rows[a], cols[a], split[a]),
    )


def _fractions(landcover: np.ndarray, rows, cols, radius_px: int) -> np.ndarray:
    """Share of each class (ids 1..8) in a square window around each point."""
    out = np.zeros((len(rows), len(CLASSES)), np.float64)
    for i, (r, c) in enumerate(zip(rows, cols, strict=True)):
        win = landcover[
            max(r - radius_px, 0) : r + radius_px + 1, max(c - radius_px, 0) : c + radius_px + 1
        ]
        counts = np.bincount(win.ravel(), minlength=len(CLASSES) + 1)[1:]
        out[i] = counts / max(counts.sum(), 1)
    return out


# --------------------------------------------------------------------------------------- items


def _photo_task(args) -> str:
    from PIL import Image

    from geobind.synth.photos import render_photo

    seed, index, fg, bg, size, distractor, detail, path = args
    rng = np.random.default_rng([seed, 1, index])
    img, text = render_photo(rng, fg, bg, size, distractor or None, detail)
    Image.fromarray(img).save(path, format="JPEG", quality=90)
    return text


def _audio_task(args) -> str:
    import soundfile as sf

    from geobind.synth.audio import SOUND_PHRASES, render_audio

    seed, index, fractions, seconds, path = args
    rng = np.random.default_rng([seed, 2, index])
    samples = render_audio(rng, fractions, seconds, SAMPLE_RATE)
    sf.write(path, samples, SAMPLE_RATE, subtype="PCM_16", format="WAV")
    order = np.argsort(-fractions, kind="stable")
    text = f"the sound of {SOUND_PHRASES[int(order[0]) + 1]}"
    if fractions[order[1]] >= 0.25:
        text += f", with {SOUND_PHRASES[int(order[1]) + 1]} nearby"
    return text


# --------------------------------------------------------------------------------------- driver


class _Mapper:
    """``map`` in this process or over a process pool; results always come back in order."""

    def __init__(self, workers: int):
        self._pool = ProcessPoolExecutor(workers) if workers > 1 else None

    def __call__(self, fn: Callable, items: Iterable) -> Iterator:
        if self._pool is None:
            return map(fn, items)
        return self._pool.map(fn, items, chunksize=8 if fn is not _render_strip else 1)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)


def _manifest(points: list[_Points], transforms, columns: dict[str, list]) -> Any:
    import geopandas as gpd
    from pyproj import Transformer

    lon, lat, scene, split = [], [], [], []
    for p in points:
        t, crs = transforms[p.scene]
        xs, ys = t @ (p.cols + 0.5, p.rows + 0.5)
        lo, la = Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(xs, ys)
        lon.append(lo)
        lat.append(la)
        scene += [p.scene] * len(p.rows)
        split += list(p.split)
    data = {"scene": scene, "split": split, **columns}
    return gpd.GeoDataFrame(
        data,
        geometry=gpd.points_from_xy(np.concatenate(lon), np.concatenate(lat)),
        crs="EPSG:4326",
    )


def generate_world(
    out: str | os.PathLike[str],
    preset: str | WorldPreset = "tiny",
    *,
    seed: int = 0,
    preview: bool = False,
    progress: bool = False,
    overwrite: bool = False,
    workers: int | None = None,
) -> World:
    """Generate a deterministic synthetic world into the folder ``out``.

    The world is written to a temporary sibling folder and moved into place at the end, so a failed
    or interrupted run leaves ``out`` as it was.

    Args:
        out: the folder to create (must not exist or be empty unless ``overwrite``).
        preset: ``"tiny"`` (seconds; tests), ``"demo"`` (< 1 minute; the demo), ``"bench"``
            (an 8192×8192 scene for benchmarks), or a :class:`WorldPreset`.
        seed: the world's seed; the same seed gives byte-identical files.
        preview: also write ``preview.png``, a contact sheet of what was generated.
        progress: show progress bars.
        overwrite: replace an existing non-empty ``out``.
        workers: processes to use (default: all cores); results do not depend on it.

    Returns:
        The :class:`World` written.

    Example:
        >>> from geobind.synth import generate_world
        >>> world = generate_world(getfixture("tmp_path") / "world", "tiny", seed=1)
        >>> world.info["counts"]["ground"]["total"]
        160
    """
    from tqdm.auto import tqdm

    if isinstance(preset, str):
        if preset not in PRESETS:
            raise InputDataError(
                f"unknown world preset {preset!r}; choose one of {', '.join(PRESETS)}"
            )
        preset = PRESETS[preset]
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise OutputExistsError(
            f"{out} already exists and is not empty; choose another folder or pass overwrite=True "
            "(--overwrite on the command line)"
        )
    tmp = out.with_name(f".{out.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    for sub in ("scenes", "ground", "audio"):
        (tmp / sub).mkdir(parents=True)
    pmap = _Mapper(workers or os.cpu_count() or 1)
    try:
        info = _generate(tmp, preset, seed, pmap, lambda **kw: tqdm(disable=not progress, **kw))
        if preview:
            from geobind.synth.preview import write_preview

            write_preview(World(tmp, info), tmp / "preview.png")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        pmap.close()
    if out.exists():
        shutil.rmtree(out) if out.is_dir() else out.unlink()
    tmp.rename(out)
    log.info("synthetic world %r (seed %d) written to %s", preset.name, seed, out)
    return World(out, info)


def _generate(root: Path, preset: WorldPreset, seed: int, pmap: _Mapper, bar) -> dict[str, Any]:
    scenes_info, transforms, landcovers = [], {}, {}
    ground_pts, audio_pts = [], []
    scales = [_ground_scale(s) for s in preset.scenes]
    areas = np.array(
        [s.width * s.height * (s.gsd * k) ** 2 for s, k in zip(preset.scenes, scales, strict=True)]
    )
    share = areas / areas.sum()
    n_g = _apportion(preset.n_ground, share)
    n_a = _apportion(preset.n_audio, share)
    n_strips = sum(-(-s.height // _STRIP_ROWS) for s in preset.scenes)
    with bar(total=n_strips, desc="scenes", unit="strip") as pbar:
        for i, (spec, scale) in enumerate(zip(preset.scenes, scales, strict=True)):
            state = np.random.SeedSequence([seed, i]).generate_state(1)[0]
            ground_gsd = spec.gsd * scale
            lay = make_layout(
                int(state),
                spec.width,
                spec.height,
                ground_gsd,
                region_m=preset.region_m,
                n_highways=preset.n_highways,
                highway_half_width=preset.highway_half_width,
                cloud_cover=preset.cloud_cover,
            )
            landcover, transform = _write_scene(spec, lay, root / "scenes", pmap, pbar)
            coarse = write_coarse_twin(
                root / "scenes" / f"{spec.name}.tif",
                root / "scenes" / f"{spec.name}_landcover.tif",
                root / "scenes" / f"{spec.name}_coarse.tif",
                seed=seed * 1000 + i,
            )
            rng = np.random.default_rng([seed, i, 7])
            g, a = _sample_points(spec, preset, landcover, ground_gsd, (n_g[i], n_a[i]), rng)
            ground_pts.append(g)
            audio_pts.append(a)
            landcovers[spec.name] = (landcover, ground_gsd, lay)
            transforms[spec.name] = (transform, spec.crs)
            valid = landcover[landcover > 0]
            fractions = np.bincount(valid, minlength=len(CLASSES) + 1)[1:] / max(valid.size, 1)
            scenes_info.append(
                {
                    **{k: v for k, v in asdict(spec).items() if k != "center"},
                    "center_lonlat": list(spec.center),
                    "path": f"scenes/{spec.name}.tif",
                    "landcover": f"scenes/{spec.name}_landcover.tif",
                    "coarse": {"path": f"scenes/{spec.name}_coarse.tif", **coarse},
                    "transform": list(transform)[:6],
                    "ground_gsd_m": ground_gsd,
                    "nodata": 0,
                    "band_names": ["red", "green", "blue", "nir"][: spec.bands],
                    "class_fractions": {
                        c: round(float(f), 4) for c, f in zip(CLASSES, fractions, strict=True)
                    },
                }
            )
    ground = _ground_items(root, preset, seed, ground_pts, landcovers, pmap, bar)
    audio = _audio_items(root, preset, seed, audio_pts, landcovers, pmap, bar)
    gdf = _manifest(ground_pts, transforms, ground)
    adf = _manifest(audio_pts, transforms, audio)
    gdf.to_parquet(root / "ground.parquet", index=False)
    adf.to_parquet(root / "audio.parquet", index=False)
    k = len(CLASSES)
    info = {
        "geobind_version": __version__,
        "preset": asdict(preset),
        "seed": seed,
        "classes": [
            {"id": i + 1, "name": c, "color": list(CLASS_COLORS[i])} for i, c in enumerate(CLASSES)
        ],
        "scenes": scenes_info,
        "chip_m": preset.chip_m,
        "block_m": preset.block_m,
        "sample_rate": SAMPLE_RATE,
        "audio_seconds": preset.audio_seconds,
        "photo_size": preset.photo_size,
        "class_balance_bounds": [round(0.5 / k, 4), round(2.0 / k, 4)],
        "counts": {"ground": _counts(gdf), "audio": _counts(adf)},
        "manifests": {"ground": "ground.parquet", "audio": "audio.parquet"},
    }
    (root / "world.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    return info


def _apportion(total: int, share: np.ndarray) -> list[int]:
    n = np.floor(total * share).astype(int)
    n[np.argmax(share)] += total - n.sum()
    return [int(v) for v in n]


def _counts(gdf) -> dict[str, Any]:
    return {
        "total": len(gdf),
        "split": {k: int(v) for k, v in gdf["split"].value_counts().sort_index().items()},
        "landcover": {k: int(v) for k, v in gdf["landcover"].value_counts().sort_index().items()},
    }


def _ground_items(root, preset, seed, points, landcovers, pmap, bar) -> dict[str, list]:
    rng = np.random.default_rng([seed, 3])
    tasks, fg_all, kinds = [], [], []
    index = 0
    for p in points:
        landcover, ground_gsd, lay = landcovers[p.scene]
        frac = _fractions(landcover, p.rows, p.cols, round(48 / ground_gsd))
        for r, c, f in zip(p.rows, p.cols, frac, strict=True):
            fg = int(landcover[r, c])
            others = f.copy()
            others[fg - 1] = 0
            bg = int(np.argmax(others)) + 1 if others.max() > 0 else fg
            kind = ""
            if rng.random() < preset.distractor_share:
                kind = str(rng.choice(["indoor", "closeup", "wrong"]))
            path = f"ground/{index:06d}.jpg"
            x, y = (c + 0.5) * ground_gsd, (r + 0.5) * ground_gsd
            detail = point_detail(x, y, lay, fg)
            tasks.append((seed, index, fg, bg, preset.photo_size, kind, detail, str(root / path)))
            fg_all.append(fg)
            kinds.append(kind)
            index += 1
    captions = list(
        bar(iterable=pmap(_photo_task, tasks), total=len(tasks), desc="photos", unit="photo")
    )
    return {
        "path": [f"ground/{t[1]:06d}.jpg" for t in tasks],
        "caption": captions,
        "landcover": [CLASSES[k - 1] for k in fg_all],
        "landcover_id": np.array(fg_all, np.uint8),
        "distractor": kinds,
    }


def _audio_items(root, preset, seed, points, landcovers, pmap, bar) -> dict[str, list]:
    tasks, fg_all = [], []
    index = 0
    for p in points:
        landcover, ground_gsd, _ = landcovers[p.scene]
        frac = _fractions(landcover, p.rows, p.cols, round(64 / ground_gsd))
        for r, c, f in zip(p.rows, p.cols, frac, strict=True):
            path = f"audio/{index:06d}.wav"
            tasks.append((seed, index, f, preset.audio_seconds, str(root / path)))
            fg_all.append(int(landcover[r, c]))
            index += 1
    captions = list(
        bar(iterable=pmap(_audio_task, tasks), total=len(tasks), desc="audio", unit="clip")
    )
    return {
        "path": [f"audio/{t[1]:06d}.wav" for t in tasks],
        "caption": captions,
        "landcover": [CLASSES[k - 1] for k in fg_all],
        "landcover_id": np.array(fg_all, np.uint8),
        "duration_s": np.full(len(tasks), preset.audio_seconds),
        "sample_rate": np.full(len(tasks), SAMPLE_RATE, np.int32),
    }
