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

__all__ = [
    "TrainConfig",
    "anchor_embeddings",
    "pretrain_clip",
    "train_stage",
    "train_stage1",
    "train_stage2",
]

log = logging.getLogger(__name__)


def _photo_manifest(cfg: TrainConfig) -> Path:
    """The ground-photo manifest pretrain-clip reads: the world's, or ``cfg.manifest``."""
    if cfg.world:
        from geobind.synth import load_world

        return load_world(cfg.world).ground_manifest
    if not cfg.manifest:
        raise InputDataError("give a synthetic world (--world) or a photo manifest (--manifest)")
    return Path(cfg.manifest)


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


def _trainer(
    cfg: TrainConfig,
    work: Path,
    *,
    steps_per_epoch: int,
    monitor: str = "val/R@10",
    desc: str = "training",
):
    import lightning as L
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    from geobind.training.progress import StageProgress

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
        callbacks=[
            checkpoint,
            EarlyStopping(monitor, mode="max", patience=cfg.patience),
            StageProgress(desc, monitor=monitor, enabled=cfg.progress),
        ],
        logger=CSVLogger(work, name="logs"),
        enable_progress_bar=False,  # StageProgress: one bar with epoch, loss and val R@10
        enable_model_summary=False,
        num_sanity_val_steps=0,
        log_every_n_steps=max(1, min(10, steps_per_epoch)),
        deterministic=False,
    )
    return trainer, checkpoint


def _loader(ds, cfg: TrainConfig, *, shuffle: bool) -> DataLoader:
    """Batches of ``ds``; a pair dataset is shuffled by row group / shard
    (:class:`~geobind.data.pairs.PairSampler`), so each worker decodes each group once an
    epoch instead of a row group per sample."""
    generator = torch.Generator().manual_seed(cfg.seed)
    pairs = _pairs_of(ds)
    sampler = None
    if shuffle and pairs is not None:
        from geobind.data.pairs import PairSampler

        sampler = PairSampler(pairs, shuffle=True, seed=cfg.seed)  # Lightning sets its epoch
    return DataLoader(
        ds,
        batch_size=cfg.batch_size,
        shuffle=shuffle and sampler is None,
        sampler=sampler,
        drop_last=shuffle and len(ds) > cfg.batch_size,
        num_workers=cfg.num_workers,
        persistent_workers=cfg.num_workers > 0,
        pin_memory=torch.cuda.is_available(),
        generator=generator,
    )


def _pairs_of(ds: Any) -> Any:
    """The :class:`~geobind.data.pairs.Pairs` under a (wrapped) dataset, if it reads one."""
    from geobind.data.pairs import Pairs

    for _ in range(3):  # Anchored → PairChips / AudioClips → lazy items
        if isinstance(getattr(ds, "pairs", None), Pairs):
            return ds.pairs
        ds = getattr(ds, "base", None) or getattr(ds, "clips", None)
    return None


