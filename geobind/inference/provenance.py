"""Which satellite encoder made a grid or a store, and the one check that a model may query it.

A grid's cells are the satellite encoder's vectors, so they stay valid for every model that keeps
that encoder bitwise equal: a later binding stage (stage 2 trains the audio encoder against a
frozen satellite encoder) queries a grid or store embedded by the stage before it, without
embedding again. Grids (``attrs``) and stores (root ``attrs["geobind"]`` and each group's
``attrs``) therefore record the satellite encoder's hash, ``sat_sha256``
(:meth:`GeoBind.encoder_sha256("sat") <geobind.models.GeoBind.encoder_sha256>`).
Grids and stores written before record ``model_sha256`` instead, the hash of the whole weights
file (or the satellite encoder's, for a model never saved); they are checked as before, against
either hash.

:func:`check_same_sat` is the one check, used by the accessors, the store (write, append, resume
and query) and, through them, the command line. Nothing here imports torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from geobind._version import __version__
from geobind.errors import ModelMismatchError

if TYPE_CHECKING:
    from geobind.inference.grid import ChipGrid

__all__ = ["check_same_sat", "grid_attrs", "recorded_by", "sat_sha256"]


def sat_sha256(model: Any, encoder: str = "sat") -> str:
    """SHA-256 of a model's satellite encoder (or of another sensor's, ``encoder``): what grids
    and stores record as ``sat_sha256``.

    Cached on the model until a parameter of that encoder changes (torch's version counters), so
    repeated queries do not hash a large model's weights again.

    Example:
        >>> import geobind
        >>> m = geobind.load("tiny")
        >>> sat_sha256(m) == m.encoder_sha256("sat")
        True
    """
    stamp = tuple(p._version for p in model[encoder].parameters())
    cache = model.__dict__.setdefault("_geobind_sat_sha256", {})
    if not isinstance(cache, dict):  # an older single-entry cache
        cache = model._geobind_sat_sha256 = {}
    if encoder not in cache or cache[encoder][0] != stamp:
        cache[encoder] = (stamp, model.encoder_sha256(encoder))
    return cache[encoder][1]


def _attrs(made_by: Any) -> Mapping[str, Any]:
    """The attributes of a grid (anything with ``.attrs``), or a mapping as it is."""
    if isinstance(made_by, Mapping):
        return made_by
    return getattr(made_by, "attrs", None) or {}


def recorded_by(made_by: Any, *, sat: str | None, weights: str | None = None) -> bool:
    """Whether what ``made_by`` records (``sat_sha256``, or an older ``model_sha256``) fits a model
    with satellite encoder hash ``sat`` and weights file hash ``weights``.

    Only the hashes are compared, so a store can tell from a model folder's ``geobind.json``
    whether it may skip loading the model. Nothing recorded fits every model.

    Example:
        >>> recorded_by({"sat_sha256": "aa"}, sat="aa"), recorded_by({"sat_sha256": "aa"}, sat="bb")
        (True, False)
        >>> recorded_by({"model_sha256": "ff"}, sat="aa", weights="ff")  # an older grid
        True
    """
    attrs = _attrs(made_by)
    if attrs.get("sat_sha256") is not None and attrs["sat_sha256"] != sat:
        return False
    old = attrs.get("model_sha256")
    return old is None or old in {h for h in (sat, weights) if h}


def check_same_sat(made_by: Any, model: Any, *, where: str = "this grid") -> None:
    """Refuse ``model`` unless it carries the satellite encoder that embedded ``made_by``.

    ``made_by`` is a grid (its ``attrs``), a store group's attributes or a store's root settings.
    A later stage of the model that made it passes; any other satellite encoder raises
    :class:`~geobind.errors.ModelMismatchError`, naming both and the fix.

    Args:
        made_by: a grid, or the attributes or settings that record who made it.
        model: a loaded model (:class:`~geobind.models.GeoBind`).
        where: how the message names what was embedded (``"this grid"``, ``"store s.zarr"``).

    Example:
        >>> import geobind
        >>> m = geobind.load("tiny")
        >>> check_same_sat({"model": "tiny", "sat_sha256": sat_sha256(m)}, m)  # passes
        >>> check_same_sat({"model": "x", "sat_sha256": "0" * 64}, m)
        Traceback (most recent call last):
        ...
        geobind.errors.ModelMismatchError: this grid holds embeddings of model 'x' ...
    """
    attrs = _attrs(made_by)
    if attrs.get("sat_sha256") is None and attrs.get("model_sha256") is None:
        return
    encoder = attrs.get("encoder", "sat")  # another sensor's grid: that encoder's hash
    if encoder not in getattr(model, "modalities", ["sat"]):
        raise ModelMismatchError(
            where=where,
            made_by=f"{attrs.get('model')} ({encoder} encoder)",
            made_sha256=str(attrs.get("sat_sha256")),
            given=f"{model.name} (no {encoder} encoder)",
            given_sha256="-" * 64,
            source=attrs.get("model_source"),
        )
    sat = sat_sha256(model, encoder)
    if recorded_by(attrs, sat=sat, weights=getattr(model, "weights_sha256", None)):
        return
    legacy = attrs.get("sat_sha256") is None
    raise ModelMismatchError(
        where=where,
        made_by=attrs.get("model"),
        made_sha256=str(attrs["model_sha256" if legacy else "sat_sha256"]),
        given=model.name,
        given_sha256=sat,
        source=attrs.get("model_source"),
        weights_hash=legacy,
    )


def _links(model: Any) -> list[str] | None:
    """The links between modalities the model's weights were trained for (``None``: not
    recorded), so a grid says what queries over it mean."""
    return getattr(model, "trained_links", None)


def grid_attrs(model: Any, grid: ChipGrid, encoder: str = "sat", **extra: Any) -> dict[str, Any]:
    """Attributes recorded on every grid and store group: model name, satellite encoder hash,
    chip size and stride (raster pixels), geobind version, and ``extra``; a grid of another
    sensor's encoder also records its name (``encoder``), and the hash is that encoder's.

    Example:
        >>> import geobind
        >>> from geobind.inference.grid import ChipGrid
        >>> attrs = grid_attrs(geobind.load("tiny"), ChipGrid(64, 64, 32, 16), nodata_fraction=0.5)
        >>> sorted(attrs)
        ['chip_size', 'geobind_version', 'model', 'nodata_fraction', 'sat_sha256', 'stride']
    """
    links = _links(model)
    return {
        "model": model.name,
        "sat_sha256": sat_sha256(model, encoder),
        **({} if encoder == "sat" else {"encoder": encoder}),
        **({} if links is None else {"trained_links": links}),
        "chip_size": grid.chip,
        "stride": grid.stride,
        "geobind_version": __version__,
        **extra,
    }
