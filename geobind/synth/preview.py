"""A contact sheet of a synthetic world: scenes, land cover, photos, captions, spectrograms."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from geobind.synth.scene import CLASS_COLORS, CLASSES

if TYPE_CHECKING:
    from geobind.synth.world import World

__all__ = ["write_preview"]


def _thumb(path: Path, max_side: int = 320) -> np.ndarray:
    import rasterio

    with rasterio.open(path) as src:
        f = max(src.width, src.height) / max_side
        shape = (src.count, max(1, int(src.height / f)), max(1, int(src.width / f)))
        return src.read(out_shape=shape, resampling=rasterio.enums.Resampling.nearest)


def write_preview(world: World, path: str | Path, *, n_photos: int = 12) -> Path:
    """Write a PNG contact sheet of ``world`` to ``path`` and return the path.

    Example:
        >>> from geobind.synth import generate_world
        >>> from geobind.synth.preview import write_preview
        >>> w = generate_world(getfixture("tmp_path") / "w", "tiny")
        >>> write_preview(w, w.root / "sheet.png").stat().st_size > 0
        True
    """
    import geopandas as gpd
    import soundfile as sf
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch
    from PIL import Image

    scenes = world.info["scenes"]
    n_audio_cols = 4
    fig = Figure(figsize=(16, 13), layout="constrained")
    top, mid, bottom = fig.subfigures(3, 1, height_ratios=[1.3, 1.2, 0.8])
    cmap = ListedColormap(
        [(0, 0, 0, 0)] + [(*tuple(v / 255 for v in c), 1.0) for c in CLASS_COLORS]
    )
    axes = top.subplots(1, 2 * len(scenes), squeeze=False)[0]
    for i, s in enumerate(scenes):
        rgb = _thumb(world.root / s["path"])[:3]
        axes[2 * i].imshow(np.moveaxis(rgb, 0, -1))
        axes[2 * i].set_title(
            f"{s['name']}\n{s['crs']}, {s['gsd']} m, {s['width']}×{s['height']}", fontsize=9
        )
        lc = _thumb(world.root / s["landcover"])[0]
        axes[2 * i + 1].imshow(lc, cmap=cmap, vmin=0, vmax=len(CLASSES), interpolation="nearest")
        held = " (held out)" if s["heldout"] else ""
        axes[2 * i + 1].set_title(f"{s['name']}\nland cover{held}", fontsize=9)
    for ax in axes:
        ax.set_axis_off()
    top.legend(
        handles=[
            Patch(color=np.array(c) / 255, label=n)
            for n, c in zip(CLASSES, CLASS_COLORS, strict=True)
        ],
        loc="outside right center",
    )
    top.suptitle(f"synthetic world '{world.info['preset']['name']}', seed {world.info['seed']}")

    ground = gpd.read_parquet(world.ground_manifest)
    picks = ground.groupby("landcover_id", sort=True).head(2).head(n_photos)
    axes = mid.subplots(2, (n_photos + 1) // 2, squeeze=False).ravel()
    for ax, (_, row) in zip(axes, picks.iterrows(), strict=False):
        ax.imshow(Image.open(world.root / row["path"]))
        label = row["caption"] + (f" [{row['distractor']}]" if row["distractor"] else "")
        ax.set_title("\n".join(textwrap.wrap(label, 28)), fontsize=8)
    for ax in axes:
        ax.set_axis_off()
    mid.suptitle("ground photos (caption; land cover at the point)")

    audio = gpd.read_parquet(world.audio_manifest)
    picks = audio.groupby("landcover_id", sort=True).head(1).head(n_audio_cols)
    axes = bottom.subplots(1, n_audio_cols, squeeze=False)[0]
    for ax, (_, row) in zip(axes, picks.iterrows(), strict=False):
        samples, sr = sf.read(world.root / row["path"], dtype="float32")
        ax.specgram(samples, NFFT=1024, Fs=sr, noverlap=512, cmap="magma")
        ax.set_title("\n".join(textwrap.wrap(row["caption"], 40)), fontsize=8)
        ax.set_ylim(0, 12_000)
        ax.set_xlabel("time (s)")
        ax.set_ylabel("frequency (Hz)")
    bottom.suptitle("audio clips (spectrograms)")
    path = Path(path)
    fig.savefig(path, dpi=72, metadata={"Software": None})
    return path
