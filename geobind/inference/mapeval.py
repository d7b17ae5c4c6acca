"""How well maps find what a text asks for: text-query AUROC against a world's land-cover truth.

Used to measure a satellite encoder, or another sensor's (the coarse multispectral stage), on a
held-out scene, beside the untrained encoder.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import torch

from geobind.training.evaluate import text_classes

__all__ = ["map_auroc"]


def map_auroc(
    model,
    world: str | Path,
    *,
    scene: str | None = None,
    encoder: str = "sat",
    stride: int | None = None,
    baselines: bool = True,
) -> dict[str, Any]:
    """Text-query maps over a world scene against its land-cover truth: AUROC per class.

    Each class's prompts (the world's caption phrases) are scored over the grid of ``scene``
    (default: the held-out scene, else the first) as ``encoder`` sees it: ``"sat"`` reads the
    scene, ``"coarse"`` its coarse multispectral twin. A cell's truth is the land cover at its
    chip's centre; a class's AUROC says how well its map ranks that class's cells above the
    others. With ``baselines`` the same maps from the untrained encoder (CLIP's image tower, for
    ``"coarse"`` widened to its bands) are scored beside.

    Example:
        >>> import geobind
        >>> from geobind.synth import generate_world
        >>> world = generate_world(getfixture("tmp_path") / "w", "tiny")
        >>> out = map_auroc(geobind.load("tiny"), world.root, baselines=False)
        >>> out["scene"], sorted(out["model"])[:3]
        ('alpha', ['beach', 'cells', 'farmland'])
    """
    import rioxarray

    import geobind
    from geobind.georef import GeoBox
    from geobind.inference.raster import embed_raster, scores
    from geobind.synth import load_world
    from geobind.training.metrics import auroc

    model = model if isinstance(model, torch.nn.Module) else geobind.load(model, device="auto")
    world = load_world(world)
    infos = world.info["scenes"]
    info = next((s for s in infos if s["name"] == scene), None) if scene else None
    info = info or next((s for s in infos if s.get("heldout")), infos[0])
    path = world.coarse_scenes[info["name"]] if encoder != "sat" else world.scenes[info["name"]]
    raster = rioxarray.open_rasterio(path)
    with rioxarray.open_rasterio(world.landcover[info["name"]]) as lc:
        truth, truth_box = lc.values[0], GeoBox.from_dataarray(lc)
    names = [c["name"] for c in world.info["classes"]]
    text = text_classes(model, names).numpy()
    encoders = {"model": (model, encoder)}
    if baselines:
        untrained = copy.deepcopy(model)
        fresh = copy.deepcopy(untrained["sat"])
        if encoder == "sat":
            fresh.visual.load_state_dict(model["ground"].visual.state_dict())
        else:
            from geobind.models.multispectral import widen_patch_embedding

            fresh.visual = widen_patch_embedding(model["ground"].visual, len(model[encoder].bands))
            fresh.bands, fresh.mean, fresh.std = (
                model[encoder].bands, model[encoder].mean, model[encoder].std
            )  # fmt: skip
        untrained.add_encoder("untrained", fresh, kind="sat", section=model.config[encoder])
        encoders["untrained"] = (untrained, "untrained")
    out: dict[str, Any] = {"scene": info["name"], "encoder": encoder, "source": str(path)}
    for run, (m, name) in encoders.items():
        grid = embed_raster(raster, m, encoder=name, stride=stride)
        ys, xs = np.meshgrid(grid["y"].values, grid["x"].values, indexing="ij")
        cols, rows = ~truth_box.transform * (xs.ravel(), ys.ravel())
        rows = np.clip(rows.astype(int), 0, truth.shape[0] - 1)
        cols = np.clip(cols.astype(int), 0, truth.shape[1] - 1)
        cell_truth = truth[rows, cols]
        sim = scores(grid, text, names, True).values.reshape(len(names), -1)
        valid = np.isfinite(sim).all(0) & (cell_truth > 0)
        out[run] = {
            n: round(auroc(sim[k][valid], cell_truth[valid] == k + 1), 4)
            for k, n in enumerate(names)
            if 0 < (cell_truth[valid] == k + 1).sum() < valid.sum()
        }
        out[run]["mean"] = round(float(np.mean(list(out[run].values()))), 4)
        out[run]["cells"] = int(valid.sum())
    return out
