"""The synthetic world as a pair dataset, in any of the layouts :mod:`geobind.data.pairs` reads.

Each manifest point of the world's projected scenes at the requested ground resolution becomes
one sample: an overhead image of ``size`` pixels centred on the point (cut from the scene's
stored pixels by the centring rule chips use, :func:`geobind.georef.chip_origins`), the photo or
recording taken there, its longitude/latitude and split. So a model trained or evaluated on the
exported pairs sees the same chips as on the scenes (tested).

Example:
    >>> from geobind.synth import generate_world
    >>> tmp = getfixture("tmp_path")
    >>> world = generate_world(tmp / "w", "tiny")
    >>> out = export_pairs(world, tmp / "pairs", layout="manifest", size=64)
    >>> from geobind.data.pairs import open_pairs
    >>> pairs = open_pairs(out, gsd=1.0)
    >>> pairs.format, pairs.kind, pairs.overhead(0).shape
    ('manifest', 'ground', (3, 64, 64))
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

import numpy as np

from geobind.errors import InputDataError, OutputExistsError

__all__ = ["LAYOUTS", "export_pairs"]

LAYOUTS = ("manifest", "webdataset", "soundingearth-hub", "soundingearth")


def _encode(image: np.ndarray, fmt: str) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image.transpose(1, 2, 0))).save(out, format=fmt)
    return out.getvalue()


def _samples(world: Any, kind: str, size: int, gsd: float):
    """``(key, row, overhead (3, size, size) uint8)`` for each point of a scene at ``gsd``."""
    import rasterio
    from rasterio.windows import Window

    from geobind.data.manifest import read_manifest
    from geobind.georef import SAME_GSD, GeoBox

    manifest = read_manifest(world.ground_manifest if kind == "ground" else world.audio_manifest)
    for name, path in world.scenes.items():
        with rasterio.open(path) as src:
            box = GeoBox.from_rasterio(src)
            if box.gsd is None or abs(box.gsd / gsd - 1) > SAME_GSD:
                continue  # another ground resolution: a dataset has one
            rows = manifest[manifest["scene"] == name]
            pts = rows.geometry.to_crs(box.crs)
            r0, c0 = box.chip_origins(pts.x.to_numpy(), pts.y.to_numpy(), size)
            inside = box.inside(r0, c0, size)
            for k in np.flatnonzero(inside):
                window = Window(int(c0[k]), int(r0[k]), size, size)
                yield (
                    f"{name}-{rows.index[k]:06d}",
                    rows.iloc[k],
                    src.read([1, 2, 3], window=window),
                )


def export_pairs(
    world: Any,
    out: str | Path,
    *,
    layout: str = "manifest",
    kind: str | None = None,
    size: int = 128,
    gsd: float = 1.0,
    overwrite: bool = False,
) -> Path:
    """Write the world's points of scenes at ``gsd`` metres as a pair dataset; returns ``out``.

    Args:
        world: a :class:`~geobind.synth.World`.
        out: the dataset folder to create.
        layout: one of :data:`LAYOUTS`: ``manifest`` (PNG overheads, CSV), ``webdataset``
            (``.tar`` shards per split with JPEGs), ``soundingearth-hub`` (parquet per split,
            JPEG and WAV bytes in ``{bytes, path}`` structs), ``soundingearth`` (metadata.csv,
            JPEGs, MP3s).
        kind: ``"ground"`` (photos) or ``"audio"``; default: what the layout pairs (the
            SoundingEarth layouts hold audio, WebDataset photos, the manifest photos).
        size: side of each overhead image in pixels.
        gsd: the ground resolution of the scenes to export (metres per pixel).
        overwrite: replace an existing ``out``.

    Raises:
        InputDataError: an unknown layout, or a layout that cannot hold ``kind``.
        OutputExistsError: ``out`` exists and is not empty.
    """
    import shutil

    import pandas as pd

    if layout not in LAYOUTS:
        raise InputDataError(f"unknown pair layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    kind = kind or ("audio" if layout.startswith("soundingearth") else "ground")
    if (layout.startswith("soundingearth") and kind != "audio") or (
        layout == "webdataset" and kind != "ground"
    ):
        raise InputDataError(f"the {layout} layout pairs overhead images with the other modality")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise OutputExistsError(f"{out} exists and is not empty; pass overwrite=True")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    records = []
    shards: dict[str, tarfile.TarFile] = {}
    try:
        for key, row, image in _samples(world, kind, size, gsd):
            lon, lat = float(row.geometry.x), float(row.geometry.y)
            item = Path(row["path"])
            split = row["split"]
            if layout == "manifest":
                (out / "overhead").mkdir(exist_ok=True)
                (out / "overhead" / f"{key}.png").write_bytes(_encode(image, "PNG"))
                records.append({"key": key, "sat_path": f"overhead/{key}.png", "path": str(item),
                                "split": split, "longitude": lon, "latitude": lat})  # fmt: skip
            elif layout == "webdataset":
                if split not in shards:
                    shards[split] = tarfile.open(out / f"{split}-000000.tar", "w")  # noqa: SIM115
                meta = {"latitude": lat, "longitude": lon, "date_taken": "2026-01-01 00:00:00.0"}
                for suffix, data in (
                    ("overhead.jpg", _encode(image, "JPEG")),
                    ("groundlevel.jpg", item.read_bytes()),
                    ("metadata.json", json.dumps(meta).encode()),
                ):
                    info = tarfile.TarInfo(f"{key}.{suffix}")
                    info.size = len(data)
                    shards[split].addfile(info, io.BytesIO(data))
            elif layout == "soundingearth-hub":
                records.append({
                    "sample_id": f"aporee-{key}",
                    "googleearth_image": {"bytes": _encode(image, "JPEG"), "path": f"{key}.jpg"},
                    "audio": {"bytes": item.read_bytes(), "path": item.name},
                    "latitude": np.float32(lat), "longitude": np.float32(lon), "split": split,
                })  # fmt: skip
            else:  # soundingearth, original release: MP3 audio
                import soundfile as sf

                (out / "images").mkdir(exist_ok=True)
                (out / "images" / f"{key}.jpg").write_bytes(_encode(image, "JPEG"))
                folder = out / "raw_audio" / key
                folder.mkdir(parents=True)
                samples, rate = sf.read(item, dtype="float32")
                sf.write(folder / f"{key}.mp3", samples, rate, format="MP3")
                records.append({"key": key, "long_key": key, "mp3name": f"{key}.mp3",
                                "mp3samplerate": rate, "latitude": lat, "longitude": lon,
                                "title": row.get("caption", ""), "split": split})  # fmt: skip
    finally:
        for shard in shards.values():
            shard.close()
    if layout == "manifest":
        pd.DataFrame(records).to_csv(out / "pairs.csv", index=False)
    elif layout == "soundingearth-hub":
        table = pd.DataFrame(records)
        for split, part in table.groupby("split"):
            part.drop(columns="split").to_parquet(out / f"{split}-00000-of-00001.parquet",
                                                  row_group_size=16)  # fmt: skip
    elif layout == "soundingearth":
        pd.DataFrame(records).to_csv(out / "metadata.csv", index=False)
    return out
