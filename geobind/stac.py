"""STAC items as raster sources: one GDAL VRT per item, bands by common name, scaled to reflectance.

:func:`stac_sources` reads a STAC Item, ItemCollection, Collection or Catalog (a pystac object, its
dict, or the path or ``http(s)://`` / ``s3://`` URL of its JSON) and gives one
:class:`~geobind.sources.Source` per item, whose ``path`` is a **VRT** (XML text, which
``rasterio.open`` takes as it is) stacking the item's assets in the order asked for: so tile jobs
and dask workers just open a string, reading the COGs (local, ``/vsicurl/``, ``/vsis3/`` …)
underneath with Range requests.

**Which assets.** Each band asked for (``bands``, default ``("red", "green", "blue")``; add
``"nir"`` for an RGB + NIR model, see :func:`model_bands`) is found by its common name in the
assets' ``eo:bands`` (eo extension v1) or STAC 1.1 ``bands`` (``eo:common_name``); an asset key that
is a common name (``"red"``) serves a single-band asset without band metadata. Single-band assets
(Sentinel-2 style, one COG per band) and multi-band ones (one RGB COG) both work, mixed too.
Where several assets carry a band, data assets with a reflectance ``scale`` win over ``visual``
ones (Sentinel-2's 8-bit true-colour image); thumbnails and overviews are never read.

**Scaling: the encoder's input is reflectance in [0, 1].** An encoder's ``scale="auto"``
(:func:`geobind.data.scaling.scale_to_unit`, applied by :func:`geobind.data.chips.to_unit`) reads
uint8 as ``DN / 255``, 16/32-bit integers as reflectance × 10 000 (``DN / 10 000``) and floats as
they are. A STAC product says exactly what its integers mean: ``raster:bands`` ``scale`` and
``offset`` (reflectance = ``DN × scale + offset``; Sentinel-2 L2A since 2022 has offset -0.1,
which ``DN / 10 000`` would get wrong by 0.1). So where any band asked for has a ``scale`` or
``offset``, the VRT is Float32 reflectance: ``ScaleRatio``/``ScaleOffset`` from ``raster:bands``,
bands without them divided by their dtype's ``"auto"`` divisor (255 for uint8, 10 000 for
uint16), nodata NaN; the encoder, seeing floats, takes them as they are (clipped to [0, 1]). A
product without scale information keeps its own dtype and nodata, bitwise the file's pixels, and
the encoder's ``"auto"`` rule applies as for any GeoTIFF. ``reflectance=False`` keeps raw DNs (for
an encoder whose numeric ``scale`` divides DNs itself).

**Grid.** The VRT is on the grid of the finest asset read; coarser bands (a 20 m band beside 10 m
ones) are resampled bilinearly to it. Assets must share one CRS.

**Identity.** A source's identity is a hash of the VRT and its assets' identities: SHA-256 of a
local file; URL, ETag, size and modification time of a remote one (a one-byte ranged GET for
HTTP(S), a HEAD through obstore for ``s3://``), so a store resumes only over unchanged pixels.

Asset hrefs become GDAL paths, and remote assets' identities (ETag, size, mtime), through
:mod:`geobind.sources`.

Example:
    >>> import rasterio
    >>> from geobind.synth import generate_world
    >>> from geobind.synth.stac import export_stac
    >>> tmp = getfixture("tmp_path")
    >>> catalog = export_stac(generate_world(tmp / "w", "tiny"), tmp / "stac")
    >>> sources = stac_sources(catalog)
    >>> [s.name for s in sources][:2]
    ['alpha-2024-05-01', 'alpha-2024-09-01']
    >>> with rasterio.open(sources[0].path) as src:  # the VRT: reflectance, bands by name
    ...     src.count, src.dtypes[0], src.descriptions
    (4, 'float32', ('red', 'green', 'blue', 'nir'))
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from geobind.errors import InputDataError, one_line

__all__ = ["COMMON_NAMES", "is_stac", "model_bands", "stac_sources"]

#: The channels a satellite encoder reads, in order: model band ``k`` is ``COMMON_NAMES[k]``.
COMMON_NAMES = ("red", "green", "blue", "nir")
_STAC_TYPES = {"Feature", "FeatureCollection", "Collection", "Catalog"}
_SKIP_ROLES = {"thumbnail", "overview", "metadata"}
_NOT_RASTER = ("application/json", "application/xml", "text/", "application/geo+json")


# -- what is STAC ---------------------------------------------------------------------------------
def is_stac(obj: Any) -> bool:
    """Whether ``obj`` is STAC: a pystac object, a dict with a STAC ``type`` and
    ``stac_version`` (or a FeatureCollection of such items), or a path or URL ending in
    ``.json`` (a local file must hold STAC; a remote one is taken as STAC unread).

    Example:
        >>> is_stac({"type": "Feature", "stac_version": "1.1.0"}), is_stac("scene.tif")
        (True, False)
        >>> is_stac("https://example.com/items/x.json")
        True
    """
    if type(obj).__module__.split(".")[0] == "pystac":
        import pystac

        return isinstance(obj, pystac.STACObject | pystac.ItemCollection)
    if isinstance(obj, Mapping):
        return _is_stac_dict(obj)
    if not isinstance(obj, str | os.PathLike) or isinstance(obj, bytes):
        return False
    text = os.fspath(obj)
    if not text.lower().split("?", 1)[0].endswith(".json"):
        return False
    if "://" in text and not text.startswith("file://"):
        return True
    path = Path(text.removeprefix("file://")).expanduser()
    try:
        return path.is_file() and _is_stac_dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return False


def _is_stac_dict(d: Mapping[str, Any]) -> bool:
    if d.get("type") == "FeatureCollection":
        features = d.get("features")
        return isinstance(features, list) and all(
            isinstance(f, Mapping) and "stac_version" in f for f in features
        )
    return d.get("type") in _STAC_TYPES and "stac_version" in d


def model_bands(model: Any, encoder: str = "sat") -> tuple[str, ...]:
    """The common names of the channels a model's ``encoder`` reads, in its order: red, green,
    blue (and nir for an RGB + NIR encoder): what to pass as ``bands=`` for that model.

    Example:
        >>> import geobind
        >>> model_bands(geobind.load("tiny"))
        ('red', 'green', 'blue')
    """
    return encoder_bands(model[encoder])


def encoder_bands(encoder: Any) -> tuple[str, ...]:
    """The common names of the channels an image encoder reads (:func:`model_bands`).

    Example:
        >>> import geobind
        >>> encoder_bands(geobind.load("tiny")["sat"])
        ('red', 'green', 'blue')
    """
    count = len(encoder.bands)
    if count > len(COMMON_NAMES):
        raise InputDataError(
            f"the encoder reads {count} bands; geobind names only {COMMON_NAMES}: pass "
            "bands=[...] with the common names of its channels (or 1-based band numbers)"
        )
    return COMMON_NAMES[:count]


# -- reading STAC ---------------------------------------------------------------------------------
def _stac_io(storage_options: Mapping[str, Any]) -> Any:
    """pystac's StacIO, reading hrefs in object stores (``s3://``, ``gs://``, ``az://``) with
    obstore, configured as :func:`geobind.sources.object_store` does."""
    import pystac

    class _ObjectStoreStacIO(pystac.stac_io.DefaultStacIO):
        def read_text_from_href(self, href: str) -> str:
            scheme = href.split("://", 1)[0].lower() if "://" in href else ""
            if scheme in ("", "file", "http", "https"):
                return super().read_text_from_href(href)
            import obstore

            from geobind.sources import object_and_key

            return bytes(obstore.get(*object_and_key(href, storage_options)).bytes()).decode()

    return _ObjectStoreStacIO()


def _items(obj: Any, storage_options: Mapping[str, Any]) -> list[Any]:
    """The pystac Items of a STAC object, dict, path or URL."""
    import pystac

    io = _stac_io(storage_options)
    href = None
    if isinstance(obj, str | os.PathLike):
        href = os.fspath(obj)
        if "://" not in href:
            href = str(Path(href).expanduser().resolve())
        try:
            obj = io.read_json(href)
        except Exception as err:
            raise InputDataError(f"cannot read STAC {href}: {one_line(err)}") from None
    try:
        if isinstance(obj, Mapping):
            if obj.get("type") == "FeatureCollection":
                obj = pystac.ItemCollection.from_dict(dict(obj), preserve_dict=False)
            else:
                obj = pystac.read_dict(dict(obj), href=href, stac_io=io)
        if isinstance(obj, pystac.Item):
            items = [obj]
        elif isinstance(obj, pystac.ItemCollection):
            items = list(obj.items)
        elif isinstance(obj, pystac.Catalog):  # a Collection is a Catalog
            items = list(obj.get_items(recursive=True))
        else:
            raise InputDataError(f"not a STAC Item, ItemCollection or catalogue: {obj!r:.80}")
    except InputDataError:
        raise
    except Exception as err:  # pystac's STACError / STACTypeError, a broken child link
        raise InputDataError(f"cannot read STAC {href or 'object'}: {one_line(err)}") from None
    if href is not None:
        for item in items:  # an ItemCollection's relative asset hrefs are relative to its file
            if item.get_self_href() is None:
                item.set_self_href(href)
    if not items:
        raise InputDataError(f"STAC {href or 'object'} holds no items")
    return items


# -- choosing assets ------------------------------------------------------------------------------
def _asset_bands(key: str, asset: Any) -> list[dict[str, Any]]:
    """Per band of an asset: common name, scale, offset, nodata (from eo/raster or STAC 1.1)."""
    fields = asset.extra_fields
    eo = fields.get("eo:bands") or []
    raster = fields.get("raster:bands") or []
    common = fields.get("bands") or []  # STAC 1.1: eo:common_name, raster:scale … in one list
    n = max(len(eo), len(raster), len(common))
    out = []
    for i in range(n):
        e = eo[i] if i < len(eo) else {}
        r = raster[i] if i < len(raster) else {}
        c = common[i] if i < len(common) else {}
        name = e.get("common_name") or c.get("eo:common_name")
        if name is None:
            plain = e.get("name") or c.get("name")
            name = plain if str(plain).lower() in COMMON_NAMES else None
        out.append(
            {
                "name": None if name is None else str(name).lower(),
                "scale": r.get("scale", c.get("raster:scale", c.get("scale"))),
                "offset": r.get("offset", c.get("raster:offset", c.get("offset"))),
                "nodata": r.get("nodata", c.get("nodata")),
            }
        )
    if not out and key.lower() in COMMON_NAMES:  # a single-band asset keyed by its band
        out.append({"name": key.lower(), "scale": None, "offset": None, "nodata": None})
    return out


def _usable(asset: Any) -> bool:
    roles = set(asset.roles or [])
    media = (asset.media_type or "").lower()
    return not (roles & _SKIP_ROLES) and not media.startswith(_NOT_RASTER)


def _choose(item: Any, bands: Sequence[str]) -> list[tuple[str, Any, int, dict[str, Any]]]:
    """``(asset key, asset, 1-based band in the asset, band info)`` per band asked for."""
    found: dict[str, list[tuple[tuple, str, Any, int, dict[str, Any]]]] = {}
    for order, (key, asset) in enumerate(item.assets.items()):
        if not _usable(asset):
            continue
        infos = _asset_bands(key, asset)
        for i, info in enumerate(infos):
            if info["name"] is None:
                continue
            roles = set(asset.roles or [])
            scaled = info["scale"] is not None or info["offset"] is not None
            rank = ("visual" in roles, not scaled, len(infos) > 1, order)
            found.setdefault(info["name"], []).append((rank, key, asset, i + 1, info))
    missing = [b for b in bands if b not in found]
    if missing:
        have = ", ".join(
            f"{k} ({'/'.join(str(b['name']) for b in _asset_bands(k, a)) or 'no band names'})"
            for k, a in item.assets.items()
        )
        raise InputDataError(
            f"STAC item {item.id!r} has no asset for band(s) {missing} (by eo:bands common "
            f"name); its assets: {have or 'none'}. Pass bands=[...] with names it has"
        )
    return [min(found[b], key=lambda c: c[0])[1:] for b in bands]


# -- the VRT --------------------------------------------------------------------------------------
def _vrt(
    item: Any, chosen: list, reflectance: bool, storage_options: Mapping[str, Any]
) -> tuple[str, list]:
    """The VRT XML stacking the chosen bands, and each asset's href (in band order)."""
    import numpy as np

    from geobind.data.scaling import scale_divisor
    from geobind.sources import gdal_path, open_dataset

    opened: dict[str, dict[str, Any]] = {}
    for key, asset, _, _ in chosen:
        if key in opened:
            continue
        href = asset.get_absolute_href() or asset.href
        path = gdal_path(href)
        try:
            with open_dataset(path, storage_options) as src:
                opened[key] = {
                    "href": href,
                    "path": path,
                    "width": src.width,
                    "height": src.height,
                    "transform": src.transform,
                    "crs": src.crs,
                    "dtypes": src.dtypes,
                    "nodata": src.nodatavals,
                    "count": src.count,
                    "block": src.block_shapes[0],
                }
        except Exception as err:
            raise InputDataError(
                f"cannot read asset {key!r} of STAC item {item.id!r} ({href}): {one_line(err)}"
            ) from None
    infos = list(opened.values())
    crs = {str(i["crs"]) for i in infos}
    if len(crs) > 1:
        raise InputDataError(
            f"the assets of STAC item {item.id!r} are in different CRSs ({sorted(crs)}); "
            "geobind stacks assets of one CRS"
        )
    ref = min(infos, key=lambda i: abs(i["transform"].a * i["transform"].e))
    scaled = reflectance and any(
        info["scale"] is not None or info["offset"] is not None for *_, info in chosen
    )
    dtypes = {opened[key]["dtypes"][b - 1] for key, _, b, _ in chosen}
    if scaled or (reflectance and len(dtypes) > 1):
        out_type, out_nodata = "Float32", "nan"
    else:
        out_type = str(np.result_type(*dtypes))
        nodatas = {opened[key]["nodata"][b - 1] for key, _, b, _ in chosen}
        out_nodata = None if len(nodatas) != 1 or None in nodatas else repr(nodatas.pop())
    t = ref["transform"]
    lines = [
        f'<VRTDataset rasterXSize="{ref["width"]}" rasterYSize="{ref["height"]}">',
        f'  <SRS dataAxisToSRSAxisMapping="1,2">{escape(ref["crs"].to_wkt())}</SRS>',
        f"  <GeoTransform>{t.c!r}, {t.a!r}, {t.b!r}, {t.f!r}, {t.d!r}, {t.e!r}</GeoTransform>",
    ]
    for n, (key, _, band, info) in enumerate(chosen, 1):
        src = opened[key]
        dtype = src["dtypes"][band - 1]
        st = src["transform"]
        # the source's extent in the reference grid's pixels
        x0, y0 = ~t * (st.c, st.f)
        x1, y1 = ~t * (st.c + st.a * src["width"], st.f + st.e * src["height"])
        nodata = info["nodata"] if info["nodata"] is not None else src["nodata"][band - 1]
        colour = {"red": "Red", "green": "Green", "blue": "Blue"}.get(info["name"], "Undefined")
        lines += [
            f'  <VRTRasterBand dataType="{_gdal_type(out_type)}" band="{n}">',
            f"    <Description>{escape(info['name'])}</Description>",
            f"    <ColorInterp>{colour}</ColorInterp>",
        ]
        if out_nodata is not None:
            lines.append(f"    <NoDataValue>{out_nodata}</NoDataValue>")
        same = (src["width"], src["height"]) == (ref["width"], ref["height"]) and st == t
        kind = "ComplexSource" if out_type == "Float32" or nodata is not None else "SimpleSource"
        resampling = "" if same else ' resampling="bilinear"'
        bx, by = src["block"][1], src["block"][0]
        lines += [
            f"    <{kind}{resampling}>",
            f'      <SourceFilename relativeToVRT="0">{escape(src["path"])}</SourceFilename>',
            f"      <SourceBand>{band}</SourceBand>",
            f'      <SourceProperties RasterXSize="{src["width"]}" RasterYSize="{src["height"]}" '
            f'DataType="{_gdal_type(dtype)}" BlockXSize="{bx}" BlockYSize="{by}"/>',
            f'      <SrcRect xOff="0" yOff="0" xSize="{src["width"]}" ySize="{src["height"]}"/>',
            f"      <DstRect xOff={quoteattr(repr(x0))} yOff={quoteattr(repr(y0))} "
            f"xSize={quoteattr(repr(x1 - x0))} ySize={quoteattr(repr(y1 - y0))}/>",
        ]
        if kind == "ComplexSource" and nodata is not None:
            lines.append(f"      <NODATA>{nodata!r}</NODATA>")
        if out_type == "Float32":
            if scaled and (info["scale"] is not None or info["offset"] is not None):
                ratio, offset = info["scale"] or 1.0, info["offset"] or 0.0
            else:  # a band without scale information: the encoder's "auto" rule, made explicit
                ratio, offset = 1.0 / scale_divisor(np.dtype(dtype)), 0.0
            lines += [
                f"      <ScaleOffset>{float(offset)!r}</ScaleOffset>",
                f"      <ScaleRatio>{float(ratio)!r}</ScaleRatio>",
            ]
        lines += [f"    </{kind}>", "  </VRTRasterBand>"]
    lines.append("</VRTDataset>")
    return "\n".join(lines), [opened[key]["href"] for key, *_ in chosen]


