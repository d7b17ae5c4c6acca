"""Published models by name, each loaded from tiny files written in its published layout.

Every embedding is compared with the forward of the library that wrote the file (transformers'
``CLIPVisionModelWithProjection`` with Sat2Cap's normalisation; open_clip, with QuickGELU where
the registry says so) within 1e-5. No test reaches the network.
"""

from __future__ import annotations

import json
import pickle
import warnings
import zipfile

import numpy as np
import pytest
import torch
from _published_layouts import (
    CLIP_MEAN,
    CLIP_STD,
    COMMIT,
    SAT2CAP_MEAN,
    SAT2CAP_STD,
    TINY,
    make_hf_home,
    normalized,
    open_clip_model,
    snapshot,
    standardized,
    use_tiny,
    write_clap,
    write_openai_clip,
    write_sat2cap,
)

import geobind
from geobind.errors import (
    GeoBindError,
    InputDataError,
    ModelFileError,
    UntrainedLinkWarning,
    UntrustedPickleError,
    WeightsNotFoundError,
)

RNG = np.random.default_rng(0)
CHIPS = RNG.integers(0, 256, (3, 3, 32, 32), dtype=np.uint8)
TEXTS = ["a busy highway", "a lake shore"]


def _tokens(texts):
    import open_clip

    return open_clip.SimpleTokenizer(context_length=TINY["text_cfg"]["context_length"])(texts)


def _photo():
    return RNG.integers(0, 255, (48, 40, 3), dtype=np.uint8)


def _ground_reference(ref, photo, mean, std):
    import open_clip
    from PIL import Image

    transform = open_clip.image_transform(32, is_train=False, mean=mean, std=std)
    with torch.no_grad():
        return normalized(ref.encode_image(transform(Image.fromarray(photo))[None]))


@pytest.fixture
def hf_home(tmp_path, monkeypatch):
    return make_hf_home(tmp_path, monkeypatch)


@pytest.fixture
def sat2cap_files(hf_home, monkeypatch):
    use_tiny(monkeypatch, "sat2cap", "openai-clip-vit-b-32", "clap-htsat-unfused")
    return write_sat2cap(hf_home), write_openai_clip(hf_home), write_clap(hf_home)


def test_sat2cap_by_name_equals_the_reference_forwards(sat2cap_files):
    sat_ref, clip_ref, clap_ref = sat2cap_files
    model = geobind.load("sat2cap", device="cpu")
    with torch.no_grad():
        expected_sat = normalized(
            sat_ref(pixel_values=standardized(CHIPS, SAT2CAP_MEAN, SAT2CAP_STD)).image_embeds
        )
        expected_text = normalized(clip_ref.encode_text(_tokens(TEXTS)))
    assert torch.allclose(model.embed("sat", CHIPS), expected_sat, atol=1e-5)
    assert torch.allclose(model.embed("text", TEXTS), expected_text, atol=1e-5)
    photo = _photo()
    expected_ground = _ground_reference(clip_ref, photo, CLIP_MEAN, CLIP_STD)
    assert torch.allclose(model.embed("ground", [photo]), expected_ground, atol=1e-5)
    # the audio tower is CLAP's, bitwise; its projection to the shared space is new
    for key, value in clap_ref.state_dict().items():
        assert torch.equal(model["audio"].tower.state_dict()[key], value)
    assert model.config["sat"]["mean"] == SAT2CAP_MEAN and model.config["sat"]["chip_size"] == 800
    assert model.source == "sat2cap" and model.embed_dim == TINY["embed_dim"]
    assert model.config["published"]["towers"]["sat2cap"]["revision"] == COMMIT


