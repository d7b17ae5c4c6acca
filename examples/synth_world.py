"""Generate the tiny synthetic world, then look at it the way an analyst would.

Opens a scene with rioxarray, reads the photo manifest with GeoPandas (reprojected to the scene's
CRS), and saves a map of the scene with its photo points coloured by land cover.

    python examples/synth_world.py [OUT]
"""

from __future__ import annotations

import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import rioxarray
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure

from geobind.synth import CLASS_COLORS, CLASSES, generate_world


def main(out: Path) -> Path:
    world = generate_world(out / "world", "tiny", overwrite=True)
    scene = rioxarray.open_rasterio(world.scenes["alpha"], masked=True)
    photos = gpd.read_parquet(world.ground_manifest)
    photos = photos[photos["scene"] == "alpha"].to_crs(scene.rio.crs)
    print(f"scene alpha: {scene.rio.crs}, {scene.rio.resolution()} m pixels, {scene.shape}")
    print(photos.groupby(["split", "landcover"]).size().unstack(fill_value=0))

    fig = Figure(figsize=(7, 6), layout="constrained")
    ax = fig.add_subplot()
    rgb = scene.sel(band=[1, 2, 3]).fillna(0).astype("uint8")
    rgb.plot.imshow(ax=ax, rgb="band")
    cmap = ListedColormap(np.array(CLASS_COLORS) / 255)
    photos.plot(ax=ax, column="landcover_id", cmap=cmap, vmin=0.5, vmax=len(CLASSES) + 0.5,
                markersize=18, edgecolor="white", linewidth=0.5)  # fmt: skip
    ax.set_title("scene alpha with ground-photo locations (colour = land cover)")
    path = out / "synth_world.png"
    fig.savefig(path, dpi=90)
    print(f"map written to {path}")
    return path


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "."))
