"""Fixtures of the reconciler tests (constants and subprocess helpers live in plan_helpers.py).

In-process tests share the session store (tests/conftest.py); each gets a `kit` bound to a stack
name of its own, made from the test's name, so no test sees another's keys. Alias names are
prefixed with the stack name (`kit.alias("x")`) because aliases are unique per region store-wide.

Modules import helpers from plan_helpers, never from a conftest (test folders are not packages).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from plan_helpers import PRINCIPALS, CliStack, Kit, kit_name, new_store

from kmsplan.store import KeyStore


@pytest.fixture(scope="module")
def principals(store: KeyStore) -> Iterator[None]:
    """The registry is store-wide: the plan tests' principals for this module, emptied afterwards
    (as the authorization suite leaves it) for whoever runs next."""
    store.registry.replace(PRINCIPALS)
    yield
    store.registry.replace([])


@pytest.fixture
def kit(store: KeyStore, principals: None, tmp_path: Path, request: pytest.FixtureRequest) -> Kit:
    return Kit(store, tmp_path, kit_name(request.node.nodeid, request.node.name))


@pytest.fixture
def make_kit(store: KeyStore, principals: None, tmp_path: Path, request: pytest.FixtureRequest):
    """make_kit(suffix) -> a Kit for a further stack of the same test."""

    def _make(suffix: str) -> Kit:
        return Kit(store, tmp_path / suffix, kit_name(request.node.nodeid + suffix, f"{request.node.name}-{suffix}"))

    return _make


@pytest.fixture(scope="module")
def cli_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store of this module's own (three regions, the test principals), for subprocess tests."""
    return new_store(tmp_path_factory.mktemp("cli-store") / "store")


@pytest.fixture
def cli(cli_store: Path, tmp_path: Path, request: pytest.FixtureRequest) -> CliStack:
    """A stack of this test's own on the module's store, driven through the real CLI."""
    return CliStack(cli_store, tmp_path / "stack", kit_name(request.node.nodeid, request.node.name))
