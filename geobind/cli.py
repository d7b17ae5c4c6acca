"""The ``geobind`` command line.

Every command is a thin shell over a library function. A :class:`~geobind.errors.GeoBindError`
prints one line (``error: …``) to stderr and exits with status 2; any other exception prints a short
message with a hint to rerun with ``--debug`` for the full traceback.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from geobind._version import __version__
from geobind.errors import GeoBindError

app = typer.Typer(
    name="geobind",
    help="Bind satellite imagery, ground photos, audio and text in one embedding space.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
_state = {"debug": False}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"geobind {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False,
) -> None:
    _state["debug"] = debug


@app.command()
def synth(
    out: Annotated[Path, typer.Argument(help="Folder to create for the world.")],
    preset: Annotated[str, typer.Option(help="World size: tiny, demo or bench.")] = "demo",
    seed: Annotated[int, typer.Option(help="Seed; the same seed gives byte-identical files.")] = 0,
    preview: Annotated[bool, typer.Option("--preview", help="Also write preview.png.")] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing OUT.")
    ] = False,
    workers: Annotated[
        int | None, typer.Option(help="Worker processes (default: all cores).", min=1)
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Generate the deterministic synthetic world (scenes, photos, audio, captions, manifests)."""
    from geobind.synth import generate_world

    start = time.perf_counter()
    world = generate_world(
        out,
        preset,
        seed=seed,
        preview=preview,
        overwrite=overwrite,
        progress=progress,
        workers=workers,
    )
    counts = world.info["counts"]
    typer.echo(
        f"world '{preset}' (seed {seed}) written to {world.root} in "
        f"{time.perf_counter() - start:.1f} s: {len(world.scenes)} scenes, "
        f"{counts['ground']['total']} ground photos, {counts['audio']['total']} audio clips"
    )
    for name, path in world.scenes.items():
        typer.echo(f"  scene {name}: {path}")
    typer.echo(f"  manifests: {world.ground_manifest}, {world.audio_manifest}")
    if preview:
        typer.echo(f"  preview: {world.root / 'preview.png'}")


@app.command("convert-clap")
def convert_clap(
    checkpoint: Annotated[
        Path, typer.Argument(help="LAION-CLAP checkpoint (.pt or .safetensors).")
    ],
    out: Annotated[Path, typer.Argument(help="Folder to write (config.json + model.safetensors).")],
    trust_pickle: Annotated[
        bool,
        typer.Option(
            "--trust-pickle",
            help="Allow unpickling a .pt file. Pickles can run code: only for files you trust.",
        ),
    ] = False,
) -> None:
    """Convert a LAION-CLAP checkpoint's audio tower to safetensors, once, for geobind.load."""
    from geobind.models.clap_convert import convert_laion_clap

    folder = convert_laion_clap(checkpoint, out, trust_pickle=trust_pickle)
    typer.echo(
        f"audio tower written to {folder}; use it with geobind.load({{'audio': '{folder}'}})"
    )


# Published models (geobind.models.registry): `geobind models` lists, `geobind pull` fetches.


def _first_sentence(text: str, width: int = 64) -> str:
    """The first sentence of ``text``, cut to ``width`` characters.

    Example:
        >>> _first_sentence("Sat2Cap (EarthVision 2024): a tower. More.")
        'Sat2Cap (EarthVision 2024): a tower.'
    """
    head = text.split(". ")[0].rstrip(".") + "."
    return head if len(head) <= width else head[: width - 1] + "…"


@app.command("models")
def models_cmd() -> None:
    """List the models geobind.load takes (presets, published models) and the registry's towers,
    with what the local Hugging Face cache holds of each."""
    from geobind.models.presets import list_presets
    from geobind.models.pretrained import hub_cache_dir
    from geobind.models.registry import list_registered, model_status

    names = [*list_presets(), *list_registered(loadable=True), *list_registered(loadable=False)]
    typer.echo(f"{'name':<22} {'kind':<6} {'status':<8} {'size':>8}  description")
    for status in map(model_status, names):
        typer.echo(
            f"{status.name:<22} {status.kind:<6} {status.state:<8} {status.size:>8}  "
            f"{_first_sentence(status.description)}"
        )
    typer.echo(
        f"cache: {hub_cache_dir().parent} (HF_HOME). `geobind pull NAME` fetches a missing model "
        "on a machine with internet"
    )


