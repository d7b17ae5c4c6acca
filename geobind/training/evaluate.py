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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from geobind.errors import InputDataError
from geobind.training.metrics import random_embeddings, retrieval_metrics, zero_shot_classification
from geobind.training.stages import anchor_embeddings

__all__ = ["evaluate", "format_metrics"]

_KS = (1, 5, 10, 100)


def _class_prompts(names: list[str]) -> dict[str, list[str]]:
    """Prompts per class: the synthetic world's caption phrases when the names match, else the
    name."""
    from geobind.synth.photos import CLASS_PHRASES
    from geobind.synth.scene import CLASSES

    phrases = {CLASSES[k - 1]: list(v) for k, v in CLASS_PHRASES.items()}
    return {n: phrases.get(n, [f"a photo of {n}", n]) for n in names}


def text_classes(model, names: list[str]) -> torch.Tensor:
    """One unit text vector per class: the mean of its prompts' embeddings (the synthetic world's
    caption phrases when the names are its classes, else ``"a photo of <name>"`` and the name).

    Example:
        >>> import geobind
        >>> text_classes(geobind.load("tiny"), ["water", "forest"]).shape
        torch.Size([2, 64])
    """
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
    data: str | Path | None = None,
    *,
    pairs: str | Path | None = None,
    pairs_format: str | None = None,
    pairs_gsd: float | None = None,
    scenes: Sequence[str | Path] = (),
    ground_manifest: str | Path | None = None,
    audio_manifest: str | Path | None = None,
    split: str = "test",
    batch_size: int = 64,
    baselines: bool = True,
    progress: bool = False,
) -> dict[str, Any]:
    """Evaluate ``model`` on the ``split`` samples of a world, scenes + manifests, or pairs.

    The paper's protocol: retrieval sat→ground and ground→sat (R@1/5/10/100), sat→audio and
    audio→sat, median rank and gallery size, beside the same-run baselines (random embeddings;
    the untrained, CLIP-initialised satellite encoder). With a synthetic world (``data``) also
    zero-shot land cover from text prompts and the emergent links (text→audio, audio→ground),
    which need its land-cover labels. A pair dataset gives the retrieval of its kind (ground
    photos or audio).

    Args:
        model: a loaded model, a model folder or a preset.
        data: a synthetic world folder.
        pairs: a pair dataset (:mod:`geobind.data.pairs`), with ``pairs_format`` and
            ``pairs_gsd`` as for training.
        scenes: GeoTIFF scenes, with ``ground_manifest`` and/or ``audio_manifest``.
        split: the split to evaluate.

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
    from geobind.training.config import TrainConfig
    from geobind.training.sources import paired_data

    start = time.perf_counter()
    model = model if isinstance(model, torch.nn.Module) else geobind.load(model, device="auto")
    given = [data is not None, pairs is not None, bool(scenes)]
    if sum(given) != 1:
        raise InputDataError(
            "evaluate one source: a synthetic world (data / --world), a pair dataset (--pairs) "
            "or GeoTIFF scenes with manifests (--scenes with --ground-manifest/--audio-manifest)"
        )
    sources, opened = {}, None  # opened: a pair dataset, indexed once
    if data is not None:
        from geobind.synth import load_world

        world = load_world(data)
        sources = {"ground": TrainConfig(world=str(data))}
        if world.audio_manifest.is_file():
            sources["audio"] = TrainConfig(world=str(data))
    elif pairs is not None:
        from geobind.data.pairs import open_pairs

        opened = open_pairs(pairs, format=pairs_format, gsd=pairs_gsd)
        sources = {opened.kind: TrainConfig(pairs=str(pairs), pairs_format=pairs_format,
                                            pairs_gsd=pairs_gsd)}  # fmt: skip
    else:
        for kind, manifest in (("ground", ground_manifest), ("audio", audio_manifest)):
            if manifest is not None:
                sources[kind] = TrainConfig(scenes=[str(p) for p in scenes], manifest=str(manifest))
        if not sources:
            raise InputDataError("--scenes needs --ground-manifest and/or --audio-manifest")
    untrained = copy.deepcopy(model["sat"])
    untrained.visual.load_state_dict(model["ground"].visual.state_dict())
    out: dict[str, Any] = {
        "split": split,
        "model": model.name,
        "stages": [s["stage"] for s in model.config.get("stages", [])],
        "source": {k: v.world or v.pairs or v.manifest for k, v in sources.items()},
    }
    embedded = {}
    for kind, cfg in sources.items():
        if kind == "audio" and "audio" not in model.modalities:
            continue
        pairs_ = paired_data(cfg, model, kind, split, pairs=opened)
        sat = anchor_embeddings(model["sat"], pairs_.chips, batch_size)
        other = model[kind].embed(pairs_.items, batch_size=batch_size, progress=progress)
        embedded[kind] = (pairs_, sat, other)
        extra = {}
        if baselines and kind == "ground":
            extra = {"untrained": anchor_embeddings(untrained, pairs_.chips, batch_size)}
        out[f"sat→{kind}"] = _retrieval(sat, other, {k: (v, other) for k, v in extra.items()})
        out[f"{kind}→sat"] = _retrieval(other, sat, {k: (other, v) for k, v in extra.items()})
        if baselines:
            seed = 1 if kind == "ground" else 2
            out[f"sat→{kind}"]["random"] = _chance(other, random_queries=True, seed=seed)
            out[f"{kind}→sat"]["random"] = _chance(other, random_queries=False, seed=seed)
        if extra:
            embedded["untrained"] = extra["untrained"]
    if data is not None and "ground" in embedded:
        _labelled(out, model, world, embedded, baselines)
    out["seconds"] = round(time.perf_counter() - start, 1)
    return out


def _labelled(out, model, world, embedded, baselines: bool) -> None:
    """Zero-shot land cover and the emergent links, where the world's labels say the truth."""
    names = [c["name"] for c in world.info["classes"]]
    text = text_classes(model, names)
    g_data, sat_g, ground = embedded["ground"]
    labels_g = g_data.points["landcover_id"].to_numpy().astype(int) - 1
    zs = {"model": zero_shot_classification(sat_g, text, labels_g, class_names=names)}
    if baselines:
        zs["untrained"] = zero_shot_classification(
            embedded["untrained"], text, labels_g, class_names=names
        )
    out["zero-shot land cover (sat, text prompts)"] = zs
    if "audio" not in embedded:
        return
    a_data, _, audio = embedded["audio"]
    labels_a = a_data.points["landcover_id"].to_numpy().astype(int) - 1
    out["text→audio (zero-shot audio land cover)"] = {
        "model": zero_shot_classification(audio, text, labels_a, class_names=names)
    }
    nearest = (audio @ ground.T).argmax(1).numpy()
    match = float(np.mean(labels_g[nearest] == labels_a))
    chance = float(sum(np.mean(labels_a == c) * np.mean(labels_g == c) for c in range(len(names))))
    out["audio→ground (same land cover at top-1)"] = {
        "model": {"match_rate": match, "queries": len(audio), "gallery_size": len(ground)},
        "chance": {"match_rate": chance},
    }


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
