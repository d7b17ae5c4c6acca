"""Tiling rasters into chips, batched embedding, georeferenced grids, similarity and Zarr stores."""
