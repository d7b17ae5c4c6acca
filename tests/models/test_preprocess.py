"""Preprocessing: dtypes, bands, photos with EXIF, audio rates/channels/lengths, text edge cases."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from geobind.errors import BandsError, InputDataError
from geobind.models.preprocess import audio_windows, load_audio, load_image, prepare_chips

KW = {"bands": [1, 2, 3], "scale": "auto", "image_size": 16, "mean": [0.0] * 3, "std": [1.0] * 3}


@pytest.mark.parametrize(
    ("dtype", "value", "expected"),
    [
        (np.uint8, 255, 1.0),
        (np.uint16, 5000, 0.5),
        (np.float32, 0.25, 0.25),
        (np.float64, 2.0, 1.0),
    ],
)
def test_dtype_scaling(dtype, value, expected):
    chip = np.full((3, 16, 16), value, dtype)
    x = prepare_chips(chip, **KW)
    assert x.dtype == torch.float32
    assert torch.allclose(x, torch.full_like(x, expected))


def test_scale_to_unit_clips_and_clears_every_dtype():
    from geobind.data.scaling import scale_to_unit

    assert scale_to_unit(np.array([0, 128, 255], np.uint8)).tolist() == [
        0.0,
        np.float32(128 / 255),
        1.0,
    ]
    assert scale_to_unit(np.array([0, 200], np.uint8), 100).tolist() == [0.0, 1.0]
    assert scale_to_unit(np.array([-5, 5000, 20000], np.int16)).tolist() == [0.0, 0.5, 1.0]
    assert scale_to_unit(np.array([-1, 70000], np.int32)).tolist() == [0.0, 1.0]
    floats = np.array([np.nan, np.inf, -np.inf, -0.5, 0.25, 3.0], np.float32)
    assert scale_to_unit(floats).tolist() == [0.0, 1.0, 0.0, 0.0, 0.25, 1.0]
    assert all(scale_to_unit(np.zeros(2, t)).dtype == np.float32 for t in (np.uint8, np.float64))


def test_band_selection_and_counts():
    chip = np.stack([np.full((16, 16), v, np.uint8) for v in (10, 20, 30, 40, 50)])
    x = prepare_chips(chip, **{**KW, "bands": [3, 2, 1]})
    assert [round(float(v) * 255) for v in x[0, :, 0, 0]] == [30, 20, 10]
    four = prepare_chips(chip[:4], **KW)  # RGB+NIR: NIR is ignored
    assert torch.equal(four, prepare_chips(chip[:3], **KW))
    with pytest.raises(BandsError, match="a chip has 1 band"):
        prepare_chips(chip[:1], **KW)
    with pytest.raises(InputDataError, match="a chip has 2 band"):
        prepare_chips(chip[:2], **KW)
    grey = prepare_chips(chip[:1], **{**KW, "bands": [1, 1, 1]})
    assert grey.shape == (1, 3, 16, 16)


def test_resize_nan_and_shapes():
    chip = np.full((3, 40, 24), 0.5, np.float32)
    chip[0, 0, 0] = np.nan
    x = prepare_chips([chip, chip], **KW)
    assert x.shape == (2, 3, 16, 16) and torch.isfinite(x).all()
    with pytest.raises(InputDataError, match="share a shape"):
        prepare_chips([chip, chip[:, :20]], **KW)
    with pytest.raises(InputDataError, match="bands, height, width"):
        prepare_chips(np.zeros((16, 16)), **KW)


@pytest.mark.parametrize("size", [32, 40])  # the tiny model's own size, and a resize
def test_numpy_and_torch_normalisation_agree_bitwise(tiny, size):
    """Inference standardises numpy chips (prefetch thread); training, torch tensors."""
    sat = tiny["sat"]
    chips = np.random.default_rng(0).random((4, 3, size, size), dtype=np.float32)
    from_numpy = sat.normalize(chips)
    from_torch = sat.normalize(torch.from_numpy(chips))
    assert from_numpy.shape == (4, 3, sat.image_size, sat.image_size)
    assert torch.equal(from_numpy, from_torch)


def test_photo_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (40, 20), (200, 10, 10))
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    path = tmp_path / "rotated.jpg"
    img.save(path, exif=exif)
    assert load_image(path).size == (20, 40)
    real = load_image("/work/shared/data/real/DSCN0010.jpg")
    assert real.mode == "RGB" and min(real.size) > 100
    with pytest.raises(InputDataError, match="cannot read photo"):
        bad = tmp_path / "bad.jpg"
        bad.write_bytes(b"not a jpeg")
        load_image(bad)


@pytest.mark.parametrize("resize_mode", ["shortest", "squash", "longest"])
def test_batched_photo_transform_equals_clip_transform_bitwise(tiny, tmp_path, resize_mode):
    """GroundEncoder.prepare runs ToTensor + Normalize once per batch, in numpy: the same bits
    as open_clip's transform photo by photo (several sizes and shapes, EXIF, a real photo)."""
    import open_clip

    from geobind.models.encoders import GroundEncoder

    rng = np.random.default_rng(0)
    photos = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in
              [(96, 96), (50, 130), (300, 41), (32, 32), (7, 9)]]  # fmt: skip
    exif = Image.new("RGB", (40, 20), (200, 10, 10)).getexif()
    exif[0x0112] = 6
    photos[0].save(tmp_path / "rotated.jpg", exif=exif)
    photos += [tmp_path / "rotated.jpg", "/work/shared/data/real/DSCN0010.jpg"]
    size = tiny["ground"].visual.image_size
    transform = open_clip.image_transform(size, is_train=False, resize_mode=resize_mode)
    ground = GroundEncoder(tiny["ground"].visual, 64, transform)
    assert ground._pil is not None  # the batched path runs
    expected = torch.stack([transform(load_image(p)) for p in photos])
    assert torch.equal(ground.prepare(photos), expected)
    # a transform of another shape runs as it is
    odd = GroundEncoder(tiny["ground"].visual, 64, lambda im: transform(im) * 2)
    assert odd._pil is None and torch.equal(odd.prepare(photos), expected * 2)


