"""One writer per object-store store: ``STORE/.geobind.lease``, taken with a conditional put.

Object stores have no ``flock``. A writer creates the lease object with a conditional put that
fails when it exists (S3 ``If-None-Match: *``; GCS and Azure likewise), recording who holds it
(owner id, host, pid, process start) and until when. A heartbeat thread renews it every third of
its term with a put conditional on the lease's ETag, so a writer whose lease was taken over finds
out at its next renewal and stops. A second writer is refused with
:class:`~geobind.errors.StoreLockedError` while the lease is live; a lease that expired, or whose
holder is a process of this host that is gone (``kill -9``), is taken over with a put conditional
on the ETag read, so of two writers taking over the same lease only one wins. The lease is deleted
when the job ends.

A backend that cannot write conditionally (an fsspec store, or a server that ignores
``If-None-Match``, found by trying) is refused with a :class:`~geobind.errors.StoreError`: one
writer could not be guaranteed there.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from geobind.errors import StoreError, StoreLockedError
from geobind.inference.store.location import StoreLocation
from geobind.inference.store.lock import _alive, _proc_start

log = logging.getLogger(__name__)

LEASE_NAME = ".geobind.lease"
LEASE_SECONDS = 60.0  # term of a lease; renewed every third of it


def _utc(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _precondition(err: BaseException) -> bool:
    return type(err).__name__ in ("PreconditionError", "NotModifiedError")


def _exists(err: BaseException) -> bool:
    return isinstance(err, FileExistsError) or type(err).__name__ == "AlreadyExistsError"


class _StoreLease:
    """The lease of one job on an object-store store (see the module docs)."""

    def __init__(self, location: StoreLocation, seconds: float = LEASE_SECONDS):
        self.location, self.seconds = location, float(seconds)
        self.owner = uuid.uuid4().hex
        self.lost: str | None = None
        self._version: dict[str, str] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._guard = threading.Lock()

    @property
    def where(self) -> str:
        return f"{self.location}/{LEASE_NAME}"

    def _body(self) -> bytes:
        now = time.time()
        info = {
            "owner": self.owner,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "start": _proc_start(os.getpid()),
            "renewed": now,
            "expires": now + self.seconds,
        }
        return json.dumps(info).encode()

    def _refuse(self, info: dict[str, Any]) -> StoreLockedError:
        who = f"pid {info.get('pid', '?')} on {info.get('host', '?')}"
        until = info.get("expires")
        held = f", lease held until {_utc(float(until))}" if until else ""
        return StoreLockedError(
            f"{self.location} is being written by another job ({who}{held}); wait for it to "
            f"finish, or delete {self.where} if no such job is running"
        )

    def _stale(self, info: dict[str, Any]) -> str | None:
        """Why a lease may be taken over (``None``: its holder may still be writing)."""
        try:
            expires = float(info.get("expires", 0))
        except (TypeError, ValueError):
            expires = 0.0
        if expires < time.time():
            return f"it expired at {_utc(expires)}"
        if info.get("host") == socket.gethostname() and not _alive(info):
            return f"pid {info.get('pid')} on {info.get('host')} is no longer running"
        return None

    def acquire(self) -> _StoreLease:
        loc = self.location
        for _ in range(10):
            try:
                self._version = loc.put(LEASE_NAME, self._body(), mode="create")
            except Exception as err:
                unsupported = type(err).__name__ == "NotSupportedError"
                if unsupported or isinstance(err, NotImplementedError):
                    raise self._unsafe(str(err)) from None
                if not _exists(err):
                    raise
            else:
                self._check_conditional()
                break
            held = loc.read_versioned(LEASE_NAME)
            if held is None:  # released meanwhile: try to create it again
                continue
            data, version = held
            try:
                info = json.loads(data or b"{}")
            except ValueError:
                info = {}
            if info.get("owner") == self.owner:  # our create succeeded; a client retry did not
                self._version = version
                break
            why = self._stale(info)
            if why is None:
                raise self._refuse(info)
            try:
                self._version = loc.put(LEASE_NAME, self._body(), mode=version)
            except Exception as err:
                if _precondition(err):  # another writer took it over first
                    continue
                raise
            log.warning("taking over the lease of %s (%s)", loc, why)
            break
        else:
            raise StoreLockedError(f"could not take the lease {self.where}: it keeps changing")
        self._thread = threading.Thread(
            target=self._heartbeat, name="geobind-store-lease", daemon=True
        )
        self._thread.start()
        return self

    def _unsafe(self, reason: str) -> StoreError:
        return StoreError(
            f"{self.location} cannot write conditionally ({reason.splitlines()[0][:120]}), so "
            "geobind cannot keep one writer per store there; write to a local folder or to a "
            "service with conditional puts (S3, GCS, Azure)"
        )

    def _check_conditional(self) -> None:
        """Refuse a server that ignores ``If-None-Match``: creating the lease again must fail."""
        try:
            self.location.put(LEASE_NAME, self._body(), mode="create")
        except Exception as err:
            if _exists(err):
                return
            raise
        self.location.delete(LEASE_NAME)
        raise self._unsafe("the server accepted a second create of the same object")

    def _ours(self) -> bool:
        """Whether the lease object is still ours (a renewal the client retried after it had
        succeeded fails its precondition, yet renewed it); takes its version if so."""
        with contextlib.suppress(Exception):
            held = self.location.read_versioned(LEASE_NAME)
            if held is not None and json.loads(held[0] or b"{}").get("owner") == self.owner:
                self._version = held[1]
                return True
        return False

    def _heartbeat(self) -> None:
        renewed = time.monotonic()
        while not self._stop.wait(self.seconds / 3):
            with self._guard:
                if self._stop.is_set():
                    return
                try:
                    self._version = self.location.put(LEASE_NAME, self._body(), mode=self._version)
                    renewed = time.monotonic()
                    continue
                except Exception as err:
                    if not (_precondition(err) or isinstance(err, FileNotFoundError)):
                        log.warning("could not renew the lease of %s: %s", self.location, err)
                    elif self._ours():
                        renewed = time.monotonic()
                        continue
                    else:
                        self.lost = "it was taken over by another job"
                if self.lost is None and time.monotonic() - renewed > self.seconds * 5 / 6:
                    self.lost = "it could not be renewed before it expired"
                if self.lost is not None:
                    log.error("lost the lease of %s: %s", self.location, self.lost)
                    return

    def check(self) -> None:
        """Raise :class:`StoreLockedError` when the lease was lost (another job took it over)."""
        if self.lost is not None:
            raise StoreLockedError(
                f"stopped writing {self.location}: its lease was lost ({self.lost}); finished "
                "tiles are kept, rerun the same job once the other one is done"
            )

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        with self._guard:
            if self._version is None or self.lost is not None:
                return
            with contextlib.suppress(Exception):  # best effort: an expired lease is taken over
                held = self.location.read_versioned(LEASE_NAME)
                if held is not None and held[1].get("e_tag") == self._version.get("e_tag"):
                    self.location.delete(LEASE_NAME)
            self._version = None

    def __enter__(self) -> _StoreLease:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def writer_lock(location: StoreLocation) -> Any:
    """The one-writer guard of a store: the ``flock`` of a folder, else a lease.

    Example:
        >>> from geobind.inference.store.location import store_location
        >>> with writer_lock(store_location("memory://doc/s.zarr")) as lease:
        ...     lease.check()
    """
    if location.local:
        from geobind.inference.store.lock import _StoreLock

        return _StoreLock(location.path)
    return _StoreLease(location)
