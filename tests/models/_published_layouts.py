"""Tiny models written in the layouts the published checkpoints use, in a temporary HF cache.

Each writer builds a small model with the library that publishes the real one (open_clip,
transformers), saves it the way the real files are saved, and returns the model: its forward is
the reference geobind must reproduce.
"""

from __future__ import annotations

import copy
import socket
from pathlib import Path

import torch

from geobind.models import get_preset
from geobind.models.registry import _entries, get_entry

#: The tiny preset's CLIP architecture stands in for ViT-B/32 (the layout is the same).
TINY = get_preset("tiny")["clip"]["model_cfg"]
COMMIT = "0123456789abcdef0123456789abcdef01234567"
SAT2CAP_MEAN = [0.367, 0.3827, 0.3338]
SAT2CAP_STD = [0.2209, 0.1975, 0.1988]
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def make_hf_home(tmp_path: Path, monkeypatch) -> Path:
    """An empty Hugging Face home, offline, with every network connection refused (the body of
    each test module's ``hf_home`` fixture)."""

    def refuse(*args, **kwargs):
        raise AssertionError("the test tried to reach the network")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "GEOBIND_CACHE"):
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "hf"
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return home


def snapshot(home: Path, repo_id: str) -> Path:
    """The snapshot folder of ``repo_id`` in the cache under ``home`` (created, ``refs/main``
    pointing at it), as ``huggingface_hub`` lays out downloads."""
    repo = home / "hub" / ("models--" + repo_id.replace("/", "--"))
    snap = repo / "snapshots" / COMMIT
    snap.mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(COMMIT)
    return snap


def tiny_entry(name: str, model_cfg: dict | None = None, **changes) -> dict:
    """Registry entry ``name`` with the tiny architecture in place of its ``arch``."""
    entry = get_entry(name)
    if "arch" in entry:
        entry.pop("arch")
        entry["model_cfg"] = copy.deepcopy(model_cfg or TINY)
    if "audio" in entry:  # the tiny CLAP tower's windows (2 s)
        audio = get_preset("tiny")["audio"]
        entry["audio"] = {k: v for k, v in audio.items() if k not in ("clap_config", "source")}
    entry.update(changes)
    return entry


def use_tiny(monkeypatch, *names: str, **changes) -> None:
    """Replace registry entries ``names`` by their tiny versions for one test."""
    for name in names:
        monkeypatch.setitem(_entries(), name, tiny_entry(name, **changes))


def open_clip_model(*, quick_gelu: bool, seed: int, cfg: dict | None = None):
    """A standard open_clip ``CLIP`` (text tower at the top level), as published files hold."""
    import open_clip

    torch.manual_seed(seed)
    return open_clip.CLIP(**(cfg or TINY), quick_gelu=quick_gelu).eval()


def write_openai_clip(home: Path, *, seed: int = 1):
    """OpenAI CLIP as open_clip's hub copy publishes it: ``open_clip_model.safetensors``."""
    from safetensors.torch import save_file

    ref = open_clip_model(quick_gelu=True, seed=seed)
    folder = snapshot(home, "timm/vit_base_patch32_clip_224.openai")
    save_file(
        {k: v.contiguous() for k, v in ref.state_dict().items()},
        folder / "open_clip_model.safetensors",
    )
    return ref


def hf_vision_model(*, seed: int, projection: bool = True, hidden_act: str = "quick_gelu"):
    """A transformers CLIP vision model of the tiny architecture (Sat2Cap's class)."""
    from transformers import CLIPVisionConfig, CLIPVisionModel, CLIPVisionModelWithProjection

    v = TINY["vision_cfg"]
    config = CLIPVisionConfig(
        hidden_size=v["width"],
        intermediate_size=4 * v["width"],
        num_hidden_layers=v["layers"],
        num_attention_heads=v["width"] // v["head_width"],
        image_size=v["image_size"],
        patch_size=v["patch_size"],
        projection_dim=TINY["embed_dim"],
        hidden_act=hidden_act,
    )
    torch.manual_seed(seed)
    cls = CLIPVisionModelWithProjection if projection else CLIPVisionModel
    return cls(config).eval()


def write_sat2cap(home: Path, *, seed: int = 2, **kwargs):
    """Sat2Cap as ``MVRL/Sat2Cap`` publishes it: ``config.json`` + ``model.safetensors``."""
    ref = hf_vision_model(seed=seed, **kwargs)
    ref.save_pretrained(snapshot(home, "MVRL/Sat2Cap"))
    return ref


def write_clap(home: Path, *, seed: int = 3, repo_id: str = "laion/clap-htsat-unfused"):
    """A CLAP audio tower as transformers saves it."""
    from transformers import ClapAudioConfig, ClapAudioModelWithProjection

    torch.manual_seed(seed)
    tower = ClapAudioModelWithProjection(
        ClapAudioConfig(**get_preset("tiny")["audio"]["clap_config"])
    )
    tower.eval().save_pretrained(snapshot(home, repo_id))
    return tower


def normalized(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x.float(), dim=-1)


def standardized(chips, mean, std) -> torch.Tensor:
    """uint8 chips at the model's input size → the tower's input, as the reference computes it."""
    x = torch.from_numpy(chips).float() / 255
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
