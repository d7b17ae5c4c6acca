"""Typed training settings, shared by the Python API and the CLI (no torch import here)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from geobind.errors import InputDataError

__all__ = ["TrainConfig"]


@dataclass
class TrainConfig:
    """Settings of a training run (also readable from YAML/TOML by the CLI).

    Attributes:
        model: starting model: a preset name or a model folder (stage 2 needs a stage-1 model).
        out: the model folder to write.
        world: a synthetic world folder (sets ``scenes`` and ``manifest``).
        scenes: GeoTIFF scenes (paths or COG URLs), when not using a world.
        coarse_scenes: the coarse sensor's scenes of the same places (the coarse-sensor stage
            pairs them with ``scenes`` at the manifest's points).
        manifest: point manifest (photos for stage 1 and pretrain-clip, audio for stage 2).
        pairs: a pair dataset (one overhead image per photo or recording; see
            :mod:`geobind.data.pairs`) instead of scenes and a manifest.
        pairs_format: force the pair dataset's layout (default: detected).
        pairs_gsd: ground metres per pixel of the pair dataset's overhead images.
        max_minutes: wall-clock budget for fitting (Lightning ``max_time``).
        jitter_px, gain_jitter, haze_jitter: stage-1 chip augmentation (see
            :class:`~geobind.data.datasets.PairedChips`): centre shift in pixels, per-band gain
            change and haze weight, each the largest drawn.
        val_every: validate (and checkpoint the best model) every this many epochs.
        patch_dropout: share of the image patch tokens (satellite chips in stage 1, photos in
            pretrain-clip) dropped at random in each training step (open_clip's ``PatchDropout``,
            FLIP, arXiv 2212.00794); never at validation or inference. 0.5 halves the tokens a
            step sees and about halves its cost.
        resume: continue from ``<out>.train/checkpoints/last.ckpt``.
    """

    model: str = "demo"
    out: str = "model"
    world: str | None = None
    scenes: list[str] = field(default_factory=list)
    coarse_scenes: list[str] = field(default_factory=list)
    manifest: str | None = None
    pairs: str | None = None
    pairs_format: str | None = None
    pairs_gsd: float | None = None
    epochs: int = 10
    batch_size: int = 64
    lr: float = 3e-4
    weight_decay: float = 0.05
    temperature: float = 0.07
    warmup_steps: int = 20
    seed: int = 0
    num_workers: int = 0
    patience: int = 3
    val_every: int = 1
    max_minutes: float | None = None
    jitter_px: int = 3
    gain_jitter: float = 0.0
    haze_jitter: float = 0.0
    patch_dropout: float = 0.0
    accelerator: str = "auto"
    devices: str = "auto"
    strategy: str = "auto"
    resume: bool = False
    overwrite: bool = False
    progress: bool = False

    def __post_init__(self) -> None:
        if self.val_every < 1:
            raise InputDataError(f"val_every must be at least 1; got {self.val_every}")
        if not 0 <= self.patch_dropout < 1:
            raise InputDataError(f"patch_dropout must be in [0, 1); got {self.patch_dropout}")

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> TrainConfig:
        """Build from a mapping, rejecting unknown keys with the list of known ones."""
        values = {k.replace("-", "_"): v for k, v in values.items()}
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise InputDataError(
                f"unknown training option(s) {', '.join(unknown)}; "
                f"known: {', '.join(sorted(known))}"
            )
        for key in ("scenes", "coarse_scenes"):
            if isinstance(values.get(key), str):
                values[key] = [values[key]]
        return cls(**values)
