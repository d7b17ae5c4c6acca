"""Reading published checkpoints and converting them to open_clip's layout.

Formats (the registry's ``format`` names them):

- ``open_clip``: a state dict of open_clip's ``CLIP`` (text tower at the top level) or
  ``CustomTextCLIP`` (under ``text.``); plain, wrapped in a training checkpoint's ``state_dict``,
  with DistributedDataParallel's ``module.`` prefix, as ``.safetensors``, a ``.pt``/``.pth``/
  ``.bin`` pickle, or such a file inside a ``.zip``.
- ``hf_clip_vision``: a transformers CLIP vision model (``config.json`` + weights), converted to
  open_clip's vision transformer: q/k/v concatenated into ``in_proj_weight``, ``fc1``/``fc2`` →
  ``c_fc``/``c_proj``, ``pre_layrnorm`` → ``ln_pre``, ``visual_projection`` → ``proj``
  (transposed), and so on. A vision model without its projection is refused: its output is not in
  CLIP's space.

Pickles are read with ``torch.load(weights_only=True)``: tensors and plain containers only; a file
that needs more is refused (:class:`~geobind.errors.UntrustedPickleError`). Every failure is one
line naming the file, what was found and what was expected.
"""

from __future__ import annotations

import json
import pickle
import shutil
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from geobind.errors import ModelFileError, UntrustedPickleError
from geobind.models.io import read_safetensors
from geobind.models.registry import zip_member

__all__ = [
    "check_hf_clip_vision_config",
    "hf_clip_vision_to_open_clip",
    "load_hf_clip_vision",
    "load_state",
    "read_state_dict",
    "to_custom_text_layout",
]

#: Entries of older open_clip / OpenAI state dicts that are not weights of a CustomTextCLIP.
_IGNORED = {
    "attn_mask",
    "text.attn_mask",
    "input_resolution",
    "context_length",
    "vocab_size",
    "text.transformer.embeddings.position_ids",
}
#: Weights a CustomTextCLIP has but geobind never uses (the contrastive temperature and bias).
_OPTIONAL = {"logit_scale", "logit_bias"}
_TEXT_KEYS = (
    "token_embedding",
    "positional_embedding",
    "transformer",
    "ln_final",
    "text_projection",
)


def _extract(path: Path, member: str) -> Path:
    """``member`` of zip ``path`` as a file: kept beside the zip (``NAME.zip.d/``) so the next
    load reuses it, or in a temporary folder when the zip's folder is read-only."""
    try:
        with zipfile.ZipFile(path) as z:
            info = z.getinfo(member)
            beside = path.with_name(path.name + ".d")
            for make in (lambda: beside, lambda: Path(tempfile.mkdtemp(prefix="geobind-"))):
                folder = make()
                target = folder / Path(member).name  # never a path from the zip (../../x)
                if target.is_file() and target.stat().st_size == info.file_size:
                    return target
                partial = target.with_name(target.name + ".partial")
                try:
                    folder.mkdir(parents=True, exist_ok=True)
                    with z.open(info) as src, open(partial, "wb") as dst:
                        shutil.copyfileobj(src, dst, length=1 << 20)
                    partial.replace(target)
                    return target
                except PermissionError:
                    continue
    except (zipfile.BadZipFile, EOFError, OSError) as err:
        raise ModelFileError(f"cannot read {member} from {path} ({err}); pull it again") from None
    raise ModelFileError(f"cannot extract {member} from {path}: no writable folder")


