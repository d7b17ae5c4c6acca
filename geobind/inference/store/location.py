"""Where a store lives: a local folder, or a prefix of an object store.

A store is named by a path (``scenes.zarr``, ``file:///data/scenes.zarr``: a local folder, written
as before under a ``flock``) or a URL: ``s3://bucket/prefix``, ``gs://…``, ``az://…`` and
``memory://…`` go through `obstore <https://developmentseed.org/obstore>`_ (zarr's
``ObjectStore``); any other protocol fsspec knows goes through zarr's ``FsspecStore`` (read only:
it cannot write conditionally, so geobind cannot keep one writer per store there).

Credentials and endpoints come from the standard environment (``AWS_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``; ``GOOGLE_…``, ``AZURE_…``),
which obstore reads itself, and from a ``storage_options=`` mapping: obstore's config names
(``endpoint``, ``access_key_id``, ``region`` …) or fsspec's (``endpoint_url``, ``key``,
``secret``, ``token``, ``region_name``, ``anon``). Plain ``http://`` endpoints (a local MinIO or
moto) are allowed when the endpoint says ``http://``.

Every operation geobind does on a store besides zarr's own goes through :class:`StoreLocation`:
existence, reading a key, conditional puts (the writer's lease), deleting a prefix, listing, size.
"""

from __future__ import annotations

import contextlib
import os
import urllib.parse
from collections.abc import Iterator, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from geobind.errors import InputDataError, StoreError, one_line

__all__ = ["StoreLocation", "store_location"]

# obstore handles these itself; anything else with "://" goes to fsspec
_OBSTORE = {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "azure", "adl", "memory"}
_MEMORY: dict[str, Any] = {}  # memory:// stores live as long as this process


def is_url(store: Any) -> bool:
    """Whether ``store`` names a URL (``s3://…``) rather than a local path.

    Example:
        >>> is_url("s3://bucket/x.zarr"), is_url("x.zarr"), is_url("file:///tmp/x.zarr")
        (True, False, False)
    """
    if not isinstance(store, str):
        return False
    scheme = store.split("://", 1)[0].lower() if "://" in store else ""
    return bool(scheme) and scheme != "file"


def is_backend_error(err: BaseException) -> bool:
    """Whether ``err`` came from the object store client (obstore) or fsspec's backends.

    Example:
        >>> is_backend_error(ValueError("x"))
        False
    """
    module = type(err).__module__ or ""
    return module.startswith(("obstore", "pyo3", "botocore", "aiobotocore", "s3fs", "gcsfs"))


