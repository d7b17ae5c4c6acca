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
        scenes: GeoTIFF scenes, when not using a world.
        manifest: point manifest (photos for stage 1 and pretrain-clip, audio for stage 2).
        max_minutes: wall-clock budget for fitting (Lightning ``max_time``).
        resume: continue from ``<out>.train/checkpoints/last.ckpt``.
    """

    model: str = "demo"
    out: str = "model"
    world: str | None = None
    scenes: list[str] = field(default_factory=list)
    manifest: str | None = None
    epochs: int = 10
    batch_size: int = 64
    lr: float = 3e-4
    weight_decay: float = 0.05
    temperature: float = 0.07
    warmup_steps: int = 20
    seed: int = 0
    num_workers: int = 0
    patience: int = 3
    max_minutes: float | None = None
    jitter_px: int = 3
    accelerator: str = "auto"
    devices: str = "auto"
    strategy: str = "auto"
    resume: bool = False
    overwrite: bool = False
    progress: bool = False

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
        if isinstance(values.get("scenes"), str):
            values["scenes"] = [values["scenes"]]
        return cls(**values)