def _gdal_type(dtype: str) -> str:
    names = {"uint8": "Byte", "int8": "Int8", "uint16": "UInt16", "int16": "Int16",
             "uint32": "UInt32", "int32": "Int32", "float32": "Float32", "float64": "Float64",
             "Float32": "Float32"}  # fmt: skip
    if dtype not in names:
        raise InputDataError(f"cannot stack bands of dtype {dtype} in a VRT")
    return names[dtype]


# -- the entry point ------------------------------------------------------------------------------
def stac_sources(
    obj: Any,
    *,
    bands: Sequence[str] | None = None,
    storage_options: Mapping[str, Any] | None = None,
    reflectance: bool = True,
) -> list[Any]:
    """One :class:`~geobind.sources.Source` per STAC item: a VRT of its bands by common name.

    See the module docs for how assets are chosen and scaled.

    Args:
        obj: a pystac Item, ItemCollection, Collection or Catalog, its dict, or the path or
            URL (``http(s)://``, ``s3://`` …) of its JSON.
        bands: common names, in the order the VRT stacks them (default ``("red", "green",
            "blue")`` and ``"nir"`` where the item has it, so RGB and RGB + NIR models read
            bands 1–3 or 1–4; :func:`model_bands` gives a model's). Case-insensitive.
        storage_options: credentials and endpoint for remote catalogues and assets (fsspec's
            names: ``endpoint_url``, ``key``, ``secret``, ``region``, ``anon``; or GDAL option
            names in capitals); kept on each Source, never recorded.
        reflectance: apply ``raster:bands`` scale and offset (Float32 reflectance); ``False``
            keeps raw DNs.

    Returns:
        A list of Sources (``path`` the VRT XML, ``name`` the item id, ``label`` the item's
        href and id, ``identity`` a hash over its assets' identities).

    Raises:
        InputDataError: unreadable STAC, an item without the bands asked for (naming the
            assets it has), or an asset that cannot be read (e.g. a 404).

    Example:
        >>> from geobind.synth import generate_world
        >>> from geobind.synth.stac import export_stac
        >>> tmp = getfixture("tmp_path")
        >>> catalog = export_stac(generate_world(tmp / "w", "tiny"), tmp / "stac")
        >>> len(stac_sources(catalog))  # two scenes, two dates
        4
        >>> item = tmp / "stac" / "synth" / "alpha-2024-05-01" / "alpha-2024-05-01.json"
        >>> [s.name for s in stac_sources(item, bands=["RED", "green", "blue", "nir"])]
        ['alpha-2024-05-01']
        >>> stac_sources(catalog, bands=["red", "green", "blue", "nir"])  # beta has no NIR
        Traceback (most recent call last):
        geobind.errors.InputDataError: STAC item 'beta-2024-05-01' has no asset for band(s) ...
    """
    from geobind.sources import Source, options_tuple, resolve_source

    names = [str(b).lower() for b in (bands if bands is not None else COMMON_NAMES[:3])]
    if not names:
        raise InputDataError("bands is empty; pass common names such as ['red', 'green', 'blue']")
    storage_options = dict(storage_options or {})
    kept = options_tuple(storage_options)
    sources = []
    for item in _items(obj, storage_options):
        if bands is None:  # RGB, and NIR where the item has it (band 4, as 4-band models read)
            try:
                chosen = _choose(item, [*names, "nir"])
            except InputDataError:
                chosen = _choose(item, names)
        else:
            chosen = _choose(item, names)
        xml, hrefs = _vrt(item, chosen, reflectance, storage_options)
        digest = hashlib.sha256(xml.encode())
        for href in dict.fromkeys(hrefs):
            digest.update(resolve_source(href, storage_options).identity.encode())
        self_href = item.get_self_href()
        sources.append(
            Source(
                path=xml,
                label=f"{self_href}#{item.id}" if self_href else f"stac:{item.id}",
                name=item.id,
                identity=f"stac:{item.id} sha256:{digest.hexdigest()}",
                storage_options=kept,
            )
        )
    return sources
