"""``geobind demo``: the whole GeoBind chain on the synthetic world, offline, on a laptop's CPU.

Steps, each cached under the output folder and keyed on its inputs (its settings, the keys of
the steps it reads, the geobind version), so a second run reuses what is finished and ``fresh``
recomputes everything:

1. ``world``: generate the synthetic world (scenes, land-cover truth, photos, audio).
2. ``clip``: pretrain the small CLIP stand-in on the world's photo–caption pairs (the offline
   substitute for real CLIP weights, labelled as such in the model's metadata).
3. ``stage1``: bind the satellite encoder to the frozen CLIP photo embeddings.
4. ``stage2``: bind the audio encoder to the frozen satellite encoder.
5. ``eval``: retrieval, zero-shot and emergent-link metrics with baselines (held-out points).
6. ``embed``: embed the held-out scene into a Zarr store.
7. ``maps``: text and audio queries over the store: PNG maps, COGs, the AUROC of each map
   against the land-cover truth of the query's class, and ``maps/explore.html``, the interactive
   map of every query (:func:`geobind.explore`'s page; it works offline).

Then ``report.html`` gathers the metrics with their baselines, the maps, the time per step and
what to run next (:mod:`geobind.report`). Each training stage shows one progress bar (epoch,
loss, validation R@10); Lightning's own messages show only with ``verbose``.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from geobind._version import __version__
from geobind.errors import InputDataError

__all__ = ["DEMO_PRESETS", "DemoResult", "run_demo"]

#: Demo sizes: the world, the training budget of each stage, the map grid and the queries
#: (query text → the land-cover class whose truth scores its map).
DEMO_PRESETS: dict[str, dict[str, Any]] = {
    "demo": {
        "world": "demo",
        "model": "demo",
        # epochs, not minutes, decide the result (the same on any machine); the time caps, about
        # twice a quiet 2-core machine's time, only bound a much slower one. Both image towers
        # train on half their patch tokens (FLIP's patch dropout): a step costs ~0.6 of a full one
        "clip": {
            "epochs": 5,
            "batch_size": 128,
            "lr": 1e-3,
            "max_minutes": 4,
            "patch_dropout": 0.5,
        },
        # all 12 stage-1 epochs run (validation recall on 484 points is too noisy to stop early);
        # radiometric jitter because the held-out scene differs from the training scenes in gain
        # and haze (10 epochs without patch dropout: sat→ground R@10 0.068 with it, 0.058
        # without); chips load inline: a loader process on 2 cores slowed the steps more than it
        # saved
        "stage1": {
            "epochs": 12,
            "batch_size": 64,
            "lr": 1e-3,
            "max_minutes": 6,
            "patience": 12,
            "patch_dropout": 0.5,
            "gain_jitter": 0.15,
            "haze_jitter": 0.25,
        },
        "stage2": {"epochs": 6, "batch_size": 64, "lr": 1e-3, "max_minutes": 2},
        "stride": 16,
        "queries": {
            "busy highway": "highway",
            "lake shore": "water",
            "dense forest": "forest",
            "farm fields": "farmland",
        },
    },
    "tiny": {  # for tests and a first look: a minute, numbers near chance
        "world": "tiny",
        "model": "tiny",
        "clip": {"epochs": 1, "batch_size": 64, "lr": 1e-3},
        "stage1": {"epochs": 1, "batch_size": 64, "lr": 5e-4},
        "stage2": {"epochs": 1, "batch_size": 32, "lr": 5e-4},
        "stride": 16,
        "queries": {"busy highway": "highway", "lake shore": "water", "dense forest": "forest"},
    },
}

_STEPS = ("world", "clip", "stage1", "stage2", "eval", "embed", "maps")


@dataclass
class DemoResult:
    """What the demo produced: paths, metrics, per-query AUROCs and step timings."""

    out: Path
    model: Path
    store: Path
    scene: str
    metrics: dict[str, Any]
    queries: list[dict[str, Any]]
    seconds: dict[str, float] = field(default_factory=dict)
    reused: list[str] = field(default_factory=list)
    #: seconds each step took when it was last computed (a reused step's earlier run)
    recorded_seconds: dict[str, float] = field(default_factory=dict)
    preset: str | None = None
    explore: Path | None = None
    report: Path | None = None


def _key(*parts: Any) -> str:
    text = json.dumps([__version__, *parts], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "query"


class _Steps:
    """Runs steps whose outputs are missing or whose key changed; records keys and timings."""

    def __init__(self, out: Path, fresh: bool, echo: Callable[[str], None]):
        self.path = out / "demo-steps.json"
        self.done = {} if fresh or not self.path.exists() else json.loads(self.path.read_text())
        self.echo, self.seconds, self.reused = echo, {}, []
        self.keys: dict[str, str] = {}

    def run(self, name: str, key: str, outputs: list[Path], fn: Callable[[], Any]) -> None:
        self.keys[name] = key
        n = _STEPS.index(name) + 1
        if self.done.get(name, {}).get("key") == key and all(p.exists() for p in outputs):
            self.reused.append(name)
            self.seconds[name] = 0.0
            self.echo(f"[{n}/{len(_STEPS)}] {name}: up to date, reused")
            return
        self.echo(f"[{n}/{len(_STEPS)}] {name} …")
        for p in outputs:  # never a half-old, half-new step
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        start = time.perf_counter()
        fn()
        self.seconds[name] = time.perf_counter() - start
        self.done[name] = {"key": key, "seconds": round(self.seconds[name], 1)}
        self.path.write_text(json.dumps(self.done, indent=2) + "\n")
        self.echo(f"      {name} done in {self.seconds[name]:.0f} s")


def run_demo(
    out: str | Path = "geobind-demo",
    *,
    preset: str = "demo",
    fresh: bool = False,
    seed: int = 0,
    progress: bool = False,
    verbose: bool = False,
    echo: Callable[[str], None] = print,
) -> DemoResult:
    """Run the demo chain into ``out`` (see the module docstring); returns what it produced.

    Args:
        out: the folder for everything the demo makes.
        preset: ``demo`` or ``tiny`` (see :data:`DEMO_PRESETS`).
        fresh: recompute every step.
        seed: seed for the world and the training.
        progress: progress bars inside the steps other than training (each training stage
            shows its own bar).
        verbose: show Lightning's own messages and warnings.
        echo: where step lines go.

    Example:
        >>> result = run_demo(getfixture("tmp_path") / "demo", preset="tiny", echo=lambda s: None)
        >>> [q["kind"] for q in result.queries], result.store.name, result.report.name
        (['text', 'text', 'text', 'audio'], 'scene.zarr', 'report.html')
    """
    import warnings

    from geobind.errors import CRSMismatchWarning
    from geobind.training.progress import lightning_messages

    with warnings.catch_warnings(), lightning_messages(verbose=verbose):
        # the world's manifests are EPSG:4326 and its scenes UTM by design: no news to the user
        warnings.simplefilter("ignore", CRSMismatchWarning)
        return _run(out, preset, fresh, seed, progress, verbose, echo)


def _run(
    out, preset: str, fresh: bool, seed: int, progress: bool, verbose: bool, echo
) -> DemoResult:
    import warnings

    if preset not in DEMO_PRESETS:
        raise InputDataError(f"unknown demo preset {preset!r}; choose {', '.join(DEMO_PRESETS)}")
    cfg = DEMO_PRESETS[preset]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    steps = _Steps(out, fresh, echo)
    paths = {
        "world": out / "world",
        "clip": out / "clip",
        "stage1": out / "stage1",
        "model": out / "model",
        "eval": out / "eval.json",
        "store": out / "scene.zarr",
        "maps": out / "maps",
    }

    from geobind.synth import generate_world, load_world

    steps.run(
        "world",
        _key("world", cfg["world"], seed),
        [paths["world"]],
        lambda: generate_world(paths["world"], cfg["world"], seed=seed, progress=progress),
    )
    world = load_world(paths["world"])

    def train(stage: str, source: str | Path, target: Path) -> None:
        from geobind.training.config import TrainConfig
        from geobind.training.stages import pretrain_clip, train_stage1, train_stage2

        fn = {"clip": pretrain_clip, "stage1": train_stage1, "stage2": train_stage2}[stage]
        # one bar per stage (epoch, loss, val R@10), whatever `progress` says about other steps
        options = {"seed": seed, "progress": True, "overwrite": True, **cfg[stage]}
        with warnings.catch_warnings():
            if not verbose:
                warnings.simplefilter("ignore")  # Lightning's advice on workers and logging
            fn(TrainConfig(model=str(source), world=str(world.root), out=str(target), **options))
        shutil.rmtree(target.with_name(target.name + ".train"), ignore_errors=True)

    upstream = steps.keys["world"]
    for stage, source, target in (
        ("clip", cfg["model"], paths["clip"]),
        ("stage1", paths["clip"], paths["stage1"]),
        ("stage2", paths["stage1"], paths["model"]),
    ):
        upstream = _key(stage, cfg[stage], cfg["model"], upstream)
        steps.run(stage, upstream, [target], lambda s=stage, a=source, b=target: train(s, a, b))

    def evaluate_model() -> None:
        from geobind.training.evaluate import evaluate

        metrics = evaluate(str(paths["model"]), world.root, progress=progress)
        paths["eval"].write_text(json.dumps(metrics, indent=2, ensure_ascii=False) + "\n")

    steps.run("eval", _key("eval", upstream), [paths["eval"]], evaluate_model)
    metrics = json.loads(paths["eval"].read_text())

    scenes = world.info["scenes"]
    scene = next((s for s in scenes if s.get("heldout")), scenes[-1])
    scene_path = world.root / scene["path"]

    def embed() -> None:
        from geobind.inference.store import embed_to_zarr

        embed_to_zarr(
            [scene_path],
            paths["store"],
            model=str(paths["model"]),
            stride=cfg["stride"],
            progress=progress,
        )

    embed_key = _key("embed", cfg["stride"], scene["name"], upstream)
    steps.run("embed", embed_key, [paths["store"]], embed)

    queries_file = paths["maps"] / "queries.json"
    explore = paths["maps"] / "explore.html"
    steps.run(
        "maps",
        _key("maps", cfg["queries"], embed_key),
        [paths["maps"], queries_file, explore],
        lambda: _maps(paths, world, scene, cfg["queries"], queries_file),
    )
    from geobind.report import write_report

    result = DemoResult(
        out=out,
        model=paths["model"],
        store=paths["store"],
        scene=scene["name"],
        metrics=metrics,
        queries=json.loads(queries_file.read_text()),
        seconds=steps.seconds,
        reused=steps.reused,
        recorded_seconds={k: v.get("seconds") for k, v in steps.done.items()},
        preset=preset,
        explore=explore,
    )
    result.report = write_report(result)
    return result


def _audio_query(world: Any, scene: str) -> tuple[Path, str]:
    """A held-out clip recorded in ``scene`` (test split) and its land-cover class."""
    from geobind.data.manifest import read_manifest

    clips = read_manifest(world.audio_manifest)
    pool = clips[(clips["scene"] == scene) & (clips["split"] == "test")]
    pool = pool if len(pool) else clips[clips["split"] == "test"]
    if not len(pool):
        raise InputDataError("the world has no test-split audio clip to query with")
    counts = pool["landcover"].value_counts()
    row = pool[pool["landcover"] == counts.index[0]].iloc[0]  # the scene's commonest sound
    return world.root / row["path"], str(row["landcover"])


def _maps(paths: dict[str, Path], world: Any, scene: dict, queries: dict, record: Path) -> None:
    """Similarity maps over the store: PNG (over the scene) and COG, and AUROC vs the truth;
    every map as a layer of one interactive page (offline: no base map)."""
    import matplotlib.pyplot as plt
    import numpy as np
    import rioxarray
    import xarray as xr

    from geobind.inference.context import resolve_model
    from geobind.inference.outputs import write_html
    from geobind.inference.raster import top_k
    from geobind.inference.webmap import MapLayer, scene_rgb
    from geobind.training.metrics import auroc

    paths["maps"].mkdir(parents=True, exist_ok=True)
    model = resolve_model(str(paths["model"]))
    grid = xr.open_zarr(paths["store"], group=scene["name"])["embedding"]
    raster = rioxarray.open_rasterio(world.root / scene["path"])
    truth = rioxarray.open_rasterio(world.root / scene["landcover"]).values[0]
    chip, stride = int(grid.attrs["chip_size"]), int(grid.attrs["stride"])
    rows = np.arange(grid.sizes["y"]) * stride + chip // 2
    cols = np.arange(grid.sizes["x"]) * stride + chip // 2
    cell_truth = truth[np.ix_(rows, cols)]  # the land cover at each chip's centre
    ids = {c["name"]: c["id"] for c in world.info["classes"]}
    clip, clip_class = _audio_query(world, scene["name"])
    wanted = [(q, cls, q) for q, cls in queries.items()] + [
        (clip, clip_class, f"audio {clip.name}")
    ]
    results, layers = [], []
    for query, cls, label in wanted:
        sim = raster.geobind.similarity(query, model=model, grid=grid)
        sim = sim.compute() if sim.chunks else sim
        slug = _slug(label)
        sim.rio.to_raster(paths["maps"] / f"{slug}.tif", driver="COG")
        fig = raster.geobind.plot(query, model=model, grid=grid)
        score = auroc(sim.values.ravel(), (cell_truth == ids[cls]).ravel())
        best = top_k(sim, 10, sim.rio.transform(recalc=True), sim.rio.crs)
        layers.append(MapLayer.from_dataarray(f"{label} (AUROC {score:.3f})", sim, best))
        fig.axes[0].set_title(f"{label}\nAUROC vs {cls} truth: {score:.3f}")
        fig.savefig(paths["maps"] / f"{slug}.png", dpi=110)
        plt.close(fig)
        results.append(
            {
                "query": label,
                "kind": "audio" if isinstance(query, Path) else "text",
                "class": cls,
                "auroc": round(float(score), 4),
                "png": str(paths["maps"] / f"{slug}.png"),
                "cog": str(paths["maps"] / f"{slug}.tif"),
            }
        )
    bands = model.config["sat"].get("bands", [1, 2, 3])
    write_html(paths["maps"] / "explore.html", layers, rgb=scene_rgb(raster, bands), tiles=None)
    record.write_text(json.dumps(results, indent=2) + "\n")


def summary(result: DemoResult) -> str:
    """A short text summary: outputs, headline metrics, per-query AUROCs and next commands.

    Example:
        >>> r = DemoResult(Path("d"), Path("d/model"), Path("d/scene.zarr"), "gamma", {}, [])
        >>> "geobind query" in summary(r)
        True
    """
    from geobind.training.registry import list_stages

    lines = [f"geobind demo: outputs in {result.out}/"]
    if result.report is not None:
        lines.append(f"  report      {result.report}  (open it in a browser)")
    lines += [
        f"  model       {result.model}  (stage 1 + stage 2 on the CLIP stand-in)",
        f"  metrics     {result.out / 'eval.json'}",
        f"  embeddings  {result.store}  (held-out scene {result.scene!r})",
        f"  maps        {result.out / 'maps'}/*.png, *.tif, explore.html (interactive)",
    ]
    m = result.metrics
    headline = []
    for link in ("sat→ground", "sat→audio"):
        if link in m:
            row = m[link]
            base = f"untrained {row['untrained']['R@10']:.3f}, " if "untrained" in row else ""
            headline.append(
                f"  {link:<11} R@10 {row['model']['R@10']:.3f}  ({base}random "
                f"{row['random']['R@10']:.3f}; gallery {row['model'].get('gallery_size', '?')})"
            )
    zs = m.get("zero-shot land cover (sat, text prompts)", {})
    if zs:
        headline.append(
            f"  zero-shot   accuracy {zs['model']['accuracy']:.3f}  macro-F1 "
            f"{zs['model']['macro_f1']:.3f}"
        )
    if headline:
        lines += ["headline metrics (held-out test points):", *headline]
    if result.queries:
        lines.append("similarity maps (AUROC against the land-cover truth of the query's class):")
        lines += [f"  {q['query']:<32} {q['class']:<10} {q['auroc']:.3f}" for q in result.queries]
    timing = ", ".join(f"{k} {v:.0f}s" for k, v in result.seconds.items())
    lines += [
        f"steps: {timing}" + (f"  (reused: {', '.join(result.reused)})" if result.reused else ""),
        "binding stages (geobind.training.registry): "
        + "; ".join(f"{st.name} {st.trained} ← {st.anchor}" for st in list_stages()),
        "next:",
        "  jupyter lab examples/quickstart.ipynb",
        f"  geobind train stage3 --model {result.model} --world {result.out / 'world'} "
        f"--out {result.out / 'stage3'}  (a coarse 10 m RGB+NIR sensor)",
        f'  geobind query {result.store} "a sandy beach" -o beach.html --tiles none',
        f'  geobind query {result.store} "a sandy beach" -o beach.tif --png',
        f"  geobind embed YOUR.tif -o yours.zarr --model {result.model}",
    ]
    return "\n".join(lines)
