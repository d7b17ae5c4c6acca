"""Published models by name: a :class:`~geobind.models.GeoBind` built from registry entries.

``geobind.load("sat2cap")`` lands here. The entry's ``encoders`` say which registry entry provides
each modality: one open_clip CLIP for ``ground`` and ``text`` (its image and text towers), an image
tower for ``sat`` (the same CLIP's, or another checkpoint of the same architecture, converted into
a copy of it), and a CLAP audio tower for ``audio`` (its projection to the shared space is new:
stage 2 trains it). The architecture and QuickGELU come from the registry, never from a guess,
and the model records the links its weights were trained for (``trained_links``).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch

from geobind.errors import InputDataError
from geobind.models.bundle import GeoBind
from geobind.models.checkpoints import (
    load_hf_clip_vision,
    load_state,
    read_state_dict,
    to_custom_text_layout,
)
from geobind.models.registry import get_entry, local_files
from geobind.models.towers import CLIP_IMAGE_DEFAULTS

__all__ = ["load_published", "open_clip_config"]


def open_clip_config(entry: dict[str, Any]) -> dict[str, Any]:
    """The open_clip model config of a registry entry: its ``model_cfg``, or open_clip's config
    for its ``arch``, with ``quick_gelu`` as the registry says (open_clip cannot tell it from a
    local file, and the wrong activation changes every vector).

    Example:
        >>> from geobind.models.registry import get_entry
        >>> cfg = open_clip_config(get_entry("georsclip-vit-b-32"))
        >>> cfg["vision_cfg"]["patch_size"], cfg["quick_gelu"]
        (32, True)
    """
    import open_clip

    if entry.get("model_cfg"):
        cfg = copy.deepcopy(entry["model_cfg"])
    else:
        cfg = open_clip.get_model_config(entry["arch"])
        if cfg is None:
            raise InputDataError(
                f"unknown open_clip architecture {entry['arch']!r} in the registry; see "
                "open_clip.list_models()"
            )
    cfg.pop("custom_text", None)
    cfg["quick_gelu"] = bool(entry.get("quick_gelu", False))
    return cfg


def _revision(path: Path) -> str | None:
    """The hub commit a cached file was downloaded at (``…/snapshots/<commit>/file``)."""
    parts = path.parts
    if "snapshots" in parts:
        i = len(parts) - 1 - parts[::-1].index("snapshots")
        if i + 1 < len(parts):
            return parts[i + 1]
    return None


def _provenance(name: str, paths: dict[str, list[Path]]) -> dict[str, Any]:
    towers = {}
    for tower, files in paths.items():
        entry = get_entry(tower)
        towers[tower] = {
            "source": entry["source"],
            "format": entry["format"],
            "revision": _revision(files[0]),
            "licence": entry.get("licence"),
        }
    return {"name": name, "towers": towers}


def _tower_error(name: str, entry: dict[str, Any]) -> InputDataError:
    roles = " and ".join(entry.get("provides", {})) or "a"
    return InputDataError(
        f"{name!r} is a registry tower ({roles}), not a model: a model names it in its "
        f"`encoders` (e.g. sat2cap's audio is clap-htsat-unfused). `geobind pull {name}` fetches "
        "its files; geobind.list_models() names the models"
    )


def load_published(name: str, *, seed: int = 0, download: bool = True) -> GeoBind:
    """Build registry model ``name`` from its published files (cached, or downloaded when
    reachable and ``download`` is true).

    Weights that no file provides (a new projection, e.g. sat2cap's audio projection) are drawn
    with ``seed``; the rest come from the files, converted to open_clip's layout.

    Raises:
        WeightsNotFoundError: a file is not cached and cannot be downloaded now (the message
            names ``geobind pull NAME``).
        ModelFileError: a file is truncated, of another architecture, or not what its registry
            entry says.
        UntrustedPickleError: a ``.pt`` file needs more than tensors to load.

    Example:
        >>> env = getfixture("monkeypatch")
        >>> env.setenv("HF_HUB_OFFLINE", "1")
        >>> env.setenv("HF_HOME", str(getfixture("tmp_path")))
        >>> load_published("remoteclip-vit-b-32")
        Traceback (most recent call last):
        ...
        geobind.errors.WeightsNotFoundError: remoteclip-vit-b-32: ... `geobind pull ...
    """
    import open_clip

    entry = get_entry(name)
    encoders = entry.get("encoders")
    if not encoders:
        raise _tower_error(name, entry)
    clip_name, sat_name = encoders["text"], encoders.get("sat")
    clip_entry = get_entry(clip_name)
    model_cfg = open_clip_config(clip_entry)
    sat_entry = None if sat_name is None else get_entry(sat_name)
    if sat_entry is not None:
        sat_cfg = open_clip_config(sat_entry)
        if (sat_cfg["vision_cfg"], sat_cfg["quick_gelu"], sat_cfg["embed_dim"]) != (
            model_cfg["vision_cfg"],
            model_cfg["quick_gelu"],
            model_cfg["embed_dim"],
        ):
            raise InputDataError(
                f"registry model {name!r}: its sat tower {sat_name!r} has another architecture "
                f"than its CLIP {clip_name!r}; the satellite encoder is built as a copy of CLIP's "
                "image tower, so both must be the same open_clip architecture and activation"
            )
    paths = local_files(name, download=download)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        clip = open_clip.CustomTextCLIP(**model_cfg).eval()
    clip_file = paths[clip_name][-1]
    state = read_state_dict(clip_file, member=clip_entry["source"].get("member"))
    load_state(clip, to_custom_text_layout(state), what=f"{clip_name} ({clip_file})")
    del state

    config: dict[str, Any] = {
        "name": name,
        "description": entry["description"],
        "embed_dim": model_cfg["embed_dim"],
        "clip": {
            "model_cfg": model_cfg,
            "source": None,
            **CLIP_IMAGE_DEFAULTS,
            **clip_entry.get("image", {}),
        },
        "encoders": {modality: modality for modality in encoders},
        "trained_links": list(entry.get("trained_links", [])),
        "published": _provenance(name, paths),
    }
    if sat_entry is not None:
        image_size = model_cfg["vision_cfg"]["image_size"]
        config["sat"] = {
            "chip_size": image_size,
            "gsd": None,
            "bands": [1, 2, 3],
            "scale": "auto",
            **sat_entry.get("sat", {}),
        }
    if "audio" in encoders:
        audio_entry = get_entry(encoders["audio"])
        config["audio"] = {**audio_entry["audio"], "source": audio_entry["source"]["hub"]}

    model = GeoBind.from_config(config, seed=seed, clip=clip)
    if sat_entry is not None and sat_name != clip_name:
        sat_file = paths[sat_name][-1]
        what = f"{sat_name} ({sat_file})"
        if sat_entry["format"] == "hf_clip_vision":
            load_hf_clip_vision(model["sat"].visual, sat_file.parent, sat_cfg, what=what)
        else:
            state = read_state_dict(sat_file, member=sat_entry["source"].get("member"))
            visual = {
                k[len("visual.") :]: v
                for k, v in to_custom_text_layout(state).items()
                if k.startswith("visual.")
            }
            load_state(model["sat"].visual, visual, what=what)
    return model
