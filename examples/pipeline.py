"""A GIS scripting pipeline: many GeoTIFFs → one Zarr store → a query → a GeoPackage of hits.

    python examples/pipeline.py OUT [--model geobind-demo/model] [--query "busy highway"] [TIF ...]

Without GeoTIFFs it uses the scenes of the tiny synthetic world (generated into OUT/world), and
without a model the untrained ``tiny`` preset (the hits then mean nothing, the plumbing is real).
Rerunning skips the scenes already embedded.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import geopandas as gpd
import pandas as pd

import geobind
from geobind.inference.store import query_store


def main(out: Path, tifs: list[Path], model: str = "tiny", query: str = "busy highway") -> Path:
    out.mkdir(parents=True, exist_ok=True)
    if not tifs:
        world = geobind.generate_world(out / "world", "tiny", overwrite=True)
        tifs = list(world.scenes.values())
    summary = geobind.embed_to_zarr(tifs, out / "scenes.zarr", model=model, progress=True)
    print(f"embedded {summary}")
    # one GeoPackage layer of the best cells per scene, each in its own CRS, then one in WGS 84
    files = query_store(out / "scenes.zarr", query, out / "hits.gpkg", model=model, top_k=20)
    hits = pd.concat(
        [gpd.read_file(f).assign(scene=f.stem.removeprefix("hits_")).to_crs(4326) for f in files]
    )
    hits = gpd.GeoDataFrame(hits.sort_values("score", ascending=False), crs=4326)
    target = out / "hits_wgs84.gpkg"
    hits.to_file(target, layer="hits", driver="GPKG")
    print(hits[["scene", "rank", "score"]].head(10).to_string(index=False))
    print(f"{len(hits)} hits for {query!r} in {target}")
    return target


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("tifs", type=Path, nargs="*")
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--query", default="busy highway")
    args = parser.parse_args()
    main(args.out, args.tifs, args.model, args.query)