class StoreLocation:
    """A store's place: a local folder (``path``) or an object store prefix (``url``).

    Built by :func:`store_location`. ``str(location)`` is how it is shown and recorded.
    """

    def __init__(self, url: str, path: Path | None, options: dict[str, Any], kind: str):
        self.url, self.path, self.options, self.kind = url, path, options, kind
        self._obstore: Any = None
        self._zarr: dict[bool, Any] = {}

    def __str__(self) -> str:
        return str(self.path) if self.path is not None else self.url

    def __repr__(self) -> str:
        return f"StoreLocation({str(self)!r})"

    @property
    def local(self) -> bool:
        """A local folder (written under a ``flock``)."""
        return self.path is not None

    @property
    def name(self) -> str:
        """The last part of the path (``scenes.zarr``)."""
        return self.path.name if self.path is not None else self.url.rstrip("/").rsplit("/", 1)[-1]

    @property
    def in_process(self) -> bool:
        """A ``memory://`` store, which other processes (dask workers) cannot see."""
        return self.kind == "memory"

    @property
    def options_key(self) -> tuple[tuple[str, Any], ...]:
        """The storage options as a picklable tuple (what tile jobs carry; values as given)."""
        from geobind.sources import options_tuple

        return options_tuple(self.options)

    # --- clients -------------------------------------------------------------------------------

    @property
    def obstore(self) -> Any:
        """The obstore store rooted at this prefix (object stores only)."""
        if self._obstore is None:
            self._obstore = _build_obstore(self.url, self.kind, self.options)
        return self._obstore

    def zarr_store(self, *, read_only: bool = False) -> Any:
        """What zarr and xarray open: the folder path, or a zarr ``ObjectStore``/``FsspecStore``."""
        if self.path is not None:
            return str(self.path)
        if read_only not in self._zarr:
            if self.kind == "fsspec":
                from zarr.storage import FsspecStore

                try:
                    self._zarr[read_only] = FsspecStore.from_url(
                        self.url, storage_options=self.options or None, read_only=read_only
                    )
                except (ImportError, ValueError) as err:
                    raise InputDataError(f"cannot open store {self.url}: {err}") from None
            else:
                from zarr.storage import ObjectStore

                self._zarr[read_only] = ObjectStore(self.obstore, read_only=read_only)
        return self._zarr[read_only]

    @contextlib.contextmanager
    def errors(self, doing: str) -> Iterator[None]:
        """Turn the object store client's errors into one-line :class:`StoreError` s."""
        try:
            yield
        except Exception as err:
            if not is_backend_error(err):
                raise
            raise self.backend_error(err, doing) from None

    def backend_error(self, err: BaseException, doing: str) -> StoreError:
        """An object store client's error as a one-line :class:`StoreError`."""
        return StoreError(
            f"cannot {doing} {self}: {one_line(err)}. Check the URL, the credentials "
            "(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or storage_options=) and the endpoint "
            "(AWS_ENDPOINT_URL)"
        )

    def check_writable(self) -> None:
        """Refuse a store geobind cannot keep to one writer (an fsspec store), before any I/O."""
        self._need_obstore("writing")

    def _need_obstore(self, what: str) -> None:
        if self.kind == "fsspec":
            raise StoreError(
                f"{self.url}: {what} is not supported on fsspec stores, which cannot write "
                "conditionally; write stores to a local folder or to s3://, gs://, az:// instead"
            )

    # --- keys ----------------------------------------------------------------------------------

    def read(self, key: str) -> bytes | None:
        """The bytes at ``key`` (relative to the store), ``None`` when there is none."""
        if self.path is not None:
            try:
                return (self.path / key).read_bytes()
            except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
                return None
        if self.kind == "fsspec":  # zarr's own event loop (asyncio.run fails inside Jupyter's)
            from zarr.core.buffer import default_buffer_prototype
            from zarr.core.sync import sync

            buf = sync(self.zarr_store(read_only=True).get(key, default_buffer_prototype()))
            return None if buf is None else buf.to_bytes()
        import obstore

        try:
            return bytes(obstore.get(self.obstore, key).bytes())
        except FileNotFoundError:
            return None

    def read_versioned(self, key: str) -> tuple[bytes, dict[str, str]] | None:
        """The bytes at ``key`` and the version to update them on (``{"e_tag": …}``)."""
        import obstore

        self._need_obstore("a lease")
        try:
            got = obstore.get(self.obstore, key)
        except FileNotFoundError:
            return None
        return bytes(got.bytes()), _version(got.meta)

    def put(self, key: str, data: bytes, mode: Any = None) -> dict[str, str]:
        """Write ``key``; ``mode="create"`` fails if it exists, ``{"e_tag": …}`` if it changed.

        Raises obstore's ``AlreadyExistsError`` or ``PreconditionError`` when the condition does
        not hold.
        """
        import obstore

        self._need_obstore("writing")
        kwargs = {} if mode is None else {"mode": mode}
        return _version(obstore.put(self.obstore, key, data, **kwargs))

    def delete(self, key: str) -> None:
        """Delete one key (no error when it is gone)."""
        import obstore

        with contextlib.suppress(FileNotFoundError):
            obstore.delete(self.obstore, key)

    def keys(self, prefix: str = "") -> Iterator[tuple[str, int]]:
        """``(key, size)`` of every object under ``prefix`` (relative to the store)."""
        if self.path is not None:
            base = self.path / prefix if prefix else self.path
            for folder, _, files in os.walk(base):
                for name in files:
                    full = os.path.join(folder, name)
                    with contextlib.suppress(OSError):
                        yield os.path.relpath(full, self.path), os.stat(full).st_size
            return
        self._need_obstore("listing")
        import obstore

        for batch in obstore.list(self.obstore, prefix=prefix or None):
            for meta in batch:
                yield meta["path"], int(meta["size"])

    def entries(self) -> list[str]:
        """The names at the top of the store (keys and 'folders')."""
        if self.path is not None:
            return [p.name for p in self.path.iterdir()] if self.path.is_dir() else []
        if self.kind == "fsspec":
            from zarr.core.sync import sync

            async def _list() -> list[str]:
                return [k async for k in self.zarr_store(read_only=True).list_dir("")]

            return sync(_list())
        import obstore

        listed = obstore.list_with_delimiter(self.obstore)
        names = [p.rstrip("/").rsplit("/", 1)[-1] for p in listed["common_prefixes"]]
        return names + [o["path"].rsplit("/", 1)[-1] for o in listed["objects"]]

    def exists(self, prefix: str = "") -> bool:
        """Whether anything is stored under ``prefix`` (the whole store when empty)."""
        if self.path is not None:
            return (self.path / prefix).exists() if prefix else self.path.exists()
        if self.kind == "fsspec":
            return bool(self.entries()) if not prefix else self.read(prefix) is not None
        return next(iter(self.keys(prefix.rstrip("/") + "/" if prefix else "")), None) is not None

    def delete_prefix(self, prefix: str = "", *, keep: tuple[str, ...] = ()) -> None:
        """Delete every object under ``prefix`` (the whole store when empty) but ``keep``."""
        import shutil

        if self.path is not None:
            target = self.path / prefix if prefix else self.path
            if not target.exists():
                return
            if prefix:
                shutil.rmtree(target) if target.is_dir() else target.unlink()
                return
            for entry in target.iterdir():
                if entry.name in keep:
                    continue
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
            return
        import obstore

        sub = prefix.rstrip("/") + "/" if prefix else ""
        doomed = [key for key, _ in self.keys(sub) if key not in keep]
        for start in range(0, len(doomed), 1000):
            obstore.delete(self.obstore, doomed[start : start + 1000])

    def size(self) -> int:
        """Bytes stored (every object or file)."""
        return sum(size for _, size in self.keys())

    def stamp(self, key: str) -> str:
        """A token that changes when ``key`` is rewritten (its mtime, or its ETag)."""
        if self.path is not None:
            return str(os.stat(self.path / key).st_mtime_ns)
        if self.kind == "fsspec":
            return ""
        import obstore

        return str(obstore.head(self.obstore, key)["e_tag"])


