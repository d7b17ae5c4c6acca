"""Every exception and warning geobind raises.

Each error derives from :class:`GeoBindError` *and* from the builtin a caller would expect, so both
``except GeoBindError`` and ``except ValueError`` (or ``OSError``, ``ImportError`` …) catch it.

Example:
    >>> from geobind.errors import CRSError, GeoBindError
    >>> try:
    ...     raise CRSError("raster has no CRS; write one with raster.rio.write_crs('EPSG:32633')")
    ... except ValueError as err:
    ...     isinstance(err, GeoBindError)
    True
"""

from __future__ import annotations

__all__ = [
    "CRSError",
    "CRSMismatchWarning",
    "GeoBindError",
    "GeoBindWarning",
    "InputDataError",
    "MissingDependencyError",
    "ModelFileError",
    "OutputExistsError",
    "StoreError",
    "StoreLockedError",
    "UntrustedPickleError",
    "WeightsNotFoundError",
]


class GeoBindError(Exception):
    """Root of every error geobind raises on purpose."""


class InputDataError(GeoBindError, ValueError):
    """Input data (raster, vector, audio, text, manifest) is unusable as given."""


class CRSError(InputDataError):
    """A coordinate reference system is missing, unsupported or inconsistent."""


class ModelFileError(GeoBindError, OSError):
    """A model folder or weights file is missing, corrupt, or fails its hash check."""


class WeightsNotFoundError(ModelFileError, FileNotFoundError):
    """Pretrained weights are not available locally (and the hub is not reachable)."""


class UntrustedPickleError(ModelFileError, PermissionError):
    """A file is a Python pickle (which can run code when loaded) and was not marked as trusted."""


class OutputExistsError(GeoBindError, FileExistsError):
    """The output location already holds data that geobind will not overwrite silently."""


class MissingDependencyError(GeoBindError, ImportError):
    """An optional dependency needed for this feature is not installed."""


class StoreError(GeoBindError, OSError):
    """A Zarr store cannot be written (no space left, not writable, or in use)."""


class StoreLockedError(StoreError):
    """Another live process is writing to the store."""


class GeoBindWarning(UserWarning):
    """Something the user may want to know about but can live with."""


class CRSMismatchWarning(GeoBindWarning):
    """Data in one CRS was reprojected to another (e.g. points to a raster's CRS) to be used."""
