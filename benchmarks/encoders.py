"""Encoder throughput: ``embed()`` (preprocessing included) vs the bare forward on prepared tensors.

For each modality of the ``demo`` and ``paper`` architectures (random weights; the paper preset's
architecture is rebuilt from open_clip's ViT-B-32 config and transformers' default HTSAT config, no
download), prints items/s for both and their ratio, measured in the same run. Target: ≥ 0.9 on CPU.
Inputs look like the synthetic world's: rendered 96 px JPEG photos, caption-like texts, 3 s clips.

With ``--published``, rows for the registry's ViT-B/32 models (``geobind.load("sat2cap")`` …) at
full size with random weights, written in each published layout into a temporary Hugging Face
cache and loaded by name (the layout and conversion path, not the weights, is what could cost):
``embed()`` on raw chips / texts vs the bare open_clip forward (``visual(x)``, ``text(tokens)``)
of the same tower on prepared tensors, and ``max|d|``, the largest difference between ``embed()``
and the forward of the library that wrote the file (open_clip from the file; transformers'
``CLIPVisionModelWithProjection`` for Sat2Cap). Target: ratio ≥ 0.9, ``max|d|`` ≤ 1e-5.

    python benchmarks/encoders.py [--archs demo paper] [--n 256] [--threads 2]
    python benchmarks/encoders.py --archs --published [sat2cap remoteclip-vit-b-32 …] --n 64
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from geobind.models import GeoBind, get_preset
from geobind.synth import CLASSES
from geobind.synth.photos import render_photo


def _paper_architecture() -> dict:
    import open_clip

    cfg = get_preset("paper")
    model_cfg = open_clip.get_model_config("ViT-B-32")
    model_cfg["quick_gelu"] = True  # as the OpenAI weights need
    cfg["clip"] = {"model_cfg": model_cfg, "source": None}
    cfg["embed_dim"] = model_cfg["embed_dim"]
    cfg["audio"] = {**cfg["audio"], "source": None, "clap_config": {}}
    return cfg


def _inputs(model: GeoBind, n: int, tmp: Path) -> dict[str, list]:
    rng = np.random.default_rng(0)
    chip = model.config["sat"]["chip_size"]
    photos = []
    for i in range(n):  # the photos the synthetic world holds: 96 px, JPEG quality 90
        path = tmp / f"{i}.jpg"
        fg, bg = rng.integers(1, len(CLASSES) + 1, 2)
        Image.fromarray(render_photo(rng, int(fg), int(bg), 96)[0]).save(path, quality=90)
        photos.append(path)
    words = ["busy", "highway", "lake", "shore", "dense", "forest", "houses", "with", "cars"]
    seconds = 3.0
    return {
        "sat": list(rng.integers(0, 255, (n, 4, chip, chip), dtype=np.uint8)),
        "ground": photos,
        # 4n texts: a batch of texts takes ~1/5 of a batch of photos, too short to time alone
        "text": [" ".join(rng.choice(words, 8)) for _ in range(4 * n)],
        "audio": [
            (rng.standard_normal(int(48000 * seconds)).astype(np.float32) * 0.1, 48000)
            for _ in range(n)
        ],
    }


def _rates(bare, pipeline, n: int, repeat: int = 5) -> tuple[float, float]:
    """Best-of-``repeat`` items/s of both, interleaved so machine noise hits them alike."""
    bare()  # warm-up (allocations, lazy init, thread start)
    pipeline()
    best = [0.0, 0.0]
    for _ in range(repeat):
        for i, fn in enumerate((bare, pipeline)):
            t0 = time.perf_counter()
            fn()
            best[i] = max(best[i], n / (time.perf_counter() - t0))
    return best[0], best[1]


def _prepared(enc, items: list, batch_size: int) -> list:
    """``items`` preprocessed batch by batch, before any clock starts."""
    return [enc.prepare(items[i : i + batch_size]) for i in range(0, len(items), batch_size)]


def _bare_and_pipeline(enc, forward, items, prepared, batch_size: int, repeat: int = 5):
    """Best-of items/s of ``forward`` over the ``prepared`` batches and of ``enc.embed(items)``."""

    def bare():
        with torch.inference_mode():
            for x in prepared:
                forward(x)

    def pipeline():
        enc.embed(items, batch_size=batch_size)

    return _rates(bare, pipeline, len(items), repeat)


def bench(arch: str, n: int, batch_size: int) -> list[tuple]:
    cfg = get_preset(arch) if arch != "paper" else _paper_architecture()
    model = GeoBind.from_config(cfg).eval()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        inputs = _inputs(model, n, Path(tmp))
        for modality, items in inputs.items():
            enc = model[modality]
            if modality == "audio":
                items = items[: max(8, n // 8)]
                prepared = [
                    enc.prepare([clip for clip, _ in items[i : i + batch_size]])
                    for i in range(0, len(items), batch_size)
                ]
            else:
                prepared = _prepared(enc, items, batch_size)
            r_bare, r_pipe = _bare_and_pipeline(enc, enc, items, prepared, batch_size)
            rows.append((arch, modality, len(items), r_pipe, r_bare, r_pipe / r_bare))
    return rows


PUBLISHED = ["sat2cap", "remoteclip-vit-b-32", "georsclip-vit-b-32", "skyclip-vit-b-32"]


def _write_published(home: Path, name: str) -> dict:
    """Random full-size weights in ``name``'s published layout under ``home`` (an HF_HOME);
    returns the reference forwards: ``{"sat": fn(x), "text": fn(tokens)}``."""
    import zipfile

    import open_clip
    from safetensors.torch import save_file
    from transformers import (
        ClapAudioConfig,
        ClapAudioModelWithProjection,
        CLIPVisionConfig,
        CLIPVisionModelWithProjection,
    )

    from geobind.models.published import open_clip_config
    from geobind.models.registry import get_entry

    def snapshot(repo_id: str) -> Path:
        repo = home / "hub" / ("models--" + repo_id.replace("/", "--"))
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / "main").write_text("0" * 40)
        return repo / "snapshots" / ("0" * 40)

    entry = get_entry(name)
    clip_name = entry["encoders"]["text"]
    clip_entry = get_entry(clip_name)
    quick = bool(clip_entry["quick_gelu"])
    torch.manual_seed(0)
    clip = open_clip.CLIP(**open_clip_config(clip_entry)).eval()  # as the files hold it
    source = clip_entry["source"]
    if source.get("url"):  # SkyCLIP: a zip holding open_clip's training checkpoint
        file = home / "geobind" / clip_name / "epoch_20.pt"
        file.parent.mkdir(parents=True, exist_ok=True)
        state = {f"module.{k}": v for k, v in clip.state_dict().items()}
        torch.save({"epoch": 20, "name": clip_name, "state_dict": state}, file)
        with zipfile.ZipFile(file.parent / Path(source["url"]).name, "w") as z:
            z.write(file, f"{clip_name}/epoch_20.pt")
    else:
        file = snapshot(source["hub"]) / source["files"][0]
        file.parent.mkdir(parents=True, exist_ok=True)
        if file.suffix == ".safetensors":
            save_file({k: v.contiguous() for k, v in clip.state_dict().items()}, file)
        else:
            torch.save(clip.state_dict(), file)
    # open_clip itself reading the published file (for the zip: the checkpoint inside it)
    ref = open_clip.create_model(clip_entry["arch"], pretrained=str(file), force_quick_gelu=quick)
    refs = {"text": ref.eval().encode_text, "sat": ref.encode_image}
    if source.get("url"):
        file.unlink()
    if entry["encoders"]["sat"] != clip_name:  # Sat2Cap: a transformers CLIP vision model
        torch.manual_seed(1)
        hf = CLIPVisionModelWithProjection(CLIPVisionConfig(hidden_act="quick_gelu")).eval()
        hf.save_pretrained(snapshot(get_entry(entry["encoders"]["sat"])["source"]["hub"]))
        refs["sat"] = lambda x: hf(pixel_values=x).image_embeds
    if "audio" in entry["encoders"]:
        tower = ClapAudioModelWithProjection(ClapAudioConfig())
        tower.save_pretrained(snapshot(get_entry(entry["encoders"]["audio"])["source"]["hub"]))
    return refs


def bench_published(names: list[str], n: int, batch_size: int, repeat: int = 5) -> list[tuple]:
    import os

    import geobind

    rows = []
    rng = np.random.default_rng(0)
    words = ["busy", "highway", "lake", "shore", "dense", "forest", "houses", "with", "cars"]
    texts = [" ".join(rng.choice(words, 8)) for _ in range(4 * n)]
    for name in names:
        with tempfile.TemporaryDirectory() as home:
            before = {k: os.environ.get(k) for k in ("HF_HOME", "HF_HUB_OFFLINE")}
            os.environ.update(HF_HOME=home, HF_HUB_OFFLINE="1")
            try:
                refs = _write_published(Path(home), name)
                t0 = time.perf_counter()
                model = geobind.load(name, device="cpu")
                load_s = time.perf_counter() - t0
            finally:
                for k, v in before.items():
                    if v is None:
                        os.environ.pop(k, None)
                    else:
                        os.environ[k] = v
        sat, text = model["sat"], model["text"]
        text.cache_batch = 0  # time the tower, not the query cache
        size = sat.image_size
        chips = rng.integers(0, 255, (n, 3, size, size), dtype=np.uint8)
        cases = {
            "sat": (sat, list(chips), sat.visual),
            "text": (text, texts, text.text),  # open_clip's own forward: all 77 positions
        }
        for modality, (enc, items, tower) in cases.items():
            prepared = _prepared(enc, items, batch_size)
            r_bare, r_pipe = _bare_and_pipeline(enc, tower, items, prepared, batch_size, repeat)
            with torch.inference_mode():
                x = prepared[0]
                got = enc.embed(items[: len(x)], batch_size=batch_size)
                want = torch.nn.functional.normalize(refs[modality](x).float(), dim=-1)
            diff = float((got - want).abs().max())
            rows.append((name, modality, len(items), r_pipe, r_bare, r_pipe / r_bare, diff, load_s))
        del model
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", nargs="*", default=["demo", "paper"])
    parser.add_argument(
        "--published",
        nargs="*",
        default=None,
        help=f"registry models to measure (no names: {' '.join(PUBLISHED)})",
    )
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--repeat", type=int, default=5, help="best of this many timed runs")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch_size}")
    print(f"{'arch':<7}{'modality':<9}{'items':>6}{'embed/s':>10}{'bare/s':>10}{'ratio':>7}")
    for arch in args.archs:
        n = args.n if arch != "paper" else max(32, args.n // 4)
        for row in bench(arch, n, args.batch_size):
            print(f"{row[0]:<7}{row[1]:<9}{row[2]:>6}{row[3]:>10.1f}{row[4]:>10.1f}{row[5]:>7.2f}")
    if args.published is not None:
        names = args.published or PUBLISHED
        n = max(16, args.n // 4)
        print(f"\n{'published model':<21}{'modality':<9}{'items':>6}{'embed/s':>10}", end="")
        print(f"{'bare/s':>10}{'ratio':>7}{'max|d|':>9}{'load s':>8}")
        for row in bench_published(names, n, args.batch_size, args.repeat):
            print(
                f"{row[0]:<21}{row[1]:<9}{row[2]:>6}{row[3]:>10.1f}{row[4]:>10.1f}{row[5]:>7.2f}"
                f"{row[6]:>9.1e}{row[7]:>8.1f}"
            )


if __name__ == "__main__":
    main()
