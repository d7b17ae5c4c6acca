"""Where a binding stage's pairs come from: a synthetic world, GeoTIFF scenes with a point
manifest, or a pair dataset (:mod:`geobind.data.pairs`), each giving the same three things.

:func:`paired_data` returns a :class:`PairedData`: the satellite chips (a
:class:`~geobind.data.datasets.PairedChips` or :class:`~geobind.data.pairs.PairChips`, both with
``raw(i)`` for anchors and augmented items for training), the other modality's items in the same
order (photo or audio paths, or samples decoded on demand), and a record of the data for
``geobind.json``. Pair samples whose bytes do not decode are skipped and counted.

Example:
    >>> import geobind
    >>> from geobind.synth import generate_world
    >>> from geobind.training.config import TrainConfig
    >>> world = generate_world(getfixture("tmp_path") / "w", "tiny")
    >>> data = paired_data(TrainConfig(world=str(world.root)), geobind.load("tiny"), "ground",
    ...                    "val")
    >>> len(data.chips) == len(data.items) > 0, data.record["source"]
    (True, 'world')
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from geobind.errors import CRSMismatchWarning, InputDataError

__all__ = ["PairedData", "paired_data"]

log = logging.getLogger(__name__)


class _Items(Sequence):
    """The other half of pair samples, decoded when asked for (never all in memory)."""

    def __init__(self, pairs: Any):
        self.pairs = pairs

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self.pairs.item(j) for j in range(*i.indices(len(self)))]
        return self.pairs.item(i)


@dataclass
class PairedData:
    """Chips and the other modality's items of one split, in the same order."""

    chips: Any
    items: Sequence[Any]
    record: dict[str, Any] = field(default_factory=dict)

    @property
    def points(self) -> Any:
        """The samples' points (GeoDataFrame), in order."""
        return self.chips.points


def _chip_args(model: Any, cfg: Any | None, encoder: str = "sat") -> dict[str, Any]:
    sat, sat_cfg = model[encoder], model.config[encoder]
    out = {
        "chip_size": sat_cfg["chip_size"],
        "out_size": sat.image_size,
        "bands": sat.bands,
        "scale": sat.scale,
    }
    if cfg is not None:  # training chips: augmented as the config says
        out.update(
            augment=True,
            jitter_px=cfg.jitter_px,
            gain_jitter=cfg.gain_jitter,
            haze_jitter=cfg.haze_jitter,
            seed=cfg.seed,
        )
    return out


def paired_data(
    cfg: Any, model: Any, kind: str, split: str, *, augment: bool = False, pairs: Any = None
) -> PairedData:
    """The ``split`` samples of ``cfg``'s data for a stage pairing chips with ``kind`` items.

    Args:
        cfg: a :class:`~geobind.training.config.TrainConfig` (its ``world``, ``scenes`` +
            ``manifest``, or ``pairs`` / ``pairs_format`` / ``pairs_gsd``).
        model: the model whose satellite encoder reads the chips (chip size, GSD, bands, scale).
        kind: ``"ground"`` (photos) or ``"audio"``.
        split: ``"train"``, ``"val"`` or ``"test"``.
        augment: augmented chips (training), as ``cfg`` says.
        pairs: ``cfg.pairs`` already opened (:func:`~geobind.data.pairs.open_pairs` with its
            format and GSD), so that its index is not read again.

    Raises:
        InputDataError: no data given, a split without samples, a pair dataset of another kind.
    """
    chip_args = _chip_args(model, cfg if augment else None)
    if kind == "coarse":
        return _from_coarse_twin(cfg, model, split, augment)
    if getattr(cfg, "pairs", None):
        return _from_pairs(cfg, model, kind, split, chip_args, pairs)
    return _from_scenes(cfg, model, kind, split, chip_args)


def _from_scenes(cfg, model, kind, split, chip_args) -> PairedData:
    from geobind.data.datasets import PairedChips

    if cfg.world:
        from geobind.synth import load_world

        world = load_world(cfg.world)
        manifest = world.ground_manifest if kind == "ground" else world.audio_manifest
        scenes, source = [str(p) for p in world.scenes.values()], "world"
    else:
        if not cfg.manifest:
            raise InputDataError(
                f"give a synthetic world (--world), a pair dataset (--pairs) or a {kind} "
                "manifest (--manifest) with GeoTIFF scenes (--scenes)"
            )
        if not cfg.scenes:
            raise InputDataError("give GeoTIFF scenes (--scenes) or a synthetic world (--world)")
        scenes, manifest, source = list(cfg.scenes), Path(cfg.manifest), "scenes"
    points = _split_points(manifest, split)
    with warnings.catch_warnings():
        if source == "world":  # the world's manifests are EPSG:4326 by design
            warnings.simplefilter("ignore", CRSMismatchWarning)
        chips = PairedChips(scenes, points, gsd=model.config["sat"].get("gsd"), **chip_args)
    record = {"source": source, "scenes": scenes, "manifest": str(manifest), "count": len(chips)}
    return PairedData(chips, list(chips.points["path"]), record)


