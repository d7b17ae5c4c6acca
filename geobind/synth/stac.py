"""A STAC catalogue of the synthetic world: two dates per scene, one COG per band, a real change.

What a Sentinel-2 L2A-style product looks like, made from the world's scenes so tests and docs
exercise the STAC path (:mod:`geobind.stac`) offline:

- one **item per scene and date** (two dates), in one collection, saved self-contained with
  pystac (relative links and asset hrefs: the folder can move, or be served over HTTP as it is);
- **one single-band COG per band** (``red``, ``green``, ``blue``, and ``nir`` where the scene has
  it), uint16 surface reflectance × 10 000 plus 1 000 with nodata 0, described by ``eo:bands``
  (common names) and ``raster:bands`` (``scale`` 1e-4, ``offset`` -0.1: Sentinel-2's processing
  baseline 04.00 convention), so reading it right needs the scale and the offset. A scene pixel
  ``v`` (uint8, ``v / 255`` the encoder's input) becomes ``round(v / 255 × 10 000) + 1 000``:
  reflectance ``v / 255`` within 5e-5; a nodata pixel (every band 0) stays 0;
- the **second date changes** one square block of the scene: the pixels of a block where one
  land-cover class dominates are replaced by those of a block where another does, copied from
  elsewhere in the same scene (an honest change: real pixels of another class, not noise). The
  item records it in ``properties["geobind:change"]``: the block's pixel ``window``
  ``[row, col, height, width]``, its ``bbox`` in the scene's CRS, and the classes ``from`` and
  ``to``. Each item also has a ``landcover`` asset (its truth, changed block included).

Example:
    >>> from geobind.synth import generate_world
    >>> from geobind.synth.stac import export_stac
    >>> tmp = getfixture("tmp_path")
    >>> world = generate_world(tmp / "w", "tiny")
    >>> import pystac
    >>> catalog = pystac.read_file(export_stac(world, tmp / "stac"))
    >>> sorted(item.id for item in catalog.get_items(recursive=True))
    ['alpha-2024-05-01', 'alpha-2024-09-01', 'beta-2024-05-01', 'beta-2024-09-01']
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from geobind.errors import InputDataError, OutputExistsError

__all__ = ["DATES", "OFFSET", "SCALE", "export_stac"]

#: The two acquisition dates of every scene (the second one changed).
DATES = ("2024-05-01", "2024-09-01")
#: ``raster:bands`` scale and offset of the exported bands: reflectance = DN × scale + offset.
SCALE, OFFSET = 1e-4, -0.1


def export_stac(
    world: Any,
    folder: str | os.PathLike[str],
    *,
    dates: Sequence[str] = DATES,
    overwrite: bool = False,
    progress: bool = False,
) -> Path:
    """Write a STAC catalogue of ``world``'s scenes to ``folder``; returns its ``catalog.json``.

    Args:
        world: a :class:`~geobind.synth.World` or its folder.
        folder: where the catalogue goes (created; must be empty or missing).
        dates: acquisition dates (ISO); every date after the first changes one block.
        overwrite: replace an existing ``folder``.
        progress: show a progress bar (one step per scene).

    Returns:
        The path of the root ``catalog.json``.

    Raises:
        OutputExistsError: ``folder`` exists and is not empty (pass ``overwrite=True``).

    Example:
        >>> from geobind.synth import generate_world
        >>> tmp = getfixture("tmp_path")
        >>> world = generate_world(tmp / "w", "tiny")
        >>> root = export_stac(world, tmp / "stac", dates=["2024-05-01"])
        >>> item = root.parent / "synth" / "alpha-2024-05-01"
        >>> root.name, sorted(p.name for p in item.glob("*.tif"))
        ('catalog.json', ['blue.tif', 'green.tif', 'landcover.tif', 'nir.tif', 'red.tif'])
    """
    import pystac
    from tqdm.auto import tqdm

    from geobind.synth.world import World, load_world

    world = world if isinstance(world, World) else load_world(world)
    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()):
        if not overwrite:
            raise OutputExistsError(f"{folder} is not empty; pass overwrite=True to replace it")
        shutil.rmtree(folder)
    if not dates:
        raise InputDataError("dates is empty; pass at least one ISO date")
    folder.mkdir(parents=True, exist_ok=True)
    catalog = pystac.Catalog("geobind-synth", "The geobind synthetic world as STAC items.")
    collection = pystac.Collection(
        "synth",
        "Scenes of the synthetic world: uint16 reflectance COGs, one per band, two dates.",
        extent=pystac.Extent(
            pystac.SpatialExtent([[-180.0, -90.0, 180.0, 90.0]]),
            pystac.TemporalExtent([[None, None]]),
        ),
        license="CC0-1.0",
    )
    catalog.add_child(collection)
    scenes = world.info["scenes"]
    for scene in tqdm(scenes, desc="STAC", unit="scene", disable=not progress):
        for k, date in enumerate(dates):
            item = _write_item(world, scene, date, changed=k > 0, folder=folder / "synth")
            collection.add_item(item)
    collection.update_extent_from_items()
    catalog.normalize_hrefs(str(folder))
    catalog.make_all_asset_hrefs_relative()
    catalog.save(pystac.CatalogType.SELF_CONTAINED)
    return folder / "catalog.json"


def _write_item(world: Any, scene: dict[str, Any], date: str, *, changed: bool, folder: Path):
    import pystac
    import rasterio
    from pystac.extensions.eo import Band, EOExtension
    from pystac.extensions.projection import ProjectionExtension
    from pystac.extensions.raster import DataType, RasterBand, RasterExtension
    from rasterio.warp import transform_bounds

    from geobind.synth.scene import CLASSES

    name = scene["name"]
    with rasterio.open(world.root / scene["path"]) as src:
        pixels, crs, transform = src.read(), src.crs, src.transform
        names = [d or f"band{i + 1}" for i, d in enumerate(src.descriptions)]
    with rasterio.open(world.root / scene["landcover"]) as src:
        truth = src.read(1)
    props: dict[str, Any] = {}
    if changed:
        (r0, c0, r1, c1, size), (was, now) = _change_blocks(truth)
        pixels[:, r0 : r0 + size, c0 : c0 + size] = pixels[:, r1 : r1 + size, c1 : c1 + size]
        truth[r0 : r0 + size, c0 : c0 + size] = truth[r1 : r1 + size, c1 : c1 + size]
        left, top = transform * (c0, r0)
        right, bottom = transform * (c0 + size, r0 + size)
        props["geobind:change"] = {
            "window": [int(r0), int(c0), int(size), int(size)],
            "bbox": [float(left), float(bottom), float(right), float(top)],
            "from": CLASSES[was - 1],
            "to": CLASSES[now - 1],
        }
    item_id = f"{name}-{date}"
    out = folder / item_id
    out.mkdir(parents=True, exist_ok=True)
    height, width = truth.shape
    bounds = rasterio.transform.array_bounds(height, width, transform)
    lon0, lat0, lon1, lat1 = transform_bounds(crs, "EPSG:4326", *bounds)
    geometry = {
        "type": "Polygon",
        "coordinates": [[[lon0, lat0], [lon1, lat0], [lon1, lat1], [lon0, lat1], [lon0, lat0]]],
    }
    when = dt.datetime.fromisoformat(date).replace(tzinfo=dt.UTC)
    item = pystac.Item(item_id, geometry, [lon0, lat0, lon1, lat1], when, props)
    proj = ProjectionExtension.ext(item, add_if_missing=True)
    proj.epsg, proj.shape, proj.transform = crs.to_epsg(), [height, width], list(transform)[:6]
    invalid = (pixels == 0).all(axis=0)
    profile = {
        "driver": "COG",
        "width": width,
        "height": height,
        "count": 1,
        "crs": crs,
        "transform": transform,
        "nodata": 0,
        "compress": "deflate",
        "blocksize": 256,
    }
    for band, band_name in zip(pixels, names, strict=True):
        dn = np.rint(band.astype(np.float64) / 255.0 * 10_000.0).astype(np.uint16) + 1_000
        dn[invalid] = 0
        with rasterio.open(out / f"{band_name}.tif", "w", dtype="uint16", **profile) as dst:
            dst.write(dn, 1)
        asset = pystac.Asset(
            str(out / f"{band_name}.tif"),
            title=band_name,
            media_type=pystac.MediaType.COG,
            roles=["data", "reflectance"],
        )
        item.add_asset(band_name, asset)
        EOExtension.ext(asset, add_if_missing=True).bands = [
            Band.create(name=band_name, common_name=band_name)
        ]
        RasterExtension.ext(asset, add_if_missing=True).bands = [
            RasterBand.create(nodata=0, data_type=DataType.UINT16, scale=SCALE, offset=OFFSET)
        ]
    with rasterio.open(out / "landcover.tif", "w", dtype="uint8", **profile) as dst:
        dst.write(truth, 1)
    item.add_asset(
        "landcover",
        pystac.Asset(
            str(out / "landcover.tif"),
            title="land-cover truth (class ids 1..8, 0 = nodata)",
            media_type=pystac.MediaType.COG,
            roles=["labels"],
        ),
    )
    return item


def _change_blocks(truth: np.ndarray) -> tuple[tuple[int, int, int, int, int], tuple[int, int]]:
    """The block to change and the block to copy into it: ``(row, col, src_row, src_col,
    size)`` and the dominant classes ``(from, to)``. Deterministic: the most uniform fully
    valid block of one class, and the most uniform block of another class that does not
    overlap it."""
    height, width = truth.shape
    size = min(height, width) // 3
    step = max(1, size // 4)
    blocks = []
    for r in range(0, height - size + 1, step):
        for c in range(0, width - size + 1, step):
            block = truth[r : r + size, c : c + size]
            if (block == 0).any():
                continue
            counts = np.bincount(block.reshape(-1), minlength=9)
            cls = int(counts.argmax())
            blocks.append((counts[cls] / block.size, r, c, cls))
    if len(blocks) < 2:
        raise InputDataError("the scene has no two fully valid blocks to build a change from")
    blocks.sort(key=lambda b: (-b[0], b[1], b[2]))
    _, r0, c0, was = blocks[0]
    for _, r1, c1, now in blocks[1:]:
        if now != was and (abs(r1 - r0) >= size or abs(c1 - c0) >= size):
            return (r0, c0, r1, c1, size), (was, now)
    raise InputDataError("the scene has no two blocks of different classes to build a change")
