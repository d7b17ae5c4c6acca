"""Pair datasets: one overhead image per ground photo or recording (GeoBind's own data).

GeoBind's data is not scenes and points but pairs: an overhead image centred on the place where a
photo was taken or a sound recorded. :func:`open_pairs` reads four layouts into one index
(:class:`Pairs`: a row per sample, no pixels or audio held in memory), auto-detected or forced:

- ``soundingearth-hub``: SoundingEarth as published on the Hugging Face hub
  (``MVRL/SoundingEarth``): parquet files per split (the split in the file name), image and
  audio columns as ``{bytes, path}`` structs (``googleearth_image``, ``audio``),
  ``latitude``, ``longitude``. Samples are read one parquet row group at a time (a small
  per-process cache), so the data streams; :class:`PairSampler` shuffles row groups, then the
  rows within each.
- ``soundingearth``: the original release, ``metadata.csv`` (``key``, ``long_key``,
  ``mp3name``, ``latitude``, ``longitude`` …), ``images/{key}.jpg`` and
  ``raw_audio/{long_key}/{mp3name}`` (MP3). The split comes from a ``split`` column if any.
- ``webdataset``: Sat2Cap-style ``.tar`` shards, each sample ``<key>.groundlevel.jpg``,
  ``<key>.overhead.jpg`` and ``<key>.metadata.json`` (``latitude``, ``longitude``, ``date_taken``);
  the split from the shard's name (``train-000.tar``) or its folder.
- ``manifest``: a generic table (GeoParquet, Parquet or CSV) with ``sat_path`` (the overhead
  image), ``path`` (the photo or audio file), ``split`` and a point geometry (any CRS) or
  ``longitude``/``latitude``; relative paths are relative to the table.

Overhead images carry no georeferencing: their ground resolution is the dataset's (``gsd``), and
the chip a model reads is the centre crop covering the model's footprint
(:func:`geobind.georef.footprint_pixels`, the rule GeoTIFF chips follow), so a model trained on
pairs cuts the same ground footprint from a GeoTIFF at inference.

Example:
    >>> import numpy as np, pandas as pd
    >>> from PIL import Image
    >>> root = getfixture("tmp_path")
    >>> Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(root / "sat.png")
    >>> Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(root / "photo.jpg")
    >>> pd.DataFrame({"sat_path": ["sat.png"], "path": ["photo.jpg"], "split": ["train"],
    ...               "longitude": [9.1], "latitude": [45.4]}).to_csv(root / "pairs.csv")
    >>> pairs = open_pairs(root / "pairs.csv")
    >>> pairs.format, pairs.kind, len(pairs), pairs.overhead(0).shape
    ('manifest', 'ground', 1, (3, 64, 64))
"""

from __future__ import annotations

import io
import json
import logging
import os
import tarfile
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from geobind.data.augment import Augmented
from geobind.errors import InputDataError

__all__ = ["FORMATS", "PairSampler", "Pairs", "detect_format", "open_pairs"]

log = logging.getLogger(__name__)

FORMATS = ("soundingearth-hub", "soundingearth", "webdataset", "manifest")
#: Column names the hub layout's overhead image may have (SoundingEarth, GeoSound, generic).
_HUB_IMAGE = ("googleearth_image", "bingmap_image", "sentinel_image", "overhead_image", "image")
_HUB_AUDIO = ("audio",)
_HUB_PHOTO = ("ground_image", "groundlevel_image")
_SPLITS = {"train": "train", "val": "val", "validation": "val", "valid": "val", "test": "test"}
_AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg", ".aiff", ".aif")
_CACHE = 4  # parquet row-group columns / open tar files kept per process


class BadSampleError(InputDataError):
    """A sample's image or audio bytes cannot be decoded (skipped and counted by the callers)."""


def _fresh() -> dict[str, Any]:
    """Empty caches for a :class:`Pairs` made from another (``split``, ``subset``)."""
    return {"_cache": OrderedDict(), "_files": OrderedDict(), "_columns": None}