def _version(meta: Mapping[str, Any]) -> dict[str, str]:
    """What a conditional update of an object names: its ETag (and version, where kept)."""
    version = {"e_tag": meta["e_tag"]}
    if meta.get("version"):
        version["version"] = meta["version"]
    return version


def _build_obstore(url: str, kind: str, options: dict[str, Any]) -> Any:
    if kind == "memory":  # one in-memory store per URL, for the life of this process
        from obstore.store import MemoryStore

        if url not in _MEMORY:
            _MEMORY[url] = MemoryStore()
        return _MEMORY[url]
    from geobind.sources import object_store

    try:
        return object_store(url, options)
    except Exception as err:  # obstore raises its own errors (and pyo3 panics) on bad options
        raise InputDataError(f"cannot open store {url}: {one_line(err)}") from None


@lru_cache(maxsize=16)
def _cached(url: str, options: tuple[tuple[str, Any], ...], kind: str) -> StoreLocation:
    return StoreLocation(url, None, dict(options), kind)


def store_location(
    store: str | os.PathLike | StoreLocation, storage_options: Mapping[str, Any] | None = None
) -> StoreLocation:
    """Where ``store`` lives: a local folder (a path or ``file://`` URL) or an object store.

    Locations of object stores are cached per process (one client per URL and options).

    Example:
        >>> store_location("s3://bucket/scenes.zarr/").url
        's3://bucket/scenes.zarr'
        >>> store_location(getfixture("tmp_path") / "s.zarr").local
        True
    """
    if isinstance(store, StoreLocation):
        return store
    if isinstance(store, str) and store.lower().startswith("file://"):
        store = urllib.parse.unquote(urllib.parse.urlparse(store).path)
    if not is_url(store):  # storage_options are for URLs (and remote sources): not used here
        return StoreLocation(str(store), Path(store).expanduser().resolve(), {}, "local")
    url = str(store).rstrip("/")
    scheme = url.split("://", 1)[0].lower()
    if scheme in _OBSTORE:
        kind = {"s3a": "s3", "gcs": "gs", "abfs": "az", "abfss": "az", "azure": "az", "adl": "az"}
        kind = kind.get(scheme, scheme)
    else:
        try:
            import fsspec

            fsspec.get_filesystem_class(scheme)
        except (ImportError, ValueError) as err:
            raise InputDataError(
                f"cannot tell where to write {url}: {scheme}:// is neither an object store "
                f"(s3://, gs://, az://, memory://) nor an fsspec protocol ({err})"
            ) from None
        kind = "fsspec"
    from geobind.sources import options_tuple

    options = options_tuple(storage_options)
    try:
        return _cached(url, options, kind)
    except TypeError:  # unhashable option values: no caching
        return StoreLocation(url, None, dict(options), kind)