def test_sat2cap_records_its_links_and_warns_once_over_the_untrained_one(sat2cap_files, tmp_path):
    from geobind.inference.query import embed_query

    model = geobind.load("sat2cap", device="cpu")
    assert model.trained_links == ["sat-ground", "ground-text"]
    clip = (np.zeros(48000, np.float32), 48000)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.embed("text", TEXTS)  # text reaches sat through ground: no warning
        embed_query(model, audio=clip)
        embed_query(model, audio=clip)
    linked = [w for w in caught if issubclass(w.category, UntrainedLinkWarning)]
    assert len(linked) == 1
    assert "audio" in str(linked[0].message) and "stage2 --model sat2cap" in str(linked[0].message)
    assert linked[0].filename == __file__  # points at the caller, not at geobind

    folder = model.save(tmp_path / "m")
    meta = json.loads((folder / "geobind.json").read_text())
    assert meta["trained_links"] == ["sat-ground", "ground-text"]
    # a stage 2 run binds audio to sat: the saved model records it and stops warning
    model.config["stages"].append({"stage": "stage2", "trained": "audio", "anchor": "sat"})
    again = geobind.load(model.save(tmp_path / "m2"), device="cpu")
    assert again.trained_links == ["sat-ground", "ground-text", "audio-sat"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", UntrainedLinkWarning)
        again.embed("audio", clip)


def test_presets_record_no_links_and_never_warn():
    model = geobind.load("tiny", device="cpu")
    assert model.trained_links is None
    with warnings.catch_warnings():
        warnings.simplefilter("error", UntrainedLinkWarning)
        model.embed("audio", (np.zeros(16000, np.float32), 16000))


def test_offline_without_files_names_geobind_pull(hf_home, monkeypatch):
    with pytest.raises(WeightsNotFoundError, match=r"`geobind pull sat2cap --to DIR`") as err:
        geobind.load("sat2cap")
    assert "MVRL/Sat2Cap/model.safetensors" in str(err.value) and str(hf_home) in str(err.value)
    assert isinstance(err.value, FileNotFoundError) and "\n" not in str(err.value)
    # not offline, but the hub cannot be reached: the same error at once, no retries
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr("geobind.models.registry.hub_reachable", lambda *a, **k: False)
    with pytest.raises(WeightsNotFoundError, match=r"cannot be reached.*geobind pull"):
        geobind.load("remoteclip-vit-b-32")


def _write_open_clip(
    home, repo_id, filename, *, quick_gelu, seed, layout="plain", cfg=None, mlp_gain=1.0
):
    """An open_clip checkpoint as RemoteCLIP / GeoRSCLIP / SkyCLIP publish theirs.

    ``mlp_gain`` scales the MLP input weights: a freshly initialised tiny model's activations are
    smaller than a trained one's, where QuickGELU and GELU differ most."""
    ref = open_clip_model(quick_gelu=quick_gelu, seed=seed, cfg=cfg)
    with torch.no_grad():
        for name, weight in ref.named_parameters():
            if name.endswith("mlp.c_fc.weight"):
                weight.mul_(mlp_gain)
    state = ref.state_dict()
    if layout == "training":  # open_clip's training script on several GPUs
        state = {
            "epoch": 20,
            "name": "SkyCLIP_ViT_B32_top50pct",
            "state_dict": {f"module.{k}": v for k, v in state.items()},
            "optimizer": torch.optim.AdamW(ref.parameters()).state_dict(),
        }
    path = snapshot(home, repo_id) / filename
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return ref, path


@pytest.mark.parametrize(
    ("name", "repo_id", "filename", "quick_gelu"),
    [
        ("remoteclip-vit-b-32", "chendelong/RemoteCLIP", "RemoteCLIP-ViT-B-32.pt", False),
        ("georsclip-vit-b-32", "Zilun/GeoRSCLIP", "ckpt/RS5M_ViT-B-32.pt", True),
    ],
)
def test_remote_sensing_clips_by_name(hf_home, monkeypatch, name, repo_id, filename, quick_gelu):
    use_tiny(monkeypatch, name)
    ref, _ = _write_open_clip(hf_home, repo_id, filename, quick_gelu=quick_gelu, seed=4)
    model = geobind.load(name, device="cpu")
    assert "audio" not in model.modalities
    with torch.no_grad():
        expected_sat = normalized(ref.encode_image(standardized(CHIPS, CLIP_MEAN, CLIP_STD)))
        expected_text = normalized(ref.encode_text(_tokens(TEXTS)))
    assert torch.allclose(model.embed("sat", CHIPS), expected_sat, atol=1e-5)
    assert torch.allclose(model.embed("text", TEXTS), expected_text, atol=1e-5)
    photo = _photo()
    assert torch.allclose(
        model.embed("ground", [photo]),
        _ground_reference(ref, photo, CLIP_MEAN, CLIP_STD),
        atol=1e-5,
    )
    assert model.trained_links == ["sat-text", "ground-text"]


def test_skyclip_zip_of_a_training_checkpoint(hf_home, monkeypatch):
    use_tiny(monkeypatch, "skyclip-vit-b-32")
    ref, pt = _write_open_clip(
        hf_home, "x/y", "epoch_20.pt", quick_gelu=False, seed=5, layout="training"
    )
    target = hf_home / "geobind" / "skyclip-vit-b-32" / "SkyCLIP_ViT_B32_top50pct.zip"
    target.parent.mkdir(parents=True)
    with zipfile.ZipFile(target, "w") as z:
        z.write(pt, "SkyCLIP_ViT_B32_top50pct/epoch_20.pt")
        z.writestr("SkyCLIP_ViT_B32_top50pct/params.txt", "lr: 1e-9\n")
    model = geobind.load("skyclip-vit-b-32", device="cpu")
    with torch.no_grad():
        expected = normalized(ref.encode_image(standardized(CHIPS, CLIP_MEAN, CLIP_STD)))
    assert torch.allclose(model.embed("sat", CHIPS), expected, atol=1e-5)
    assert (target.parent / (target.name + ".d") / "epoch_20.pt").is_file()  # extracted once
    assert torch.allclose(geobind.load("skyclip-vit-b-32").embed("sat", CHIPS), expected, atol=1e-5)


def test_the_quick_gelu_flag_matters(hf_home, monkeypatch):
    """The same GeoRSCLIP file with the activation flipped in the registry: other vectors."""
    ref, _ = _write_open_clip(
        hf_home, "Zilun/GeoRSCLIP", "ckpt/RS5M_ViT-B-32.pt", quick_gelu=True, seed=6, mlp_gain=4
    )
    with torch.no_grad():
        expected = normalized(ref.encode_image(standardized(CHIPS, CLIP_MEAN, CLIP_STD)))
    use_tiny(monkeypatch, "georsclip-vit-b-32")
    right = geobind.load("georsclip-vit-b-32").embed("sat", CHIPS)
    use_tiny(monkeypatch, "georsclip-vit-b-32", quick_gelu=False)
    wrong = geobind.load("georsclip-vit-b-32").embed("sat", CHIPS)
    assert torch.allclose(right, expected, atol=1e-5)
    assert (wrong - expected).abs().max() > 1e-3  # 100 times the tolerance


def test_clip_spec_takes_quick_gelu_for_a_local_file(tmp_path):
    """``geobind.load({"clip": {..., "quick_gelu": True}})``: a local file with its activation."""
    ref = open_clip_model(quick_gelu=True, seed=7)
    torch.save(ref.state_dict(), tmp_path / "clip.pt")
    spec = {
        "preset": "tiny",
        "clip": {"model": "tiny", "pretrained": str(tmp_path / "clip.pt"), "model_cfg": TINY},
    }
    with torch.no_grad():
        expected = normalized(ref.encode_text(_tokens(TEXTS)))
    silent = geobind.load(spec).embed("text", TEXTS)
    spec["clip"]["quick_gelu"] = True
    told = geobind.load(spec).embed("text", TEXTS)
    assert torch.allclose(told, expected, atol=1e-5) and not torch.allclose(
        silent, expected, atol=1e-3
    )


def _one_line(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert isinstance(err.value, GeoBindError) and "\n" not in text
    return text


def test_truncated_safetensors(sat2cap_files, hf_home):
    path = (
        snapshot(hf_home, "timm/vit_base_patch32_clip_224.openai") / "open_clip_model.safetensors"
    )
    path.write_bytes(path.read_bytes()[:-1000])
    with pytest.raises(ModelFileError) as err:
        geobind.load("sat2cap")
    assert "truncated" in _one_line(err)


def test_state_dict_of_another_architecture(hf_home, monkeypatch):
    use_tiny(monkeypatch, "remoteclip-vit-b-32")
    wider = {**TINY, "vision_cfg": {**TINY["vision_cfg"], "width": 96}}
    _write_open_clip(
        hf_home,
        "chendelong/RemoteCLIP",
        "RemoteCLIP-ViT-B-32.pt",
        quick_gelu=False,
        seed=8,
        cfg=wider,
    )
    with pytest.raises(ModelFileError) as err:
        geobind.load("remoteclip-vit-b-32")
    assert "another architecture" in _one_line(err) and "RemoteCLIP-ViT-B-32.pt" in str(err.value)


def test_projection_less_vision_model_is_refused(sat2cap_files, hf_home):
    write_sat2cap(hf_home, projection=False)  # CLIPVisionModel: pooled features, not CLIP space
    with pytest.raises(ModelFileError) as err:
        geobind.load("sat2cap")
    assert "without its projection" in _one_line(err)


def test_vision_config_with_another_activation_is_refused(sat2cap_files, hf_home):
    write_sat2cap(hf_home, hidden_act="gelu")
    with pytest.raises(ModelFileError) as err:
        geobind.load("sat2cap")
    assert "hidden_act 'gelu'" in _one_line(err) and "quick_gelu=True" in str(err.value)


def test_older_vision_files_with_position_ids_load(sat2cap_files, hf_home):
    from safetensors.torch import load_file, save_file

    path = snapshot(hf_home, "MVRL/Sat2Cap") / "model.safetensors"
    state = load_file(path)
    state["vision_model.embeddings.position_ids"] = torch.arange(17)[None]
    save_file(state, path)
    assert geobind.load("sat2cap").embed("sat", CHIPS).shape == (3, TINY["embed_dim"])


def test_zip_without_a_checkpoint(hf_home, monkeypatch):
    use_tiny(monkeypatch, "skyclip-vit-b-32")
    target = hf_home / "geobind" / "skyclip-vit-b-32" / "SkyCLIP_ViT_B32_top50pct.zip"
    target.parent.mkdir(parents=True)
    with zipfile.ZipFile(target, "w") as z:
        z.writestr("SkyCLIP_ViT_B32_top50pct/README.txt", "weights elsewhere")
    with pytest.raises(ModelFileError) as err:
        geobind.load("skyclip-vit-b-32")
    assert "no checkpoint" in _one_line(err) and "README.txt" in str(err.value)


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_pickle_needing_more_than_tensors_is_refused_unopened(hf_home, monkeypatch, tmp_path):
    use_tiny(monkeypatch, "remoteclip-vit-b-32")
    marker = tmp_path / "pwned"
    path = snapshot(hf_home, "chendelong/RemoteCLIP") / "RemoteCLIP-ViT-B-32.pt"
    torch.save({"visual.proj": _Payload(marker)}, path)
    with pytest.raises(UntrustedPickleError) as err:
        geobind.load("remoteclip-vit-b-32")
    assert "needs more than tensors" in _one_line(err) and not marker.exists()
    with open(path, "wb") as f:  # a plain pickle, not torch.save's zip
        pickle.dump({"visual.proj": _Payload(marker)}, f)
    with pytest.raises(UntrustedPickleError):
        geobind.load("remoteclip-vit-b-32")
    assert not marker.exists()


def test_a_tower_is_not_a_model():
    with pytest.raises(InputDataError, match=r"registry tower .*not a model"):
        geobind.load("clap-htsat-unfused")


def test_hf_home_set_after_import_is_honoured(hf_home, monkeypatch, tmp_path):
    other = tmp_path / "elsewhere"
    use_tiny(monkeypatch, "remoteclip-vit-b-32")
    _write_open_clip(
        other, "chendelong/RemoteCLIP", "RemoteCLIP-ViT-B-32.pt", quick_gelu=False, seed=9
    )
    with pytest.raises(WeightsNotFoundError):
        geobind.load("remoteclip-vit-b-32")
    monkeypatch.setenv("HF_HOME", str(other))
    assert geobind.load("remoteclip-vit-b-32").name == "remoteclip-vit-b-32"


def test_a_sat_tower_from_another_open_clip_checkpoint(hf_home, monkeypatch):
    """A registered model mixing entries: GeoRSCLIP's image tower for sat, OpenAI CLIP for the
    rest; an activation that differs from the CLIP's is refused."""
    from geobind.models.registry import get_entry, register_model, unregister_model

    use_tiny(monkeypatch, "georsclip-vit-b-32", "openai-clip-vit-b-32", "remoteclip-vit-b-32")
    sat_ref, _ = _write_open_clip(
        hf_home, "Zilun/GeoRSCLIP", "ckpt/RS5M_ViT-B-32.pt", quick_gelu=True, seed=10
    )
    clip_ref = write_openai_clip(hf_home)
    entry = get_entry("openai-clip-vit-b-32")
    entry["encoders"] = {**entry["encoders"], "sat": "georsclip-vit-b-32"}
    entry["trained_links"] = ["ground-text"]
    register_model("mixed", entry)
    try:
        model = geobind.load("mixed")
        with torch.no_grad():
            expected_sat = normalized(
                sat_ref.encode_image(standardized(CHIPS, CLIP_MEAN, CLIP_STD))
            )
            expected_text = normalized(clip_ref.encode_text(_tokens(TEXTS)))
        assert torch.allclose(model.embed("sat", CHIPS), expected_sat, atol=1e-5)
        with pytest.warns(UntrainedLinkWarning, match="no trained link joins text to sat"):
            assert torch.allclose(model.embed("text", TEXTS), expected_text, atol=1e-5)
        entry["encoders"]["sat"] = "remoteclip-vit-b-32"  # GELU beside a QuickGELU CLIP: refused
        # before any file is looked for (RemoteCLIP's is not even there)
        register_model("mixed", entry, replace=True)
        with pytest.raises(InputDataError, match="same open_clip architecture and activation"):
            geobind.load("mixed")
    finally:
        unregister_model("mixed")
