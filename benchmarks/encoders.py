"""Encoder throughput: ``embed()`` (preprocessing included) vs the bare forward on prepared tensors.

For each modality of the ``demo`` and ``paper`` architectures (random weights; the paper preset's
architecture is rebuilt from open_clip's ViT-B-32 config and transformers' default HTSAT config, no
download), prints items/s for both and their ratio, measured in the same run. Target: ≥ 0.9 on CPU.
Inputs look like the synthetic world's: rendered 96 px JPEG photos, caption-like texts, 3 s clips.

    python benchmarks/encoders.py [--archs demo paper] [--n 256] [--threads 2]
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
                prepared = [
                    enc.prepare(items[i : i + batch_size]) for i in range(0, len(items), batch_size)
                ]

            def bare(enc=enc, prepared=prepared):
                with torch.inference_mode():
                    for x in prepared:
                        enc(x)

            def pipeline(enc=enc, items=items):
                enc.embed(items, batch_size=batch_size)

            r_bare, r_pipe = _rates(bare, pipeline, len(items))
            rows.append((arch, modality, len(items), r_pipe, r_bare, r_pipe / r_bare))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", nargs="+", default=["demo", "paper"])
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch_size}")
    print(f"{'arch':<7}{'modality':<9}{'items':>6}{'embed/s':>10}{'bare/s':>10}{'ratio':>7}")
    for arch in args.archs:
        n = args.n if arch != "paper" else max(32, args.n // 4)
        for row in bench(arch, n, args.batch_size):
            print(f"{row[0]:<7}{row[1]:<9}{row[2]:>6}{row[3]:>10.1f}{row[4]:>10.1f}{row[5]:>7.2f}")


if __name__ == "__main__":
    main()
