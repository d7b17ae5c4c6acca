"""The third binding stage: a coarse multispectral sensor bound to the frozen satellite encoder."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rioxarray

import geobind
from geobind.errors import ModelMismatchError
from geobind.georef import GeoBox
from geobind.inference.mapeval import map_auroc
from geobind.training.config import TrainConfig
from geobind.training.stages import train_stage


@pytest.fixture(scope="module")
def stage3(tiny_world, tmp_path_factory):
    root = tmp_path_factory.mktemp("stage3")
    first = train_stage(
        "stage1",
        TrainConfig(model="tiny", world=str(tiny_world.root), out=str(root / "s1"), epochs=1),
    )
    cfg = TrainConfig(model=str(first), world=str(tiny_world.root), out=str(root / "s3"),
                      epochs=2, batch_size=16)  # fmt: skip
    return first, train_stage("stage3", cfg)


def test_the_world_has_a_coarse_multispectral_twin_of_each_scene(tiny_world):
    for name, path in tiny_world.coarse_scenes.items():
        box, fine = GeoBox.from_path(path), GeoBox.from_path(tiny_world.scenes[name])
        assert box.gsd == pytest.approx(10.0, rel=1e-3)
        assert box.crs == fine.crs
        twin = rioxarray.open_rasterio(path)
        assert twin.sizes["band"] == 4 and twin.dtype == np.uint8
        assert list(twin.attrs["long_name"]) == ["red", "green", "blue", "nir"]
        # the same truth, seen coarsely: the twin's mean red follows the scene's
        scene = rioxarray.open_rasterio(tiny_world.scenes[name]).values[0].astype(float)
        assert abs(float(twin.values[0][twin.values[0] > 0].mean()) - scene[scene > 0].mean()) < 20


def test_stage3_binds_the_coarse_sensor_and_leaves_stages_1_2_bitwise_equal(stage3, tiny_world):
    first, third = stage3
    before, after = geobind.load(first), geobind.load(third)
    assert after.modalities == [*before.modalities, "coarse"]
    for name in before.modalities:
        assert after.encoder_sha256(name) == before.encoder_sha256(name), name
    record = json.loads((third / "geobind.json").read_text())["stages"][-1]
    assert (record["stage"], record["trained"], record["anchor"]) == ("stage3", "coarse", "sat")
    assert record["data"]["train"] > 10 and record["data"]["source"] == "world coarse twins"
    assert set(record["frozen_sha256"]) == set(before.modalities)


def test_queries_run_over_the_coarse_imagery(stage3, tiny_world):
    _, third = stage3
    model = geobind.load(third)
    raster = rioxarray.open_rasterio(tiny_world.coarse_scenes["alpha"])
    grid = geobind.embed(raster, model, encoder="coarse", stride=2)
    assert grid.attrs["encoder"] == "coarse"
    assert grid.attrs["sat_sha256"] == model.encoder_sha256("coarse")
    sim = geobind.similarity(grid, "a forest", model=model)
    assert sim.shape == grid.shape[1:] and np.isfinite(sim.values).mean() > 0.8
    with pytest.raises(ModelMismatchError, match="coarse"):  # a model without that sensor
        geobind.similarity(grid, "a forest", model=geobind.load("tiny"))
    scores = map_auroc(model, tiny_world.root, scene="alpha", encoder="coarse", stride=2)
    assert scores["encoder"] == "coarse" and scores["model"]["cells"] > 50
    assert 0 <= scores["model"]["mean"] <= 1 and 0 <= scores["untrained"]["mean"] <= 1


def test_coarse_stage_pairs_your_own_scenes_like_the_world(stage3, tiny_world):
    """``--scenes`` + ``--coarse-scenes`` + ``--manifest`` give the chips the world path gives."""
    from geobind.errors import InputDataError
    from geobind.training.sources import paired_data

    model = geobind.load(stage3[1])
    world = paired_data(TrainConfig(world=str(tiny_world.root)), model, "coarse", "val")
    own = TrainConfig(
        scenes=[str(p) for p in tiny_world.scenes.values()],
        coarse_scenes=[str(p) for p in tiny_world.coarse_scenes.values()],
        manifest=str(tiny_world.ground_manifest),
    )
    with pytest.warns(geobind.errors.CRSMismatchWarning):  # the manifest is EPSG:4326
        mine = paired_data(own, model, "coarse", "val")
    assert len(mine.chips) == len(world.chips) > 0 and mine.record["source"] == "scenes"
    for i in (0, len(world.chips) - 1):
        np.testing.assert_array_equal(mine.chips.raw(i)[0], world.chips.raw(i)[0])
        np.testing.assert_array_equal(mine.items.raw(i)[0], world.items.raw(i)[0])
    with pytest.raises(InputDataError, match="--coarse-scenes"):
        paired_data(TrainConfig(scenes=own.scenes), model, "coarse", "val")
