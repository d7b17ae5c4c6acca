"""Fixtures: small synthetic worlds generated once per session in a temporary folder."""

from __future__ import annotations

import pytest

from geobind.synth import World, generate_world


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory) -> World:
    """The ``tiny`` world, seed 0, generated with two worker processes."""
    return generate_world(tmp_path_factory.mktemp("worlds") / "tiny", "tiny", seed=0, workers=2)


@pytest.fixture(scope="session")
def http_server(tmp_path_factory):
    """An HTTP server with Range requests on 127.0.0.1 serving the session's temporary folder:
    ``http_server.url(path)`` is the address of any file a test wrote under ``tmp_path``."""
    from _servers import HTTPServer

    server = HTTPServer(tmp_path_factory.getbasetemp()).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 API on 127.0.0.1, one per session (see :class:`_servers.S3Server`)."""
    pytest.importorskip("moto.server")
    from _servers import S3Server

    server = S3Server().start()
    yield server
    server.stop()


@pytest.fixture
def s3(s3_server, monkeypatch, request):
    """A fresh bucket on the loopback S3 server, with the standard ``AWS_*`` variables pointing at
    it for this test (processes started by the test, dask workers included, inherit them).
    Returns the server; ``s3.url`` is ``s3://<bucket>``."""
    import re
    import uuid

    for key, value in s3_server.env.items():
        monkeypatch.setenv(key, value)
    name = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:40].strip("-")
    s3_server.url = s3_server.bucket(f"{name}-{uuid.uuid4().hex[:8]}")
    return s3_server
