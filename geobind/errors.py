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

import functools
from collections.abc import Sequence

__all__ = [
    "BandsError",
    "CRSError",
    "CRSMismatchWarning",
    "GeoBindError",
    "GeoBindWarning",
    "IndexMismatchError",
    "IndexNotFoundError",
    "InputDataError",
    "MissingDependencyError",
    "ModelFileError",
    "ModelMismatchError",
    "OutputExistsError",
    "SearchIndexError",
    "StoreError",
    "StoreLockedError",
    "UntrainedLinkWarning",
    "UntrustedPickleError",
    "WeightsNotFoundError",
]


class GeoBindError(Exception):
    """Root of every error geobind raises on purpose."""


class InputDataError(GeoBindError, ValueError):
    """Input data (raster, vector, audio, text, manifest) is unusable as given."""


class CRSError(InputDataError):
    """A coordinate reference system is missing, unsupported or inconsistent."""


class BandsError(InputDataError):
    """The bands the model reads are not all in the raster (e.g. RGB of a single-band raster).

    The message is built here, from the bands asked for and the raster's band count.

    Example:
        >>> print(BandsError([1, 2, 3], 1, where="dem.tif"))
        the model reads bands [1, 2, 3] (1-based) but dem.tif has 1 band(s); pass bands=[...]
        naming the red, green and blue bands (e.g. bands=[1, 1, 1] for a single-band raster)
    """

    def __init__(self, bands: Sequence[int], count: int, *, where: str = "the raster"):
        self.bands, self.count, self.where = [int(b) for b in bands], int(count), where
        super().__init__(
            f"the model reads bands {self.bands} (1-based) but {where} has {self.count} "
            "band(s); pass bands=[...] naming the red, green and blue bands (e.g. bands=[1, 1, 1] "
            "for a single-band raster)"
        )

    @classmethod
    def check(cls, bands: Sequence[int], count: int, *, where: str = "the raster") -> None:
        """Raise this error unless every one of ``bands`` (1-based) is one of ``count`` bands.

        Example:
            >>> BandsError.check([1, 2, 3], 4)
            >>> try:
            ...     BandsError.check([0, 1, 2], 4)
            ... except BandsError as err:
            ...     err.bands, err.count
            ([0, 1, 2], 4)
        """
        if max(bands) > count or min(bands) < 1:
            raise cls(bands, count, where=where)

    def __reduce__(self):  # pickles (e.g. from a dask worker) through __init__'s arguments
        return functools.partial(type(self), where=self.where), (self.bands, self.count)


class ModelMismatchError(InputDataError):
    """A grid or store was embedded by another satellite encoder than the given model's.

    Embeddings stay valid for every model that keeps the satellite encoder bitwise equal (a later
    binding stage); any other model's query vectors do not compare with them. The message is
    built here: what made the embeddings (model name and hash prefix), what was given, and how to
    fix it. Also an :class:`InputDataError`, which this condition raised before it had a class.

    Example:
        >>> print(ModelMismatchError(where="this grid", made_by="stage1", made_sha256="ab" * 32,
        ...                          given="other", given_sha256="cd" * 32))
        this grid holds embeddings of model 'stage1' (satellite encoder sha256 abababababab…),
        but model 'other' has another satellite encoder (sha256 cdcdcdcdcdcd…), whose vectors do
        not compare with them. Pass model 'stage1' or a later stage of it (cells embedded by model
        'stage1' stay valid for every model that keeps its satellite encoder), or embed again with
        'other'
    """

    _FIELDS = ("where", "made_by", "made_sha256", "given", "given_sha256", "source", "weights_hash")

    def __init__(
        self,
        *,
        where: str,
        made_by: str | None,
        made_sha256: str,
        given: str,
        given_sha256: str,
        source: str | None = None,
        weights_hash: bool = False,  # made_sha256 is an older grid's model_sha256
    ):
        self.where, self.made_by, self.made_sha256 = where, made_by, made_sha256
        self.given, self.given_sha256 = given, given_sha256
        self.source, self.weights_hash = source, weights_hash
        what = "model sha256" if weights_hash else "satellite encoder sha256"
        use = f"model={source!r}" if source else f"model {made_by!r}"
        super().__init__(
            f"{where} holds embeddings of model {made_by!r} ({what} {made_sha256[:12]}…), but "
            f"model {given!r} has another satellite encoder (sha256 {given_sha256[:12]}…), whose "
            f"vectors do not compare with them. Pass {use} or a later stage of it (cells "
            f"embedded by model {made_by!r} stay valid for every model that keeps its satellite "
            f"encoder), or embed again with {given!r}"
        )

    def __reduce__(self):  # pickles through __init__'s (keyword) arguments
        kwargs = {k: getattr(self, k) for k in self._FIELDS}
        return functools.partial(type(self), **kwargs), ()


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


class SearchIndexError(GeoBindError, ValueError):
    """A store's search index (``STORE/_index``) cannot be used: damaged, or (subclasses) missing
    or out of date. The message names the command that builds or rebuilds it; the store itself
    is never touched."""


class IndexNotFoundError(SearchIndexError, FileNotFoundError):
    """The store has no search index yet (``geobind index STORE`` builds one)."""


class IndexMismatchError(SearchIndexError):
    """The search index no longer matches its store: it was built for another satellite
    encoder, or groups were written since (``geobind index STORE`` adds them)."""


class GeoBindWarning(UserWarning):
    """Something the user may want to know about but can live with."""


class CRSMismatchWarning(GeoBindWarning):
    """Data in one CRS was reprojected to another (e.g. points to a raster's CRS) to be used."""


class UntrainedLinkWarning(GeoBindWarning):
    """A query crosses a link between modalities that no training bound (e.g. audio queries over
    satellite embeddings of a model whose audio projection is still untrained).

    Models loaded from the registry record which links their weights were trained for
    (:attr:`GeoBind.trained_links <geobind.models.GeoBind.trained_links>`); scores over any other
    link are not meaningful yet. Warned once per encoder.
    """


def one_line(err: BaseException) -> str:
    """An error as one line for a message: a backend's HTTP status and S3 error code where it
    has them, else its first non-empty line (at most 200 characters).

    Example:
        >>> one_line(OSError("GET failed: status code: 404 Not Found\\n<Code>NoSuchKey</Code>"))
        '404 Not Found (NoSuchKey)'
        >>> one_line(ValueError("\\nbad value\\nmore"))
        'bad value'
    """
    import re

    text = str(err)
    status = re.search(r"status code: (\d{3}[^:\n]*)", text)
    code = re.search(r"<Code>([^<]+)</Code>", text)
    if status:
        return status.group(1).strip() + (f" ({code.group(1)})" if code else "")
    first = next((line.strip() for line in text.splitlines() if line.strip()), type(err).__name__)
    return first[:200]
