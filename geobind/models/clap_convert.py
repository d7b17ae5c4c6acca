"""Convert a LAION-CLAP checkpoint's audio tower into a transformers CLAP audio model.

LAION publishes CLAP as pickled ``.pt`` files (``630k-audioset-best.pt`` …) whose ``state_dict``
holds ``module.audio_branch.*`` (the HTSAT Swin transformer), ``module.audio_projection.*`` and the
text tower. transformers ships the same HTSAT tower under other names; this module renames the
audio weights once and writes a folder that ``ClapAudioModelWithProjection.from_pretrained`` reads
(``config.json`` + ``model.safetensors``), so the pickle is never needed again.

Renaming rules (LAION, after dropping ``module.`` → transformers):

- ``audio_projection.0`` / ``.2`` → ``audio_projection.linear1`` / ``.linear2``
- ``audio_branch.`` → ``audio_model.audio_encoder.``, and inside it ``bn0`` → ``batch_norm``
- in each ``layers.<i>.blocks.<j>``: ``norm1``/``norm2`` → ``layernorm_before``/``layernorm_after``,
  ``attn.qkv`` → split in three along the output axis into ``attention.self.query/key/value``,
  ``attn.proj`` → ``attention.output.dense``, ``attn.relative_position_*`` →
  ``attention.self.relative_position_*``, ``mlp.fc1``/``mlp.fc2`` →
  ``intermediate.dense``/``output.dense``
- ``patch_embed.*`` (fusion included), ``layers.<i>.downsample.*`` and ``norm.*`` keep their names.

Dropped: the text tower and everything outside the audio branch and audio projection, the
STFT/mel filter banks (``ClapFeatureExtractor`` computes features instead), the per-block
``attn_mask`` buffers (recomputed by transformers) and the ``tscam_conv``/``head`` sound-event
classifier, which the audio embedding does not use.
"""

from __future__ import annotations

import inspect
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from geobind.errors import (
    ModelFileError,
    OutputExistsError,
    UntrustedPickleError,
    WeightsNotFoundError,
)

if TYPE_CHECKING:
    import torch
    from transformers import ClapAudioConfig, ClapAudioModelWithProjection

__all__ = ["convert_laion_clap", "to_laion_state_dict"]

log = logging.getLogger(__name__)

_ENCODER = "audio_model.audio_encoder."
_BRANCH = "audio_branch."
_PROJECTION = "audio_projection."
_BLOCK = re.compile(r"(layers\.\d+\.blocks\.\d+\.)(.+)")
_PROJECTION_LAYER = re.compile(r"audio_projection\.(\w+)\.(weight|bias)")

# LAION module path inside a Swin block → transformers module path (parameters keep their leaf).
_BLOCK_MODULES = {
    "norm1": "layernorm_before",
    "norm2": "layernorm_after",
    "attn.proj": "attention.output.dense",
    "mlp.fc1": "intermediate.dense",
    "mlp.fc2": "output.dense",
}
# Tensors that are attributes of the attention module itself rather than of a sub-layer.
_BLOCK_TENSORS = {
    "attn.relative_position_bias_table": "attention.self.relative_position_bias_table",
    "attn.relative_position_index": "attention.self.relative_position_index",
}
_QKV = ("query", "key", "value")
_PROJECTION_LAYERS = {"0": "linear1", "2": "linear2"}  # index 1 of LAION's Sequential is the ReLU
# Parts of LAION's audio branch with no counterpart in transformers' audio model.
_DROPPED_IN_BRANCH = ("spectrogram_extractor.", "logmel_extractor.", "tscam_conv.", "head.")
# Fusion-only weights: their presence tells a fused checkpoint from an unfused one.
_FUSION_PREFIXES = ("patch_embed.fusion_model.", "patch_embed.mel_conv2d.")
# Buffers that a checkpoint may lack without harm: the fresh model computes the same values.
_OPTIONAL_SUFFIXES = (".relative_position_index", ".num_batches_tracked")
_SHOWN = 5
_CONFIG_HINT = (
    "Pass the config that matches the checkpoint: the default ClapAudioConfig() fits LAION's "
    "HTSAT-tiny 630k checkpoints; HTSAT-base ones (the music checkpoints) need "
    "config={'patch_embeds_hidden_size': 128, 'depths': [2, 2, 12, 2], 'hidden_size': 1024}."
)


