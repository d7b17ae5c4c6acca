"""One writer per store: ``STORE/.geobind.lock``, an exclusive ``flock`` and the writer's pid, host.

A second writer is refused with :class:`~geobind.errors.StoreLockedError`. The kernel drops a dead
process's ``flock``, so a lock left by a process that died (``kill -9``) is taken over; where
``flock`` is unavailable (some network file systems) the recorded pid decides.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
from pathlib import Path
from typing import Any

from geobind.errors import StoreLockedError

log = logging.getLogger(__name__)

LOCK_NAME = ".geobind.lock"


def _proc_start(pid: int) -> str | None:
    """Start time of a process (Linux), so a reused pid is not mistaken for the lock's owner."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(info: dict[str, Any]) -> bool:
    if info.get("host") != socket.gethostname():
        return True  # cannot tell from here: assume it is
    pid = int(info.get("pid", -1))
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return pid > 0
    start = info.get("start")
    return start is None or _proc_start(pid) in (None, start)


class _StoreLock:
    """``STORE/.geobind.lock``: an exclusive ``flock`` plus the owner's pid and host.

    The kernel drops a dead process's ``flock``, so a lock left by ``kill -9`` is taken over;
    where ``flock`` is unavailable (some network file systems) the pid decides.
    """

    lost: str | None = None  # the lease's interface: a held ``flock`` cannot be taken over

    def __init__(self, root: Path):
        self.path = root / LOCK_NAME
        self._fd: int | None = None

    def check(self) -> None:
        """Nothing to check (the lease's interface): a ``flock`` cannot be taken over while held."""

    def _refuse(self, info: dict[str, Any]) -> StoreLockedError:
        who = f"pid {info.get('pid', '?')} on {info.get('host', '?')}"
        return StoreLockedError(
            f"{self.path.parent} is being written by another job ({who}); wait for it to finish, "
            f"or delete {self.path} if no such job is running"
        )

    def _read(self) -> dict[str, Any]:
        try:
            return json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            return {}

    def acquire(self) -> _StoreLock:
        try:
            import fcntl
        except ImportError:  # Windows: the pid decides
            fcntl = None
        host = socket.gethostname()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(10):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            locked = fcntl is not None
            try:
                if locked:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise self._refuse(self._read()) from None
            except OSError:  # no flock on this file system: the recorded pid decides
                locked = False
            try:  # the file we locked may have been unlinked by its previous owner: retry
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            old = self._read()
            other = bool(old.get("pid")) and (old.get("host"), old.get("pid")) != (
                host,
                os.getpid(),
            )
            # a live writer that flock did not stop (flock is a no-op on some network file
            # systems); a writer on another host is only known dead by its released flock
            if other and (_alive(old) if old.get("host") == host else not locked):
                os.close(fd)
                raise self._refuse(old)
            if other:
                log.warning(
                    "taking over the lock of %s left by pid %s on %s (no longer running)",
                    self.path.parent,
                    old.get("pid"),
                    old.get("host"),
                )
            me = {"pid": os.getpid(), "host": host, "start": _proc_start(os.getpid())}
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(me).encode(), 0)
            self._fd = fd
            return self
        raise StoreLockedError(f"could not lock {self.path}: it keeps being replaced")

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                self.path.unlink()
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> _StoreLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