def _split_points(manifest: Path, split: str) -> Any:
    """The manifest's rows of ``split`` (a GeoDataFrame), refusing a manifest without them."""
    from geobind.data.manifest import read_manifest

    gdf = read_manifest(manifest)
    if "split" not in gdf.columns:
        raise InputDataError(f"{manifest} has no `split` column (train/val/test)")
    points = gdf[gdf["split"] == split]
    if len(points) == 0:
        raise InputDataError(f"{manifest} has no {split!r} rows")
    return points


def _decodable(pairs: Any) -> tuple[list[int], int]:
    """Positions of the samples whose overhead image and item decode (streamed, in file order)."""
    from geobind.data.pairs import BadSampleError, PairSampler

    good, bad = [], 0
    for i in PairSampler(pairs):
        try:
            pairs.overhead(i)
            pairs.item(i)
        except BadSampleError as err:
            bad += 1
            log.info("skipped: %s", err)
            continue
        good.append(i)
    return sorted(good), bad


def _from_pairs(cfg, model, kind, split, chip_args, pairs=None) -> PairedData:
    from geobind.data.pairs import PairChips, open_pairs

    if pairs is None:
        pairs = open_pairs(cfg.pairs, format=cfg.pairs_format, gsd=cfg.pairs_gsd)
    if pairs.kind != kind:
        raise InputDataError(
            f"{cfg.pairs} pairs overhead images with {pairs.kind} items; this stage needs "
            f"{kind} (stage 1: ground photos, stage 2: audio)"
        )
    pairs = pairs.split(split)
    good, bad = _decodable(pairs)
    if bad:
        log.warning("pairs %s (%s): %d undecodable sample(s) skipped", cfg.pairs, split, bad)
    if not good:
        raise InputDataError(f"no {split!r} sample of {cfg.pairs} decodes")
    pairs = pairs.subset(good)
    chips = PairChips(pairs, model_gsd=model.config["sat"].get("gsd"), **chip_args)
    record = {
        "source": "pairs",
        "pairs": str(cfg.pairs),
        "format": pairs.format,
        "gsd": pairs.gsd,
        "count": len(chips),
        "skipped": bad,
    }
    return PairedData(chips, _Items(pairs), record)


def _coarse_inputs(cfg) -> tuple[list[str], list[str], Path, str]:
    """Fine scenes, coarse scenes, the point manifest and the source's name of the coarse stage."""
    if cfg.world:
        from geobind.synth import load_world

        world = load_world(cfg.world)
        fine = [str(p) for p in world.scenes.values()]
        return fine, [str(p) for p in world.coarse_scenes.values()], world.ground_manifest, "world"
    if cfg.scenes and cfg.coarse_scenes and cfg.manifest:
        return list(cfg.scenes), list(cfg.coarse_scenes), Path(cfg.manifest), "scenes"
    raise InputDataError(
        "the coarse-sensor stage pairs fine scenes (--scenes) with coarse scenes of the same "
        "places (--coarse-scenes) at a manifest's points (--manifest), or reads a synthetic "
        "world's coarse twins (--world)"
    )


def _from_coarse_twin(cfg, model, split: str, augment: bool) -> PairedData:
    """Chips of the fine scenes (``chips``: the anchors' side) and of the coarse scenes at the
    same points (``items``: what the coarse encoder reads), kept where both are whole."""
    from geobind.data.datasets import PairedChips

    if "coarse" not in model.modalities:
        raise InputDataError(f"model {model.name!r} has no 'coarse' encoder")
    fine_scenes, coarse_scenes, manifest, source = _coarse_inputs(cfg)
    points = _split_points(manifest, split)
    fine_args, coarse_args = (
        _chip_args(model, None),
        _chip_args(model, cfg if augment else None, "coarse"),
    )
    with warnings.catch_warnings():
        if source == "world":  # the world's manifests are EPSG:4326 by design
            warnings.simplefilter("ignore", CRSMismatchWarning)
        coarse = PairedChips(coarse_scenes, points, gsd=model.config["coarse"]["gsd"],
                             **coarse_args)  # fmt: skip
        fine = PairedChips(fine_scenes, coarse.points, gsd=model.config["sat"].get("gsd"),
                           **fine_args)  # fmt: skip
        if len(fine) != len(coarse):  # a point lost on the fine side: both on the common ones
            coarse = PairedChips(coarse_scenes, fine.points, gsd=model.config["coarse"]["gsd"],
                                 **coarse_args)  # fmt: skip
    record = {
        "source": "world coarse twins" if source == "world" else "scenes",
        "scenes": fine_scenes,
        "coarse_scenes": coarse_scenes,
        "manifest": str(manifest),
        "count": len(coarse),
    }
    if source == "world":
        record["world"] = str(cfg.world)
    return PairedData(fine, coarse, record)
