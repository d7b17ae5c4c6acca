"""Where a store's search index is kept, and the local folder faiss and its re-ranking copy read.

A store in a local folder keeps its index in ``STORE/_index/`` and it is read in place. A store
in an object store (``s3://``, ``gs://``, ``az://``, ``memory://``) keeps the same files as
objects under ``STORE/_index/``; faiss and the memory-mapped re-ranking copy read them from a
local cache, ``<cache>/index/<store name>-<hash of its URL and endpoint>/_index/``, where
``<cache>`` is geobind's cache folder (``GEOBIND_CACHE``, else ``$HF_HOME/geobind``: see
:func:`~geobind.models.pretrained.geobind_cache_dir`). Next to the files, ``.objects.json``
records the ETag of the object each was downloaded from.

**Reading.** Opening the index reads ``index.json`` when its ETag changed, lists ``_index/``
once, and downloads only the files whose object changed (or that the cache lacks); each
download is checked against the SHA-256 ``index.json`` recorded for it, so a file rewritten,
damaged or half-uploaded is refused, never used. A second search in a process reuses the
opened index (two small requests: ``zarr.json`` and the ETag of ``index.json``); a later process
reuses the cached files.

**Writing.** A build or update (under the store's lease, as every writer of the store) writes
its files into a local folder first (the cache), then uploads the files that changed and
``index.json`` last: until then the store offers the previous index, and a reader that meets a
half-uploaded one is refused by the hashes. :class:`IndexLocation` holds all of this, so the
index code reads and writes one local folder whatever the store.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from geobind.errors import InputDataError, StoreError
from geobind.inference.store.location import StoreLocation, store_location

__all__ = ["INDEX_DIR", "IndexLocation", "write_json"]

INDEX_DIR = "_index"  # group names never start with "_" (metadata._group_name)
_RECORD = ".objects.json"  # in a cache folder: the ETag of the object each file came from
_CHUNK = 8 << 20  # bytes a download streams at a time


def _cache_folder(store: StoreLocation) -> Path:
    """A store's own folder in the cache: its name and a hash of its URL and endpoint."""
    from geobind.models.pretrained import geobind_cache_dir  # geobind.models imports torch

    options = store.options or {}
    endpoint = options.get("endpoint") or options.get("endpoint_url") or options.get("aws_endpoint")
    if endpoint is None and store.kind == "s3":
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    digest = hashlib.sha256(f"{store.url}\n{endpoint or ''}".encode()).hexdigest()[:16]
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in store.name)[:64]
    return geobind_cache_dir() / "index" / f"{name}-{digest}"


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as JSON to ``path`` atomically (a per-process temporary file, replaced).

    Example:
        >>> path = getfixture("tmp_path") / "index.json"
        >>> write_json(path, {"cells": 3})
        >>> json.loads(path.read_text())
        {'cells': 3}
    """
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)


class IndexLocation:
    """A store and the local folder its index is read from and built in.

    ``folder`` is ``STORE/_index`` for a store in a local folder, a cache folder for one in an
    object store (``remote``). :meth:`load` and :meth:`sync` bring the cache up to date with the
    store's objects; :meth:`staging`, :meth:`install` and :meth:`publish` put a new or updated
    index in place, and in the store. For a local store all but :meth:`staging` and
    :meth:`install` do nothing. ``str(location)`` is the store, as messages name it.

    Example:
        >>> loc = IndexLocation(getfixture("tmp_path") / "s.zarr")
        >>> loc.remote, loc.folder.name, loc.token()
        (False, '_index', None)
        >>> IndexLocation("s3://bucket/s.zarr").folder.parent.name.startswith("s.zarr-")
        True
    """

    def __init__(
        self,
        store: str | os.PathLike | StoreLocation,
        storage_options: Mapping[str, Any] | None = None,
    ):
        self.store = store_location(store, storage_options)
        self.remote = not self.store.local
        if self.remote:
            self.folder = _cache_folder(self.store) / INDEX_DIR
        else:
            self.folder = self.store.path / INDEX_DIR
        self.downloads = 0  # files downloaded into the cache by this object
        self.root_settings: dict[str, Any] | None = None  # the store's, once read
        self.root_token = ""

    def __str__(self) -> str:
        return str(self.store)

    def __repr__(self) -> str:
        return f"IndexLocation({str(self)!r}, folder={str(self.folder)!r})"

    @property
    def zarr(self) -> Any:
        """What zarr opens to read the store (a path, or zarr's object store)."""
        return self.store.zarr_store(read_only=True)

    def _key(self, name: str) -> str:
        return f"{INDEX_DIR}/{name}"

    def _need_objects(self) -> None:
        if self.store.kind == "fsspec":
            raise StoreError(
                f"{self.store.url}: search indexes need an object store with ETags and "
                "conditional writes (s3://, gs://, az://) or a local folder; search this store "
                "with exact=True (--exact)"
            )

    # -- the store's root ------------------------------------------------------------------------

    def settings(self) -> tuple[dict[str, Any], str]:
        """The store's ``geobind`` settings and a token that changes when they are rewritten
        (``zarr.json``'s mtime or ETag)."""
        from geobind.inference.store.read import store_groups

        raw, token = None, ""
        with self.store.errors("read"):
            if self.remote and self.store.kind != "fsspec":
                got = self.store.read_versioned("zarr.json")
                if got is not None:
                    raw, token = got[0], got[1].get("e_tag", "")
            else:
                raw = self.store.read("zarr.json")
                if raw is not None and self.store.local:
                    token = self.store.stamp("zarr.json")
        try:
            attrs = json.loads(raw)["attributes"]["geobind"] if raw is not None else None
        except (ValueError, KeyError, TypeError):
            attrs = None
        if not isinstance(attrs, dict) or "groups" not in attrs:
            store_groups(self.store)  # the store's own messages
            raise InputDataError(f"{self} is not a geobind store (no groups in its zarr.json)")
        return attrs, token

    # -- reading ---------------------------------------------------------------------------------

    def token(self) -> str | None:
        """A token of the index's ``index.json`` (its mtime or ETag); ``None`` without one."""
        if not self.remote:
            try:
                return str(os.stat(self.folder / "index.json").st_mtime_ns)
            except (FileNotFoundError, NotADirectoryError):
                return None
        import obstore

        self._need_objects()
        with self.store.errors("read"):
            try:
                return str(obstore.head(self.store.obstore, self._key("index.json"))["e_tag"])
            except FileNotFoundError:
                return None

    def load(self) -> str | None:
        """Bring ``index.json`` into :attr:`folder` (when its object changed); its token, or
        ``None`` when the store has no index."""
        if not self.remote:
            return self.token()
        import obstore

        self._need_objects()
        record = self._record()
        with self.store.errors("read"):
            try:
                got = obstore.get(self.store.obstore, self._key("index.json"))
            except FileNotFoundError:
                return None
            e_tag = str(got.meta["e_tag"])
            path = self.folder / "index.json"
            if record.get("index.json", {}).get("e_tag") != e_tag or not path.is_file():
                self.folder.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(f"index.json.{os.getpid()}.part")
                tmp.write_bytes(bytes(got.bytes()))
                os.replace(tmp, path)
                record["index.json"] = {"e_tag": e_tag}
                self._save_record(record)
        return e_tag

    def sync(self, files: Mapping[str, str | None]) -> list[str]:
        """Download the index files (``{name: sha256 or None}``, names relative to ``_index``)
        whose objects changed since they were cached; returns the names that do not match their
        SHA-256 (removed from the cache: the caller refuses the index). Names the store lacks are
        removed from the cache too (the caller's checks then find them missing)."""
        if not self.remote or not files:
            return []
        import obstore

        self._need_objects()
        record = self._record()
        listed: dict[str, dict[str, Any]] = {}
        bad: list[str] = []
        with self.store.errors("read"):
            for batch in obstore.list(self.store.obstore, prefix=f"{INDEX_DIR}/"):
                for meta in batch:
                    listed[meta["path"][len(INDEX_DIR) + 1 :]] = meta
            try:
                for name, sha in files.items():
                    path = self.folder / name
                    have, obj = record.get(name), listed.get(name)
                    if obj is None:
                        record.pop(name, None)
                        with contextlib.suppress(FileNotFoundError):
                            path.unlink()
                        continue
                    fresh = have is not None and have.get("e_tag") == str(obj["e_tag"])
                    if fresh and path.is_file() and path.stat().st_size == int(obj["size"]):
                        continue
                    record.pop(name, None)
                    e_tag, digest = self._download(name, path)
                    if sha is not None and digest != sha:
                        path.unlink()
                        bad.append(name)
                        continue
                    record[name] = {"e_tag": e_tag}
            finally:
                self._save_record(record)
        return bad

    def _download(self, name: str, path: Path) -> tuple[str, str]:
        """Stream one object into ``path`` (atomically); its ETag and SHA-256."""
        import obstore

        path.parent.mkdir(parents=True, exist_ok=True)
        got = obstore.get(self.store.obstore, self._key(name))
        tmp = path.with_name(f"{path.name}.{os.getpid()}.part")
        digest = hashlib.sha256()
        try:
            with open(tmp, "wb") as out:
                for chunk in got.stream(min_chunk_size=_CHUNK):
                    view = memoryview(chunk)
                    out.write(view)
                    digest.update(view)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise
        self.downloads += 1
        return str(got.meta["e_tag"]), digest.hexdigest()

    def _record(self) -> dict[str, Any]:
        try:
            return json.loads((self.folder / _RECORD).read_text())
        except (OSError, ValueError):
            return {}

    def _save_record(self, record: dict[str, Any], folder: Path | None = None) -> None:
        folder = folder or self.folder
        folder.mkdir(parents=True, exist_ok=True)
        write_json(folder / _RECORD, record)

    def forget(self, names: Iterable[str]) -> None:
        """Mark cached files as not the store's (about to be rewritten locally): a later
        :meth:`sync` downloads them again unless :meth:`publish` uploads them first."""
        if not self.remote:
            return
        record = self._record()
        for name in names:
            record.pop(name, None)
        self._save_record(record)

    # -- writing ---------------------------------------------------------------------------------

    def staging(self) -> Path:
        """A new, empty folder next to :attr:`folder` to build an index in."""
        staged = self.folder.with_name(INDEX_DIR + ".new")
        shutil.rmtree(staged, ignore_errors=True)
        staged.mkdir(parents=True)
        return staged

    def install(self, staged: Path) -> None:
        """Swap a folder built by :meth:`staging` in for :attr:`folder`."""
        trash = self.folder.with_name(INDEX_DIR + ".old")
        shutil.rmtree(trash, ignore_errors=True)
        if self.folder.exists():
            os.replace(self.folder, trash)
        os.replace(staged, self.folder)
        shutil.rmtree(trash, ignore_errors=True)

    def publish(self, folder: Path, names: Iterable[str], *, replace: bool = False) -> None:
        """Upload the named files of ``folder`` to the store's ``_index/``, ``index.json`` last
        (``replace``: also delete the objects of ``_index/`` not named, after it). Records
        their ETags in ``folder``'s record, so the cache holds what the store holds."""
        if not self.remote:
            return
        import obstore

        self._need_objects()
        names = list(dict.fromkeys(names))
        order = [n for n in names if n != "index.json"] + ["index.json"]
        record = self._record() if folder == self.folder else {}
        with self.store.errors("write the search index of"):
            try:
                for name in order:
                    record.pop(name, None)
                    done = obstore.put(self.store.obstore, self._key(name), folder / name)
                    record[name] = {"e_tag": str(done["e_tag"])}
            finally:
                self._save_record(record, folder)
            if replace:
                keep = {self._key(n) for n in order}
                doomed = [
                    meta["path"]
                    for batch in obstore.list(self.store.obstore, prefix=f"{INDEX_DIR}/")
                    for meta in batch
                    if meta["path"] not in keep
                ]
                for start in range(0, len(doomed), 1000):
                    obstore.delete(self.store.obstore, doomed[start : start + 1000])
