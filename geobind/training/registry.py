"""Binding stages as data: which encoder trains, which frozen encoder anchors it, on what pairs.

A stage binds one modality to the shared space through pairs with satellite chips: its
``trained`` encoder learns to match the frozen ``anchor`` encoder's embedding of the other half
of each pair. Stage 1 trains the satellite encoder against frozen CLIP embeddings of ground
photos; stage 2 trains the audio encoder against the frozen satellite encoder. Registering a
stage (:func:`register_stage`) is all a new modality needs here: :func:`~geobind.training.stages.
train_stage` runs any registered stage, and the CLI and the demo list them.

Example:
    >>> [s.name for s in list_stages()][:2]
    ['stage1', 'stage2']
    >>> get_stage("stage2").anchor
    'sat'
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from geobind.errors import InputDataError

__all__ = ["KINDS", "Stage", "get_stage", "list_stages", "register_stage"]

#: What a stage pairs satellite chips with.
KINDS = ("ground", "audio", "coarse")


@dataclass(frozen=True)
class Stage:
    """One binding stage.

    Attributes:
        name: what the CLI calls it (``geobind train NAME``).
        trained: the encoder that learns (a key of the model bundle: ``"sat"``, ``"audio"`` …).
        anchor: the frozen encoder whose embeddings it learns to match.
        kind: the other half of each pair: ``"ground"`` (photos), ``"audio"``, or
            ``"coarse"`` (chips of a world's coarse multispectral twin at the same points).
        bidirectional: InfoNCE in both directions (the anchor side is frozen either way).
        summary: one line for listings.
        new_encoder: settings of the ``trained`` encoder to add when the starting model lacks
            it (another sensor: :func:`geobind.models.multispectral.add_sensor`'s keywords).
    """

    name: str
    trained: str
    anchor: str
    kind: str
    bidirectional: bool
    summary: str = ""
    new_encoder: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.trained == self.anchor:
            raise InputDataError(f"stage {self.name!r} trains its own anchor ({self.trained!r})")
        if "sat" not in (self.trained, self.anchor):
            raise InputDataError(
                f"stage {self.name!r} pairs {self.trained!r} with {self.anchor!r}; every binding "
                "stage pairs a modality with satellite chips (one side must be 'sat')"
            )
        if self.kind not in KINDS:
            raise InputDataError(f"stage {self.name!r}: kind must be one of {', '.join(KINDS)}")

    @property
    def loss(self) -> str:
        """The loss, as recorded in ``geobind.json``."""
        arrow = "↔" if self.bidirectional else "→"
        how = "bidirectional InfoNCE" if self.bidirectional else "InfoNCE"
        return f"{how} ({self.trained} {arrow} {self.anchor}), learnable temperature"


_STAGES: dict[str, Stage] = {}


def register_stage(stage: Stage, *, replace: bool = False) -> Stage:
    """Add a binding stage (``replace=True`` to redefine one).

    Example:
        >>> stage = Stage("photo-both-ways", "sat", "ground", "ground", bidirectional=True)
        >>> stage.loss  # register_stage(stage) makes `geobind train photo-both-ways` run it
        'bidirectional InfoNCE (sat ↔ ground), learnable temperature'
    """
    if stage.name in _STAGES and not replace and _STAGES[stage.name] != stage:
        raise InputDataError(f"a stage named {stage.name!r} is registered already")
    _STAGES[stage.name] = stage
    return stage


def get_stage(name: str) -> Stage:
    """A registered stage by name.

    Raises:
        InputDataError: no stage of that name (the message lists the registered ones).
    """
    if name not in _STAGES:
        raise InputDataError(
            f"unknown stage {name!r}; registered stages: {', '.join(sorted(_STAGES))}"
        )
    return _STAGES[name]


def list_stages() -> list[Stage]:
    """The registered stages, in registration order."""
    return list(_STAGES.values())


register_stage(
    Stage(
        "stage1",
        trained="sat",
        anchor="ground",
        kind="ground",
        bidirectional=False,
        summary="satellite chips learn the frozen CLIP embedding of ground photos taken there",
    )
)
register_stage(
    Stage(
        "stage2",
        trained="audio",
        anchor="sat",
        kind="audio",
        bidirectional=True,
        summary="audio learns the frozen satellite embedding of where it was recorded",
    )
)
register_stage(
    Stage(
        "stage3",
        trained="coarse",
        anchor="sat",
        kind="coarse",
        bidirectional=True,
        summary="a coarse multispectral sensor (10 m, RGB + NIR) learns the frozen satellite "
        "embedding of the same place",
        new_encoder={"chip_size": 8, "gsd": 10.0, "bands": (1, 2, 3, 4)},
    )
)
