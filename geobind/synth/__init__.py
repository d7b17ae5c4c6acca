"""The deterministic synthetic world.

Georeferenced scenes with land-cover truth, ground photos, audio, captions and GeoParquet manifests
with spatially blocked splits.

Example:
    >>> from geobind.synth import generate_world
    >>> world = generate_world(getfixture("tmp_path") / "world", "tiny")
    >>> sorted(p.name for p in world.root.iterdir())[:3]
    ['audio', 'audio.parquet', 'ground']
"""

from geobind.synth.pairs import export_pairs
from geobind.synth.scene import CLASS_COLORS, CLASSES
from geobind.synth.world import PRESETS, SceneSpec, World, WorldPreset, generate_world, load_world

__all__ = [
    "CLASSES",
    "CLASS_COLORS",
    "PRESETS",
    "SceneSpec",
    "World",
    "WorldPreset",
    "export_pairs",
    "generate_world",
    "load_world",
]
