"""The GeoBind bundle: presets, save/load round trips, hashes, corrupt and hostile files."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch

import geobind
from geobind.errors import InputDataError, ModelFileError, OutputExistsError
from geobind.models import GeoBind, list_models

REAL = "/work/shared/data/real"


def _inputs():
    rng = np.random.default_rng(0)
    return {
        "sat": rng.integers(0, 255, (3, 4, 32, 32), dtype=np.uint8),
        "ground": [rng.integers(0, 255, (40, 50, 3), dtype=np.uint8) for _ in range(2)],
        "text": ["a busy highway", "a lake shore"],
        "audio": [(rng.standard_normal(48000).astype(np.float32) * 0.1, 48000)],
    }


def test_presets_listed_and_built(tiny):
    assert list_models()[:3] == ["demo", "paper", "tiny"]  # then the registry's published models
    assert geobind.list_models() == list_models()
    assert tiny.modalities == ["sat", "ground", "text", "audio"]
    for modality, items in _inputs().items():
        vecs = tiny.embed(modality, items)
        assert vecs.dtype == torch.float32 and vecs.shape[1] == tiny.embed_dim
        assert torch.allclose(vecs.norm(dim=1), torch.ones(len(vecs)), atol=1e-5)


def test_ground_and_text_are_frozen_sat_and_audio_trainable(tiny):
    assert not any(p.requires_grad for p in tiny["ground"].parameters())
    assert not any(p.requires_grad for p in tiny["text"].parameters())
    assert all(p.requires_grad for p in tiny["sat"].parameters())
    assert all(p.requires_grad for p in tiny["audio"].parameters())
    # the satellite encoder starts as a copy of CLIP's image tower, not the same tensors
    sat, ground = tiny["sat"].visual, tiny["ground"].visual
    assert torch.equal(sat.conv1.weight, ground.conv1.weight)
    assert sat.conv1.weight.data_ptr() != ground.conv1.weight.data_ptr()


def test_same_seed_same_weights_other_seed_differs():
    a = geobind.load("tiny", seed=3)
    b = geobind.load("tiny", seed=3)
    c = geobind.load("tiny", seed=4)
    text = ["forest"]
    assert torch.equal(a.embed("text", text), b.embed("text", text))
    assert not torch.equal(a.embed("text", text), c.embed("text", text))


def test_save_load_is_bitwise_identical(tiny, tmp_path):
    folder = tiny.save(tmp_path / "model")
    meta = json.loads((folder / "geobind.json").read_text())
    assert meta["weights_sha256"] and meta["geobind_version"] == geobind.__version__
    assert meta["modalities"] == tiny.modalities and meta["embed_dim"] == 64
    loaded = geobind.load(folder)
    assert loaded.weights_sha256 == meta["weights_sha256"]
    for modality, items in _inputs().items():
        assert torch.equal(tiny.embed(modality, items), loaded.embed(modality, items)), modality


def test_save_refuses_to_overwrite(tiny, tmp_path):
    tiny.save(tmp_path / "m")
    with pytest.raises(OutputExistsError):
        tiny.save(tmp_path / "m")
    tiny.save(tmp_path / "m", overwrite=True)


def test_hash_mismatch_is_caught(tiny, tmp_path):
    folder = tiny.save(tmp_path / "m")
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF  # flip bits inside a tensor
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="SHA-256"):
        geobind.load(folder)


def test_truncated_weights_are_caught(tiny, tmp_path):
    folder = tiny.save(tmp_path / "m")
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ModelFileError, match="truncated"):
        geobind.load(folder)


def test_huge_header_claim_is_caught(tiny, tmp_path):
    folder = tiny.save(tmp_path / "m")
    weights = folder / "model.safetensors"
    weights.write_bytes((2**62).to_bytes(8, "little") + weights.read_bytes()[8:])
    with pytest.raises(ModelFileError, match="header claims"):
        geobind.load(folder)


class _Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickle_in_model_folder_is_never_unpickled(tmp_path):
    marker = tmp_path / "pwned"
    folder = tmp_path / "model"
    folder.mkdir()
    with open(folder / "model.pt", "wb") as f:
        pickle.dump({"state_dict": _Payload(marker)}, f)
    with pytest.raises(ModelFileError, match="never unpickles"):
        geobind.load(folder)
    assert not marker.exists()


def test_pickle_payload_as_clip_checkpoint_is_refused(tmp_path):
    from geobind.errors import UntrustedPickleError

    marker = tmp_path / "pwned"
    ckpt = tmp_path / "clip.pt"
    torch.save({"state_dict": _Payload(marker)}, ckpt)
    cfg = geobind.models.get_preset("tiny")["clip"]["model_cfg"]
    spec = {"preset": "tiny", "clip": {"model": "tiny", "pretrained": str(ckpt), "model_cfg": cfg}}
    with pytest.raises(UntrustedPickleError):
        geobind.load(spec)
    assert not marker.exists()


def test_unknown_specs_have_clear_errors(tmp_path):
    with pytest.raises(InputDataError, match="neither a model preset"):
        geobind.load(tmp_path / "nothing")
    with pytest.raises(ModelFileError, match=r"no geobind\.json"):
        geobind.load(tmp_path)
    with pytest.raises(InputDataError, match="no 'thermal' encoder"):
        geobind.load("tiny")["thermal"]


def test_added_modality_survives_save_and_load(tmp_path):
    model = geobind.load("tiny")
    thermal = GeoBind.from_config(model.config, seed=7)["sat"]  # another sensor, same encoder kind
    thermal.bands = [2, 2, 2]
    section = {**model.config["sat"], "bands": [2, 2, 2]}
    model.add_encoder("thermal", thermal, kind="sat", section=section)
    loaded = geobind.load(model.save(tmp_path / "m"))
    assert loaded.modalities == ["sat", "ground", "text", "audio", "thermal"]
    chip = np.random.default_rng(1).integers(0, 255, (3, 32, 32), dtype=np.uint8)
    assert torch.equal(model.embed("thermal", chip), loaded.embed("thermal", chip))
    assert loaded["thermal"].bands == [2, 2, 2]


@pytest.mark.parametrize("modality", ["sat", "ground", "text", "audio"])
def test_batch_equals_one_by_one(tiny, modality):
    items = {
        "sat": list(np.random.default_rng(2).integers(0, 255, (4, 3, 32, 32), dtype=np.uint8)),
        "ground": [np.full((30, 30, 3), v, np.uint8) for v in (0, 90, 200)],
        "text": ["a", "dense forest", "ünïcødé 東京", ""],
        "audio": [
            (np.random.default_rng(i).standard_normal(24000).astype(np.float32), 48000)
            for i in range(3)
        ],
    }[modality]
    batch = tiny.embed(modality, items)
    single = torch.cat([tiny.embed(modality, [item]) for item in items])
    assert torch.allclose(batch, single, atol=1e-5)


def test_adding_a_shared_encoder_gets_its_own_weights(tmp_path):
    model = geobind.load("tiny")
    model.add_encoder("thermal", model["sat"], kind="sat", section=model.config["sat"])
    assert model["thermal"] is not model["sat"]
    loaded = geobind.load(model.save(tmp_path / "m"))  # no "tensors share memory" error
    chip = np.zeros((3, 32, 32), np.uint8)
    assert torch.equal(loaded.embed("thermal", chip), loaded.embed("sat", chip))


def test_prefetch_thread_stops_when_the_consumer_stops():
    import threading
    import time

    from geobind.models.encoders import _background

    def produce():
        for i in range(100):
            yield np.zeros(10) + i

    before = threading.active_count()
    gen = _background(produce(), depth=2)
    assert next(gen)[0] == 0
    gen.close()
    deadline = time.time() + 5
    while threading.active_count() > before and time.time() < deadline:
        time.sleep(0.05)
    assert threading.active_count() == before

    def broken():
        yield 1
        raise OSError("disk gone")

    with pytest.raises(OSError, match="disk gone"):
        list(_background(broken()))


def test_prefetch_starts_at_once_and_stops_unread():
    import threading

    from geobind.models.encoders import _background

    started = threading.Event()

    def produce():
        started.set()  # runs before anything is asked for: the read overlaps the caller's work
        yield from range(100)

    before = threading.active_count()
    items = _background(produce(), depth=1)
    assert started.wait(5)
    items.close()  # never iterated: the thread still ends
    assert threading.active_count() == before
    assert list(items) == []  # closed: nothing more comes

    items = _background(produce(), depth=1)
    next(items)
    thread = items._thread
    del items  # dropped unclosed: collected, and its thread ends
    thread.join(5)
    assert not thread.is_alive()


def test_encoder_inputs_edge_cases(tiny, tmp_path):
    import soundfile as sf

    paths = []
    for i in range(2):
        paths.append(tmp_path / f"{i}.wav")
        sf.write(paths[-1], np.random.default_rng(i).standard_normal(4800) * 0.1, 48000)
    assert tiny.embed("audio", tuple(paths)).shape == (2, 64)  # a tuple of clips is a batch
    assert tiny.embed("audio", (np.zeros(4800, np.float32), np.int64(48000))).shape == (1, 64)
    assert tiny.embed("text", [], templates=["a photo of {}."]).shape == (0, 64)