def _split_of(name: str) -> str | None:
    parts = Path(name).name.lower().replace("_", "-").replace(".", "-").split("-")
    return next((_SPLITS[p] for p in parts if p in _SPLITS), None)


def detect_format(path: str | os.PathLike[str]) -> str:
    """The layout of a pair dataset at ``path`` (see the module docstring).

    Raises:
        InputDataError: ``path`` is missing or none of the layouts fits.

    Example:
        >>> import pandas as pd
        >>> root = getfixture("tmp_path")
        >>> pd.DataFrame({"key": ["a"], "long_key": ["b"], "mp3name": ["c.mp3"],
        ...               "latitude": [1.0], "longitude": [2.0]}).to_csv(root / "metadata.csv")
        >>> detect_format(root)
        'soundingearth'
    """
    path = Path(path)
    if not path.exists():
        raise InputDataError(f"pair dataset {path} does not exist")
    if path.is_dir():
        if (path / "metadata.csv").is_file():
            return "soundingearth"
        if any(path.rglob("*.tar")):
            return "webdataset"
        parquet = sorted(path.rglob("*.parquet"))
        if parquet:
            return "manifest" if _is_manifest(parquet[0]) else "soundingearth-hub"
        if any(path.glob("*.csv")):
            return "manifest"
        raise InputDataError(
            f"{path} holds no metadata.csv, .tar shards or .parquet files; expected one of the "
            f"pair layouts {', '.join(FORMATS)} (--pairs-format forces one)"
        )
    if path.suffix == ".tar":
        return "webdataset"
    if path.name == "metadata.csv":
        return "soundingearth"
    if path.suffix == ".parquet" and not _is_manifest(path):
        return "soundingearth-hub"
    return "manifest"


def _is_manifest(path: Path) -> bool:
    import pyarrow.parquet as pq

    return "sat_path" in pq.read_schema(path).names


