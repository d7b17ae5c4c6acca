"""LAION-CLAP → transformers audio conversion: round trips, refusals and failure paths."""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from transformers import ClapAudioConfig, ClapAudioModelWithProjection

from geobind.errors import (
    ModelFileError,
    OutputExistsError,
    UntrustedPickleError,
    WeightsNotFoundError,
)
from geobind.models.clap_convert import convert_laion_clap, to_laion_state_dict

# A valid HTSAT small enough to build in milliseconds: a 64×64 "image" of 16 mel bins
# (freq_ratio 4, so 256 frames), 4×4 patches → a 16×16 grid, window 4, then one merge to 8×8.
# Two blocks in the first stage so that the shifted-window path is exercised too.
TINY = {
    "spec_size": 64,
    "num_mel_bins": 16,
    "window_size": 4,
    "patch_embeds_hidden_size": 8,
    "depths": [2, 1],
    "num_attention_heads": [2, 2],
    "hidden_size": 16,  # patch_embeds_hidden_size * 2 ** (len(depths) - 1)
    "projection_dim": 8,
    "num_classes": 4,
}
FRAMES = TINY["spec_size"] * (TINY["spec_size"] // TINY["num_mel_bins"])


@dataclass
class TrainingArgs:
    """Stand-in for the non-tensor objects real training checkpoints pickle alongside weights."""

    lr: float = 1e-4


class Payload:
    """Creates a marker file when unpickled: what a malicious checkpoint could do instead."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def tiny_model(**overrides) -> ClapAudioModelWithProjection:
    """A tiny model whose every float tensor (BatchNorm statistics included) is random."""
    torch.manual_seed(0)
    model = ClapAudioModelWithProjection(ClapAudioConfig(**{**TINY, **overrides}))
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if not tensor.is_floating_point():
                continue
            if name.endswith("running_var"):
                tensor.copy_(torch.rand_like(tensor) + 0.5)
            else:
                tensor.copy_(torch.randn_like(tensor) * 0.5)
    return model.eval()


def laion_checkpoint(model: ClapAudioModelWithProjection) -> dict[str, torch.Tensor]:
    """LAION layout plus tensors a real checkpoint carries that the conversion must drop."""
    state = to_laion_state_dict(model)
    state["module.text_branch.embeddings.word_embeddings.weight"] = torch.randn(10, 4)
    state["module.text_branch.encoder.layer.0.attention.self.query.weight"] = torch.randn(4, 4)
    state["module.text_projection.0.weight"] = torch.randn(8, 4)
    state["module.logit_scale_a"] = torch.tensor(2.0)
    state["module.audio_transform.sequential.0.weight"] = torch.randn(8, 8)
    state["module.audio_branch.spectrogram_extractor.stft.conv_real.weight"] = torch.randn(3, 1, 4)
    state["module.audio_branch.logmel_extractor.melW"] = torch.randn(3, 16)
    state["module.audio_branch.layers.0.blocks.1.attn_mask"] = torch.zeros(16, 16, 16)
    state["module.audio_branch.tscam_conv.weight"] = torch.randn(4, 16, 2, 3)
    state["module.audio_branch.head.weight"] = torch.randn(4, 4)
    return state


def embeds(model: ClapAudioModelWithProjection, seed: int = 1, **kwargs) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    channels = 4 if model.config.enable_fusion else 1
    features = torch.randn(2, channels, FRAMES, TINY["num_mel_bins"], generator=generator)
    with torch.no_grad():
        return model(input_features=features, **kwargs).audio_embeds


def test_pt_round_trip_gives_identical_embeddings(tmp_path):
    model = tiny_model()
    ckpt = tmp_path / "laion.pt"
    torch.save({"state_dict": laion_checkpoint(model), "epoch": 3}, ckpt)

    out = convert_laion_clap(ckpt, tmp_path / "hf", trust_pickle=True, config=TINY)

    assert out == tmp_path / "hf"
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    loaded = ClapAudioModelWithProjection.from_pretrained(out).eval()
    assert loaded.config.enable_fusion is False
    assert list(loaded.config.depths) == TINY["depths"]
    torch.testing.assert_close(embeds(loaded), embeds(model), atol=1e-6, rtol=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf", "laion.pt"]  # no temp leftovers


def test_untrusted_pickle_is_refused_before_unpickling(tmp_path):
    marker = tmp_path / "pwned"
    ckpt = tmp_path / "evil.pt"
    torch.save({"state_dict": {"module.audio_projection.0.weight": Payload(marker)}}, ckpt)

    with pytest.raises(UntrustedPickleError) as caught:
        convert_laion_clap(ckpt, tmp_path / "hf")

    assert not marker.exists()
    assert not (tmp_path / "hf").exists()
    err = caught.value
    assert isinstance(err, ModelFileError)
    assert isinstance(err, PermissionError)
    message = str(err)
    assert "arbitrary code" in message
    assert "trust_pickle=True" in message
    assert "--trust-pickle" in message
    # The fixture really is dangerous: a plain full unpickle runs the payload.
    torch.load(ckpt, weights_only=False)
    assert marker.exists()


def test_trusted_pickle_that_needs_full_unpickler_converts(tmp_path):
    model = tiny_model()
    ckpt = tmp_path / "laion.pt"
    torch.save({"state_dict": to_laion_state_dict(model), "args": TrainingArgs()}, ckpt)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(ckpt, weights_only=True)

    out = convert_laion_clap(ckpt, tmp_path / "hf", trust_pickle=True, config=TINY)

    loaded = ClapAudioModelWithProjection.from_pretrained(out).eval()
    torch.testing.assert_close(embeds(loaded), embeds(model), atol=1e-6, rtol=0)


def test_wrong_config_names_keys_and_writes_nothing(tmp_path):
    ckpt = tmp_path / "laion.pt"
    torch.save({"state_dict": laion_checkpoint(tiny_model())}, ckpt)

    with pytest.raises(ModelFileError) as caught:
        convert_laion_clap(
            ckpt, tmp_path / "hf", trust_pickle=True, config={**TINY, "depths": [1, 1]}
        )

    assert "audio_branch.layers.0.blocks.1." in str(caught.value)
    assert "depths=[1, 1]" in str(caught.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["laion.pt"]


def test_wrong_width_is_a_shape_error(tmp_path):
    ckpt = tmp_path / "laion.safetensors"
    save_file(to_laion_state_dict(tiny_model()), ckpt)

    with pytest.raises(ModelFileError, match="another shape"):
        convert_laion_clap(ckpt, tmp_path / "hf", config={**TINY, "projection_dim": 4})

    assert sorted(p.name for p in tmp_path.iterdir()) == ["laion.safetensors"]


def test_existing_output_is_not_overwritten(tmp_path):
    ckpt = tmp_path / "laion.safetensors"
    save_file(to_laion_state_dict(tiny_model()), ckpt)
    out = tmp_path / "hf"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")

    with pytest.raises(OutputExistsError):
        convert_laion_clap(ckpt, out, config=TINY)
    with pytest.raises(FileExistsError):
        convert_laion_clap(ckpt, tmp_path / "laion.safetensors", config=TINY)

    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    assert (out / "notes.txt").read_text() == "keep me"


def test_safetensors_input_needs_no_trust_flag(tmp_path):
    model = tiny_model()
    ckpt = tmp_path / "laion.safetensors"
    save_file(laion_checkpoint(model), ckpt)
    out = tmp_path / "hf"
    out.mkdir()  # an empty folder is fine to write into

    convert_laion_clap(ckpt, out, config=ClapAudioConfig(**TINY))

    loaded = ClapAudioModelWithProjection.from_pretrained(out).eval()
    torch.testing.assert_close(embeds(loaded), embeds(model), atol=1e-6, rtol=0)


def test_bare_state_dict_without_module_prefix(tmp_path):
    model = tiny_model()
    state = {k.removeprefix("module."): v for k, v in to_laion_state_dict(model).items()}
    ckpt = tmp_path / "bare.pt"
    torch.save(state, ckpt)

    out = convert_laion_clap(
        os.fspath(ckpt), os.fspath(tmp_path / "hf"), trust_pickle=True, config=TINY
    )

    assert out == tmp_path / "hf"
    loaded = ClapAudioModelWithProjection.from_pretrained(out).eval()
    torch.testing.assert_close(embeds(loaded), embeds(model), atol=1e-6, rtol=0)


def test_fusion_is_read_from_the_checkpoint(tmp_path):
    model = tiny_model(enable_fusion=True)
    ckpt = tmp_path / "fused.safetensors"
    save_file(laion_checkpoint(model), ckpt)

    out = convert_laion_clap(ckpt, tmp_path / "hf", config=TINY)  # TINY says nothing on fusion

    loaded = ClapAudioModelWithProjection.from_pretrained(out).eval()
    assert loaded.config.enable_fusion is True
    is_longer = torch.tensor([[True], [False]])
    torch.testing.assert_close(
        embeds(loaded, is_longer=is_longer), embeds(model, is_longer=is_longer), atol=1e-6, rtol=0
    )


def test_round_trip_of_the_renaming_is_exact():
    model = tiny_model(enable_fusion=True)
    laion = to_laion_state_dict(model)
    assert all(key.startswith("module.audio_") for key in laion)
    assert "module.audio_branch.bn0.running_var" in laion
    assert "module.audio_branch.patch_embed.fusion_model.local_att.0.weight" in laion
    qkv = laion["module.audio_branch.layers.1.blocks.0.attn.qkv.weight"]
    query = model.audio_model.audio_encoder.layers[1].blocks[0].attention.self.query.weight
    assert qkv.shape == (48, 16)
    assert torch.equal(qkv[:16], query)


def test_missing_checkpoint(tmp_path):
    with pytest.raises(WeightsNotFoundError):
        convert_laion_clap(tmp_path / "nope.pt", tmp_path / "hf")
    with pytest.raises(FileNotFoundError):
        convert_laion_clap(tmp_path / "nope.pt", tmp_path / "hf")


def test_file_without_audio_weights(tmp_path):
    ckpt = tmp_path / "other.safetensors"
    save_file({"encoder.weight": torch.zeros(2, 2)}, ckpt)

    with pytest.raises(ModelFileError, match="no LAION-CLAP audio weights"):
        convert_laion_clap(ckpt, tmp_path / "hf")

    assert not (tmp_path / "hf").exists()
