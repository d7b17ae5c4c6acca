"""Encoders as plain ``nn.Module``s, the ``GeoBind`` bundle, presets and weight I/O.

Importing this package imports torch; ``import geobind`` alone does not.
"""

from geobind.models.bundle import GeoBind, load, register_encoder_kind, resolve_device
from geobind.models.encoders import AudioEncoder, Encoder, GroundEncoder, SatEncoder, TextEncoder
from geobind.models.presets import get_preset, list_models

__all__ = [
    "AudioEncoder",
    "Encoder",
    "GeoBind",
    "GroundEncoder",
    "SatEncoder",
    "TextEncoder",
    "get_preset",
    "list_models",
    "load",
    "register_encoder_kind",
    "resolve_device",
]