@app.command("pull")
def pull_cmd(
    name: Annotated[str, typer.Argument(help="A published model or tower (`geobind models`).")],
    to: Annotated[
        Path | None,
        typer.Option(
            "--to",
            help="Fill this folder instead of the local cache: copy it to the offline machine "
            "and set HF_HOME to it.",
        ),
    ] = None,
) -> None:
    """Download a published model's files into the Hugging Face cache (or --to DIR), on a
    machine with internet; offline machines then load it by name."""
    from geobind.models.registry import model_status, pull

    pull(name, to=to, progress=typer.echo)
    if to is None:
        size = model_status(name).size
        typer.echo(f"{name}: cached ({size}); load it with geobind.load({name!r})")
    else:
        typer.echo(
            f"{name}: files in {to}; copy that folder to the offline machine, set HF_HOME to it "
            f"there, and load with geobind.load({name!r})"
        )


def _read_config(ctx: typer.Context, param: object, value: Path | None) -> Path | None:
    """Eager ``--config``: a YAML/TOML file whose keys become the defaults of the other options."""
    if value is None:
        return value
    from geobind.errors import InputDataError

    if not value.is_file():
        raise InputDataError(f"config file {value} does not exist")
    text = value.read_text()
    if value.suffix.lower() == ".toml":
        import tomllib

        data = tomllib.loads(text)
    else:
        import yaml

        data = yaml.safe_load(text) or {}
    if not isinstance(data, dict):
        raise InputDataError(f"{value} must hold a mapping of option names to values")
    from geobind.training.config import TrainConfig

    checked = vars(TrainConfig.from_mapping(data))  # reports unknown keys, with the known ones
    given = {k.replace("-", "_") for k in data}
    ctx.default_map = {**(ctx.default_map or {}), **{k: checked[k] for k in given}}
    return value


