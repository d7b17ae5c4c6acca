"""Pretrained starting points, tested offline with checkpoints the tests write themselves."""

from __future__ import annotations

import pickle
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import geobind
from geobind.errors import UntrustedPickleError, WeightsNotFoundError
from geobind.models import get_preset
from geobind.models.pretrained import hub_file

TINY_CLIP = get_preset("tiny")["clip"]["model_cfg"]


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("the test tried to reach the network")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


def _open_clip_reference():
    """A standard (non-custom-text) open_clip CLIP, as real checkpoints are laid out."""
    import open_clip

    torch.manual_seed(11)
    return open_clip.CLIP(**TINY_CLIP).eval()


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_local_open_clip_checkpoint_loads_like_a_tag(tmp_path, suffix, no_network):
    import open_clip
    from safetensors.torch import save_file

    ref = _open_clip_reference()
    path = tmp_path / f"clip{suffix}"
    if suffix == ".pt":
        torch.save({"state_dict": ref.state_dict(), "epoch": 1}, path)
    else:
        save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, path)
    spec = {
        "preset": "tiny",
        "clip": {"model": "tiny", "pretrained": str(path), "model_cfg": TINY_CLIP},
    }
    model = geobind.load(spec, device="cpu")
    texts = ["a busy highway", "a lake shore"]
    tokens = open_clip.SimpleTokenizer(context_length=TINY_CLIP["text_cfg"]["context_length"])(
        texts
    )
    with torch.no_grad():
        expected_text = F.normalize(ref.encode_text(tokens), dim=-1)
    assert torch.allclose(model.embed("text", texts), expected_text, atol=1e-5)
    photo = np.random.default_rng(0).integers(0, 255, (48, 48, 3), dtype=np.uint8)
    pixels = model["ground"].prepare([photo])
    with torch.no_grad():
        expected_image = F.normalize(ref.encode_image(pixels), dim=-1)
    assert torch.allclose(model.embed("ground", [photo]), expected_image, atol=1e-5)
    # the satellite encoder starts from the same CLIP image tower
    with torch.no_grad():
        assert torch.allclose(model["sat"](pixels), model["ground"](pixels), atol=1e-5)


def test_missing_tag_fails_fast_offline(no_network, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsNotFoundError, match=r"ViT-B-32/openai.*HF_HUB_OFFLINE"):
        geobind.load("paper")
    with pytest.raises(WeightsNotFoundError, match="known tags"):
        geobind.load({"clip": {"model": "ViT-B-32", "pretrained": "no-such-tag"}})


def test_missing_clap_fails_fast_offline(no_network, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsNotFoundError, match="laion/clap-htsat-unfused"):
        geobind.load({"preset": "tiny", "audio": "laion/clap-htsat-unfused"})


def test_unreachable_hub_fails_without_offline_flag(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr("geobind.models.pretrained.hub_reachable", lambda *a, **k: False)
    with pytest.raises(WeightsNotFoundError, match="cannot be reached"):
        hub_file("nobody/nothing", "model.safetensors", what="weights")


def test_cached_hub_file_is_used_offline(tmp_path, monkeypatch, no_network):
    """A file in the Hugging Face cache layout is found without any network access."""
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    repo = tmp_path / "models--someone--tiny-clap"
    snap = repo / "snapshots" / ("a" * 40)
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)
    (snap / "config.json").write_text("{}")
    assert hub_file("someone/tiny-clap", "config.json", what="x") == str(snap / "config.json")


def test_clap_folder_and_converted_laion_checkpoint(tmp_path, no_network):
    from transformers import ClapAudioConfig, ClapAudioModelWithProjection

    from geobind.models.clap_convert import convert_laion_clap, to_laion_state_dict

    clap_cfg = get_preset("tiny")["audio"]["clap_config"]
    torch.manual_seed(5)
    tower = ClapAudioModelWithProjection(ClapAudioConfig(**clap_cfg)).eval()
    tower.save_pretrained(tmp_path / "hf")
    torch.save({"state_dict": to_laion_state_dict(tower), "epoch": 9}, tmp_path / "laion.pt")
    converted = convert_laion_clap(
        tmp_path / "laion.pt", tmp_path / "conv", trust_pickle=True, config=clap_cfg
    )
    from_folder = geobind.load({"preset": "tiny", "audio": str(tmp_path / "hf")})
    from_laion = geobind.load({"preset": "tiny", "audio": str(converted)})
    samples = np.random.default_rng(3).standard_normal(48000).astype(np.float32) * 0.1
    feats = from_folder["audio"].prepare([samples])
    with torch.no_grad():
        expected = tower(input_features=feats).audio_embeds
    for model in (from_folder, from_laion):
        assert model.config["audio"]["clap_config"]["hidden_size"] == clap_cfg["hidden_size"]
        with torch.no_grad():
            got = model["audio"].tower(input_features=feats).audio_embeds
        assert torch.allclose(got, expected, atol=1e-6)
    clip = [(samples, 48000)]
    assert torch.allclose(
        from_folder.embed("audio", clip), from_laion.embed("audio", clip), atol=1e-6
    )


def test_cli_convert_clap_refuses_pickles_without_the_flag(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    with open(tmp_path / "laion.pt", "wb") as f:
        pickle.dump({"state_dict": Payload()}, f)
    out = subprocess.run(
        [sys.executable, "-m", "geobind.cli", "convert-clap",
         str(tmp_path / "laion.pt"), str(tmp_path / "out")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 2
    assert out.stderr.startswith("error: ") and "--trust-pickle" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert not marker.exists() and not (tmp_path / "out").exists()
    assert isinstance(UntrustedPickleError("x"), PermissionError)
