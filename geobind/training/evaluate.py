"""The paper's evaluation, with baselines computed in the same run.

Retrieval (R@1/5/10/100, median rank, gallery size) for sat→ground, ground→sat, sat→audio and
audio→sat on held-out points; zero-shot land-cover classification from text prompts; and emergent
links never trained directly: text→audio (zero-shot audio classification) and audio→ground (does the
nearest photo to a sound show the same land cover?). Baselines: random embeddings, and the untrained
satellite encoder (CLIP-initialised, i.e. CLIP's image tower applied to chips).
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from geobind.errors import InputDataError
from geobind.training.metrics import random_embeddings, retrieval_metrics, zero_shot_classification

__all__ = ["evaluate", "format_metrics"]

_KS = (1, 5, 10, 100)


def _class_prompts(names: list[str]) -> dict[str, list[str]]:
    """Prompts per class: the synthetic world's caption phrases when the names match, else the
    name."""
    from geobind.synth.photos import CLASS_PHRASES
    from geobind.synth.scene import CLASSES

    phrases = {CLASSES[k - 1]: list(v) for k, v in CLASS_PHRASES.items()}
    return {n: phrases.get(n, [f"a photo of {n}", n]) for n in names}


def _text_classes(model, names: list[str]) -> torch.Tensor:
    prompts = _class_prompts(names)
    vecs = [model["text"].embed(prompts[n]).mean(0) for n in names]
    return torch.nn.functional.normalize(torch.stack(vecs), dim=-1)


#: Draws of random embeddings the chance baseline averages: one draw's R@10 over a 234-item
#: gallery moved between 9 and 11 hits (0.038-0.047) from run to run.
RANDOM_DRAWS = 32


def _retrieval(a, b, baselines: dict[str, tuple[Any, Any]]) -> dict[str, Any]:
    out = {"model": retrieval_metrics(a, b, ks=_KS)}
    for name, (qa, qb) in baselines.items():
        out[name] = retrieval_metrics(qa, qb, ks=_KS)
    return out


def _chance(fixed: torch.Tensor, *, random_queries: bool, seed: int) -> dict[str, Any]:
    """Retrieval metrics of random unit vectors against the paired ``fixed`` embeddings (random
    queries, or a random gallery), averaged over :data:`RANDOM_DRAWS` draws."""
    runs = []
    for draw in range(RANDOM_DRAWS):
        rnd = random_embeddings(len(fixed), fixed.shape[1], seed=seed * 1000 + draw)
        rnd = torch.from_numpy(rnd)
        pair = (rnd, fixed) if random_queries else (fixed, rnd)
        runs.append(retrieval_metrics(*pair, ks=_KS))
    mean = {k: v if isinstance(v, int) else float(np.mean([r[k] for r in runs]))
            for k, v in runs[0].items()}  # fmt: skip
    return {**mean, "draws": RANDOM_DRAWS}


def evaluate(
    model,
    data: str | Path,
    *,
    split: str = "test",
    batch_size: int = 64,
    baselines: bool = True,
    progress: bool = False,
) -> dict[str, Any]:
    """Evaluate ``model`` on the ``split`` points of a synthetic world folder ``data``.

    Returns a nested dict of metrics; see :func:`format_metrics` for a readable table.

    Example:
        >>> import geobind
        >>> from geobind.synth import generate_world
        >>> world = generate_world(getfixture("tmp_path") / "w", "tiny")
        >>> m = evaluate(geobind.load("tiny"), world.root)
        >>> sorted(m["sat→ground"])
        ['model', 'random', 'untrained']
    """
    import geobind
    from geobind.data.manifest import read_manifest
    from geobind.synth import load_world
    from geobind.training.stages import _chips, anchor_embeddings

    start = time.perf_counter()
    model = model if isinstance(model, torch.nn.Module) else geobind.load(model, device="auto")
    world = load_world(data)
    scenes = [str(p) for p in world.scenes.values()]
    names = [c["name"] for c in world.info["classes"]]
    untrained = copy.deepcopy(model["sat"])
    untrained.visual.load_state_dict(model["ground"].visual.state_dict())
    out: dict[str, Any] = {
        "split": split,
        "model": model.name,
        "stages": [s["stage"] for s in model.config.get("stages", [])],
    }

    def points(manifest: Path):
        gdf = read_manifest(manifest)
        gdf = gdf[gdf["split"] == split]
        if len(gdf) == 0:
            raise InputDataError(f"{manifest} has no {split!r} points")
        chips = _chips(scenes, gdf, model)
        return chips, chips.points

    g_chips, g_pts = points(world.ground_manifest)
    sat_g = anchor_embeddings(model["sat"], g_chips, batch_size)
    ground = model["ground"].embed(list(g_pts["path"]), batch_size=batch_size, progress=progress)
    extra = {}
    if baselines:
        extra = {"untrained": anchor_embeddings(untrained, g_chips, batch_size)}
    out["sat→ground"] = _retrieval(sat_g, ground, {k: (v, ground) for k, v in extra.items()})
    out["ground→sat"] = _retrieval(ground, sat_g, {k: (ground, v) for k, v in extra.items()})
    if baselines:
        out["sat→ground"]["random"] = _chance(ground, random_queries=True, seed=1)
        out["ground→sat"]["random"] = _chance(ground, random_queries=False, seed=1)

    text = _text_classes(model, names)
    labels_g = g_pts["landcover_id"].to_numpy().astype(int) - 1
    zs = {"model": zero_shot_classification(sat_g, text, labels_g, class_names=names)}
    if baselines:
        zs["untrained"] = zero_shot_classification(
            extra["untrained"], text, labels_g, class_names=names
        )
    out["zero-shot land cover (sat, text prompts)"] = zs

    if "audio" in model.modalities and world.audio_manifest.is_file():
        a_chips, a_pts = points(world.audio_manifest)
        sat_a = anchor_embeddings(model["sat"], a_chips, batch_size)
        audio = model["audio"].embed(list(a_pts["path"]), progress=progress)
        out["sat→audio"] = _retrieval(sat_a, audio, {})
        out["audio→sat"] = _retrieval(audio, sat_a, {})
        if baselines:  # random audio embeddings
            out["sat→audio"]["random"] = _chance(sat_a, random_queries=False, seed=2)
            out["audio→sat"]["random"] = _chance(sat_a, random_queries=True, seed=2)
        labels_a = a_pts["landcover_id"].to_numpy().astype(int) - 1
        out["text→audio (zero-shot audio land cover)"] = {
            "model": zero_shot_classification(audio, text, labels_a, class_names=names)
        }
        nearest = (audio @ ground.T).argmax(1).numpy()
        match = float(np.mean(labels_g[nearest] == labels_a))
        chance = float(
            sum(np.mean(labels_a == c) * np.mean(labels_g == c) for c in range(len(names)))
        )
        out["audio→ground (same land cover at top-1)"] = {
            "model": {"match_rate": match, "queries": len(audio), "gallery_size": len(ground)},
            "chance": {"match_rate": chance},
        }
    out["seconds"] = round(time.perf_counter() - start, 1)
    return out


def format_metrics(metrics: dict[str, Any]) -> str:
    """A plain-text table of :func:`evaluate`'s result, baselines beside the model.

    Example:
        >>> print(format_metrics({"sat→ground": {"model": {"R@10": 0.5, "median_rank": 3.0,
        ...        "gallery_size": 40}}}).splitlines()[1])
        sat→ground            model      R@10=0.500  median_rank=3  (gallery 40)
    """
    lines = [f"{'task':<22}{'run':<11}metrics"]
    for task, runs in metrics.items():
        if not isinstance(runs, dict):
            continue
        for run, values in runs.items():
            if not isinstance(values, dict):
                continue
            parts = []
            for key in (
                "R@1",
                "R@5",
                "R@10",
                "R@100",
                "median_rank",
                "accuracy",
                "macro_f1",
                "majority_rate",
                "match_rate",
            ):
                if key in values:
                    v = values[key]
                    parts.append(f"{key}={v:.0f}" if key == "median_rank" else f"{key}={v:.3f}")
            size = values.get("gallery_size")
            if size is not None:
                parts.append(f"(gallery {size})")
            lines.append(f"{task[:21]:<22}{run:<11}" + "  ".join(parts))
    return "\n".join(lines)
