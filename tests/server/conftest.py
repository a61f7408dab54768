"""Fixtures of the `kmsplan serve` tests: one store and one running server shared by the folder
(every test makes keys of its own), with access keys for the account root and an application role.
Tests that stop or reconfigure a server start their own."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from server_helpers import APP, Server, create_access_key, create_store, start_server


@pytest.fixture(scope="session")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("served")
    store = create_store(folder / "store")
    root, app = create_access_key(store), create_access_key(store, APP)
    server = start_server(store, folder / "serve.log")
    server.keys.update(root=root, app=app)
    yield server
    assert server.stop() == 0, server.log.read_text()[-2000:]


@pytest.fixture
def kms(served: Server):
    """A boto3 KMS client of the account root, in the home region."""
    return served.client()


@pytest.fixture
def own_store(tmp_path: Path) -> Path:
    """A store of this test's own (for servers the test stops or configures itself)."""
    return create_store(tmp_path / "store")
