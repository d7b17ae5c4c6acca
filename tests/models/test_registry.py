"""The registry of published models: its data, the cache status, `geobind pull` and `models`."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import pytest
from _published_layouts import COMMIT, make_hf_home, snapshot

import geobind
from geobind.cli import main
from geobind.errors import InputDataError, WeightsNotFoundError
from geobind.models import registry
from geobind.models.registry import (
    get_entry,
    list_registered,
    model_status,
    pull,
    register_model,
    weight_files,
)

MODELS = ["georsclip-vit-b-32", "openai-clip-vit-b-32", "remoteclip-vit-b-32", "sat2cap"]


@pytest.fixture
def hf_home(tmp_path, monkeypatch):
    return make_hf_home(tmp_path, monkeypatch)


def test_list_models_names_presets_then_published_models():
    assert geobind.list_models() == ["demo", "paper", "tiny", *MODELS, "skyclip-vit-b-32"]
    assert list_registered(loadable=False) == [
        "clap-htsat-fused",
        "clap-htsat-unfused",
        "geoclap-sentinel",
    ]


def test_the_shipped_registry_says_what_the_issue_and_the_upstream_code_say():
    sat2cap = get_entry("sat2cap")
    assert sat2cap["source"] == {
        "hub": "MVRL/Sat2Cap",
        "files": ["config.json", "model.safetensors"],
    }
    assert sat2cap["format"] == "hf_clip_vision" and sat2cap["quick_gelu"] is True
    assert sat2cap["sat"]["mean"] == [0.367, 0.3827, 0.3338]
    assert sat2cap["sat"]["std"] == [0.2209, 0.1975, 0.1988]
    assert sat2cap["encoders"]["audio"] == "clap-htsat-unfused"
    assert "audio-sat" not in sat2cap["trained_links"]  # stage 2 is still to do
    # OpenAI-initialised fine-tunes need QuickGELU; laion2b_e16 and RemoteCLIP's own loader do not
    flags = {name: get_entry(name)["quick_gelu"] for name in [*MODELS, "skyclip-vit-b-32"]}
    assert flags == {
        "georsclip-vit-b-32": True,
        "openai-clip-vit-b-32": True,
        "remoteclip-vit-b-32": False,
        "sat2cap": True,
        "skyclip-vit-b-32": False,
    }
    for name in list_registered():
        entry = get_entry(name)
        assert entry["licence"] and entry["description"] and entry["provides"]
    raw = json.loads((Path(registry.__file__).parent / "registry.json").read_text())
    assert raw["format"] == "geobind-registry/1"


def test_bad_entries_are_refused_with_the_reason():
    entry = get_entry("remoteclip-vit-b-32")
    with pytest.raises(InputDataError, match="unknown format"):
        register_model("x", {**entry, "format": "onnx"})
    with pytest.raises(InputDataError, match="needs an audio tower"):
        register_model("x", {**entry, "encoders": {**entry["encoders"], "audio": "sat2cap"}})
    with pytest.raises(InputDataError, match="names a modality the model does not have"):
        register_model("x", {**entry, "trained_links": ["audio-sat"]})
    with pytest.raises(InputDataError, match="registered already"):
        register_model("sat2cap", get_entry("sat2cap"))
    with pytest.raises(InputDataError, match="preset name"):
        register_model("tiny", entry)
    assert "x" not in list_registered()


def test_status_follows_the_cache(hf_home):
    assert model_status("remoteclip-vit-b-32").state == "missing"
    assert model_status("remoteclip-vit-b-32").size == "~605 MB"
    folder = snapshot(hf_home, "chendelong/RemoteCLIP")
    (folder / "RemoteCLIP-ViT-B-32.pt").write_bytes(b"x" * 2_000_000)
    status = model_status("remoteclip-vit-b-32")
    assert (status.state, status.size, status.missing) == ("cached", "2 MB", [])
    (snapshot(hf_home, "MVRL/Sat2Cap") / "config.json").write_text("{}")
    assert model_status("sat2cap").state == "partial"
    assert model_status("sat2cap").size == "≥956 MB"  # CLAP's size is not recorded


def _fake_hub_download(repo_id, filename, *, cache_dir, **kwargs):
    """What hf_hub_download leaves in a cache, without a network."""
    path = snapshot(Path(cache_dir).parent, repo_id) / filename
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(f"{repo_id}/{filename}".encode())
    return str(path)


def _online(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr("geobind.models.registry.hub_reachable", lambda *a, **k: True)
    monkeypatch.setattr("huggingface_hub.hf_hub_download", _fake_hub_download)


def test_pull_to_a_folder_then_load_offline_from_it(hf_home, monkeypatch, tmp_path, capsys):
    _online(monkeypatch)
    out = tmp_path / "carry"
    assert main(["pull", "sat2cap", "--to", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "downloading MVRL/Sat2Cap/model.safetensors" in printed and "set HF_HOME" in printed
    for f in weight_files("sat2cap"):
        assert f.local(out) is not None and f.local() is None  # there, not here
    # the offline machine: HF_HOME points at the copied folder
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(out))
    assert model_status("sat2cap").state == "cached"
    assert main(["models"]) == 0
    listing = capsys.readouterr().out
    row = next(line for line in listing.splitlines() if line.startswith("sat2cap "))
    assert "cached" in row and str(out) in listing
    assert next(line for line in listing.splitlines() if line.startswith("tiny ")).split()[1:3] == [
        "preset",
        "built",
    ]
    assert main(["pull", "sat2cap"]) == 0  # all cached: nothing to download, offline is fine
    assert "downloading" not in capsys.readouterr().out


def test_pull_of_a_url_source_and_its_failures(hf_home, monkeypatch, tmp_path, capsys):
    zipped = tmp_path / "SkyCLIP_ViT_B32_top50pct.zip"
    with zipfile.ZipFile(zipped, "w") as z:
        z.writestr("SkyCLIP_ViT_B32_top50pct/epoch_20.pt", b"weights")
    entry = get_entry("skyclip-vit-b-32")
    entry["source"]["url"] = zipped.as_uri()  # file:// goes through the same download code
    monkeypatch.setitem(registry._entries(), "skyclip-vit-b-32", entry)
    assert main(["pull", "skyclip-vit-b-32"]) == 2  # offline
    assert "offline mode is on" in capsys.readouterr().err
    _online(monkeypatch)
    (path,) = pull("skyclip-vit-b-32")
    assert path == hf_home / "geobind" / "skyclip-vit-b-32" / zipped.name
    assert path.read_bytes() == zipped.read_bytes()
    assert model_status("skyclip-vit-b-32").state == "cached"
    entry["source"]["url"] = (tmp_path / "gone.zip").as_uri()
    with pytest.raises(WeightsNotFoundError, match=r"downloading .*gone.zip failed"):
        pull("skyclip-vit-b-32")
    assert not list((hf_home / "geobind" / "skyclip-vit-b-32").glob("*.partial"))


def test_pull_fails_at_once_without_a_network(hf_home, monkeypatch, capsys):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr("geobind.models.registry.hub_reachable", lambda *a, **k: False)
    assert main(["pull", "remoteclip-vit-b-32"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot pull remoteclip-vit-b-32: huggingface.co cannot be")
    assert len(err.strip().splitlines()) == 1
    assert main(["pull", "no-such-model"]) == 2
    assert "not in the model registry" in capsys.readouterr().err


def test_a_cache_copied_elsewhere_still_resolves(hf_home, tmp_path, monkeypatch):
    folder = snapshot(hf_home, "chendelong/RemoteCLIP")
    (folder / "RemoteCLIP-ViT-B-32.pt").write_bytes(b"x")
    moved = tmp_path / "moved"
    shutil.copytree(hf_home, moved)
    monkeypatch.setenv("HF_HOME", str(moved))
    (found,) = weight_files("remoteclip-vit-b-32")
    assert (
        found.local()
        == moved
        / "hub"
        / "models--chendelong--RemoteCLIP"
        / "snapshots"
        / COMMIT
        / ("RemoteCLIP-ViT-B-32.pt")
    )
