"""Fixtures: small synthetic worlds generated once per session in a temporary folder."""

from __future__ import annotations

import pytest

from geobind.synth import World, generate_world


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory) -> World:
    """The ``tiny`` world, seed 0, generated with two worker processes."""
    return generate_world(tmp_path_factory.mktemp("worlds") / "tiny", "tiny", seed=0, workers=2)