@dataclass
class Pairs:
    """The index of a pair dataset: one row per sample, and how to read each one.

    ``table`` has ``longitude``, ``latitude`` (EPSG:4326), ``split`` and ``key`` columns and the
    columns the format needs to find a sample's bytes. :meth:`overhead` and :meth:`item` decode
    a sample; both raise :class:`BadSampleError` for undecodable bytes.

    Attributes:
        root: the dataset's path.
        format: one of :data:`FORMATS`.
        kind: the other modality: ``"ground"`` (photos) or ``"audio"``.
        table: the index.
        gsd: ground metres per pixel of the overhead images (``None``: unknown).
    """

    root: Path
    format: str
    kind: str
    table: pd.DataFrame
    gsd: float | None = None
    _cache: OrderedDict = field(default_factory=OrderedDict, repr=False, compare=False)
    _files: OrderedDict = field(default_factory=OrderedDict, repr=False, compare=False)
    _pid: int = field(default_factory=os.getpid, repr=False, compare=False)
    _columns: dict[str, np.ndarray] | None = field(default=None, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.table)

    def __getstate__(self) -> dict[str, Any]:  # open files and decoded groups stay behind
        return {**self.__dict__, "_cache": OrderedDict(), "_files": OrderedDict()}

    def split(self, name: str) -> Pairs:
        """The samples of one split (``"train"``, ``"val"``, ``"test"``).

        Raises:
            InputDataError: no sample is in that split.
        """
        rows = self.table[self.table["split"] == name]
        if rows.empty:
            found = sorted(self.table["split"].dropna().unique())
            raise InputDataError(
                f"pair dataset {self.root} has no {name!r} samples (splits found: {found})"
            )
        return replace(self, table=rows.reset_index(drop=True), **_fresh())

    def subset(self, rows: Sequence[int]) -> Pairs:
        """The samples at positions ``rows``."""
        table = self.table.iloc[list(rows)].reset_index(drop=True)
        return replace(self, table=table, **_fresh())

    def points(self) -> Any:
        """The samples as an EPSG:4326 GeoDataFrame of points (the table's other columns kept)."""
        import geopandas as gpd

        t = self.table
        geometry = gpd.points_from_xy(t["longitude"], t["latitude"])
        return gpd.GeoDataFrame(t.copy(), geometry=geometry, crs="EPSG:4326")

    # -- reading ---------------------------------------------------------------------------------
    def overhead(self, i: int) -> np.ndarray:
        """The overhead image of sample ``i``: ``(3, H, W)`` uint8 (RGB)."""
        return _decode_image(self._bytes(i, "sat"), f"overhead image of sample {self._key(i)}")

    def item(self, i: int) -> Any:
        """The other half of sample ``i``: a PIL RGB image (photos) or ``(samples, rate)``."""
        data = self._bytes(i, "item")
        what = f"{self.kind} of sample {self._key(i)}"
        if self.kind == "ground":
            from PIL import Image

            array = _decode_image(data, what)
            return Image.fromarray(np.ascontiguousarray(array.transpose(1, 2, 0)))
        return _decode_audio(data, what)

    def _key(self, i: int) -> str:
        return str(self._column_arrays()["key"][i])

    def _row(self, i: int) -> dict[str, Any]:
        """Row ``i`` as a dict, from column arrays taken once (``DataFrame.iloc`` per sample
        cost a fifth of a sample's read)."""
        return {c: values[i] for c, values in self._column_arrays().items()}

    def _column_arrays(self) -> dict[str, np.ndarray]:
        if self._columns is None:
            self._columns = {c: self.table[c].to_numpy() for c in self.table.columns}
        return self._columns

    def _bytes(self, i: int, which: str) -> bytes:
        row = self._row(i)
        try:
            if self.format == "soundingearth-hub":
                return self._hub_bytes(row, which)
            if self.format == "webdataset":
                return self._tar_bytes(row, which)
            return Path(row[f"{which}_file"]).read_bytes()
        except (OSError, KeyError, tarfile.TarError) as err:
            raise BadSampleError(f"cannot read the {which} of sample {row['key']}: {err}") from None

    def _cached(self, key: tuple, load: Any, *, file: bool = False) -> Any:
        """``load()``, kept in a small per-process LRU cache: decoded row groups, or (``file``)
        open files, closed when dropped."""
        if self._pid != os.getpid():  # a DataLoader worker: its own handles
            self._cache, self._files, self._pid = OrderedDict(), OrderedDict(), os.getpid()
        cache = self._files if file else self._cache
        if key not in cache:
            cache[key] = load()
            while len(cache) > _CACHE:
                old = cache.popitem(last=False)[1]
                if hasattr(old, "close"):
                    old.close()
        cache.move_to_end(key)
        return cache[key]

    def _hub_bytes(self, row: Any, which: str) -> bytes:
        import pyarrow.parquet as pq

        column = row[f"{which}_column"]
        path, group = row["file"], int(row["row_group"])

        def load() -> list[Any]:  # the one column asked for: chips never read the audio bytes
            parquet = self._cached(("parquet", path), lambda: pq.ParquetFile(path), file=True)
            # no reader threads: a loader runs one per worker, and the thread pool cost 4x the
            # read of a small row group; Python values once per row group (``.as_py()`` per
            # row cost ~15 µs a sample)
            table = parquet.read_row_group(group, columns=[column], use_threads=False)
            return table.column(0).to_pylist()

        value = self._cached(("rg", path, group, column), load)[int(row["row"])]
        data = value.get("bytes") if isinstance(value, dict) else value
        if data is None and isinstance(value, dict) and value.get("path"):
            data = (Path(path).parent / value["path"]).read_bytes()
        if not data:
            raise KeyError(f"no bytes in column {column!r}")
        return data

    def _tar_bytes(self, row: Any, which: str) -> bytes:
        # files kept open across samples (closed when the cache drops them): one open per shard
        offset, size = row.get(f"{which}_offset", -1), row.get(f"{which}_size", -1)
        if offset >= 0:  # an uncompressed shard: the member's bytes where the index found them
            f = self._cached(("file", row["file"]), lambda: open(row["file"], "rb"), file=True)  # noqa: SIM115
            f.seek(int(offset))
            data = f.read(int(size))
            if len(data) != size:
                raise KeyError(f"{row[f'{which}_member']} (the shard is shorter than its index)")
            return data
        tar = self._cached(("tar", row["file"]), lambda: tarfile.open(row["file"]), file=True)  # noqa: SIM115
        member = tar.extractfile(row[f"{which}_member"])
        if member is None:
            raise KeyError(row[f"{which}_member"])
        return member.read()


