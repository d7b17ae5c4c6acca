"""Training data path vs. the training step: is loading ever the bottleneck?

Builds the stage-1 chip dataset (torchgeo reads, jitter/flip/rot90 and radiometric augmentation)
on a synthetic world and trains as the demo's stage 1 does (its patch dropout and jitter, the
defaults below), and measures, in one run: loader throughput (chips/s through the real dataset and a
DataLoader), the chips/s one training step of the satellite encoder consumes (forward + InfoNCE +
backward + AdamW), their ratio (target ≥ 5×), and one step's time split into data / forward /
backward+optimizer. The same loader rates for the world exported as pair datasets (the
hub's parquet layout and WebDataset shards, each shuffled by row group / shard and fetched a
batch at a time, as training does).

    python benchmarks/training.py --world WORLD [--preset demo] [--batch-size 64] [--steps 20]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from geobind.demo import DEMO_PRESETS

#: A loader should read at least this many times the chips/s one training step consumes.
TARGET = 5.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", help="synthetic world folder (default: a fresh tiny world)")
    parser.add_argument("--preset", default="demo", help="model preset")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1])
    stage1 = DEMO_PRESETS["demo"]["stage1"]
    for name in ("patch_dropout", "gain_jitter", "haze_jitter"):
        flag = "--" + name.replace("_", "-")
        parser.add_argument(flag, type=float, default=stage1.get(name, 0.0), help="as the demo")
    args = parser.parse_args()

    import geobind
    from geobind.data.datasets import PairedChips, chips_per_second
    from geobind.data.manifest import read_manifest
    from geobind.synth import generate_world, load_world
    from geobind.training.loss import InfoNCE
    from geobind.training.stages import _patch_dropout

    world = (
        load_world(args.world) if args.world else generate_world(tempfile.mkdtemp() + "/w", "tiny")
    )
    model = geobind.load(args.preset, device="cpu")
    sat_cfg = model.config["sat"]
    points = read_manifest(world.ground_manifest)
    points = points[points["split"] == "train"]
    ds = PairedChips(
        [str(p) for p in world.scenes.values()],
        points,
        chip_size=sat_cfg["chip_size"],
        gsd=sat_cfg["gsd"],
        bands=sat_cfg["bands"],
        augment=True,
        gain_jitter=args.gain_jitter,
        haze_jitter=args.haze_jitter,
    )
    n = min(len(ds), 1024)
    loader_rates = {
        f"scenes, {w} worker(s)": chips_per_second(ds, n=n, batch_size=args.batch_size,
                                                   num_workers=w)
        for w in args.workers
    }  # fmt: skip
    loader_rates.update(_pair_rates(world, model, args))

    sat = model["sat"].train()
    loss_fn = InfoNCE()
    params = [*sat.parameters(), *loss_fn.parameters()]
    opt = torch.optim.AdamW(params, lr=1e-4)
    anchors = F.normalize(torch.randn(len(ds), model.embed_dim), dim=-1)
    loader = DataLoader(ds, batch_size=args.batch_size, shuffle=True, drop_last=True)
    t_data = t_fwd = t_bwd = 0.0
    steps = 0
    it = iter(loader)
    with _patch_dropout(sat.visual, args.patch_dropout):  # as the demo's stage 1 trains
        while steps < args.steps + 2:
            t0 = time.perf_counter()
            try:
                batch = next(it)
            except StopIteration:
                it = iter(loader)
                batch = next(it)
            t1 = time.perf_counter()
            z = F.normalize(sat(sat.normalize(batch["image"])), dim=-1)
            loss = loss_fn(z, anchors[batch["index"]])
            t2 = time.perf_counter()
            opt.zero_grad()
            loss.backward()
            opt.step()
            t3 = time.perf_counter()
            if steps >= 2:  # warm-up steps excluded
                t_data, t_fwd, t_bwd = t_data + t1 - t0, t_fwd + t2 - t1, t_bwd + t3 - t2
            steps += 1
    step = (t_fwd + t_bwd) / args.steps
    demand = args.batch_size / step
    print(
        f"world {world.root} ({len(ds)} train chips), model {args.preset}, "
        f"batch {args.batch_size}, patch dropout {args.patch_dropout}, "
        f"gain/haze jitter {args.gain_jitter}/{args.haze_jitter}"
    )
    print(f"training step (forward + backward + AdamW): {demand:.0f} chips/s")
    for what, rate in loader_rates.items():
        verdict = "ok" if rate / demand >= TARGET else f"NO (target {TARGET:g}x)"
        print(f"loader, {what}: {rate:.0f} chips/s  ->  {rate / demand:.1f}x the step's demand  "
              f"{verdict}")  # fmt: skip
    total = t_data + t_fwd + t_bwd
    print(
        f"step split: data {100 * t_data / total:.0f}%  forward {100 * t_fwd / total:.0f}%  "
        f"backward+optimizer {100 * t_bwd / total:.0f}%  ({1000 * total / args.steps:.0f} ms/step)"
    )


def _pair_rates(world, model, args) -> dict[str, float]:
    """Loader chips/s over the world exported as pairs (parquet and WebDataset), shuffled by
    row group / shard as training shuffles them."""
    from geobind.data.pairs import PairChips, PairSampler, open_pairs
    from geobind.synth import export_pairs

    sat, sat_cfg = model["sat"], model.config["sat"]
    side = 2 * sat_cfg["chip_size"]  # twice the footprint: a crop, as real tiles need
    rates = {}
    with tempfile.TemporaryDirectory() as tmp:
        for layout, kind in (("soundingearth-hub", "audio"), ("webdataset", "ground")):
            out = export_pairs(world, f"{tmp}/{layout}", layout=layout, kind=kind, size=side)
            pairs = open_pairs(out, gsd=sat_cfg["gsd"])
            chips = PairChips(
                pairs,
                chip_size=sat_cfg["chip_size"],
                model_gsd=sat_cfg["gsd"],
                out_size=sat.image_size,
                augment=True,
                gain_jitter=args.gain_jitter,
                haze_jitter=args.haze_jitter,
            )
            for w in args.workers:
                loader = DataLoader(chips, batch_size=args.batch_size, num_workers=w,
                                    sampler=PairSampler(pairs, shuffle=True))  # fmt: skip
                start = time.perf_counter()
                read = sum(len(b["image"]) for b in loader)
                rates[f"pairs {layout} ({len(pairs)} samples), {w} worker(s)"] = read / (
                    time.perf_counter() - start
                )
    return rates


if __name__ == "__main__":
    main()