def _check_out(cfg: TrainConfig) -> None:
    """Refuse an existing OUT before training, not after it."""
    from geobind.errors import OutputExistsError

    out = Path(cfg.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not cfg.overwrite:
        raise OutputExistsError(f"{out} exists and is not empty; pass --overwrite or another --out")


def _fit(task, train_ds, val_ds, cfg: TrainConfig, *, name: str) -> dict[str, Any]:
    """Fit with checkpoints/early stopping, then load the best weights back into ``task``.

    Lightning's messages are printed once each and without its advertisements
    (:func:`~geobind.training.progress.lightning_messages`; the CLI and the demo also hide its
    informational ones unless ``--verbose``); ``cfg.progress`` shows one bar for the stage.
    """
    import shutil

    import lightning as L

    from geobind.training.progress import lightning_messages

    L.seed_everything(cfg.seed, workers=True, verbose=False)
    work = _work_dir(cfg)
    if not cfg.resume:  # a fresh run: old checkpoints must not be resumed or pile up
        shutil.rmtree(work / "checkpoints", ignore_errors=True)
    train_loader = _loader(train_ds, cfg, shuffle=True)
    trainer, checkpoint = _trainer(cfg, work, steps_per_epoch=len(train_loader), desc=name)
    last = work / "checkpoints" / "last.ckpt"
    ckpt_path = str(last) if cfg.resume and last.is_file() else None
    if cfg.resume and ckpt_path is None:
        log.warning("--resume: no checkpoint at %s; starting from scratch", last)
    start = time.perf_counter()
    with lightning_messages():  # once each, no advertisements
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
    """The satellite embedding of each chip of a :class:`~geobind.data.datasets.PairedChips` or
    :class:`~geobind.data.pairs.PairChips` (un-augmented, read in ``ds.read_order()``):
    ``(len(ds), embed_dim)`` unit vectors, through
    :meth:`~geobind.models.encoders.SatEncoder.embed_pixels`, the pipeline inference uses, so an
    anchor equals the grid cell centred on its point.

    Example:
        >>> import geobind, geopandas as gpd, numpy as np
        >>> from geobind.data.datasets import PairedChips
        >>> from geobind.georef import GeoBox
        >>> box = GeoBox.from_origin(0, 40, 1, (40, 40), "EPSG:32633")
        >>> px = np.full((3, 40, 40), 80, np.uint8)
        >>> tif = box.write_geotiff(getfixture("tmp_path") / "a.tif", px)
        >>> pts = gpd.GeoDataFrame(geometry=gpd.points_from_xy([20], [20]), crs="EPSG:32633")
        >>> ds = PairedChips(tif, pts, chip_size=32)
        >>> anchor_embeddings(geobind.load("tiny")["sat"], ds).shape
        torch.Size([1, 64])
    """
    out = np.full((len(ds), sat.embed_dim), np.nan, np.float32)
    order = np.asarray(ds.read_order())
    for i in range(0, order.size, 1024):  # bounded memory
        by_shape: dict[tuple, list] = {}
        for j in order[i : i + 1024]:
            pixels, invalid = ds.raw(j)
            by_shape.setdefault(pixels.shape, []).append((j, pixels, invalid))
        for chips in by_shape.values():  # chips of one size embed together
            idx = [j for j, _, _ in chips]
            pixels = np.stack([p for _, p, _ in chips])
            valid = ~np.stack(
                [np.zeros(p.shape[1:], bool) if m is None else m for _, p, m in chips]
            )
            out[idx] = sat.embed_pixels(pixels, valid, nodata_fraction=1.0, batch_size=batch_size)
    return torch.from_numpy(out)


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


def train_stage(name: str, cfg: TrainConfig) -> Path:
    """Run a registered binding stage (:mod:`geobind.training.registry`) and write the model.

    The stage's ``trained`` encoder learns to match the frozen ``anchor`` encoder's embedding
    of the other half of each pair (InfoNCE, both directions when the stage says so), on the
    data ``cfg`` names (a world, scenes + manifest, or a pair dataset: see
    :func:`~geobind.training.sources.paired_data`). Anchors are computed once per split, from
    the un-augmented chips through :func:`anchor_embeddings` when the anchor is the satellite
    encoder. Every other encoder is frozen and checked bitwise equal afterwards; the stage is
    appended to ``geobind.json``'s ``stages`` with its data, settings and best validation R@10.

    Example:
        >>> from geobind.synth import generate_world
        >>> tmp = getfixture("tmp_path")
        >>> world = generate_world(tmp / "w", "tiny")
        >>> cfg = TrainConfig(model="tiny", world=str(world.root), out=str(tmp / "m"), epochs=1)
        >>> train_stage("stage1", cfg).name
        'm'
    """
    from geobind.training.registry import get_stage

    stage = get_stage(name)
    _check_out(cfg)
    if cfg.patch_dropout and stage.trained not in ("sat", "coarse"):
        raise InputDataError(
            f"patch_dropout drops image patch tokens (stage 1, pretrain-clip); {stage.name} "
            f"trains the {stage.trained} tower, which has none"
        )
    import geobind
    from geobind.training.datasets import Anchored
    from geobind.training.sources import paired_data
    from geobind.training.tasks import BindTask

    model = geobind.load(cfg.model, device="auto", seed=cfg.seed)  # anchors on GPU if any
    if stage.trained not in model.modalities and stage.new_encoder is not None:
        from geobind.models.multispectral import add_sensor

        add_sensor(model, stage.trained, **stage.new_encoder)  # starts as CLIP's image tower
    for needed in (stage.trained, stage.anchor):
        if needed not in model.modalities:
            raise InputDataError(
                f"{stage.name} needs a {needed!r} encoder; {cfg.model} has {model.modalities}"
            )
    frozen = {m: model.encoder_sha256(m) for m in model.modalities if m != stage.trained}
    for m in frozen:
        model[m].requires_grad_(False).eval()
    start = time.perf_counter()
    datasets, counts = [], {}
    for split, augment in (("train", True), ("val", False)):
        data = paired_data(cfg, model, stage.kind, split, augment=augment)
        counts[split] = len(data.chips)
        anchors = _anchors(model, stage, data, cfg)
        inputs, key = _inputs(model, stage, data, cfg, augment)
        datasets.append(Anchored(inputs, anchors, key=key))
    anchor_seconds = time.perf_counter() - start
    task = BindTask(
        model[stage.trained],
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        warmup_steps=cfg.warmup_steps,
        temperature=cfg.temperature,
        bidirectional=stage.bidirectional,
    )
    dropout = _patch_dropout(task.encoder.visual, cfg.patch_dropout) if cfg.patch_dropout else None
    with dropout or contextlib.nullcontext():
        result = _fit(task, datasets[0], datasets[1], cfg, name=stage.name)
    changed = [m for m, h in frozen.items() if model.encoder_sha256(m) != h]
    if changed:
        raise RuntimeError(f"{stage.name} changed the frozen encoder(s) {changed}")
    record = {
        "stage": stage.name,
        "trained": stage.trained,
        "anchor": stage.anchor,
        "loss": stage.loss,
        "data": {**{k: v for k, v in data.record.items() if k != "count"}, **counts},
        "config": asdict(cfg),
        "anchor_seconds": round(anchor_seconds, 1),
        "temperature": 1 / task.loss.logit_scale.exp().item(),
        "frozen_sha256": frozen,
        **result,
    }
    if "sat" in frozen:
        record["sat_sha256"] = frozen["sat"]
    return _save(model, cfg, record)


def _anchors(model, stage, data, cfg: TrainConfig) -> torch.Tensor:
    """The frozen anchor encoder's embedding of each pair's other half."""
    if stage.anchor == "sat":
        return anchor_embeddings(model["sat"], data.chips, cfg.batch_size)
    return model[stage.anchor].embed(data.items, progress=cfg.progress)


def _inputs(model, stage, data, cfg: TrainConfig, augment: bool) -> tuple[Any, str]:
    """What the trained encoder reads: a dataset, and the key of its items to read."""
    if stage.trained == "sat":
        return data.chips, "image"
    if stage.kind == "coarse":  # the second sensor's chips at the same points
        return data.items, "image"
    if stage.trained == "audio":
        from geobind.training.datasets import AudioClips

        audio = model["audio"]
        clips = AudioClips(data.items, audio.features, augment=augment,
                           max_windows=audio.max_windows, seed=cfg.seed)  # fmt: skip
        return clips, "input"
    raise InputDataError(f"no training input for a {stage.trained!r} encoder yet")


def train_stage1(cfg: TrainConfig) -> Path:
    """Stage 1 (:func:`train_stage` ``("stage1", cfg)``): the satellite encoder learns to match
    frozen CLIP embeddings of ground photos.

    Example: see :func:`train_stage`.
    """
    return train_stage("stage1", cfg)


def train_stage2(cfg: TrainConfig) -> Path:
    """Stage 2 (:func:`train_stage` ``("stage2", cfg)``): the audio encoder learns to match the
    frozen satellite embedding of its place; the satellite encoder stays bitwise equal.

    Example: see :func:`train_stage`.
    """
    return train_stage("stage2", cfg)


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
    from geobind.models.presets import list_presets
    from geobind.models.tokenizer import ClipTokenizer
    from geobind.models.towers import build_clip
    from geobind.training.datasets import PhotoCaptions
    from geobind.training.tasks import ClipPretrainTask

    if cfg.model not in list_presets() or get_preset(cfg.model)["clip"].get("source"):
        raise InputDataError(
            f"pretrain-clip builds a stand-in from a preset with a CLIP architecture (tiny, demo); "
            f"got {cfg.model!r}. With real CLIP weights, skip this step"
        )
    config = get_preset(cfg.model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        clip, config["clip"] = build_clip(config["clip"])
    manifest = _photo_manifest(cfg)
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
        result = _fit(task, train_ds, val_ds, cfg, name="pretrain-clip")
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
