"""Building the towers: CLIP through open_clip, the CLAP audio tower through transformers.

Each builder takes the ``clip`` / ``audio`` section of a model config and returns the module
together with the section *resolved*: the full architecture is written out, so a saved model
rebuilds offline without fetching anything.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from geobind.errors import InputDataError, ModelFileError, WeightsNotFoundError
from geobind.models.pretrained import hub_file, hub_offline, hub_reachable

if TYPE_CHECKING:
    from open_clip import CustomTextCLIP
    from transformers import ClapAudioModelWithProjection

__all__ = ["build_clap", "build_clip"]

#: OpenAI CLIP's image preprocessing: the default of every CLIP config, published models too.
CLIP_IMAGE_DEFAULTS = {
    "mean": [0.48145466, 0.4578275, 0.40821073],
    "std": [0.26862954, 0.26130258, 0.27577711],
    "interpolation": "bicubic",
    "resize_mode": "shortest",
}


def _clip_checkpoint(model: str, pretrained: str) -> tuple[str, dict[str, Any]]:
    """A local checkpoint path for open_clip ``model`` + ``pretrained`` (a tag or a file)."""
    import open_clip
    from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

    if os.path.isfile(pretrained):
        return pretrained, {}
    tag = open_clip.get_pretrained_cfg(model, pretrained)
    if not tag:
        tags = open_clip.list_pretrained_tags_by_model(model)
        raise WeightsNotFoundError(
            f"open_clip weights {pretrained!r} for {model!r} are neither a known tag nor an "
            f"existing file; known tags: {', '.join(tags) or 'none'}"
        )
    what = f"open_clip weights {model}/{pretrained}"
    if tag.get("hf_hub"):
        # "org/name/file" names one file; "org/name/" means open_clip's default file names
        repo_id, filename = os.path.split(tag["hf_hub"])
        names = [filename] if filename else [HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME]
        return hub_file(repo_id, names, what=what), tag
    url = tag.get("url", "")
    target = Path(os.path.expanduser("~/.cache/clip")) / os.path.basename(url)
    if target.is_file():
        return str(target), tag
    if hub_offline() or not hub_reachable(host=url.split("/")[2]):
        raise WeightsNotFoundError(
            f"{what}: {target} is missing and {url} cannot be reached; download it on a machine "
            "with internet and copy it there, or pass the local file as `pretrained`"
        )
    return open_clip.download_pretrained_from_url(url), tag


def build_clip(section: dict[str, Any]) -> tuple[CustomTextCLIP, dict[str, Any]]:
    """Build an open_clip ``CustomTextCLIP`` (separate ``visual`` and ``text`` towers).

    ``section`` holds either ``model_cfg`` (an open_clip config dict; random weights), or
    ``source``: ``{"model": "ViT-B-32", "pretrained": "openai" | "/path/ckpt.safetensors"}``, or
    both (architecture given, weights from ``source``). Checkpoints (.pt, .safetensors, or one of
    them in a .zip, picked by ``section["member"]``) are read by
    :func:`~geobind.models.checkpoints.read_state_dict`: pickles with ``weights_only=True``, a
    pickle that needs more is refused. ``section["quick_gelu"]`` sets the activation, which a
    local file cannot tell (OpenAI-initialised fine-tunes need QuickGELU).

    Example:
        >>> from geobind.models.presets import get_preset
        >>> model, resolved = build_clip(get_preset("tiny")["clip"])
        >>> resolved["model_cfg"]["embed_dim"]
        64
    """
    import open_clip

    from geobind.models.checkpoints import load_state, read_state_dict, to_custom_text_layout

    section = copy.deepcopy(section)
    source = section.get("source") or None
    model_cfg = section.get("model_cfg")
    checkpoint, tag = None, {}
    if source is not None:
        if "model" not in source:
            raise InputDataError(
                "the clip source needs `model` (an open_clip name such as 'ViT-B-32') beside "
                "`pretrained`"
            )
        name = source["model"]
        if model_cfg is None:
            model_cfg = open_clip.get_model_config(name)
            if model_cfg is None:
                raise InputDataError(
                    f"unknown open_clip model {name!r}; see open_clip.list_models() for the names"
                )
        if source.get("pretrained"):
            checkpoint, tag = _clip_checkpoint(name, str(source["pretrained"]))
            if tag.get("quick_gelu"):
                model_cfg["quick_gelu"] = True
    if model_cfg is None:
        raise InputDataError("the clip section needs `model_cfg` or `source`")
    model_cfg = copy.deepcopy(model_cfg)
    model_cfg.pop("custom_text", None)
    if section.get("quick_gelu") is not None:  # a local file cannot say which activation it needs
        model_cfg["quick_gelu"] = bool(section["quick_gelu"])
    for key, default in CLIP_IMAGE_DEFAULTS.items():
        value = tag.get(key, section.get(key, default))
        section[key] = list(value) if isinstance(value, tuple) else value
    model = open_clip.CustomTextCLIP(**model_cfg)
    if checkpoint is not None:
        # safetensors, or a pickle read with weights_only=True (else UntrustedPickleError); a
        # training checkpoint's state_dict, module. prefixes and zips are unwrapped
        state = to_custom_text_layout(read_state_dict(checkpoint, member=section.get("member")))
        load_state(model, state, what=f"open_clip checkpoint {checkpoint} ({source['model']})")
    section["model_cfg"] = model_cfg
    section["source"] = source
    return model.eval(), section


def build_clap(section: dict[str, Any]) -> tuple[ClapAudioModelWithProjection, dict[str, Any]]:
    """Build transformers' ``ClapAudioModelWithProjection`` (LAION's HTSAT audio tower).

    ``section["source"]`` is ``None`` (random weights from ``clap_config``), a local folder written
    by ``save_pretrained`` or by :func:`geobind.models.clap_convert.convert_laion_clap`, or a hub id
    such as ``"laion/clap-htsat-unfused"`` (taken from the cache, downloaded only when reachable).

    Example:
        >>> from geobind.models.presets import get_preset
        >>> tower, resolved = build_clap(get_preset("tiny")["audio"])
        >>> tower.config.projection_dim
        32
    """
    from transformers import ClapAudioConfig, ClapAudioModelWithProjection

    section = copy.deepcopy(section)
    source = section.get("source")
    if source is None:
        if "clap_config" not in section:
            raise InputDataError("the audio section needs `clap_config` or `source`")
        model = ClapAudioModelWithProjection(ClapAudioConfig(**section["clap_config"]))
    else:
        folder = Path(str(source))
        if not folder.is_dir():
            # a hub id: make sure the files are local (or fail fast), then load from the cache
            config_path = hub_file(str(source), "config.json", what=f"CLAP audio tower {source}")
            folder = Path(config_path).parent
            for names in (["model.safetensors"], ["pytorch_model.bin"]):
                try:
                    hub_file(str(source), names, what=f"CLAP audio tower {source}")
                    break
                except WeightsNotFoundError:
                    if names == ["pytorch_model.bin"]:
                        raise
        try:
            model = ClapAudioModelWithProjection.from_pretrained(folder, local_files_only=True)
        except OSError as err:
            raise ModelFileError(f"cannot load the CLAP audio tower from {folder}: {err}") from err
        section["clap_config"] = _clap_config_dict(model.config)
    return model.eval(), section


def _clap_config_dict(config) -> dict[str, Any]:
    keep = (
        "spec_size", "num_mel_bins", "window_size", "patch_size", "patch_stride", "depths",
        "num_attention_heads", "patch_embeds_hidden_size", "hidden_size", "projection_dim",
        "enable_fusion", "fusion_type", "hidden_act", "mlp_ratio", "qkv_bias", "layer_norm_eps",
        "flatten_patch_embeds", "enable_patch_layer_norm", "patch_embed_input_channels",
        "aff_block_r", "num_classes", "projection_hidden_act",
    )  # fmt: skip
    d = config.to_dict()
    return {k: (list(d[k]) if isinstance(d[k], tuple) else d[k]) for k in keep if k in d}
