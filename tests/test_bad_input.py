"""Bad and odd input (issue 10): a correct result or a GeoBindError that says what to do.

Each test name is cited by docs/bad-input.md; tests/test_docs_cases.py checks the citations.
"""

from __future__ import annotations

import struct
import tracemalloc

import numpy as np
import pytest
import rioxarray  # noqa: F401 - registers .rio
import soundfile as sf
import xarray as xr

import geobind
from geobind.errors import CRSError, GeoBindError, InputDataError
from geobind.models.preprocess import load_audio, load_audio_windows


@pytest.fixture(scope="module")
def tiny():
    return geobind.load("tiny", device="cpu")


def _raster(data, crs=32633, res=1.0):
    bands, h, w = data.shape
    r = xr.DataArray(
        data,
        dims=("band", "y", "x"),
        coords={
            "band": np.arange(1, bands + 1),
            "y": 900 - (np.arange(h) + 0.5) * res,
            "x": 100 + (np.arange(w) + 0.5) * res,
        },
    )
    return r.rio.write_crs(crs) if crs else r


def _embed(raster, tiny, **kw):
    return raster.geobind.embed(tiny, chip_size=16, stride=16, progress=False, **kw)


# -- rasters -------------------------------------------------------------------------------------
@pytest.mark.parametrize("content", [b"", b"not a tiff at all\n" * 10])
def test_raster_zero_byte_or_not_a_tiff(tmp_path, tiny, content):
    import geopandas as gpd
    from shapely.geometry import Point

    path = tmp_path / "scene.tif"
    path.write_bytes(content)
    gdf = gpd.GeoDataFrame(geometry=[Point(0, 0)], crs=32633)
    with pytest.raises(GeoBindError, match=r"scene\.tif"):
        gdf.geobind.embed(path, model=tiny)


def test_raster_truncated_tiff(tmp_path, tiny):
    good = _raster(np.random.default_rng(0).integers(1, 255, (3, 256, 256), dtype=np.uint8))
    path = tmp_path / "scene.tif"
    good.rio.to_raster(path, tiled=True, blockxsize=64, blockysize=64, compress="deflate")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # header fine, later tiles missing
    import geopandas as gpd
    from shapely.geometry import Point

    gdf = gpd.GeoDataFrame(geometry=[Point(100 + 250, 900 - 250)], crs=32633)
    with pytest.raises(GeoBindError, match=r"scene\.tif"):
        gdf.geobind.embed(path, model=tiny, chip_size=16)


def test_raster_without_crs(tiny):
    raster = _raster(np.ones((3, 32, 32), np.uint8), crs=None)
    with pytest.raises(CRSError, match="no CRS"):
        raster.geobind.embed(tiny)
    grid = _embed(raster, tiny)  # an explicit chip size needs no GSD: a grid without CRS
    assert grid.rio.crs is None and grid.shape == (64, 2, 2)


def test_raster_rotated_transform(tiny):
    from affine import Affine

    raster = _raster(np.ones((3, 32, 32), np.uint8))
    raster = raster.rio.write_transform(Affine(1, 0.2, 100, 0.2, -1, 900))
    with pytest.raises(InputDataError, match="rotated"):
        raster.geobind.embed(tiny, chip_size=16)


@pytest.mark.parametrize("bands", [1, 2])
def test_raster_one_or_two_bands_need_a_band_choice(tiny, bands):
    raster = _raster(np.ones((bands, 32, 32), np.uint8))
    with pytest.raises(InputDataError, match="band"):
        _embed(raster, tiny)
    assert not np.isnan(_embed(raster, tiny, bands=[1, bands, 1]).values).any()


def test_raster_many_bands_and_reflectance_dtypes(tiny):
    rng = np.random.default_rng(1)
    u16 = _raster(rng.integers(1, 10_000, (6, 32, 32), dtype=np.uint16))
    f32 = _raster((u16.values / 10_000).astype(np.float32))
    np.testing.assert_allclose(_embed(u16, tiny).values, _embed(f32, tiny).values, atol=1e-5)


