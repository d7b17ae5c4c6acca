"""Reading GeoTIFFs and point manifests, pairing them, transforms, torchgeo datasets, samplers."""
