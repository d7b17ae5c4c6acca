"""A tiny model built once per session (random weights, fixed seed)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny():
    import geobind

    return geobind.load("tiny", device="cpu")