@pytest.mark.parametrize("rate", [8000, 16000, 44100, 48000, 96000])
def test_audio_rates_resampled(tmp_path, rate):
    t = np.arange(rate) / rate
    path = tmp_path / f"tone_{rate}.wav"
    sf.write(path, 0.5 * np.sin(2 * np.pi * 440 * t), rate)
    out = load_audio(path, 48000)
    assert out.dtype == np.float32 and abs(len(out) - 48000) <= 1
    spectrum = np.abs(np.fft.rfft(out))
    assert abs(np.argmax(spectrum) * 48000 / len(out) - 440) < 3  # the tone survives resampling


def test_audio_stereo_mixed_down(tmp_path):
    left = np.full(4800, 0.2, np.float32)
    stereo = np.stack([left, -left * 0.5], axis=1)
    path = tmp_path / "stereo.wav"
    sf.write(path, stereo, 48000, subtype="FLOAT")
    assert np.allclose(load_audio(path, 48000), 0.05, atol=1e-6)
    assert np.allclose(load_audio((stereo.T, 48000), 48000), 0.05, atol=1e-6)


def test_audio_bad_inputs(tmp_path):
    with pytest.raises(InputDataError, match="does not exist"):
        load_audio(tmp_path / "missing.wav", 48000)
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(InputDataError, match="cannot read audio"):
        load_audio(empty, 48000)
    with pytest.raises(InputDataError, match="NaN"):
        load_audio((np.array([0.0, np.nan], np.float32), 48000), 48000)
    with pytest.raises(InputDataError, match="sample rate"):
        load_audio(np.zeros(10, np.float32), 48000)


def test_audio_windows_bounded():
    assert [len(w) for w in audio_windows(np.zeros(5), 10, 4)] == [5]
    wins = audio_windows(np.arange(95.0), 10, 4)
    assert len(wins) == 4 and all(len(w) == 10 for w in wins)
    assert wins[0][0] == 0 and wins[-1][-1] == 94  # first and last windows cover both ends


