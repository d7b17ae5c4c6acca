"""A headless Chromium driven over the DevTools protocol on a pipe (no network, no extra package).

Chromium started with ``--remote-debugging-pipe`` reads protocol commands from its file
descriptor 3 and writes replies and events to descriptor 4, each message JSON ended by a NUL
byte. :class:`Browser` opens one page, loads a file, waits for a JavaScript condition, collects
what the page reported as an error (uncaught exceptions, ``console.error``, failed loads) and
takes screenshots. Used by the tests of interactive maps and the demo report.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np

#: the flags the brief asks for: headless, nothing reaches or is fetched from the network
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--mute-audio",
)


def chromium() -> str | None:
    """The Chromium executable (Debian's ``chromium``), or ``None``."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


class Browser:
    """One headless Chromium page, driven over the DevTools pipe.

    Example (not run: needs Chromium)::

        with Browser(tmp_path) as page:
            page.open(html_file, wait="document.querySelector('img') !== null")
            png = page.screenshot(tmp_path / "shot.png")
            assert not page.errors
    """

    def __init__(self, tmp: Path, *, size: tuple[int, int] = (1000, 700), timeout: float = 60):
        exe = chromium()
        if exe is None:
            raise RuntimeError("chromium is not installed (apt-get install -y chromium)")
        self.size, self.timeout = size, timeout
        commands_r, self._commands = os.pipe()
        self._replies, replies_w = os.pipe()
        # Chromium reads fd 3 and writes fd 4: bash puts the pipe ends there (no Python
        # runs in the forked child, which a process with torch's threads must avoid); the ends
        # move above 9 first, so that neither is itself 3 or 4
        child_r, child_w = (
            fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (commands_r, replies_w)
        )
        os.close(commands_r)
        os.close(replies_w)
        redirect = f'exec "$0" "$@" 3<&{child_r} 4>&{child_w} {child_r}<&- {child_w}>&-'
        args = [
            *FLAGS,
            "--remote-debugging-pipe",
            f"--user-data-dir={tmp / 'chromium-profile'}",
            f"--window-size={size[0]},{size[1]}",
            "about:blank",
        ]
        self._proc = subprocess.Popen(
            ["/bin/bash", "-c", redirect, exe, *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            pass_fds=(child_r, child_w),
        )
        os.close(child_r)
        os.close(child_w)
        self._buffer = b""
        self._id = 0
        self.events: list[dict[str, Any]] = []
        self.errors: list[str] = []
        try:
            self._attach()
        except BaseException:
            self.close()
            raise

    def _attach(self) -> None:
        """Attach to the page Chromium opened and enable the domains the tests read."""
        targets = self._call("Target.getTargets")["targetInfos"]
        page = next(t for t in targets if t["type"] == "page")
        self._session = self._call(
            "Target.attachToTarget", {"targetId": page["targetId"], "flatten": True}
        )["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable")
        self.call(
            "Emulation.setDeviceMetricsOverride",
            {
                "width": self.size[0],
                "height": self.size[1],
                "deviceScaleFactor": 1,
                "mobile": False,
            },
        )

    # -- the protocol ------------------------------------------------------------------------
    def _read(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._replies], [], [], left)[0]:
                raise TimeoutError("Chromium did not answer in time")
            chunk = os.read(self._replies, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium closed the DevTools pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def _note(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            self.errors.append(f"uncaught: {text}")
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            args = " ".join(str(a.get("value", a.get("description"))) for a in params["args"])
            self.errors.append(f"console.{params['type']}: {args}")
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            entry = params["entry"]
            self.errors.append(f"{entry['source']}: {entry['text']} {entry.get('url', '')}")

    def _call(
        self, method: str, params: dict | None = None, session: str | None = None
    ) -> dict[str, Any]:
        self._id += 1
        message = {"id": self._id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self._note(reply)

    def call(self, method: str, params: dict | None = None) -> dict[str, Any]:
        """Send a command to the page and return its result."""
        return self._call(method, params, self._session)

    def _drain(self, seconds: float) -> None:
        """Collect events for ``seconds``."""
        deadline = time.monotonic() + seconds
        while True:
            try:
                self._note(self._read(deadline))
            except TimeoutError:
                return

    # -- what a test uses ----------------------------------------------------------------------
    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (awaited if it is a promise)."""
        result = self.call(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def open(self, path: Path, *, wait: str = "true", settle: float = 0.5) -> None:
        """Load a local file and wait until ``wait`` (a JavaScript expression) is true."""
        self.call("Page.navigate", {"url": Path(path).resolve().as_uri()})
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            done = self.evaluate(f"document.readyState === 'complete' && !!({wait})")
            if done:
                self._drain(settle)  # late errors, tiles, images decoding
                return
            self._drain(0.1)
        raise TimeoutError(f"{path}: {wait} never became true")

    def screenshot(self, path: Path, *, full_page: bool = False) -> np.ndarray:
        """Write a PNG of the viewport (or the whole page) to ``path``; return it as an
        (H, W, 3) uint8 array."""
        from io import BytesIO

        from PIL import Image

        metrics = {"width": self.size[0], "deviceScaleFactor": 1, "mobile": False}
        if full_page:  # a viewport as tall as the page, so iframes below the fold paint too
            height = self.evaluate("document.documentElement.scrollHeight")
            self.call("Emulation.setDeviceMetricsOverride", {**metrics, "height": height})
            self._drain(1.0)
        data = base64.b64decode(self.call("Page.captureScreenshot", {"format": "png"})["data"])
        if full_page:
            self.call("Emulation.setDeviceMetricsOverride", {**metrics, "height": self.size[1]})
        Path(path).write_bytes(data)
        with Image.open(BytesIO(data)) as image:
            return np.asarray(image.convert("RGB"))

    def close(self) -> None:
        """Close Chromium (politely, then by force) and the pipes."""
        with contextlib.suppress(RuntimeError, TimeoutError, OSError):
            self.timeout = min(self.timeout, 10)
            self._call("Browser.close")
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        for fd in (self._commands, self._replies):
            with contextlib.suppress(OSError):
                os.close(fd)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