def convert_laion_clap(
    checkpoint: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    trust_pickle: bool = False,
    config: ClapAudioConfig | Mapping[str, Any] | None = None,
) -> Path:
    """Convert the audio tower of a LAION-CLAP checkpoint into a transformers model folder.

    Only the audio branch and the audio projection are kept; the text tower is ignored. The
    result loads with ``transformers.ClapAudioModelWithProjection.from_pretrained(out)``. A real
    conversion, from a file you trust, looks like::

        convert_laion_clap("630k-audioset-best.pt", "clap-htsat-unfused", trust_pickle=True)

    Args:
        checkpoint: a LAION-CLAP ``.pt`` file (a dict with ``"state_dict"``, or a bare state dict;
            keys with or without the ``module.`` prefix), or the same state dict saved as
            ``.safetensors``, which needs no trust flag.
        out: folder to write (``config.json`` + ``model.safetensors``): a missing path or an
            empty folder. It is written under a temporary name and renamed when complete, so a
            failed conversion leaves nothing behind.
        trust_pickle: a ``.pt`` file is a Python pickle, which can run arbitrary code when loaded.
            Pass ``True`` only for a file from a source you trust. The file is then read with
            ``torch.load(weights_only=True)`` and, if that is not enough, as a full pickle.
        config: the audio architecture, as a ``ClapAudioConfig`` or a dict of its arguments.
            ``None`` means ``ClapAudioConfig()``, which matches LAION's HTSAT-tiny checkpoints
            (the ``630k-*`` files). For ``None`` or a dict without ``enable_fusion``, fusion is
            switched on when the checkpoint holds fusion weights.

    Returns:
        ``Path(out)``.

    Raises:
        WeightsNotFoundError: ``checkpoint`` does not exist.
        UntrustedPickleError: ``checkpoint`` is a pickle and ``trust_pickle`` is false. Nothing
            was unpickled.
        ModelFileError: the file cannot be read, holds no CLAP audio weights, or its weights do not
            fit the architecture in ``config`` (the message names missing and unexpected keys).
        OutputExistsError: ``out`` exists and is not an empty folder.

    Example:
        >>> from safetensors.torch import save_file
        >>> from transformers import ClapAudioConfig, ClapAudioModelWithProjection
        >>> from geobind.models.clap_convert import convert_laion_clap, to_laion_state_dict
        >>> tiny = dict(spec_size=64, num_mel_bins=16, window_size=4, patch_embeds_hidden_size=8,
        ...             depths=[1, 1], num_attention_heads=[2, 2], hidden_size=16, projection_dim=8)
        >>> tmp = getfixture("tmp_path")
        >>> laion = to_laion_state_dict(ClapAudioModelWithProjection(ClapAudioConfig(**tiny)))
        >>> save_file(laion, tmp / "laion.safetensors")
        >>> out = convert_laion_clap(tmp / "laion.safetensors", tmp / "clap", config=tiny)
        >>> sorted(p.name for p in out.iterdir())
        ['config.json', 'model.safetensors']
        >>> ClapAudioModelWithProjection.from_pretrained(out).config.projection_dim
        8
    """
    checkpoint = Path(checkpoint)
    out = Path(out)
    if not checkpoint.is_file():
        raise WeightsNotFoundError(
            f"LAION-CLAP checkpoint {checkpoint} not found; download it (e.g. "
            "630k-audioset-best.pt from https://huggingface.co/lukewys/laion_clap) and pass "
            "its path"
        )
    _ensure_free(out)

    state = _unwrap_state_dict(_read_checkpoint(checkpoint, trust_pickle=trust_pickle), checkpoint)
    mapped = _to_transformers(state)
    if not mapped:
        raise ModelFileError(
            f"{checkpoint} holds no LAION-CLAP audio weights: found {len(state)} tensors but none "
            f"under 'audio_branch.' or 'audio_projection.' (first keys: {_few(state)}); "
            "pass a LAION-CLAP checkpoint such as 630k-audioset-best.pt"
        )
    fused = any(key.startswith(_ENCODER + p) for key in mapped for p in _FUSION_PREFIXES)
    model = _load_into_model(mapped, _resolve_config(config, fused=fused), checkpoint)
    _save_atomically(model, out)
    log.info("converted %s to %s (enable_fusion=%s)", checkpoint, out, model.config.enable_fusion)
    return out


