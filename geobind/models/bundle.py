"""The GeoBind model bundle: named encoders that embed into one space, saved as a model folder.

A model folder holds ``model.safetensors`` and ``geobind.json`` (the full configuration, so the
architecture rebuilds offline; modalities; trained stages; metrics; geobind version; the SHA-256 of
the weights). Loading checks the file framing and the hash, and never unpickles anything.

Adding a modality (a binding stage N) is adding a named encoder: ``config["encoders"]`` maps each
modality to an encoder *kind*, and :func:`register_encoder_kind` adds kinds.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from geobind._hashing import sha256_file
from geobind._heap import keep_heap
from geobind._version import __version__
from geobind.errors import InputDataError, ModelFileError, OutputExistsError
from geobind.models.encoders import AudioEncoder, Encoder, GroundEncoder, SatEncoder, TextEncoder
from geobind.models.io import read_safetensors, write_safetensors
from geobind.models.links import bound_to, unique_links
from geobind.models.presets import get_preset, list_models
from geobind.models.registry import list_registered
from geobind.models.towers import build_clap, build_clip

__all__ = ["GeoBind", "load", "register_encoder_kind", "resolve_device"]

FORMAT = "geobind-model/1"
DEFAULT_ENCODERS = {"sat": "sat", "ground": "ground", "text": "text", "audio": "audio"}


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` is CUDA when available, else the CPU; anything else is passed to torch.

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@dataclass
class _Shared:
    """What encoder builders share: the CLIP model and the resolved config."""

    config: dict[str, Any]
    clip: Any = None
    image_size: int = 0


def _build_sat(name: str, shared: _Shared) -> Encoder:
    section = shared.config[name]
    clip_cfg = shared.config["clip"]
    section.setdefault("mean", clip_cfg["mean"])
    section.setdefault("std", clip_cfg["std"])
    section.setdefault("scale", "auto")
    section["image_size"] = shared.image_size
    return SatEncoder(
        copy.deepcopy(shared.clip.visual),  # initialised from CLIP's image tower, trained apart
        shared.config["embed_dim"],
        bands=section["bands"],
        scale=section["scale"],
        mean=section["mean"],
        std=section["std"],
        image_size=shared.image_size,
    )


def _build_ground(name: str, shared: _Shared) -> Encoder:
    import open_clip

    c = shared.config["clip"]
    transform = open_clip.image_transform(
        shared.image_size,
        is_train=False,
        mean=tuple(c["mean"]),
        std=tuple(c["std"]),
        resize_mode=c["resize_mode"],
        interpolation=c["interpolation"],
    )
    return GroundEncoder(shared.clip.visual, shared.config["embed_dim"], transform).requires_grad_(
        False
    )


def _build_text(name: str, shared: _Shared) -> Encoder:
    import open_clip

    from geobind.models.tokenizer import ClipTokenizer

    ctx = shared.config["clip"]["model_cfg"]["text_cfg"].get("context_length", 77)
    # the bundled BPE vocabulary (offline), memoised per word
    tokenizer = ClipTokenizer(open_clip.SimpleTokenizer(context_length=ctx))
    return TextEncoder(shared.clip.text, shared.config["embed_dim"], tokenizer).requires_grad_(
        False
    )


def _build_audio(name: str, shared: _Shared) -> Encoder:
    from transformers import ClapFeatureExtractor

    tower, shared.config[name] = build_clap(shared.config[name])
    if tower.config.enable_fusion:
        raise InputDataError(
            "fused CLAP audio towers (enable_fusion=True) take 4-channel fusion features, which "
            "geobind's audio encoder does not compute yet; use an unfused tower such as "
            "laion/clap-htsat-unfused"
        )
    a = shared.config[name]
    features = ClapFeatureExtractor(
        feature_size=tower.config.num_mel_bins,
        sampling_rate=a["sample_rate"],
        hop_length=a["hop_length"],
        max_length_s=a["max_length_s"],
        frequency_min=a["frequency_min"],
        frequency_max=a["frequency_max"],
        truncation="rand_trunc",  # with frequency_min=50 this reproduces LAION-CLAP's features
        padding="repeatpad",
    )
    features.nb_max_samples = round(a["max_length_s"] * a["sample_rate"])  # an int, for np.pad
    return AudioEncoder(
        tower, shared.config["embed_dim"], features=features, max_windows=a["max_windows"]
    )


def _build_multispectral(name: str, shared: _Shared) -> Encoder:
    from geobind.models.multispectral import build_multispectral

    return build_multispectral(name, shared)


_BUILDERS: dict[str, Callable[[str, _Shared], Encoder]] = {
    "sat": _build_sat,
    "ground": _build_ground,
    "text": _build_text,
    "audio": _build_audio,
    "multispectral": _build_multispectral,  # another sensor (a binding stage N)
}


def register_encoder_kind(kind: str, builder: Callable[[str, Any], Encoder]) -> None:
    """Register an encoder kind for new modalities (stage N).

    ``builder(name, shared)`` returns an :class:`~geobind.models.encoders.Encoder`; it reads its
    settings from ``shared.config[name]`` and may use ``shared.clip`` (the CLIP model).

    Example:
        >>> register_encoder_kind("sat", _build_sat)  # e.g. a second sensor: {"thermal": "sat"}
    """
    _BUILDERS[kind] = builder


class GeoBind(nn.Module):
    """Named encoders embedding into one space of ``embed_dim`` dimensions.

    Use :func:`geobind.load` to get one. ``model["text"]`` is an encoder; ``model.embed("text",
    ["a lake"])`` embeds through it.

    Example:
        >>> import geobind
        >>> model = geobind.load("tiny")
        >>> model.modalities, model.embed_dim
        (['sat', 'ground', 'text', 'audio'], 64)
    """

    def __init__(self, config: dict[str, Any], encoders: Mapping[str, Encoder]):
        super().__init__()
        keep_heap()  # CPU forwards reuse freed activations instead of faulting pages in again
        self.config = config
        self.encoders = nn.ModuleDict(dict(encoders))
        self.weights_sha256: str | None = None
        self.source: Any = None  # what geobind.load() can rebuild it from (None: in memory only)
        self._mark_links()

    @classmethod
    def from_config(
        cls, config: Mapping[str, Any], *, seed: int | None = 0, clip: nn.Module | None = None
    ) -> GeoBind:
        """Build a bundle from a configuration (a preset, or a saved ``geobind.json``'s config).

        Random weights are drawn with ``seed`` (``None``: torch's global generator). ``clip``
        supplies an already built open_clip ``CustomTextCLIP`` for the config's ``clip`` section
        (e.g. one just pretrained), instead of building it.
        """
        config = copy.deepcopy(dict(config))
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            if clip is None:
                clip, config["clip"] = build_clip(config["clip"])
            model_cfg = config["clip"]["model_cfg"]
            config.setdefault("embed_dim", model_cfg["embed_dim"])
            if config["embed_dim"] != model_cfg["embed_dim"]:
                raise InputDataError(
                    f"embed_dim {config['embed_dim']} differs from the CLIP model's "
                    f"{model_cfg['embed_dim']}; the shared space is CLIP's"
                )
            image_size = model_cfg["vision_cfg"]["image_size"]
            shared = _Shared(config=config, clip=clip, image_size=int(image_size))
            kinds = config.setdefault("encoders", dict(DEFAULT_ENCODERS))
            encoders = {}
            for name, kind in kinds.items():
                if name not in config and kind in ("sat", "audio", "multispectral"):
                    continue  # e.g. a preset without audio
                if kind not in _BUILDERS:
                    raise InputDataError(
                        f"unknown encoder kind {kind!r} for {name!r}; register it with "
                        "geobind.models.register_encoder_kind"
                    )
                encoders[name] = _BUILDERS[kind](name, shared)
        config.setdefault("stages", [])
        config.setdefault("metrics", {})
        config["modalities"] = list(encoders)
        return cls(config, encoders)

    @property
    def trained_links(self) -> list[str] | None:
        """Links between modalities the weights were trained for, e.g. ``['sat-ground',
        'ground-text']`` for ``sat2cap``: those its published weights come with (registry models
        record them), then one per binding stage run since (``'audio-sat'`` after stage 2).

        ``None`` when nothing is recorded (presets and models built from them before any stage).
        Queries over a link that no path of trained links covers warn once
        (:class:`~geobind.errors.UntrainedLinkWarning`).

        Example:
            >>> import geobind
            >>> geobind.load("tiny").trained_links is None
            True
        """
        recorded = self.config.get("trained_links")
        stages = [
            f"{s['trained']}-{s['anchor']}"
            for s in self.config.get("stages", [])
            if isinstance(s, Mapping) and s.get("trained") in self.encoders and s.get("anchor")
        ]
        if recorded is None and not stages:
            return None
        return unique_links([*(recorded or []), *stages])

    def _mark_links(self) -> None:
        """Tell each encoder whether its queries over satellite embeddings cross an untrained
        link (only when the model records its trained links)."""
        links = self.trained_links if "trained_links" in self.config else None
        bound = None if links is None or "sat" not in self.encoders else bound_to("sat", links)
        for name, encoder in self.encoders.items():
            message = None
            if bound is not None and name not in bound:
                message = (
                    f"model {self.name!r}: no trained link joins {name} to sat (trained: "
                    f"{', '.join(links or []) or 'none'}), so {name} queries over satellite "
                    "embeddings are not meaningful yet; train a stage that binds them first "
                    f"(e.g. `geobind train {'stage2' if name == 'audio' else 'stage1'} --model "
                    f"{self.name}`)"
                )
            encoder.untrained_link = message

    @property
    def name(self) -> str:
        """The preset or model name."""
        return str(self.config.get("name", "geobind"))

    @property
    def embed_dim(self) -> int:
        """Dimension of the shared space."""
        return int(self.config["embed_dim"])

    @property
    def modalities(self) -> list[str]:
        """Names of the encoders, e.g. ``['sat', 'ground', 'text', 'audio']``."""
        return list(self.encoders)

    @property
    def device(self) -> torch.device:
        """Where the weights live."""
        return next(self.parameters()).device

    def __getitem__(self, modality: str) -> Encoder:
        if modality not in self.encoders:
            raise InputDataError(
                f"this model has no {modality!r} encoder; it has {', '.join(self.encoders)}"
            )
        return self.encoders[modality]

    def embed(self, modality: str, items: Any, **kwargs: Any) -> torch.Tensor:
        """Embed ``items`` with the ``modality`` encoder (see each encoder's ``embed``).

        Example:
            >>> import geobind, numpy as np
            >>> geobind.load("tiny").embed("sat", np.zeros((2, 3, 32, 32), np.uint8)).shape
            torch.Size([2, 64])
        """
        return self[modality].embed(items, **kwargs)

    def add_encoder(self, name: str, encoder: Encoder, *, kind: str, section: dict | None = None):
        """Add a modality (a new binding stage): ``kind`` must be registered to rebuild it on load.

        Example:
            >>> import geobind
            >>> model = geobind.load("tiny")
            >>> model.add_encoder("thermal", model["sat"], kind="sat", section=model.config["sat"])
            >>> model.modalities[-1]
            'thermal'
        """
        if encoder.embed_dim != self.embed_dim:
            raise InputDataError(
                f"encoder {name!r} embeds into {encoder.embed_dim} dimensions; the model uses "
                f"{self.embed_dim}"
            )
        ours = {p.data_ptr() for p in self.parameters()}
        if any(p.data_ptr() in ours for p in encoder.parameters()):
            encoder = copy.deepcopy(encoder)  # its own weights: trained apart, saved apart
        self.encoders[name] = encoder
        self.config["encoders"][name] = kind
        if section is not None:
            self.config[name] = copy.deepcopy(section)
        self.config["modalities"] = list(self.encoders)
        self._mark_links()

    def encoder_sha256(self, name: str) -> str:
        """SHA-256 over one encoder's parameters and buffers (names and raw bytes, sorted).

        Stage 2 must leave the satellite encoder bitwise unchanged: compare this before and after.

        Example:
            >>> import geobind
            >>> m = geobind.load("tiny")
            >>> m.encoder_sha256("sat") == m.encoder_sha256("ground")  # sat starts as a copy
            True
        """
        h = hashlib.sha256()
        for key, value in sorted(self[name].state_dict().items()):
            h.update(key.encode())
            h.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
        return h.hexdigest()

    def save(self, folder: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write ``model.safetensors`` and ``geobind.json`` into ``folder`` (atomically).

        Example:
            >>> import geobind
            >>> path = geobind.load("tiny").save(getfixture("tmp_path") / "model")
            >>> sorted(p.name for p in path.iterdir())
            ['geobind.json', 'model.safetensors']
        """
        folder = Path(folder)
        if folder.exists() and any(folder.iterdir()) and not overwrite:
            raise OutputExistsError(f"{folder} exists and is not empty; pass overwrite=True")
        tmp = folder.with_name(f".{folder.name}.partial")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            weights = write_safetensors(
                self.state_dict(),
                tmp / "model.safetensors",
                {"format": "pt", "geobind": __version__},
            )
            digest = sha256_file(weights)
            meta = {
                "format": FORMAT,
                "geobind_version": __version__,
                "name": self.name,
                "embed_dim": self.embed_dim,
                "modalities": self.modalities,
                "stages": self.config.get("stages", []),
                "metrics": self.config.get("metrics", {}),
                "weights": weights.name,
                "weights_sha256": digest,
                "encoder_sha256": {name: self.encoder_sha256(name) for name in self.modalities},
                "trained_links": self.trained_links,
                "config": self.config,
            }
            (tmp / "geobind.json").write_text(json.dumps(meta, indent=2) + "\n")
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)
        self.weights_sha256 = digest
        self.source = str(folder.resolve())
        return folder


def _load_folder(folder: Path) -> GeoBind:
    meta_path = folder / "geobind.json"
    if not meta_path.is_file():
        pickles = sorted(
            p.name for p in folder.glob("*") if p.suffix in {".pt", ".pth", ".pkl", ".bin"}
        )
        hint = (
            f" It holds {', '.join(pickles)}: geobind never unpickles files; convert pretrained "
            "checkpoints with `geobind convert-clap` or load them through geobind.load({...})."
            if pickles
            else ""
        )
        raise ModelFileError(f"{folder} is not a geobind model folder (no geobind.json).{hint}")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as err:
        raise ModelFileError(f"{meta_path} is not valid JSON: {err}") from None
    if meta.get("format") != FORMAT:
        raise ModelFileError(
            f"{meta_path}: unknown format {meta.get('format')!r}; expected {FORMAT}"
        )
    state = read_safetensors(folder / meta["weights"], sha256=meta["weights_sha256"])
    config = meta["config"]
    arch = copy.deepcopy(config)
    arch["clip"]["source"] = (
        None  # the architecture is written out; the weights come from the folder
    )
    for name, kind in arch.get("encoders", {}).items():
        if kind == "audio" and name in arch:
            arch[name]["source"] = None
    model = GeoBind.from_config(arch, seed=None)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ModelFileError(f"{folder}: weights do not match the architecture: {err}") from None
    model.config = config
    model.weights_sha256 = meta["weights_sha256"]
    return model


def _from_mapping(spec: Mapping[str, Any]) -> dict[str, Any]:
    """A config from ``{"preset": ..., "clip": {...}, "audio": ..., "sat": {...}}``."""
    spec = dict(spec)
    base = spec.pop("preset", "paper")
    config = get_preset(base)
    clip = spec.pop("clip", None)
    if clip is not None:
        source = {k: clip[k] for k in ("model", "pretrained") if k in clip}
        config["clip"] = {
            "source": source or None,
            **{k: v for k, v in clip.items() if k not in source},
        }
        if "model_cfg" not in clip:
            config["clip"].pop("model_cfg", None)
            config.pop("embed_dim", None)
    audio = spec.pop("audio", None)
    if audio is not None:
        section = {"source": audio} if isinstance(audio, str | os.PathLike) else dict(audio)
        config["audio"] = {
            **config.get("audio", {}),
            **{k: str(v) if k == "source" else v for k, v in section.items()},
        }
        if section.get("source") is not None:
            config["audio"].pop("clap_config", None)
    for key, value in spec.items():
        config[key] = {**config.get(key, {}), **value} if isinstance(value, Mapping) else value
    config["name"] = str(spec.get("name", config["name"]))
    return config


def load(
    spec: str | os.PathLike[str] | Mapping[str, Any] | GeoBind,
    *,
    device: str | torch.device = "auto",
    seed: int = 0,
) -> GeoBind:
    """Load a GeoBind model: a preset name, a model folder, or a mapping of pretrained sources.

    Args:
        spec: ``"tiny"`` / ``"demo"`` / ``"paper"`` (see :func:`geobind.list_models`); a folder
            written by :meth:`GeoBind.save`; or a mapping such as ``{"preset": "paper", "clip":
            {"model": "ViT-B-32", "pretrained": "openai" | "/path/ckpt.safetensors"}, "audio":
            "laion/clap-htsat-unfused" | "/path/to/converted-clap"}``. A published model's name
            (``"sat2cap"``, ``"remoteclip-vit-b-32"`` …: :mod:`geobind.models.registry`) builds
            it from its files in the Hugging Face cache (``geobind pull NAME`` fetches them).
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda:1"`` …; the model moves once.
        seed: seed for randomly initialised weights (presets without pretrained sources).

    Raises:
        WeightsNotFoundError: pretrained weights are neither local nor downloadable right now.
        ModelFileError: a model folder is incomplete, corrupt or fails its hash check.

    Example:
        >>> import geobind
        >>> model = geobind.load("tiny", device="cpu")
        >>> model.name, model.device.type
        ('tiny', 'cpu')
    """
    if isinstance(spec, GeoBind):
        model = spec
    elif isinstance(spec, Mapping):
        model = GeoBind.from_config(_from_mapping(spec), seed=seed)
        model.source = dict(spec) if seed == 0 else None
    elif isinstance(spec, str) and spec in list_registered():
        from geobind.models.published import load_published

        model = load_published(spec, seed=seed)
        model.source = spec if seed == 0 else None
    elif isinstance(spec, str) and spec in list_models():
        model = GeoBind.from_config(get_preset(spec), seed=seed)
        model.source = spec if seed == 0 else None
    elif Path(spec).is_dir():
        model = _load_folder(Path(spec))
        model.source = str(Path(spec).resolve())
    else:
        raise InputDataError(
            f"{spec!s} is neither a model preset ({', '.join(list_models())}) nor a model folder"
        )
    return model.to(resolve_device(device)).eval()