def _train(stage: str, options: dict) -> None:
    from geobind.training.config import TrainConfig

    options.pop("config", None)
    verbose = options.pop("verbose", False)
    cfg = TrainConfig.from_mapping(options)
    from geobind.training import stages
    from geobind.training.progress import lightning_messages

    start = time.perf_counter()
    with lightning_messages(verbose=verbose):
        if stage == "pretrain-clip":
            folder = stages.pretrain_clip(cfg)
        else:
            folder = stages.train_stage(stage, cfg)
    import json

    meta = json.loads((folder / "geobind.json").read_text())
    record = meta["stages"][-1]
    typer.echo(f"{stage}: model written to {folder} in {time.perf_counter() - start:.0f} s")
    rows = [
        ("trained", record.get("trained")),
        ("train / val items", f"{record['data']['train']} / {record['data']['val']}"),
        ("epochs run", record.get("epochs_run")),
        ("best val R@10", record.get("best_val_R@10")),
        ("fit seconds", record.get("fit_seconds")),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        shown = f"{value:.4f}" if isinstance(value, float) else value
        typer.echo(f"  {key:<{width}}  {shown}")
    if record.get("stand_in"):
        typer.echo(f"  note: {record['note']}")


_VERBOSE_HELP = "Show Lightning's own messages (devices, checkpoints, stopping) and its warnings."


@app.command("eval")
def eval_(
    model: Annotated[str, typer.Argument(help="Model folder or preset.")],
    data: Annotated[
        Path | None, typer.Option("--data", "--world", help="Synthetic world folder.")
    ] = None,
    pairs: Annotated[
        Path | None, typer.Option(help="A pair dataset (as for `geobind train --pairs`).")
    ] = None,
    pairs_format: Annotated[str | None, typer.Option(help="Force the pair layout.")] = None,
    pairs_gsd: Annotated[
        float | None, typer.Option(help="Ground metres per pixel of the overhead images.")
    ] = None,
    scenes: Annotated[
        list[str] | None,
        typer.Option("--scenes", help="GeoTIFF scene, path or COG URL (repeat for several)."),
    ] = None,
    ground_manifest: Annotated[
        Path | None, typer.Option(help="Photo manifest for --scenes (split column).")
    ] = None,
    audio_manifest: Annotated[
        Path | None, typer.Option(help="Audio manifest for --scenes (split column).")
    ] = None,
    split: Annotated[str, typer.Option(help="Split to evaluate.")] = "test",
    out: Annotated[Path | None, typer.Option(help="Write the metrics as JSON here.")] = None,
    batch_size: Annotated[int, typer.Option(help="Batch size for embedding.")] = 64,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """The paper's protocol on a world, a pair dataset or scenes + manifests: retrieval R@k,
    median rank and gallery size in both directions, beside random and untrained baselines
    (and zero-shot land cover and emergent links on a world)."""
    import json

    from geobind.training.evaluate import evaluate, format_metrics

    metrics = evaluate(
        model,
        data,
        pairs=pairs,
        pairs_format=pairs_format,
        pairs_gsd=pairs_gsd,
        scenes=scenes or (),
        ground_manifest=ground_manifest,
        audio_manifest=audio_manifest,
        split=split,
        batch_size=batch_size,
        progress=progress,
    )
    typer.echo(format_metrics(metrics))
    target = out or (Path(model) / f"eval-{split}.json" if Path(model).is_dir() else None)
    if target is not None:
        target.write_text(json.dumps(metrics, indent=2, ensure_ascii=False) + "\n")
        typer.echo(f"metrics written to {target}")


def _stages() -> list:
    from geobind.training.registry import list_stages

    return list_stages()


def _train_signature(with_stage: bool):
    """The options of `train` and `pretrain-clip`, declared once from TrainConfig's fields."""
    import inspect
    from dataclasses import MISSING, fields

    from geobind.training.config import TrainConfig

    helps = {
        "model": "Starting model: a preset (tiny, demo) or a model folder.",
        "out": "Model folder to write.",
        "world": "Synthetic world folder (sets --scenes and --manifest).",
        "scenes": "GeoTIFF scene, path or http(s)/s3 URL of a COG (repeat for several).",
        "coarse_scenes": "The coarse sensor's scenes of the same places (the coarse stage).",
        "manifest": "Point manifest (GeoParquet, GeoPackage, CSV lon/lat) with a split column.",
        "pairs": "A pair dataset instead: SoundingEarth (hub parquet or metadata.csv), WebDataset "
        ".tar shards, or a pairs manifest (sat_path, path, split, lon/lat).",
        "pairs_format": "Force the pair layout: soundingearth-hub, soundingearth, webdataset, "
        "manifest.",
        "pairs_gsd": "Ground metres per pixel of the pair dataset's overhead images.",
        "max_minutes": "Wall-clock budget for fitting.",
        "resume": "Continue from OUT.train/checkpoints/last.ckpt.",
        "overwrite": "Replace an existing OUT.",
        "progress": "Show progress bars.",
        "num_workers": "DataLoader worker processes.",
        "patience": "Early stopping: validation checks without R@10 improving.",
        "gain_jitter": "Stage-1 augmentation: largest relative change of each band's gain.",
        "haze_jitter": "Stage-1 augmentation: largest weight of a bright haze blended in.",
        "val_every": "Validate (and keep the best checkpoint) every N epochs.",
        "patch_dropout": "Share of image patch tokens dropped per training step (not stage 2).",
    }
    kw = inspect.Parameter.KEYWORD_ONLY
    params = []
    if with_stage:
        params.append(
            inspect.Parameter(
                "stage",
                inspect.Parameter.POSITIONAL_OR_KEYWORD,
                annotation=Annotated[
                    str,
                    typer.Argument(
                        help="A registered stage: "
                        + ", ".join(f"{st.name} ({st.trained} ← {st.anchor})" for st in _stages())
                        + "."
                    ),
                ],
            )
        )
    params.append(
        inspect.Parameter(
            "config",
            kw,
            default=None,
            annotation=Annotated[
                Path | None,
                typer.Option(
                    is_eager=True,
                    callback=_read_config,
                    help="YAML/TOML file of these options; flags given here override it.",
                ),
            ],
        )
    )
    for f in fields(TrainConfig):
        default = f.default if f.default is not MISSING else f.default_factory()
        if f.name == "progress":
            default = True  # progress bars by default on the command line, opt-in in the API
        kind = {"float | None": float | None, "str | None": str | None, "list[str]": list[str]}.get(
            str(f.type),
            {"int": int, "float": float, "str": str, "bool": bool}.get(str(f.type), str),
        )
        opt = typer.Option(help=helps.get(f.name, f.name.replace("_", " ")))
        params.append(
            inspect.Parameter(f.name, kw, default=default, annotation=Annotated[kind, opt])
        )
    verbose = typer.Option("--verbose", help=_VERBOSE_HELP)
    params.append(
        inspect.Parameter("verbose", kw, default=False, annotation=Annotated[bool, verbose])
    )
    return inspect.Signature(params)


def _register_training_commands() -> None:
    from geobind.training.registry import get_stage, list_stages

    def train(stage: str, **options) -> None:
        get_stage(stage)  # an unknown stage: the registered ones in the message
        _train(stage, options)

    def pretrain_clip(**options) -> None:
        _train("pretrain-clip", options)

    train.__signature__ = _train_signature(with_stage=True)
    train.__doc__ = "Train a binding stage and write a model folder. Registered stages:\n\n" + (
        "\n\n".join(f"{st.name}: {st.summary or st.loss}" for st in list_stages())
    )
    pretrain_clip.__signature__ = _train_signature(with_stage=False)
    pretrain_clip.__doc__ = (
        "Pretrain the demo's small CLIP stand-in on the world's photo-caption pairs (offline "
        "stand-in for real CLIP weights)."
    )
    app.command("train")(train)
    app.command("pretrain-clip")(pretrain_clip)


_register_training_commands()


def _parse_bands(text: str | None) -> list[int] | None:
    """``"4,3,2"`` → ``[4, 3, 2]``: 1-based band numbers, as ``--bands`` takes them.

    Example:
        >>> _parse_bands("4, 3,2"), _parse_bands(None)
        ([4, 3, 2], None)
    """
    if text is None:
        return None
    from geobind.errors import InputDataError

    try:
        bands = [int(part) for part in text.split(",")]
    except ValueError:
        bands = []
    if not bands or min(bands) < 1:
        raise InputDataError(
            f"--bands takes 1-based band numbers separated by commas (e.g. --bands 4,3,2); got "
            f"{text!r}"
        )
    return bands


@app.command()
def embed(
    scenes: Annotated[
        list[str],
        typer.Argument(
            help="GeoTIFF/VRT scenes: paths, http(s):// or s3:// URLs of COGs, or STAC items or "
            "catalogues (file or URL); each scene or item becomes one group of the store."
        ),
    ],
    out: Annotated[
        str,
        typer.Option(
            "--out",
            "-o",
            help="Zarr store to write or resume: a folder, or an object store URL (s3://bucket/"
            "x.zarr, gs://…, az://…; credentials and endpoint from AWS_* …).",
        ),
    ],
    model: Annotated[
        str | None,
        typer.Option(
            help="Preset or model folder (default: the model the store was written with)."
        ),
    ] = None,
    chip_size: Annotated[
        int | None,
        typer.Option(help="Chip size in raster pixels (default: the model's footprint)."),
    ] = None,
    stride: Annotated[
        int | None, typer.Option(help="Stride in raster pixels (default: half a chip).")
    ] = None,
    tile: Annotated[
        int, typer.Option(help="Grid cells per tile side (= Zarr chunk).", min=1)
    ] = 256,
    dtype: Annotated[str, typer.Option(help="Stored dtype: float32 or float16.")] = "float32",
    batch_size: Annotated[int, typer.Option(help="Chips per encoder batch.", min=1)] = 64,
    nodata_fraction: Annotated[
        float, typer.Option(help="Chips with more nodata than this share are NaN.")
    ] = 0.5,
    bands: Annotated[
        str | None,
        typer.Option(
            metavar="R,G,B",
            help="1-based bands read as red, green, blue, comma-separated (e.g. 4,3,2; 1,1,1 for "
            "a single-band raster). Default: the model's.",
        ),
    ] = None,
    gsd: Annotated[
        float | None,
        typer.Option(help="Pixel size in metres, for rasters whose CRS does not say."),
    ] = None,
    scheduler: Annotated[
        str | None,
        typer.Option(help="dask scheduler address (tcp://HOST:8786): run tiles on its workers."),
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace the store.")] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Embed whole scenes into a Zarr store, tile by tile; rerun the same command to resume."""
    from geobind.inference.store import embed_to_zarr

    summary = embed_to_zarr(
        scenes,
        out,
        model,
        chip_size=chip_size,
        stride=stride,
        tile=tile,
        dtype=dtype,
        batch_size=batch_size,
        nodata_fraction=nodata_fraction,
        bands=_parse_bands(bands),
        gsd=gsd,
        client=scheduler if scheduler is not None else False,
        overwrite=overwrite,
        progress=progress,
    )
    typer.echo(str(summary))
    if summary.failed:
        typer.echo(
            f"error: {len(summary.failed)} tile(s) failed (listed above); the rest of the store is "
            "complete. Rerun the same command to retry them",
            err=True,
        )
        raise typer.Exit(1)


@app.command()
def query(
    store: Annotated[
        str, typer.Argument(help="Zarr store written by `geobind embed` (a folder or s3://… URL).")
    ],
    text: Annotated[
        str, typer.Argument(metavar="QUERY", help="Text, or an audio (.wav …) or photo file.")
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            help="map.tif (a Cloud-Optimised GeoTIFF), map.png, map.html (an interactive map), "
            "or hits.geojson/.parquet.",
        ),
    ],
    model: Annotated[
        str | None, typer.Option(help="Model (default: the one the store was written with).")
    ] = None,
    group: Annotated[
        list[str] | None, typer.Option(help="Scene group(s) to query (default: all).")
    ] = None,
    top_k: Annotated[
        int | None,
        typer.Option(help="Best cells to write (default 10 for vector and .html outputs).", min=1),
    ] = None,
    png: Annotated[bool, typer.Option("--png", help="Also render a PNG next to a .tif.")] = False,
    tiles: Annotated[
        str,
        typer.Option(
            help="Base map of a .html page (OpenStreetMap, 'CartoDB positron', an xyz URL), or "
            "none: the page then works offline."
        ),
    ] = "OpenStreetMap",
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Score a stored grid against a text, audio or photo query, chunk by chunk."""
    from geobind.inference.store import query_store

    start = time.perf_counter()
    written = query_store(
        store,
        text,
        out,
        model=model,
        groups=group,
        top_k=top_k,
        png=png,
        tiles=None if tiles.lower() == "none" else tiles,
        progress=progress,
    )
    typer.echo(f"query {text!r} over {store} in {time.perf_counter() - start:.1f} s:")
    for path in written:
        typer.echo(f"  {path}")


# Search over whole stores: `geobind index` (geobind.inference.index), `geobind search`.


@app.command("index")
def index_cmd(
    store: Annotated[
        str, typer.Argument(help="Zarr store written by `geobind embed` (a folder or s3://… URL).")
    ],
    rebuild: Annotated[
        bool, typer.Option("--rebuild", help="Build anew (other settings, a damaged index).")
    ] = False,
    kind: Annotated[
        str, typer.Option(help="auto, flat (exact, small stores) or ivfpq (IVF-PQ + re-ranking).")
    ] = "auto",
    nlist: Annotated[
        int | None, typer.Option(help="Inverted lists (default: sized from the cells).")
    ] = None,
    pq: Annotated[
        int | None, typer.Option(help="Bytes per product-quantised code (default: dim / 4).")
    ] = None,
    nprobe: Annotated[int | None, typer.Option(help="Lists a search scans by default.")] = None,
    rerank: Annotated[
        int | None, typer.Option(help="Candidates re-ranked exactly per result (0: none).")
    ] = None,
    train: Annotated[int | None, typer.Option(help="Vectors sampled to train the index.")] = None,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Build a store's search index (kept in STORE/_index), or add the groups written since.

    A store in an object store (s3://, gs://, az://) gets the index as objects under _index/,
    built in a local cache and uploaded under the store's lease; credentials and endpoint come
    from the standard environment (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID …)."""
    from geobind.inference.index import build_index

    summary = build_index(
        store,
        kind=kind,
        nlist=nlist,
        pq=pq,
        nprobe=nprobe,
        rerank=rerank,
        train=train,
        rebuild=rebuild,
        progress=progress,
    )
    typer.echo(str(summary))


def _search_query(text: str, row: int | None):
    """A `geobind search` QUERY: a vector file's geometries (or one ``row``), a ``.npy``
    embedding, else what :func:`geobind.search` reads (text, an audio or photo file)."""
    from geobind.errors import InputDataError
    from geobind.inference.search import GEOMETRY_SUFFIXES

    suffix = Path(text).suffix.lower()
    if suffix == ".npy":
        import numpy as np

        if not Path(text).is_file():
            raise InputDataError(f"query file {text} does not exist")
        return np.load(text, allow_pickle=False)
    if suffix in GEOMETRY_SUFFIXES and row is not None:
        import geopandas as gpd

        if not Path(text).is_file():
            raise InputDataError(f"query file {text} does not exist")
        frame = gpd.read_file(text)
        if not 0 <= row < len(frame):
            raise InputDataError(f"--row {row} is not a row of {text} (it has {len(frame)})")
        return frame.iloc[[row]]
    if row is not None:
        raise InputDataError("--row picks a row of a vector-file query (.geojson, .gpkg …)")
    return text


@app.command("search")
def search_cmd(
    store: Annotated[
        str, typer.Argument(help="Zarr store written by `geobind embed` (a folder or s3://… URL).")
    ],
    text: Annotated[
        str,
        typer.Argument(
            metavar="QUERY",
            help="Text; an audio (.wav …) or photo (.jpg …) file; an embedding (.npy); or a "
            "vector file (.geojson, .gpkg, .parquet): places like its geometries.",
        ),
    ],
    k: Annotated[int, typer.Option("-k", "--k", help="How many cells.")] = 10,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Write the hits: hits.parquet, .geojson or .gpkg."),
    ] = None,
    exact: Annotated[
        bool, typer.Option("--exact", help="Score every cell instead of using the index.")
    ] = False,
    model: Annotated[
        str | None, typer.Option(help="Model (default: the one the store was written with).")
    ] = None,
    row: Annotated[
        int | None, typer.Option(help="With a vector-file QUERY: only this row (0-based).")
    ] = None,
    nprobe: Annotated[
        int | None, typer.Option(help="Inverted lists to scan (default: the index's).")
    ] = None,
    rerank: Annotated[
        int | None, typer.Option(help="Candidates re-ranked per result (default: the index's).")
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show the --exact scan's progress.")] = True,
) -> None:
    """Find the cells of a whole store most like a query: polygons in EPSG:4326, best first.

    The index of a store in an object store is read from a local cache (GEOBIND_CACHE, default
    ~/.cache/huggingface/geobind): only the index files that changed are downloaded."""
    from geobind.inference.search import search

    hits = search(
        store,
        _search_query(text, row),
        k,
        exact=exact,
        model=model,
        nprobe=nprobe,
        rerank=rerank,
        out=out,
        progress=progress,
    )
    how = "exact scan" if exact else "index"
    typer.echo(
        f"search {hits.attrs['query']!r} over {store} ({how}): {len(hits)} cells in "
        f"{hits.attrs['seconds']:.2f} s"
    )
    centre = hits.geometry.representative_point()
    typer.echo(f"  {'rank':>4} {'score':>7}  {'group':<12} {'row':>6} {'col':>6}  lon, lat")
    for i in range(min(len(hits), 10)):
        h = hits.iloc[i]
        typer.echo(
            f"  {h['rank']:>4} {h['score']:>7.4f}  {h['group']:<12} {h['row']:>6} {h['col']:>6}"
            f"  {centre.iloc[i].x:.5f}, {centre.iloc[i].y:.5f}"
        )
    if len(hits) > 10:
        typer.echo(f"  … {len(hits) - 10} more")
    if out is not None:
        typer.echo(f"hits written to {out}")


@app.command()
def demo(
    out: Annotated[Path, typer.Argument(help="Folder for everything the demo makes.")] = Path(
        "geobind-demo"
    ),
    preset: Annotated[str, typer.Option(help="demo (about 6 min on 2 cores) or tiny (1 min).")] = (
        "demo"
    ),
    fresh: Annotated[bool, typer.Option("--fresh", help="Recompute every step.")] = False,
    seed: Annotated[int, typer.Option(help="Seed for the world and the training.")] = 0,
    progress: Annotated[
        bool,
        typer.Option(
            help="Show progress bars inside the other steps (each training stage shows one)."
        ),
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", help=_VERBOSE_HELP)] = False,
) -> None:
    """Run GeoBind end to end on the synthetic world: train, evaluate, embed and map queries.

    Generates the world, pretrains the CLIP stand-in, trains stage 1 and stage 2, evaluates with
    baselines, embeds the held-out scene into Zarr and maps text and audio queries over it
    (PNG + COG + an interactive page, with each map's AUROC against the land-cover truth), and
    writes report.html. Finished steps are reused.
    """
    from geobind.demo import run_demo, summary

    result = run_demo(
        out,
        preset=preset,
        fresh=fresh,
        seed=seed,
        progress=progress,
        verbose=verbose,
        echo=typer.echo,
    )
    typer.echo(summary(result))


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status (the console script exits with it).

    Example:
        >>> main(["--version"])
        geobind ...
        0
    """
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        app(
            args=argv, prog_name="geobind"
        )  # standalone: usage errors and --help exit via SystemExit
    except SystemExit as done:
        return done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    except GeoBindError as err:
        if _state["debug"]:
            raise
        typer.echo(f"error: {err}", err=True)
        return 2
    except Exception as err:
        if _state["debug"]:
            raise
        typer.echo(
            f"error: unexpected {type(err).__name__}: {err} (rerun with --debug for the traceback)",
            err=True,
        )
        return 1
    return 0


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    run()