def to_laion_state_dict(model: ClapAudioModelWithProjection) -> dict[str, torch.Tensor]:
    """Rename a transformers CLAP audio model's weights into LAION-CLAP's checkpoint layout.

    The inverse of :func:`convert_laion_clap`'s renaming: keys carry the ``module.`` prefix that
    LAION's (data-parallel) training writes, query/key/value are fused back into ``attn.qkv`` and
    the projection layers are ``audio_projection.0``/``.2``. Only what transformers' model holds is
    produced: no text tower, STFT/mel filter banks, attention masks or classification head. Useful
    for round-trip checks and for building LAION-layout test fixtures.

    Args:
        model: the model whose weights to rename.

    Returns:
        A new dict of detached, contiguous tensor copies, keyed like LAION's ``state_dict``.

    Example:
        >>> from transformers import ClapAudioConfig, ClapAudioModelWithProjection
        >>> from geobind.models.clap_convert import to_laion_state_dict
        >>> model = ClapAudioModelWithProjection(ClapAudioConfig(
        ...     spec_size=64, num_mel_bins=16, window_size=4, patch_embeds_hidden_size=8,
        ...     depths=[1, 1], num_attention_heads=[2, 2], hidden_size=16, projection_dim=8))
        >>> laion = to_laion_state_dict(model)
        >>> laion["module.audio_branch.layers.0.blocks.0.attn.qkv.weight"].shape
        torch.Size([24, 8])
        >>> sorted(k for k in laion if "projection" in k)  # doctest: +NORMALIZE_WHITESPACE
        ['module.audio_projection.0.bias', 'module.audio_projection.0.weight',
         'module.audio_projection.2.bias', 'module.audio_projection.2.weight']
    """
    import torch

    laion: dict[str, torch.Tensor] = {}
    qkv_parts: dict[str, dict[int, torch.Tensor]] = {}
    for key, tensor in model.state_dict().items():
        name, part = _laion_name(key)
        value = tensor.detach().clone().contiguous()
        if part is None:
            laion["module." + name] = value
            continue
        parts = qkv_parts.setdefault(name, {})
        parts[part] = value
        if len(parts) == len(_QKV):
            laion["module." + name] = torch.cat([parts[i] for i in range(len(_QKV))], dim=0)
    incomplete = [name for name, parts in qkv_parts.items() if len(parts) != len(_QKV)]
    if incomplete:
        raise ModelFileError(
            f"cannot fuse query/key/value into {_few(incomplete)}: the model lacks one of the three"
        )
    return laion


# ----------------------------------------------------------------------------------- reading