def test_audio_encoder_lengths_and_silence(tiny):
    audio = tiny["audio"]
    window = audio.features.nb_max_samples
    clips = [
        (np.zeros(4800, np.float32), 48000),  # silence, shorter than the window
        (np.random.default_rng(0).standard_normal(window * 3 + 7).astype(np.float32), 48000),
        "/work/shared/data/real/audiomoth_gps.wav",
    ]
    vecs = audio.embed(clips)
    assert vecs.shape == (3, 64) and torch.isfinite(vecs).all()
    assert torch.allclose(vecs.norm(dim=1), torch.ones(3), atol=1e-5)


def test_text_edge_cases(tiny):
    text = tiny["text"]
    vecs = text.embed(["", "ünïcødé 東京 🌊", "very long " * 400, "a lake"])
    assert vecs.shape == (4, 64) and torch.isfinite(vecs).all()
    # overlong text is truncated by the tokenizer: only the first context_length tokens count
    assert torch.allclose(text.embed("very long " * 400), text.embed("very long " * 100), atol=1e-6)
    with pytest.raises(InputDataError, match="must be strings"):
        text.embed(["ok", 3])
    templated = text.embed(
        ["forest", "lake"], templates=["a photo of {}.", "satellite view of {}."]
    )
    assert templated.shape == (2, 64)


def test_clap_log_mel_matches_the_feature_extractor():
    from transformers import ClapFeatureExtractor

    from geobind.models.preprocess import clap_log_mel

    fe = ClapFeatureExtractor(
        truncation="rand_trunc", padding="repeatpad", frequency_min=50, max_length_s=2
    )
    rng = np.random.default_rng(0)
    windows = [
        rng.standard_normal(96000).astype(np.float32) * 0.1,  # exactly one window
        rng.standard_normal(30000).astype(np.float32) * 0.3,  # repeat-padded
        np.zeros(5000, np.float32),  # silence
        np.sin(np.arange(12345) / 7.0).astype(np.float32),
    ]
    expected = fe(windows, sampling_rate=48000, return_tensors="pt")["input_features"]
    got = clap_log_mel(windows, fe)
    assert got.shape == expected.shape and got.dtype == torch.float32
    diff = (got - expected).abs()
    # noise-like clips agree to ~1e-5 dB; float32 rounding shows only in near-silent bins of the
    # pure tone (dynamic range > 90 dB)
    assert diff[:2].max() < 1e-3
    assert diff[expected > -60].max() < 0.05 and diff.max() < 0.5 and diff.mean() < 0.01


def test_text_tower_skips_padding_with_the_same_result(tiny):
    """Short texts run on the used positions only; the vectors equal the full-context forward."""
    text = tiny["text"]
    tokens = text.tokenizer(["a lake", "dense forest with tall pine trees", "東京"])
    lengths = []
    hook = text.text.transformer.register_forward_pre_hook(
        lambda module, args: lengths.append(args[0].shape[1])
    )
    try:
        with torch.inference_mode():
            full = text.text(tokens)
            lengths.clear()
            trimmed = text(tokens)
            long = text(text.tokenizer(["very long " * 400]))  # fills the context: runs whole
    finally:
        hook.remove()
    assert lengths[0] < tokens.shape[1] and lengths[1] == tokens.shape[1]
    torch.testing.assert_close(trimmed, full, rtol=0, atol=1e-5)
    torch.testing.assert_close(long, text.text(text.tokenizer(["very long " * 400])))


def test_trimmed_text_forward_trains_like_the_full_one(tiny):
    """The CLIP stand-in trains through text_forward: its gradients equal the full forward's."""
    from geobind.models.encoders import text_forward

    tower = copy.deepcopy(tiny["text"].text).train().requires_grad_(True)
    tokens = tiny["text"].tokenizer(["a lake shore", "farm fields"])
    grads = []
    for forward in (tower, lambda x: text_forward(tower, x)):
        tower.zero_grad()
        forward(tokens).square().sum().backward()
        grads.append({n: p.grad.clone() for n, p in tower.named_parameters()})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-3, atol=1e-4)