def _decode_image(data: bytes, what: str) -> np.ndarray:
    """``(3, H, W)`` uint8 RGB pixels of an image file's bytes.

    JPEG (nearly every pair dataset's overhead images) goes to libjpeg-turbo through simplejpeg:
    bitwise PIL's pixels (RGB and grey, baseline and progressive; tested) in ~0.11 ms instead of
    ~0.24 ms for a 128 px tile, most of a training chip's cost (torchvision's ``decode_jpeg``,
    deprecated since 0.29, took ~0.15 ms). Anything else (CMYK JPEGs too, whose conversion to RGB
    rounds otherwise than PIL's), or bytes simplejpeg refuses, go through PIL. Either way the
    array is a ``(3, H, W)`` view of pixel-interleaved memory.
    """
    from PIL import Image, UnidentifiedImageError

    if data[:3] == b"\xff\xd8\xff":
        import simplejpeg

        try:  # CMYK/YCCK: PIL's own conversion to RGB rounds otherwise
            if simplejpeg.decode_jpeg_header(data)[2] in ("YCbCr", "Gray", "RGB"):
                return simplejpeg.decode_jpeg(data, colorspace="RGB").transpose(2, 0, 1)
        except ValueError:
            pass  # PIL decides: the same pixels, or its error message
    try:
        with Image.open(io.BytesIO(data)) as im:
            return np.asarray(im if im.mode == "RGB" else im.convert("RGB")).transpose(2, 0, 1)
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise BadSampleError(f"cannot decode the {what}: {err}") from None


def _decode_audio(data: bytes, what: str) -> tuple[np.ndarray, int]:
    import soundfile as sf

    try:
        samples, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, ValueError) as err:
        raise BadSampleError(f"cannot decode the {what}: {err}") from None
    if not len(samples):
        raise BadSampleError(f"the {what} holds no samples")
    return samples.mean(axis=1), int(rate)


