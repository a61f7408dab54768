"""Fixtures of the store-level authorization suite (tables and runner in `authz_world`)."""

from __future__ import annotations

import pytest
from authz_world import World


@pytest.fixture
def world(store) -> World:
    """The session store, seen through the table runner. The registry is store-wide: each row
    sets the one it needs, and the registry is emptied again afterwards for whoever runs next."""
    world = World(store)
    world.register()
    yield world
    world.register()
