"""A store's metadata: its root settings, what may be added to it, group names and sources.

The root attrs ``geobind`` hold the settings every group shares (model, satellite encoder hash,
chip size, stride, tile, dtype, nodata rule, bands, GSD) and the groups with their sources'
SHA-256. A job is refused before it writes anything when its settings or its satellite encoder
differ from the store's (:func:`~geobind.inference.provenance.check_same_sat`).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from geobind.errors import OutputExistsError
from geobind.inference.provenance import check_same_sat, recorded_by, sat_sha256
from geobind.inference.store.lease import LEASE_NAME
from geobind.inference.store.location import store_location
from geobind.inference.store.lock import LOCK_NAME

FORMAT = "geobind-zarr/1"
DTYPES = ("float32", "float16")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence zarr's notes on v3 consolidated metadata and on the lock file it lists.

    Only around metadata calls in the main thread: ``catch_warnings`` is process-global.
    """
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Cc]onsolidated metadata.*")
        warnings.filterwarnings("ignore", message=".*not recognized as a component of a Zarr.*")
        yield


def _root_settings(location: Any) -> dict[str, Any] | None:
    """The store's ``geobind`` attrs; ``None`` for a new store; refuses foreign folders."""
    loc = store_location(location)
    if loc.local and loc.path.exists() and not loc.path.is_dir():
        raise OutputExistsError(f"{loc} is a file, not a Zarr store; choose another path")
    raw = loc.read("zarr.json")
    if raw is None:
        if any(name not in (LOCK_NAME, LEASE_NAME) for name in loc.entries()):
            raise OutputExistsError(
                f"{loc} exists and is not a Zarr store; choose a new path, or pass "
                "overwrite=True (--overwrite) to replace it"
            )
        return None
    try:
        attrs = json.loads(raw).get("attributes", {})
    except ValueError as err:
        raise OutputExistsError(
            f"{loc}/zarr.json is not valid JSON ({err}); is {loc} a Zarr store?"
        ) from None
    if "geobind" not in attrs:
        raise OutputExistsError(
            f"{loc} is a Zarr store but not one geobind wrote (no 'geobind' attributes at its "
            "root); choose a new path, or pass overwrite=True (--overwrite) to replace it"
        )
    return attrs["geobind"]


def _clear(location: Any) -> None:
    """Delete everything the store holds but its lock or lease."""
    store_location(location).delete_prefix(keep=(LOCK_NAME, LEASE_NAME))


def _check_compatible(
    root: Path, stored: dict[str, Any], settings: dict[str, Any], model: Any
) -> None:
    """Refuse a job whose format, satellite encoder or settings differ from the store's."""
    fix = (
        "Rerun with the store's settings, write to a new store, or pass overwrite=True "
        "(--overwrite) to replace it"
    )
    if stored.get("format") != FORMAT:
        raise OutputExistsError(
            f"{root} was written in format {stored.get('format')!r}; this geobind writes "
            f"{FORMAT!r}. Write to a new store or pass overwrite=True (--overwrite)"
        )
    check_same_sat(stored, model, where=str(root))
    for key in ("chip_size", "stride", "tile", "dtype", "nodata_fraction", "bands", "gsd"):
        if stored.get(key) != settings[key]:
            raise OutputExistsError(
                f"{root} was written with {key}={stored.get(key)!r}; this job asks for "
                f"{key}={settings[key]!r}. {fix}"
            )


def _group_name(stem: str, taken: set[str]) -> str:
    base = "".join(c if c.isalnum() or c in "-_." else "_" for c in stem).lstrip("._") or "scene"
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base}_{n}"
    return name


def _resolve(model: Any, stored: dict[str, Any] | None) -> Any:
    """``model``, else the store's own model, else :func:`geobind.use_model`'s default."""
    from geobind.inference.context import resolve_model

    if model is None and stored is not None and stored.get("model_source") is not None:
        return resolve_model(stored["model_source"])
    return resolve_model(model)


def _same_model(model: Any, stored: dict[str, Any]) -> bool:
    """Whether ``model`` carries the store's satellite encoder, known without building it
    (``False``: build it and see)."""
    import sys

    models = sys.modules.get("geobind.models")  # a loaded model means it is imported: no torch
    if models is not None and isinstance(model, models.GeoBind):
        return recorded_by(stored, sat=sat_sha256(model), weights=model.weights_sha256)
    spec = stored.get("model_source") if model is None else model
    if not isinstance(spec, str | os.PathLike):
        return False
    folder = Path(spec).expanduser()
    if (folder / "geobind.json").is_file():  # a model folder: the hashes it recorded on save
        try:
            meta = json.loads((folder / "geobind.json").read_text())
        except (OSError, ValueError):
            return False
        encoders = meta.get("encoder_sha256")
        sat = encoders.get("sat") if isinstance(encoders, dict) else None
        return recorded_by(stored, sat=sat, weights=meta.get("weights_sha256"))
    return str(spec) == stored.get("model_source")  # a preset: deterministic weights


def _write_root(location: Any, settings: dict[str, Any], groups: dict[str, Any]) -> None:
    import zarr

    with _quiet():
        group = zarr.open_group(
            store_location(location).zarr_store(), mode="a", zarr_format=3, use_consolidated=False
        )
        group.attrs["geobind"] = {**settings, "format": FORMAT, "groups": groups}


def _consolidate(location: Any, names: Sequence[str]) -> None:
    """Consolidated metadata, so ``xr.open_zarr`` opens groups without listing the store."""
    import zarr

    store = store_location(location).zarr_store()
    with _quiet():
        for name in names:
            zarr.consolidate_metadata(store, path=name)
        zarr.consolidate_metadata(store)


def _remove_partials(location: Any) -> None:
    """Temporary chunk files (``*.partial``) a killed writer left in a local folder (an object
    store has none: each put is atomic)."""
    loc = store_location(location)
    if not loc.local:
        return
    for folder, _, files in os.walk(loc.path):
        for name in files:
            if name.endswith(".partial"):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(folder, name))


def _store_bytes(location: Any) -> int:
    return store_location(location).size()
