"""A satellite encoder for another sensor: more bands (e.g. RGB + NIR) and another resolution.

A binding stage can bind a second sensor, say a coarse multispectral one (Sentinel-2-like: 10 m,
red, green, blue, near infrared), to the frozen satellite embeddings of the first, so every query
also runs over the second sensor's imagery. Its encoder is a
:class:`~geobind.models.encoders.SatEncoder` whose tower starts as CLIP's image tower with the
patch embedding widened to the sensor's bands: the red, green and blue filters are CLIP's, each
further band starts as their mean (a grey band), so the untrained encoder sees what CLIP sees.

The encoder kind is ``"multispectral"``; its config section (``config[name]``) holds
``chip_size``, ``gsd``, ``bands`` (1-based), ``scale`` and per-band ``mean``/``std``, and is
rebuilt from it when a model folder is loaded.

Example:
    >>> import geobind
    >>> model = geobind.load("tiny")
    >>> add_sensor(model, "coarse", chip_size=8, gsd=10.0, bands=[1, 2, 3, 4])
    >>> model["coarse"].visual.conv1.in_channels, model.config["coarse"]["gsd"]
    (4, 10.0)
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn

from geobind.errors import InputDataError
from geobind.models.encoders import SatEncoder

__all__ = ["add_sensor", "build_multispectral", "widen_patch_embedding"]


def widen_patch_embedding(visual: nn.Module, bands: int) -> nn.Module:
    """A copy of an open_clip vision tower whose patch embedding reads ``bands`` channels.

    The first three input channels keep the tower's filters; each further channel starts as
    their mean. With ``bands == 3`` the copy is unchanged.

    Example:
        >>> import geobind
        >>> visual = geobind.load("tiny")["ground"].visual
        >>> wide = widen_patch_embedding(visual, 4)
        >>> wide.conv1.in_channels, bool(torch.equal(wide.conv1.weight[:, :3], visual.conv1.weight))
        (4, True)
    """
    visual = copy.deepcopy(visual)
    conv = getattr(visual, "conv1", None)
    if not isinstance(conv, nn.Conv2d):
        raise InputDataError(
            f"a multispectral encoder needs an open_clip vision transformer (conv1 patch "
            f"embedding); got {type(visual).__name__}"
        )
    if bands == conv.in_channels:
        return visual
    if bands < 3:
        raise InputDataError(f"a multispectral encoder reads 3 or more bands; got {bands}")
    wide = nn.Conv2d(
        bands,
        conv.out_channels,
        kernel_size=conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        bias=conv.bias is not None,
    )
    with torch.no_grad():
        wide.weight[:, :3] = conv.weight[:, :3]
        wide.weight[:, 3:] = conv.weight[:, :3].mean(1, keepdim=True)
        if conv.bias is not None:
            wide.bias.copy_(conv.bias)
    visual.conv1 = wide
    return visual


def build_multispectral(name: str, shared: Any) -> SatEncoder:
    """The encoder of a ``"multispectral"`` config section (a bundle builder: ``shared`` has the
    ``config``, the ``clip`` model and the tower's ``image_size``)."""
    section = shared.config[name]
    bands = [int(b) for b in section["bands"]]
    clip_cfg = shared.config["clip"]
    grey = sum(clip_cfg["mean"]) / 3, sum(clip_cfg["std"]) / 3
    section.setdefault("mean", [*clip_cfg["mean"], *[grey[0]] * (len(bands) - 3)])
    section.setdefault("std", [*clip_cfg["std"], *[grey[1]] * (len(bands) - 3)])
    section.setdefault("scale", "auto")
    section["image_size"] = shared.image_size
    return SatEncoder(
        widen_patch_embedding(shared.clip.visual, len(bands)),
        shared.config["embed_dim"],
        bands=bands,
        scale=section["scale"],
        mean=section["mean"],
        std=section["std"],
        image_size=shared.image_size,
    )


def add_sensor(
    model: Any,
    name: str,
    *,
    chip_size: int,
    gsd: float,
    bands: Sequence[int],
    scale: str | float = "auto",
) -> None:
    """Add an untrained encoder for another sensor to ``model``, initialised from its CLIP image
    tower (the frozen ground encoder's), ready for a binding stage to train.

    Example: see the module docstring.
    """
    if name in model.modalities:
        raise InputDataError(f"the model has a {name!r} encoder already")
    section = {"chip_size": int(chip_size), "gsd": float(gsd), "bands": list(bands),
               "scale": scale}  # fmt: skip
    config = {**model.config, name: section}
    image_size = model["sat"].image_size
    shared = SimpleNamespace(
        config=config, clip=SimpleNamespace(visual=model["ground"].visual), image_size=image_size
    )
    encoder = build_multispectral(name, shared).to(model.device)
    model.add_encoder(name, encoder, kind="multispectral", section=section)
