"""Running the binding stages end to end: data → anchors → Lightning → a model folder.

``pretrain_clip`` trains the demo's CLIP stand-in on photo–caption pairs; ``train_stage1`` binds the
satellite encoder to frozen CLIP embeddings of ground photos; ``train_stage2`` binds the audio
encoder to the frozen satellite encoder. Each writes a model folder whose ``geobind.json`` records
the stage.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import time
from collections.abc import Iterator
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from geobind.errors import InputDataError
from geobind.training.config import TrainConfig

__all__ = ["TrainConfig", "anchor_embeddings", "pretrain_clip", "train_stage1", "train_stage2"]

log = logging.getLogger(__name__)


def _data(cfg: TrainConfig, kind: str, *, need_scenes: bool = True) -> tuple[list[str], Path]:
    """Scenes and the ``kind`` ("ground" or "audio") manifest, from a world or explicit paths."""
    if cfg.world:
        from geobind.synth import load_world

        world = load_world(cfg.world)
        manifest = world.ground_manifest if kind == "ground" else world.audio_manifest
        return [str(p) for p in world.scenes.values()], manifest
    if not cfg.manifest:
        raise InputDataError(f"give a synthetic world (--world) or a {kind} manifest (--manifest)")
    if need_scenes and not cfg.scenes:
        raise InputDataError("give GeoTIFF scenes (--scenes) or a synthetic world (--world)")
    return list(cfg.scenes), Path(cfg.manifest)


def _splits(manifest: Path) -> tuple[Any, Any]:
    from geobind.data.manifest import read_manifest

    gdf = read_manifest(manifest)
    if "split" not in gdf.columns:
        raise InputDataError(f"{manifest} has no `split` column (train/val/test)")
    train, val = gdf[gdf["split"] == "train"], gdf[gdf["split"] == "val"]
    if len(train) == 0 or len(val) == 0:
        raise InputDataError(
            f"{manifest} needs train and val rows; found {len(train)} train, {len(val)} val"
        )
    return train, val


def _work_dir(cfg: TrainConfig) -> Path:
    out = Path(cfg.out)
    return out.with_name(out.name + ".train")


def _trainer(cfg: TrainConfig, work: Path, *, steps_per_epoch: int, monitor: str = "val/R@10"):
    import lightning as L
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    gpu = torch.cuda.is_available() and cfg.accelerator in ("auto", "gpu", "cuda")
    checkpoint = ModelCheckpoint(
        dirpath=work / "checkpoints", monitor=monitor, mode="max", save_last=True, filename="best"
    )
    trainer = L.Trainer(
        max_epochs=cfg.epochs,
        check_val_every_n_epoch=cfg.val_every,
        max_time=timedelta(minutes=cfg.max_minutes) if cfg.max_minutes else None,
        accelerator=cfg.accelerator,
        devices=cfg.devices,
        strategy=cfg.strategy,
        precision="bf16-mixed" if gpu else "32-true",  # bf16 is ~8x slower on these CPUs
        callbacks=[checkpoint, EarlyStopping(monitor, mode="max", patience=cfg.patience)],
        logger=CSVLogger(work, name="logs"),
        enable_progress_bar=cfg.progress,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        log_every_n_steps=max(1, min(10, steps_per_epoch)),
        deterministic=False,
    )
    return trainer, checkpoint


def _loader(ds, cfg: TrainConfig, *, shuffle: bool) -> DataLoader:
    generator = torch.Generator().manual_seed(cfg.seed)
    return DataLoader(
        ds,
        batch_size=cfg.batch_size,
        shuffle=shuffle,
        drop_last=shuffle and len(ds) > cfg.batch_size,
        num_workers=cfg.num_workers,
        persistent_workers=cfg.num_workers > 0,
        pin_memory=torch.cuda.is_available(),
        generator=generator,
    )


def _check_out(cfg: TrainConfig) -> None:
    """Refuse an existing OUT before training, not after it."""
    from geobind.errors import OutputExistsError

    out = Path(cfg.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not cfg.overwrite:
        raise OutputExistsError(f"{out} exists and is not empty; pass --overwrite or another --out")


def _fit(task, train_ds, val_ds, cfg: TrainConfig) -> dict[str, Any]:
    """Fit with checkpoints/early stopping, then load the best weights back into ``task``."""
    import shutil

    import lightning as L

    L.seed_everything(cfg.seed, workers=True, verbose=False)
    work = _work_dir(cfg)
    if not cfg.resume:  # a fresh run: old checkpoints must not be resumed or pile up
        shutil.rmtree(work / "checkpoints", ignore_errors=True)
    train_loader = _loader(train_ds, cfg, shuffle=True)
    trainer, checkpoint = _trainer(cfg, work, steps_per_epoch=len(train_loader))
    last = work / "checkpoints" / "last.ckpt"
    ckpt_path = str(last) if cfg.resume and last.is_file() else None
    if cfg.resume and ckpt_path is None:
        log.warning("--resume: no checkpoint at %s; starting from scratch", last)
    start = time.perf_counter()
    trainer.fit(task, train_loader, _loader(val_ds, cfg, shuffle=False), ckpt_path=ckpt_path)
    seconds = time.perf_counter() - start
    if checkpoint.best_model_path:
        state = torch.load(checkpoint.best_model_path, map_location="cpu", weights_only=True)
        task.load_state_dict(state["state_dict"])
    best = checkpoint.best_model_score
    return {
        "epochs_run": int(trainer.current_epoch),
        "best_val_R@10": float(best) if best is not None else None,
        "fit_seconds": round(seconds, 1),
        "resumed_from": ckpt_path,
    }


def anchor_embeddings(sat, ds, batch_size: int = 64) -> torch.Tensor:
    """The satellite embedding of each chip of a :class:`~geobind.data.datasets.PairedChips`
    (un-augmented): ``(len(ds), embed_dim)`` unit vectors, through
    :meth:`~geobind.models.encoders.SatEncoder.embed_pixels`, the pipeline inference uses, so an
    anchor equals the grid cell centred on its point.

    Example:
        >>> import geobind, geopandas as gpd, numpy as np, rasterio
        >>> from geobind.data.datasets import PairedChips
        >>> tif = getfixture("tmp_path") / "a.tif"
        >>> with rasterio.open(tif, "w", driver="GTiff", width=40, height=40, count=3,
        ...                    dtype="uint8", crs="EPSG:32633",
        ...                    transform=rasterio.transform.from_origin(0, 40, 1, 1)) as dst:
        ...     dst.write(np.full((3, 40, 40), 80, np.uint8))
        >>> pts = gpd.GeoDataFrame(geometry=gpd.points_from_xy([20], [20]), crs="EPSG:32633")
        >>> ds = PairedChips(tif, pts, chip_size=32)
        >>> anchor_embeddings(geobind.load("tiny")["sat"], ds).shape
        torch.Size([1, 64])
    """
    out = np.full((len(ds), sat.embed_dim), np.nan, np.float32)
    for k in range(len(ds.scenes)):  # one chip size per scene
        mine = np.flatnonzero(ds.scene_index == k)
        for i in range(0, mine.size, 1024):  # bounded memory
            idx = mine[i : i + 1024]
            raw = [ds.raw(j) for j in idx]
            pixels = np.stack([p for p, _ in raw])
            invalid = [np.zeros(pixels.shape[-2:], bool) if m is None else m for _, m in raw]
            out[idx] = sat.embed_pixels(
                pixels, ~np.stack(invalid), nodata_fraction=1.0, batch_size=batch_size
            )
    return torch.from_numpy(out)


def _chips(scenes, points, model, cfg: TrainConfig | None = None):
    """Chips as the satellite encoder reads them (its chip size, GSD, bands, scale and input
    size); with ``cfg``, augmented as it says (training chips)."""
    from geobind.data.datasets import PairedChips

    augment = {}
    if cfg is not None:
        augment = {
            "augment": True,
            "jitter_px": cfg.jitter_px,
            "gain_jitter": cfg.gain_jitter,
            "haze_jitter": cfg.haze_jitter,
            "seed": cfg.seed,
        }
    sat, sat_cfg = model["sat"], model.config["sat"]
    return PairedChips(
        scenes,
        points,
        chip_size=sat_cfg["chip_size"],
        gsd=sat_cfg.get("gsd"),
        out_size=sat.image_size,
        bands=sat.bands,
        scale=sat.scale,
        **augment,
    )


@contextlib.contextmanager
def _patch_dropout(visual: torch.nn.Module, prob: float) -> Iterator[None]:
    """Drop ``prob`` of the patch tokens in training steps (open_clip's ``PatchDropout``, active
    in train mode only); the tower is put back as it was, so the saved model has none."""
    if not prob:
        yield
        return
    if not hasattr(visual, "patch_dropout"):
        raise InputDataError(
            f"patch_dropout needs an open_clip vision transformer; got {type(visual).__name__}"
        )
    from open_clip.transformer import PatchDropout

    before, visual.patch_dropout = visual.patch_dropout, PatchDropout(prob)
    try:
        yield
    finally:
        visual.patch_dropout = before


def _save(model, cfg: TrainConfig, record: dict[str, Any]) -> Path:
    model.config.setdefault("stages", []).append(record)
    model.config.setdefault("metrics", {})[record["stage"]] = {
        k: v for k, v in record.items() if k.startswith("best_") or k.endswith("_seconds")
    }
    return model.save(cfg.out, overwrite=cfg.overwrite)


def train_stage1(cfg: TrainConfig) -> Path:
    """Stage 1: the satellite encoder learns to match frozen CLIP embeddings of ground photos.

    Example:
        >>> from geobind.synth import generate_world
        >>> tmp = getfixture("tmp_path")
        >>> world = generate_world(tmp / "w", "tiny")
        >>> cfg = TrainConfig(model="tiny", world=str(world.root), out=str(tmp / "m"), epochs=1)
        >>> train_stage1(cfg).name
        'm'
    """
    _check_out(cfg)
    import geobind
    from geobind.training.datasets import Anchored
    from geobind.training.tasks import BindTask

    model = geobind.load(cfg.model, device="auto", seed=cfg.seed)  # anchors on GPU if any
    scenes, manifest = _data(cfg, "ground")
    train_pts, val_pts = _splits(manifest)
    train_ds = _chips(scenes, train_pts, model, cfg)
    val_ds = _chips(scenes, val_pts, model)
    start = time.perf_counter()
    ground = model["ground"]
    train_anchor = ground.embed(list(train_ds.points["path"]), progress=cfg.progress)
    val_anchor = ground.embed(list(val_ds.points["path"]), progress=cfg.progress)
    anchor_seconds = time.perf_counter() - start
    task = BindTask(
        model["sat"],
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        warmup_steps=cfg.warmup_steps,
        temperature=cfg.temperature,
        bidirectional=False,
    )
    with _patch_dropout(task.encoder.visual, cfg.patch_dropout):
        result = _fit(task, Anchored(train_ds, train_anchor), Anchored(val_ds, val_anchor), cfg)
    record = {
        "stage": "stage1",
        "trained": "sat",
        "anchor": "ground",
        "loss": "InfoNCE (sat → ground), learnable temperature",
        "data": {
            "scenes": scenes,
            "manifest": str(manifest),
            "train": len(train_ds),
            "val": len(val_ds),
        },
        "config": asdict(cfg),
        "anchor_seconds": round(anchor_seconds, 1),
        "temperature": 1 / task.loss.logit_scale.exp().item(),
        **result,
    }
    return _save(model, cfg, record)


def train_stage2(cfg: TrainConfig) -> Path:
    """Stage 2: the audio encoder learns to match the frozen satellite embedding of its place.

    The satellite encoder is frozen: its hash in ``geobind.json`` is unchanged by this stage.
    """
    _check_out(cfg)
    if cfg.patch_dropout:
        raise InputDataError(
            "patch_dropout drops image patch tokens (stage 1, pretrain-clip); stage 2 trains the "
            "audio tower, which has none"
        )
    import geobind
    from geobind.training.datasets import Anchored, AudioClips
    from geobind.training.tasks import BindTask

    model = geobind.load(cfg.model, device="auto", seed=cfg.seed)  # anchors on GPU if any
    sat_hash = model.encoder_sha256("sat")
    model["sat"].requires_grad_(False).eval()
    scenes, manifest = _data(cfg, "audio")
    train_pts, val_pts = _splits(manifest)
    start = time.perf_counter()
    audio = model["audio"]
    datasets = []
    for pts, augment in ((train_pts, True), (val_pts, False)):
        chips = _chips(scenes, pts, model)  # anchors: the un-jittered chip
        anchors = anchor_embeddings(model["sat"], chips, cfg.batch_size)
        clips = AudioClips(
            list(chips.points["path"]),
            audio.features,
            augment=augment,
            max_windows=audio.max_windows,
            seed=cfg.seed,
        )
        datasets.append(Anchored(clips, anchors, key="input"))
    anchor_seconds = time.perf_counter() - start
    task = BindTask(
        audio,
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        warmup_steps=cfg.warmup_steps,
        temperature=cfg.temperature,
        bidirectional=True,
    )
    result = _fit(task, datasets[0], datasets[1], cfg)
    if model.encoder_sha256("sat") != sat_hash:
        raise RuntimeError("stage 2 changed the satellite encoder; it must stay frozen")
    record = {
        "stage": "stage2",
        "trained": "audio",
        "anchor": "sat",
        "loss": "bidirectional InfoNCE (audio ↔ sat), learnable temperature",
        "data": {
            "scenes": scenes,
            "manifest": str(manifest),
            "train": len(datasets[0]),
            "val": len(datasets[1]),
        },
        "config": asdict(cfg),
        "anchor_seconds": round(anchor_seconds, 1),
        "temperature": 1 / task.loss.logit_scale.exp().item(),
        "sat_sha256": sat_hash,
        **result,
    }
    return _save(model, cfg, record)


STAND_IN = (
    "offline stand-in for real CLIP weights: a small CLIP pretrained on the synthetic world's "
    "photo-caption pairs"
)


def pretrain_clip(cfg: TrainConfig) -> Path:
    """Pretrain the small CLIP stand-in on the world's photo–caption pairs (demo only).

    No hub is reachable here, so the demo needs a CLIP space where text means something. The result
    is labelled as the offline stand-in in ``geobind.json`` (``clip.stand_in``) and in its stages.
    """
    _check_out(cfg)
    import open_clip

    from geobind.models import GeoBind, get_preset
    from geobind.models.presets import list_models
    from geobind.models.tokenizer import ClipTokenizer
    from geobind.models.towers import build_clip
    from geobind.training.datasets import PhotoCaptions
    from geobind.training.tasks import ClipPretrainTask

    if cfg.model not in list_models() or get_preset(cfg.model)["clip"].get("source"):
        raise InputDataError(
            f"pretrain-clip builds a stand-in from a preset with a CLIP architecture (tiny, demo); "
            f"got {cfg.model!r}. With real CLIP weights, skip this step"
        )
    config = get_preset(cfg.model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        clip, config["clip"] = build_clip(config["clip"])
    _, manifest = _data(cfg, "ground", need_scenes=False)
    train_pts, val_pts = _splits(manifest)
    c = config["clip"]
    size = c["model_cfg"]["vision_cfg"]["image_size"]
    transform = open_clip.image_transform(
        size, is_train=False, mean=tuple(c["mean"]), std=tuple(c["std"]),
        resize_mode=c["resize_mode"], interpolation=c["interpolation"],
    )  # fmt: skip
    # the text encoder's tokenizer (the same ids as SimpleTokenizer, ~8× faster)
    tokenizer = ClipTokenizer(
        open_clip.SimpleTokenizer(context_length=c["model_cfg"]["text_cfg"]["context_length"])
    )
    start = time.perf_counter()
    train_ds = PhotoCaptions(
        list(train_pts["path"]), list(train_pts["caption"]), transform, tokenizer, flip=True
    )
    val_ds = PhotoCaptions(list(val_pts["path"]), list(val_pts["caption"]), transform, tokenizer)
    load_seconds = time.perf_counter() - start
    task = ClipPretrainTask(
        clip, lr=cfg.lr, weight_decay=cfg.weight_decay, warmup_steps=cfg.warmup_steps
    )
    with _patch_dropout(task.clip.visual, cfg.patch_dropout):
        result = _fit(task, train_ds, val_ds, cfg)
    config["clip"]["stand_in"] = True
    config["clip"]["source"] = None
    config["clip"]["note"] = STAND_IN
    config["name"] = f"{cfg.model}-standin"
    model = GeoBind.from_config(copy.deepcopy(config), clip=task.clip.eval(), seed=cfg.seed)
    record = {
        "stage": "pretrain-clip",
        "trained": "clip (image + text towers)",
        "stand_in": True,
        "note": STAND_IN,
        "data": {"manifest": str(manifest), "train": len(train_ds), "val": len(val_ds)},
        "config": asdict(cfg),
        "load_seconds": round(load_seconds, 1),
        **result,
    }
    log.info("CLIP stand-in trained: %s", STAND_IN)
    return _save(model, cfg, record)