def _torch_load(path: Path) -> Any:
    try:
        return torch.load(
            path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path)
        )
    except pickle.UnpicklingError:
        raise UntrustedPickleError(
            f"{path} is a pickle that needs more than tensors to load, so geobind refuses it "
            "(loading it could run code). Convert it to safetensors in an environment you trust"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelFileError(
            f"cannot read {path} ({first}); it is truncated or not a PyTorch checkpoint. "
            "Download it again"
        ) from None


def read_state_dict(path: str | Path, *, member: str | None = None) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file: safetensors, a ``torch.save`` pickle (read with
    ``weights_only=True``), or either inside a zip (``member``: a pattern naming it).

    A training checkpoint's ``state_dict`` is unwrapped and DistributedDataParallel's ``module.``
    prefix dropped, so every open_clip variant comes out the same.

    Raises:
        UntrustedPickleError: the pickle holds more than tensors and plain containers.
        ModelFileError: the file is missing, truncated, or holds no state dict.

    Example:
        >>> import torch
        >>> p = getfixture("tmp_path") / "ckpt.pt"
        >>> torch.save({"epoch": 20, "state_dict": {"module.visual.proj": torch.ones(2, 2)}}, p)
        >>> list(read_state_dict(p))
        ['visual.proj']
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"checkpoint {path} does not exist")
    if path.suffix.lower() == ".zip":
        return read_state_dict(_extract(path, zip_member(path, member)))
    if path.suffix.lower() == ".safetensors":
        obj: Any = read_safetensors(path)
    else:
        obj = _torch_load(path)
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not obj:
        raise ModelFileError(f"{path} holds a {type(obj).__name__}, not a state dict")
    others = sorted(str(k) for k, v in obj.items() if not torch.is_tensor(v))
    if others:
        raise ModelFileError(
            f"{path} holds no state dict: {', '.join(others[:6])} are not tensors (and there is "
            "no `state_dict` entry)"
        )
    state = {str(k): v for k, v in obj.items()}
    if all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def to_custom_text_layout(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An open_clip ``CLIP`` state dict in ``CustomTextCLIP``'s layout (text tower under
    ``text.``); entries that are not weights (OpenAI's ``input_resolution``, masks) dropped.

    Example:
        >>> import torch
        >>> one = torch.ones(1)
        >>> sorted(to_custom_text_layout({"ln_final.weight": one, "visual.proj": one,
        ...                               "attn_mask": one}))
        ['text.ln_final.weight', 'visual.proj']
    """
    out = {}
    for key, value in state.items():
        if key.split(".")[0] in _TEXT_KEYS:
            key = f"text.{key}"
        if key not in _IGNORED:
            out[key] = value
    return out


def load_state(module: nn.Module, state: Mapping[str, torch.Tensor], *, what: str) -> None:
    """Load ``state`` into ``module``, refusing any mismatch in names or shapes.

    Only the contrastive temperature (``logit_scale``, ``logit_bias``) may be missing. A state
    dict of another architecture (another width, depth or patch size; a ResNet for a ViT) fails
    with one line naming the first differences.

    Example:
        >>> from torch import nn
        >>> load_state(nn.Linear(2, 3), {"weight": torch.ones(3, 2), "bias": torch.ones(3)},
        ...            what="a tiny layer")
        >>> load_state(nn.Linear(2, 3), {"weight": torch.ones(4, 2), "bias": torch.ones(4)},
        ...            what="a tiny layer")
        Traceback (most recent call last):
        ...
        geobind.errors.ModelFileError: a tiny layer does not fit the model: weight is (4, 2) ...
    """
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state) - _OPTIONAL)
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} weights missing ({', '.join(missing[:3])} …)")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected ({', '.join(unexpected[:3])} …)")
        raise ModelFileError(
            f"{what} does not fit the model: {'; '.join(parts)}. It is a checkpoint of another "
            "architecture (or format) than its registry entry or spec says"
        )
    fitted = {}
    for key, value in state.items():
        target = expected[key]
        if key in _OPTIONAL and value.numel() == target.numel():
            value = value.reshape(target.shape)
        if tuple(value.shape) != tuple(target.shape):
            raise ModelFileError(
                f"{what} does not fit the model: {key} is {tuple(value.shape)} in the file but "
                f"{tuple(target.shape)} in the model. It is a checkpoint of another architecture "
                "(width, depth, patch or image size) than its registry entry or spec says"
            )
        fitted[key] = value
    module.load_state_dict(fitted, strict=False)  # checked above; only _OPTIONAL may be absent


def _hf_vision_config(config: Mapping[str, Any], *, what: str) -> dict[str, Any]:
    from transformers import CLIPVisionConfig

    kind = config.get("model_type")
    if kind == "clip":  # a whole CLIPModel: its vision half
        vision = {**config.get("vision_config", {})}
        vision.setdefault("projection_dim", config.get("projection_dim", 512))
    elif kind == "clip_vision_model":
        vision = dict(config)
    else:
        raise ModelFileError(
            f"{what}: config.json describes a {kind!r} model, not a transformers CLIP vision "
            "model (model_type 'clip_vision_model' or 'clip')"
        )
    known = CLIPVisionConfig().to_dict()
    return {**known, **{k: v for k, v in vision.items() if k in known}}


def check_hf_clip_vision_config(
    config: Mapping[str, Any], model_cfg: Mapping[str, Any], *, what: str
) -> None:
    """Refuse a transformers CLIP vision ``config.json`` that differs from the open_clip
    architecture ``model_cfg`` it is converted into (size, heads, activation, norm epsilon).

    Shapes alone do not show the number of attention heads or the activation, so they are
    compared here, before any weight is read.

    Example:
        >>> cfg = {"model_type": "clip_vision_model", "hidden_size": 64, "num_hidden_layers": 2,
        ...        "num_attention_heads": 2, "intermediate_size": 256, "image_size": 32,
        ...        "patch_size": 8, "projection_dim": 64, "hidden_act": "quick_gelu"}
        >>> tiny = {"embed_dim": 64, "quick_gelu": True, "vision_cfg": {"image_size": 32,
        ...         "patch_size": 8, "width": 64, "layers": 2, "head_width": 32}}
        >>> check_hf_clip_vision_config(cfg, tiny, what="test")
        >>> check_hf_clip_vision_config({**cfg, "hidden_act": "gelu"}, tiny, what="test")
        Traceback (most recent call last):
        ...
        geobind.errors.ModelFileError: test: config.json has hidden_act 'gelu' but the ...
    """
    from open_clip.model import CLIPVisionCfg

    hf = _hf_vision_config(config, what=what)
    v = CLIPVisionCfg(**model_cfg["vision_cfg"])
    width = int(v.width)
    wanted = {
        "hidden_size": width,
        "num_hidden_layers": v.layers,
        "num_attention_heads": width // int(v.head_width),
        "intermediate_size": int(width * v.mlp_ratio),
        "image_size": v.image_size,
        "patch_size": v.patch_size,
        "projection_dim": model_cfg["embed_dim"],
        "num_channels": 3,
    }
    diff = [f"{k} {hf.get(k)} (expected {w})" for k, w in wanted.items() if hf.get(k) != w]
    if diff:
        raise ModelFileError(
            f"{what}: config.json describes another architecture than the registry's: "
            f"{', '.join(diff)}"
        )
    act, quick = hf.get("hidden_act"), bool(model_cfg.get("quick_gelu", False))
    if act not in ("gelu", "quick_gelu") or (act == "quick_gelu") != quick:
        raise ModelFileError(
            f"{what}: config.json has hidden_act {act!r} but the registry entry says "
            f"quick_gelu={quick}; the activation must match or every vector is wrong"
        )
    if abs(float(hf.get("layer_norm_eps", 1e-5)) - 1e-5) > 1e-12:
        raise ModelFileError(
            f"{what}: layer_norm_eps {hf['layer_norm_eps']} differs from open_clip's 1e-5"
        )


def hf_clip_vision_to_open_clip(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A transformers CLIP vision state dict (``CLIPVisionModelWithProjection``, or the vision
    half of a ``CLIPModel``) → the state dict of open_clip's ``VisionTransformer`` (``visual``).

    Raises:
        ModelFileError: no CLIP vision weights, a weight missing, or no ``visual_projection``.

    Example:
        >>> from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection
        >>> hf = CLIPVisionModelWithProjection(CLIPVisionConfig(hidden_size=32,
        ...     intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=16,
        ...     patch_size=8, projection_dim=8))
        >>> visual = hf_clip_vision_to_open_clip(hf.state_dict())
        >>> tuple(visual["proj"].shape)  # visual_projection.weight, transposed
        (32, 8)
        >>> tuple(visual["transformer.resblocks.0.attn.in_proj_weight"].shape)  # q, k, v
        (96, 32)
    """
    tail = "embeddings.class_embedding"  # "vision_model." before it, except in transformers 5's
    anchor = next((k for k in state if k.endswith(tail)), None)  # CLIPVisionModel files
    if anchor is None:
        raise ModelFileError(
            "the weights are not a transformers CLIP vision model (no "
            f"vision_model.embeddings.class_embedding among {len(state)} tensors)"
        )
    vision = anchor[: -len(tail)]
    projection = [k for k in state if k.endswith("visual_projection.weight")]
    if len(projection) != 1:
        raise ModelFileError(
            "the weights are a CLIP vision model without its projection (no "
            "visual_projection.weight): its output is the pooled hidden state, not a vector in "
            "CLIP's space, so geobind refuses it. Use weights saved with "
            "CLIPVisionModelWithProjection"
        )
    used: set[str] = set(projection)

    def get(name: str) -> torch.Tensor:
        key = vision + name
        if key not in state:
            raise ModelFileError(f"the CLIP vision weights lack {key}")
        used.add(key)
        return state[key]

    out = {
        "class_embedding": get("embeddings.class_embedding"),
        "conv1.weight": get("embeddings.patch_embedding.weight"),
        "positional_embedding": get("embeddings.position_embedding.weight"),
        "ln_pre.weight": get("pre_layrnorm.weight"),
        "ln_pre.bias": get("pre_layrnorm.bias"),
        "ln_post.weight": get("post_layernorm.weight"),
        "ln_post.bias": get("post_layernorm.bias"),
        "proj": state[projection[0]].t().contiguous(),
    }
    layers = sorted(
        {int(k[len(vision) :].split(".")[2]) for k in state if k.startswith(f"{vision}encoder.")}
    )
    for i in layers:
        hf, oc = f"encoder.layers.{i}.", f"transformer.resblocks.{i}."
        for kind in ("weight", "bias"):
            qkv = [get(f"{hf}self_attn.{p}_proj.{kind}") for p in ("q", "k", "v")]
            out[f"{oc}attn.in_proj_{kind}"] = torch.cat(qkv, dim=0)
            out[f"{oc}attn.out_proj.{kind}"] = get(f"{hf}self_attn.out_proj.{kind}")
            out[f"{oc}ln_1.{kind}"] = get(f"{hf}layer_norm1.{kind}")
            out[f"{oc}ln_2.{kind}"] = get(f"{hf}layer_norm2.{kind}")
            out[f"{oc}mlp.c_fc.{kind}"] = get(f"{hf}mlp.fc1.{kind}")
            out[f"{oc}mlp.c_proj.{kind}"] = get(f"{hf}mlp.fc2.{kind}")
    left = sorted(
        k for k in state if k.startswith(vision) and k not in used and "position_ids" not in k
    )
    if left:
        raise ModelFileError(
            f"the CLIP vision weights hold {len(left)} tensors open_clip's ViT has no place for "
            f"({', '.join(left[:3])} …)"
        )
    return out


def load_hf_clip_vision(
    visual: nn.Module, folder: str | Path, model_cfg: Mapping[str, Any], *, what: str
) -> None:
    """Load a transformers CLIP vision model saved in ``folder`` (``config.json`` +
    ``model.safetensors`` or ``pytorch_model.bin``) into open_clip's ``visual`` tower, after
    checking its config against ``model_cfg`` (:func:`check_hf_clip_vision_config`).

    Example:
        >>> import open_clip
        >>> from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection
        >>> cfg = {"embed_dim": 8, "quick_gelu": True, "vision_cfg": {"image_size": 16,
        ...        "patch_size": 8, "width": 32, "layers": 1, "head_width": 16},
        ...        "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 2,
        ...        "layers": 1}}
        >>> folder = getfixture("tmp_path") / "hf"
        >>> CLIPVisionModelWithProjection(CLIPVisionConfig(hidden_size=32, intermediate_size=128,
        ...     num_hidden_layers=1, num_attention_heads=2, image_size=16, patch_size=8,
        ...     projection_dim=8, hidden_act="quick_gelu")).save_pretrained(folder)
        >>> visual = open_clip.CustomTextCLIP(**cfg).visual
        >>> load_hf_clip_vision(visual, folder, cfg, what="a tiny CLIP vision model")
    """
    folder = Path(folder)
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise ModelFileError(f"{what}: {config_path} does not exist")
    try:
        config = json.loads(config_path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelFileError(f"{what}: {config_path} is not valid JSON ({err})") from None
    check_hf_clip_vision_config(config, model_cfg, what=what)
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (folder / name).is_file():
            state = read_state_dict(folder / name)
            break
    else:
        raise ModelFileError(f"{what}: {folder} holds no model.safetensors or pytorch_model.bin")
    try:
        converted = hf_clip_vision_to_open_clip(state)
    except ModelFileError as err:
        raise ModelFileError(f"{what}: {err}") from None
    load_state(visual, converted, what=what)