def _read_checkpoint(path: Path, *, trust_pickle: bool) -> object:
    """Load a checkpoint, refusing to unpickle it unless the caller vouched for it."""
    if path.suffix == ".safetensors" or _looks_like_safetensors(path):
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(path, device="cpu")
        except (SafetensorError, OSError, ValueError) as err:
            raise ModelFileError(f"cannot read {path} as safetensors: {err}") from err

    if not trust_pickle:
        raise UntrustedPickleError(
            f"{path} is a PyTorch pickle checkpoint, and loading a Python pickle can run "
            "arbitrary code hidden in the file. Conversion is a one-off step: it writes a "
            "safetensors folder, after which the pickle is never loaded again. If the file comes "
            "from a source you trust (such as LAION's own release), convert it with "
            "convert_laion_clap(checkpoint, out, trust_pickle=True) or "
            f"`geobind convert-clap {path} OUT --trust-pickle`."
        )

    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # any failure means the file needs the full unpickler
        log.info(
            "%s does not load with weights_only=True (%s); unpickling it fully because "
            "trust_pickle=True",
            path,
            err,
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:
        raise ModelFileError(f"cannot read {path} as a PyTorch checkpoint: {err}") from err


def _looks_like_safetensors(path: Path) -> bool:
    """Whether the file starts like safetensors: a little-endian header length, then JSON."""
    with open(path, "rb") as f:
        head = f.read(9)
    if len(head) < 9 or head[8:9] != b"{":
        return False
    return 0 < int.from_bytes(head[:8], "little") <= path.stat().st_size - 8


def _unwrap_state_dict(obj: object, source: Path) -> dict[str, torch.Tensor]:
    """Take ``obj["state_dict"]`` (or ``obj`` itself), keep tensors, drop a ``module.`` prefix."""
    import torch

    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise ModelFileError(
            f"{source} holds a {type(obj).__name__}, expected a dict with a 'state_dict' entry or "
            "a state dict; pass a LAION-CLAP checkpoint such as 630k-audioset-best.pt"
        )
    state = {
        str(key).removeprefix("module."): value
        for key, value in obj.items()
        if isinstance(value, torch.Tensor)
    }
    if not state:
        raise ModelFileError(
            f"{source} holds no tensors (keys: {_few(map(str, obj))}); "
            "pass a LAION-CLAP checkpoint such as 630k-audioset-best.pt"
        )
    return state


# ---------------------------------------------------------------------------------- renaming


def _to_transformers(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename LAION audio keys (without ``module.``) to transformers keys; drop everything else."""
    mapped: dict[str, torch.Tensor] = {}
    dropped = 0
    for key, value in state.items():
        if key.startswith(_PROJECTION):
            match = _PROJECTION_LAYER.fullmatch(key)
            if match and match[1] in _PROJECTION_LAYERS:
                key = f"{_PROJECTION}{_PROJECTION_LAYERS[match[1]]}.{match[2]}"
            mapped[key] = value  # an unknown projection key stays as is: reported as unexpected
            continue
        if not key.startswith(_BRANCH):
            dropped += 1  # text tower, logit scales, training-only transforms
            continue
        sub = key.removeprefix(_BRANCH)
        if sub.startswith(_DROPPED_IN_BRANCH) or sub.endswith(".attn_mask"):
            dropped += 1
            continue
        block = _BLOCK.fullmatch(sub)
        if block is None:
            sub = "batch_norm." + sub.removeprefix("bn0.") if sub.startswith("bn0.") else sub
            mapped[_ENCODER + sub] = value
            continue
        prefix, rest = block.groups()
        module, _, leaf = rest.rpartition(".")
        if rest in _BLOCK_TENSORS:
            mapped[_ENCODER + prefix + _BLOCK_TENSORS[rest]] = value
        elif module == "attn.qkv":
            # LAION's fused projection stacks the query, key and value outputs in that order.
            for name, chunk in zip(_QKV, value.chunk(len(_QKV), dim=0), strict=False):
                mapped[f"{_ENCODER}{prefix}attention.self.{name}.{leaf}"] = chunk
        else:
            mapped[f"{_ENCODER}{prefix}{_BLOCK_MODULES.get(module, module)}.{leaf}"] = value
    log.debug("kept %d audio tensors, dropped %d other tensors", len(mapped), dropped)
    return mapped


def _laion_name(key: str) -> tuple[str, int | None]:
    """LAION name (without ``module.``) of a transformers key, and its query/key/value slot."""
    if key.startswith(_PROJECTION):
        match = _PROJECTION_LAYER.fullmatch(key)
        inverse = {v: k for k, v in _PROJECTION_LAYERS.items()}
        if match and match[1] in inverse:
            return f"{_PROJECTION}{inverse[match[1]]}.{match[2]}", None
        return key, None
    if not key.startswith(_ENCODER):
        return key, None
    sub = key.removeprefix(_ENCODER)
    block = _BLOCK.fullmatch(sub)
    if block is None:
        if sub.startswith("batch_norm."):
            sub = "bn0." + sub.removeprefix("batch_norm.")
        return _BRANCH + sub, None
    prefix, rest = block.groups()
    for laion, ours in _BLOCK_TENSORS.items():
        if rest == ours:
            return f"{_BRANCH}{prefix}{laion}", None
    module, _, leaf = rest.rpartition(".")
    for slot, name in enumerate(_QKV):
        if module == f"attention.self.{name}":
            return f"{_BRANCH}{prefix}attn.qkv.{leaf}", slot
    for laion, ours in _BLOCK_MODULES.items():
        if module == ours:
            return f"{_BRANCH}{prefix}{laion}.{leaf}", None
    return f"{_BRANCH}{prefix}{rest}", None


# --------------------------------------------------------------------------- model and output


def _resolve_config(
    config: ClapAudioConfig | Mapping[str, Any] | None, *, fused: bool
) -> ClapAudioConfig:
    """Build the architecture config, taking ``enable_fusion`` from the checkpoint unless given."""
    from transformers import ClapAudioConfig

    if config is None:
        return ClapAudioConfig(enable_fusion=fused)
    if isinstance(config, ClapAudioConfig):
        return config
    if isinstance(config, Mapping):
        return ClapAudioConfig(**{"enable_fusion": fused, **config})
    raise TypeError(
        f"config must be a ClapAudioConfig, a dict of its arguments or None, "
        f"not {type(config).__name__}"
    )


def _load_into_model(
    mapped: dict[str, torch.Tensor], config: ClapAudioConfig, source: Path
) -> ClapAudioModelWithProjection:
    """Build the model and load the renamed weights, failing on any key or shape mismatch."""
    from transformers import ClapAudioModelWithProjection

    model = ClapAudioModelWithProjection(config)
    expected = model.state_dict()
    missing = [k for k in expected if k not in mapped and not k.endswith(_OPTIONAL_SUFFIXES)]
    unexpected = [k for k in mapped if k not in expected]
    if missing or unexpected:
        # Named as in the checkpoint, so query/key/value count once, as LAION's fused qkv.
        missing, unexpected = _laion_names(missing), _laion_names(unexpected)
        found = []
        if missing:
            found.append(
                f"{len(missing)} weights the model needs are not in the checkpoint "
                f"({_few(missing)})"
            )
        if unexpected:
            found.append(
                f"{len(unexpected)} checkpoint weights have no place in the model "
                f"({_few(unexpected)})"
            )
        raise ModelFileError(
            f"{source} does not fit the audio architecture in the config "
            f"(depths={list(config.depths)}, "
            f"num_attention_heads={list(config.num_attention_heads)}, "
            f"patch_embeds_hidden_size={config.patch_embeds_hidden_size}, "
            f"enable_fusion={config.enable_fusion}): {' and '.join(found)}. {_CONFIG_HINT}"
        )
    wrong_shape = [
        f"{_laion_name(k)[0]} {tuple(v.shape)} vs {tuple(expected[k].shape)}"
        for k, v in mapped.items()
        if v.shape != expected[k].shape
    ]
    if wrong_shape:
        raise ModelFileError(
            f"{source} does not fit the audio architecture in the config: {len(wrong_shape)} "
            f"weights have another shape than the model expects (checkpoint vs model: "
            f"{_few(wrong_shape)}). " + _CONFIG_HINT
        )
    full = dict(expected)
    full.update(mapped)
    model.load_state_dict(full, strict=True)
    return model.eval()


def _ensure_free(out: Path) -> None:
    """Refuse to write into anything but a missing path or an empty folder."""
    if out.is_dir() and not any(out.iterdir()):
        return
    if out.exists() or out.is_symlink():
        raise OutputExistsError(
            f"{out} already exists and is not an empty folder; "
            "choose another output path or delete it first"
        )


def _save_atomically(model: ClapAudioModelWithProjection, out: Path) -> None:
    """Write the model to a temporary sibling folder, then rename it to ``out``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        # transformers 5 always writes safetensors and dropped the flag; older ones need it.
        params = inspect.signature(model.save_pretrained).parameters
        kwargs = {"safe_serialization": True} if "safe_serialization" in params else {}
        model.save_pretrained(tmp, **kwargs)
        if not (tmp / "model.safetensors").is_file():
            raise ModelFileError(
                f"transformers wrote no model.safetensors for {out} (wrote: "
                f"{_few(p.name for p in tmp.iterdir())}); upgrade transformers"
            )
        _ensure_free(out)
        if out.is_dir():
            out.rmdir()  # empty (checked above); Windows cannot rename onto an existing folder
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _laion_names(keys: Iterable[str]) -> list[str]:
    """Unique LAION names of transformers keys, in order (query/key/value collapse into qkv)."""
    return list(dict.fromkeys(_laion_name(k)[0] for k in keys))


def _few(items: Iterable[str]) -> str:
    """The first few items, for error messages."""
    items = list(items)
    shown = ", ".join(items[:_SHOWN])
    return shown + (f", … ({len(items) - _SHOWN} more)" if len(items) > _SHOWN else "")
