"""Reading GeoTIFFs and point manifests, pairing them, transforms, torchgeo datasets, samplers."""

from geobind.data.manifest import read_manifest

__all__ = ["read_manifest"]