@pytest.mark.parametrize("nodata", [np.nan, -99999.0])
def test_raster_nan_and_negative_nodata(tiny, nodata):
    data = np.full((3, 32, 32), 0.5, np.float32)
    data[:, :16, :16] = nodata
    raster = _raster(data).rio.write_nodata(nodata)
    grid = _embed(raster, tiny)
    assert np.isnan(grid.values).all(axis=0).tolist() == [[True, False], [False, False]]


def test_raster_all_nodata(tiny):
    raster = _raster(np.zeros((3, 32, 32), np.uint8)).rio.write_nodata(0)
    grid = _embed(raster, tiny)
    assert np.isnan(grid.values).all()
    assert np.isnan(grid.geobind.similarity("a lake", model=tiny).values).all()
    assert len(grid.geobind.top_k("a lake", k=3, model=tiny)) == 0


def test_raster_smaller_than_a_chip(tiny):
    with pytest.raises(InputDataError, match="smaller than one chip"):
        _embed(_raster(np.ones((3, 8, 40), np.uint8)), tiny)


def test_raster_geographic_crs(tiny):
    raster = _raster(np.ones((3, 64, 64), np.uint8), crs=4326, res=1e-5)
    with pytest.raises(CRSError, match="geographic"):
        raster.geobind.embed(tiny)
    assert raster.geobind.embed(tiny, gsd=1.1, progress=False).attrs["chip_size"] == 29


# -- audio ---------------------------------------------------------------------------------------
def test_audio_not_audio(tmp_path):
    path = tmp_path / "clip.wav"
    path.write_text("this is not a sound\n" * 100)
    with pytest.raises(InputDataError, match="cannot read audio"):
        load_audio(path, 48000)


def _wav_header(n_bytes_claimed: int, rate: int = 16000) -> bytes:
    return (
        b"RIFF"
        + struct.pack("<I", 36 + n_bytes_claimed)
        + b"WAVE"
        + b"fmt "
        + struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16)
        + b"data"
        + struct.pack("<I", n_bytes_claimed)
    )


def test_audio_header_only_wav(tmp_path):
    path = tmp_path / "header.wav"
    path.write_bytes(_wav_header(0))
    with pytest.raises(InputDataError, match=r"empty|cannot read"):
        load_audio(path, 48000)


def test_audio_truncated_wav(tmp_path, tiny):
    path = tmp_path / "truncated.wav"
    samples = (np.sin(np.arange(16000) / 5) * 8000).astype("<i2")
    path.write_bytes(_wav_header(16000 * 2 * 10) + samples.tobytes())  # claims 10 s, holds 1 s
    got = load_audio(path, 16000)
    assert 0 < len(got) <= 16000
    vec = tiny["audio"].embed(str(path))
    assert vec.shape == (1, 64) and np.isfinite(vec.numpy()).all()


def test_audio_silence_stereo_and_rates(tmp_path, tiny):
    clips = []
    for rate, channels in [(8000, 1), (96000, 2), (44100, 2)]:
        path = tmp_path / f"clip_{rate}.wav"
        sf.write(path, np.zeros((rate, channels), np.float32), rate)
        clips.append(str(path))
    vecs = tiny["audio"].embed(clips)
    assert vecs.shape == (3, 64) and np.isfinite(vecs.numpy()).all()


def test_audio_longer_than_ten_minutes_is_windowed_in_bounded_memory(tmp_path, tiny):
    path = tmp_path / "long.wav"
    rate = 8000
    with sf.SoundFile(path, "w", rate, 1, subtype="PCM_16") as f:
        for _ in range(11):  # 11 minutes, written a minute at a time
            f.write((np.random.default_rng(0).standard_normal(rate * 60) * 0.1).astype(np.float32))
    window = int(tiny["audio"].features.nb_max_samples)
    tracemalloc.start()
    windows = load_audio_windows(path, 48000, window, 8)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    whole = 11 * 60 * 48000 * 4  # the clip at 48 kHz in float32: 127 MB
    assert len(windows) == 8 and all(len(w) == window for w in windows)
    assert peak < whole / 10, f"peak {peak / 1e6:.1f} MB"
    assert tiny["audio"].embed(str(path)).shape == (1, 64)