# -- reading each layout's index ------------------------------------------------------------------
def open_pairs(
    path: str | os.PathLike[str],
    *,
    format: str | None = None,
    kind: str | None = None,
    gsd: float | None = None,
) -> Pairs:
    """Index a pair dataset (see the module docstring for the layouts).

    Args:
        path: the dataset (a folder, a parquet/CSV table, a metadata.csv or a .tar shard).
        format: force a layout (one of :data:`FORMATS`); default: detected.
        kind: the other modality, ``"ground"`` or ``"audio"``; default: what the layout holds
            (SoundingEarth: audio; WebDataset: ground photos; a manifest: by its files' suffix).
        gsd: ground metres per pixel of the overhead images, when known.

    Raises:
        InputDataError: an unknown format or kind, missing columns, coordinates out of range,
            or no sample at all.

    Example: see the module docstring.
    """
    path = Path(path).expanduser()
    fmt = format or detect_format(path)
    if fmt not in FORMATS:
        raise InputDataError(f"unknown pair format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if gsd is not None and not (gsd > 0 and np.isfinite(gsd)):
        raise InputDataError(f"gsd must be positive metres per pixel; got {gsd!r}")
    reader = {
        "soundingearth-hub": _index_hub,
        "soundingearth": _index_soundingearth,
        "webdataset": _index_webdataset,
        "manifest": _index_manifest,
    }[fmt]
    table, found_kind = reader(path)
    kind = kind or found_kind
    if kind not in ("ground", "audio"):
        raise InputDataError(f"kind must be 'ground' or 'audio'; got {kind!r}")
    table = _check_coordinates(table, path)
    if table.empty:
        raise InputDataError(f"pair dataset {path} holds no sample")
    log.info("pairs %s (%s, %s): %d samples", path, fmt, kind, len(table))
    return Pairs(path, fmt, kind, table.reset_index(drop=True), gsd)


def _need(columns: Sequence[str], have: Any, where: Path) -> None:
    missing = [c for c in columns if c not in have]
    if missing:
        raise InputDataError(f"{where} lacks the column(s) {missing}; it has {list(have)}")


def _check_coordinates(table: pd.DataFrame, where: Path) -> pd.DataFrame:
    """Drop (and count) samples without valid coordinates."""
    lon = pd.to_numeric(table["longitude"], errors="coerce")
    lat = pd.to_numeric(table["latitude"], errors="coerce")
    ok = lon.between(-180, 180) & lat.between(-90, 90)
    if not ok.all():
        log.warning(
            "pairs %s: %d sample(s) without valid longitude/latitude skipped", where, (~ok).sum()
        )
    out = table[ok].copy()
    out["longitude"], out["latitude"] = lon[ok].astype(float), lat[ok].astype(float)
    out["key"] = out["key"].astype(str)
    return out


def _index_hub(path: Path) -> tuple[pd.DataFrame, str]:
    import pyarrow.parquet as pq

    files = [path] if path.is_file() else sorted(path.rglob("*.parquet"))
    parts, kind = [], "audio"
    for f in files:
        meta = pq.ParquetFile(f)
        names = meta.schema_arrow.names
        _need(("latitude", "longitude"), names, f)
        sat = next((c for c in _HUB_IMAGE if c in names), None)
        if sat is None:
            raise InputDataError(f"{f} has no overhead image column (one of {_HUB_IMAGE})")
        item = next((c for c in (*_HUB_AUDIO, *_HUB_PHOTO) if c in names), None)
        if item is None:
            raise InputDataError(f"{f} has neither an audio nor a ground photo column")
        kind = "audio" if item in _HUB_AUDIO else "ground"
        keys = [c for c in ("sample_id", "key", "__key__") if c in names][:1]
        cols = ["latitude", "longitude", *keys, *(["split"] if "split" in names else [])]
        for g in range(meta.num_row_groups):
            t = meta.read_row_group(g, columns=cols).to_pandas()
            t["file"], t["row_group"], t["row"] = str(f), g, np.arange(len(t))
            if keys:
                t["key"] = t[keys[0]].astype(str)
            else:
                t["key"] = [f"{f.stem}:{g}:{r}" for r in range(len(t))]
            if "split" not in t:
                t["split"] = _split_of(str(f.relative_to(path.parent if path.is_file() else path)))
            t["sat_column"], t["item_column"] = sat, item
            parts.append(t)
    if not parts:
        raise InputDataError(f"{path} holds no parquet file")
    return pd.concat(parts, ignore_index=True), kind


def _index_soundingearth(path: Path) -> tuple[pd.DataFrame, str]:
    csv = path if path.is_file() else path / "metadata.csv"
    root = csv.parent
    t = pd.read_csv(csv)
    _need(("key", "long_key", "mp3name", "latitude", "longitude"), t.columns, csv)
    t["key"] = t["key"].astype(str)
    t["sat_file"] = [str(root / "images" / f"{k}.jpg") for k in t["key"]]
    t["item_file"] = [
        str(root / "raw_audio" / str(lk) / str(m))
        for lk, m in zip(t["long_key"], t["mp3name"], strict=True)
    ]
    if "split" not in t:
        t["split"] = None
    return t, "audio"


def _index_webdataset(path: Path) -> tuple[pd.DataFrame, str]:
    shards = [path] if path.is_file() else sorted(path.rglob("*.tar"))
    rows = []
    for shard in shards:
        split = _split_of(shard.name) or _split_of(shard.parent.name)
        members: dict[str, dict[str, Any]] = {}
        with tarfile.open(shard) as tar:
            plain = _is_plain_tar(shard)  # member offsets are file offsets: read them directly
            for m in tar:  # headers only; metadata.json is small and read here
                if not m.isfile():
                    continue
                key, _, suffix = m.name.partition(".")
                entry = members.setdefault(key, {})
                entry[suffix] = m.name
                if plain and not m.issparse():
                    entry[suffix + ":at"] = (m.offset_data, m.size)
                if suffix == "metadata.json":
                    data = tar.extractfile(m)
                    try:
                        entry["meta"] = json.loads(data.read()) if data else {}
                    except ValueError:
                        entry["meta"] = {}
        for key, entry in members.items():
            meta = entry.get("meta", {})
            sat = "overhead.jpg" if "overhead.jpg" in entry else "overhead.png"
            item = "groundlevel.jpg" if "groundlevel.jpg" in entry else "groundlevel.png"
            sat_at, item_at = entry.get(sat + ":at", (-1, -1)), entry.get(item + ":at", (-1, -1))
            rows.append({
                "key": key,
                "longitude": meta.get("longitude"),
                "latitude": meta.get("latitude"),
                "date": meta.get("date_taken"),
                "split": meta.get("split", split),
                "file": str(shard),
                "sat_member": entry.get(sat),
                "item_member": entry.get(item),
                "sat_offset": sat_at[0],
                "sat_size": sat_at[1],
                "item_offset": item_at[0],
                "item_size": item_at[1],
            })  # fmt: skip
    if not rows:
        raise InputDataError(f"{path} holds no .tar shard with samples")
    t = pd.DataFrame(rows)
    complete = t["sat_member"].notna() & t["item_member"].notna()
    if not complete.all():
        log.warning("pairs %s: %d sample(s) without both images skipped", path, (~complete).sum())
    return t[complete], "ground"


def _is_plain_tar(path: Path) -> bool:
    """Whether a shard is an uncompressed tar (not gzip, bzip2, xz or zstd)."""
    with open(path, "rb") as f:
        head = f.read(6)
    return not head.startswith((b"\x1f\x8b", b"BZh", b"\xfd7zXZ", b"\x28\xb5\x2f\xfd"))


def _index_manifest(path: Path) -> tuple[pd.DataFrame, str]:
    if path.is_dir():
        found = sorted(path.rglob("*.parquet")) or sorted(path.glob("*.csv"))
        if not found:
            raise InputDataError(f"{path} holds no pairs manifest (.parquet or .csv)")
        path = found[0]
    if path.suffix == ".csv":
        t = pd.read_csv(path)
    else:
        import geopandas as gpd

        try:
            t = gpd.read_parquet(path) if path.suffix == ".parquet" else gpd.read_file(path)
        except ValueError:  # a plain parquet table, no geometry
            t = pd.read_parquet(path)
    _need(("sat_path", "path"), t.columns, path)
    if "geometry" in t and t["geometry"].notna().any():
        points = t.geometry if t.crs is None else t.geometry.to_crs("EPSG:4326")
        t = pd.DataFrame(t.drop(columns="geometry"))
        t["longitude"], t["latitude"] = points.x.to_numpy(), points.y.to_numpy()
    _need(("longitude", "latitude"), t.columns, path)
    root = path.parent
    t["sat_file"] = [str(root / p) for p in t["sat_path"]]
    t["item_file"] = [str(root / p) for p in t["path"]]
    if "key" not in t:
        t["key"] = [str(i) for i in range(len(t))]
    if "split" not in t:
        t["split"] = None
    audio = t["path"].astype(str).str.lower().str.endswith(_AUDIO_SUFFIXES)
    return pd.DataFrame(t), "audio" if audio.mean() > 0.5 else "ground"


class PairSampler:
    """Indices of a :class:`Pairs` in an order that streams: by row group / shard, shuffled.

    With ``shuffle`` the groups (parquet row groups, tar shards) come in a random order and the
    rows within each group in a random order too, so a worker reads each group once an epoch
    (random access by sample would decode a row group per sample). Draws depend on
    ``(seed, epoch)`` only; call :meth:`set_epoch`.

    Example:
        >>> import pandas as pd
        >>> t = pd.DataFrame({"key": list("abcd"), "file": ["x", "x", "y", "y"]})
        >>> pairs = Pairs(Path("."), "webdataset", "ground", t)
        >>> sorted(PairSampler(pairs, shuffle=True, seed=1))
        [0, 1, 2, 3]
    """

    def __init__(self, pairs: Pairs, *, shuffle: bool = False, seed: int = 0):
        t = pairs.table
        group = t["file"].astype(str) if "file" in t else pd.Series(np.zeros(len(t), int))
        if "row_group" in t:
            group = group + ":" + t["row_group"].astype(str)
        self._groups = [np.asarray(v) for v in group.groupby(group, sort=False).indices.values()]
        self.shuffle, self.seed, self.epoch = shuffle, seed, 0

    def set_epoch(self, epoch: int) -> None:
        """The epoch the shuffle belongs to."""
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(len(self._groups)) if self.shuffle else range(len(self._groups))
        for g in order:
            rows = self._groups[g]
            yield from (rng.permutation(rows) if self.shuffle else rows).tolist()

    def __len__(self) -> int:
        return sum(len(g) for g in self._groups)


class PairChips(Augmented):
    """The overhead half of a :class:`Pairs` as satellite chips, like
    :class:`~geobind.data.datasets.PairedChips` for scenes.

    Each overhead image is centre-cropped to the model's footprint (``chip_size`` pixels at
    ``model_gsd`` metres: :func:`~geobind.georef.footprint_pixels` of the dataset's ``gsd``; the
    whole image, cropped square, when either is unknown or the image is smaller) and goes
    through the chip steps of :mod:`geobind.data.chips` (the encoder's ``scale``, resizing to
    ``out_size``). Items are ``{"image": (3, out_size, out_size) float32 tensor, "index": i}``;
    :meth:`raw` gives the crop's stored pixels, which anchors embed with
    :meth:`~geobind.models.encoders.SatEncoder.embed_pixels`. With ``augment``, the crop moves by
    up to ``jitter_px`` pixels (inside the image) and the chip is flipped, turned and jittered in
    gain and haze as :mod:`geobind.data.augment` says.

    Example:
        >>> import numpy as np, pandas as pd
        >>> from PIL import Image
        >>> root = getfixture("tmp_path")
        >>> Image.fromarray(np.full((100, 100, 3), 200, np.uint8)).save(root / "sat.png")
        >>> pd.DataFrame({"sat_path": ["sat.png"], "path": ["a.wav"], "longitude": [0.0],
        ...               "latitude": [0.0]}).to_csv(root / "pairs.csv")
        >>> chips = PairChips(open_pairs(root / "pairs.csv", gsd=0.5), chip_size=32, model_gsd=1.0)
        >>> chips.raw(0)[0].shape, chips[0]["image"].shape  # 64 px of 0.5 m, resized to 32
        ((3, 64, 64), torch.Size([3, 32, 32]))
    """

    def __init__(
        self,
        pairs: Pairs,
        *,
        chip_size: int,
        model_gsd: float | None = None,
        out_size: int | None = None,
        bands: Sequence[int] = (1, 2, 3),
        scale: str | float = "auto",
        augment: bool = False,
        jitter_px: int = 3,
        gain_jitter: float = 0.0,
        haze_jitter: float = 0.0,
        seed: int = 0,
    ) -> None:
        from geobind.georef import footprint_pixels

        if max(bands) > 3:
            from geobind.errors import BandsError

            raise BandsError(bands, 3, where="an RGB overhead image")
        self.pairs = pairs
        self.crop = footprint_pixels(chip_size, model_gsd, pairs.gsd) if pairs.gsd else None
        self.out_size = int(out_size or chip_size)
        self.bands, self.scale = [int(b) for b in bands], scale
        self.set_augmentation(
            augment=augment,
            jitter_px=jitter_px,
            gain_jitter=gain_jitter,
            haze_jitter=haze_jitter,
            seed=seed,
        )
        self.points = pairs.points()

    def __len__(self) -> int:
        return len(self.pairs)

    def _crop(self, image: np.ndarray, shift: tuple[int, int] = (0, 0)) -> np.ndarray:
        h, w = image.shape[1:]
        side = min(h, w) if self.crop is None else min(self.crop, h, w)
        top, left = (h - side) // 2, (w - side) // 2
        dx = min(max(int(shift[0]), -left), w - side - left)  # builtins: np.clip's overhead
        dy = min(max(-int(shift[1]), -top), h - side - top)  # dy is north: rows go south
        return image[:, top + dy : top + dy + side, left + dx : left + dx + side]

    def read_order(self) -> list[int]:
        """Indices in the order that streams the files (:class:`PairSampler`, unshuffled)."""
        return list(PairSampler(self.pairs))

    def raw(self, i: int) -> tuple[np.ndarray, None]:
        """The un-augmented crop of sample ``i``: ``((bands, c, c) uint8, None)`` (no nodata)."""
        return self._crop(self.pairs.overhead(i))[[b - 1 for b in self.bands]], None

    def __getitem__(self, i: int) -> dict[str, Any]:
        """Chip ``i`` as ``{"image": (bands, out_size, out_size) float32 tensor, "index": i}``
        (a batch of one of :meth:`__getitems__`: one path for both)."""
        return self.__getitems__([i])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        """Chips ``indices`` at once, each bitwise what it is in any other batch (one by one too).

        A DataLoader fetches a batch through this: each image is decoded and cropped, then the
        chips of one crop size are scaled, resized and augmented as one planar batch
        (:func:`~geobind.data.augment.apply_batch`): ~25 µs a 64 px chip instead of ~40 µs of
        per-chip numpy calls. The draws stay per chip (``(seed, epoch, index)``), so a chip
        does not depend on the batch it comes in. The chips are views of one batch array.

        Example:
            >>> import numpy as np, pandas as pd, torch
            >>> from PIL import Image
            >>> root = getfixture("tmp_path")
            >>> for n in range(3):
            ...     px = np.random.default_rng(n).integers(0, 255, (40, 40, 3), np.uint8)
            ...     Image.fromarray(px).save(root / f"{n}.png")
            >>> pd.DataFrame({"sat_path": [f"{n}.png" for n in range(3)], "path": "a.wav",
            ...               "longitude": 0.0, "latitude": 0.0}).to_csv(root / "pairs.csv")
            >>> chips = PairChips(open_pairs(root / "pairs.csv"), chip_size=32, augment=True,
            ...                   gain_jitter=0.1)
            >>> batch = chips.__getitems__([2, 0])
            >>> [b["index"] for b in batch], torch.equal(batch[0]["image"], chips[2]["image"])
            ([2, 0], True)
        """
        import torch

        from geobind.data import augment as _augment
        from geobind.data.chips import resize, to_unit

        indices = [int(i) for i in indices]
        draws = [_augment.draw_for(self, i) if self.augment else None for i in indices]
        bands = [b - 1 for b in self.bands]
        every_band = bands == list(range(3))
        crops = []
        for i, d in zip(indices, draws, strict=True):
            crop = self._crop(self.pairs.overhead(i), d.shift if d else (0, 0))
            crops.append(crop if every_band else crop[bands])  # a view until stacked
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for k, crop in enumerate(crops):
            by_shape.setdefault(crop.shape, []).append(k)
        images: list[Any] = [None] * len(indices)
        for shape, ks in by_shape.items():  # one batch per crop size (one, unless sizes vary)
            # planar: decoders give pixel-interleaved views, and the batch steps below ran ~3x
            # slower on (B, H, W, bands) memory than on (B, bands, H, W)
            pixels = np.empty((len(ks), *shape), crops[ks[0]].dtype)
            np.stack([crops[k] for k in ks], out=pixels)
            batch = resize(to_unit(pixels, None, self.scale), self.out_size)
            if self.augment:
                batch = _augment.apply_batch(batch, [draws[k] for k in ks])
            tensor = torch.from_numpy(np.ascontiguousarray(batch))
            for j, k in enumerate(ks):
                images[k] = tensor[j]
        return [{"image": x, "index": i} for x, i in zip(images, indices, strict=True)]
