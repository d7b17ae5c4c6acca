"""Loopback servers the cloud tests read from and write to: HTTP with Range requests, and S3 (moto).

Both run as child processes of the test process on 127.0.0.1, and are started and stopped by the
fixtures in ``tests/conftest.py``. They are real servers speaking the real protocols (GDAL's
``/vsicurl/`` and ``/vsis3/``, obstore, s3fs and botocore talk to them over TCP). Not threads: GDAL
holds the GIL while it reads, so a server thread in the reading process would never answer.
"""

from __future__ import annotations

import functools
import os
import re
import socket
import subprocess
import sys
import time
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

# ``GET /drop/<path>`` sends the headers of the whole answer, then part of the body, then closes the
# connection: the read error of a server that fails mid-transfer.
DROP_PREFIX = "/drop/"


class _RangeHandler(SimpleHTTPRequestHandler):
    """``SimpleHTTPRequestHandler`` plus single ``Range: bytes=a-b`` requests (206), ETag and
    ``/drop/`` (a transfer cut short)."""

    def log_message(self, *args) -> None:  # quiet
        pass

    def _target(self) -> tuple[Path | None, bool]:
        drop = self.path.startswith(DROP_PREFIX)
        rel = self.path[len(DROP_PREFIX) - 1 :] if drop else self.path
        path = Path(self.translate_path(rel.split("?", 1)[0]))
        return (path if path.is_file() else None), drop

    def _head(self, send_body: bool) -> None:
        path, drop = self._target()
        if path is None:
            self.send_error(HTTPStatus.NOT_FOUND)
            return
        stat = path.stat()
        size = stat.st_size
        start, stop = 0, size
        match = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", "").strip())
        if match and (match[1] or match[2]):
            if match[1]:
                start = int(match[1])
                stop = min(size, int(match[2]) + 1) if match[2] else size
            else:  # suffix range: the last N bytes
                start = max(0, size - int(match[2]))
            if start >= size:
                self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
                self.send_header("Content-Range", f"bytes */{size}")
                self.end_headers()
                return
            self.send_response(HTTPStatus.PARTIAL_CONTENT)
            self.send_header("Content-Range", f"bytes {start}-{stop - 1}/{size}")
        else:
            self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(stop - start))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", f'"{stat.st_ino:x}-{stat.st_size:x}-{stat.st_mtime_ns:x}"')
        self.send_header("Last-Modified", self.date_time_string(int(stat.st_mtime)))
        self.end_headers()
        if not send_body:
            return
        with path.open("rb") as f:
            f.seek(start)
            body = f.read(stop - start)
        if drop:  # half the answer, then the connection goes away
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)
            return
        self.wfile.write(body)

    def do_HEAD(self) -> None:
        self._head(send_body=False)

    def do_GET(self) -> None:
        self._head(send_body=True)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_until_up(url: str, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    """Wait until the server accepts connections (a TCP connect: no request that moto counts)."""
    port = int(url.rsplit(":", 1)[1].split("/", 1)[0])
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server for {url} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"no server at {url} after {timeout} s")


class _Process:
    """A server in a child process, stopped with the fixture."""

    def _spawn(self, args: list[str], probe: str) -> None:
        self._proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_until_up(probe, self._proc)

    def stop(self) -> None:
        self._proc.terminate()
        try:
            self._proc.wait(10)
        except subprocess.TimeoutExpired:
            self._proc.kill()


class HTTPServer(_Process):
    """An HTTP server with Range support serving ``root`` on 127.0.0.1 (a child process).

    ``url("scenes/alpha.tif")`` is the file's address; ``url(..., drop=True)`` serves it cut short.
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.port = _free_port()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, rel: str | os.PathLike, *, drop: bool = False) -> str:
        rel = Path(rel)
        if rel.is_absolute():
            rel = rel.relative_to(self.root)
        return f"{self.base}{DROP_PREFIX if drop else '/'}{rel.as_posix()}"

    def start(self) -> HTTPServer:
        self._spawn([sys.executable, __file__, str(self.root), str(self.port)], self.base + "/")
        return self


def serve(root: str, port: int) -> None:
    """Serve ``root`` on 127.0.0.1:``port`` until killed (:class:`HTTPServer`'s child)."""
    handler = functools.partial(_RangeHandler, directory=root)
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    server.daemon_threads = True
    server.serve_forever()


class S3Server(_Process):
    """moto's S3 API on 127.0.0.1 (``moto[server]``), in a child process, checking credentials.

    The server authenticates requests (moto's IAM check, switched on after the first few calls,
    which create the test user and its key), so wrong credentials are refused as S3 refuses them.
    ``env`` holds the standard variables a client needs (endpoint, keys, region); the fixtures set
    them for each test. Buckets are made with :meth:`bucket`.
    """

    REGION = "us-east-1"
    _SETUP_CALLS = 3  # create_user, create_access_key, put_user_policy: unauthenticated

    def __init__(self):
        self.endpoint = f"http://127.0.0.1:{_free_port()}"

    def start(self) -> S3Server:
        import json

        import boto3

        port = self.endpoint.rsplit(":", 1)[1]
        args = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", port]
        env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": str(self._SETUP_CALLS)}
        self._proc = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env
        )
        _wait_until_up(self.endpoint, self._proc)
        iam = boto3.client(
            "iam",
            endpoint_url=self.endpoint,
            region_name=self.REGION,
            aws_access_key_id="setup",
            aws_secret_access_key="setup",
        )
        iam.create_user(UserName="geobind-tests")
        key = iam.create_access_key(UserName="geobind-tests")["AccessKey"]
        allow = {"Effect": "Allow", "Action": "*", "Resource": "*"}
        iam.put_user_policy(
            UserName="geobind-tests",
            PolicyName="all",
            PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [allow]}),
        )
        self.ACCESS_KEY, self.SECRET_KEY = key["AccessKeyId"], key["SecretAccessKey"]
        return self

    @property
    def env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": self.SECRET_KEY,
            "AWS_DEFAULT_REGION": self.REGION,
            "AWS_REGION": self.REGION,
        }

    def client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.ACCESS_KEY,
            aws_secret_access_key=self.SECRET_KEY,
            region_name=self.REGION,
        )

    def bucket(self, name: str) -> str:
        """Create bucket ``name`` (lower case, 3–63 characters) and return ``s3://name``."""
        self.client().create_bucket(Bucket=name)
        return f"s3://{name}"

    def upload(self, path: str | os.PathLike, url: str) -> str:
        """Upload a local file to ``s3://bucket/key``; returns the URL."""
        bucket, key = url.removeprefix("s3://").split("/", 1)
        self.client().upload_file(str(path), bucket, key)
        return url


if __name__ == "__main__":
    serve(sys.argv[1], int(sys.argv[2]))
