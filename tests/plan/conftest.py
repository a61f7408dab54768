"""Fixtures of the reconciler tests (constants and subprocess helpers live in plan_helpers.py).

In-process tests share the session store (tests/conftest.py); each gets a `kit` bound to a stack
name of its own, made from the test's name, so no test sees another's keys. Alias names are
prefixed with the stack name (`kit.alias("x")`) because aliases are unique per region store-wide.

Modules import helpers from plan_helpers, never from a conftest (test folders are not packages).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from plan_helpers import PRINCIPALS, ROOT, CliStack, Kit, KitServer, Served, kit_name, new_store

SERVED = os.environ.get("KMSPLAN_TEST_SERVED") == "1"  # see test_served_suites.py

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server"))
from server_helpers import create_access_key, start_server  # noqa: E402  (the served-store fixtures)

from kmsplan.store import KeyStore


@pytest.fixture(scope="module")
def principals(store: KeyStore) -> Iterator[None]:
    """The registry is store-wide: the plan tests' principals for this module, emptied afterwards
    (as the authorization suite leaves it) for whoever runs next."""
    store.registry.replace(PRINCIPALS)
    yield
    store.registry.replace([])


@pytest.fixture(scope="session")
def kit_server(store_dir: Path, store: KeyStore, tmp_path_factory: pytest.TempPathFactory) -> Iterator[KitServer | None]:
    """Under KMSPLAN_TEST_SERVED: `kmsplan serve` on the session store, which every Kit then plans,
    applies and drifts through (its out-of-band changes still go to the store directly)."""
    if not SERVED:
        yield None
        return
    server = start_server(store_dir, tmp_path_factory.mktemp("kit-serve") / "serve.log")
    yield KitServer(server.url, store)
    assert server.stop() == 0, server.log.read_text()[-2000:]
    assert_no_server_failures(server)
    served = {record.get("operation") for record in server.log_records()}
    assert {"CreateKey", "PutKeyPolicy", "ScheduleKeyDeletion", "CreateGrant"} <= served, "the suites went around it"


def assert_no_server_failures(server) -> None:
    """No request got a 5xx: its `detail` (kept out of the response) is what a failure report needs."""
    failed = [record for record in server.log_records() if record.get("status", 0) >= 500]
    assert not failed, "the server failed requests:\n" + "\n".join(json.dumps(record) for record in failed[:5])


@pytest.fixture
def kit(store: KeyStore, principals: None, kit_server: KitServer | None, tmp_path: Path,
        request: pytest.FixtureRequest) -> Kit:
    return Kit(store, tmp_path, kit_name(request.node.nodeid, request.node.name), kit_server)


@pytest.fixture
def make_kit(store: KeyStore, principals: None, kit_server: KitServer | None, tmp_path: Path,
             request: pytest.FixtureRequest):
    """make_kit(suffix) -> a Kit for a further stack of the same test."""

    def _make(suffix: str) -> Kit:
        return Kit(store, tmp_path / suffix, kit_name(request.node.nodeid + suffix, f"{request.node.name}-{suffix}"),
                   kit_server)

    return _make


@pytest.fixture(scope="module")
def cli_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store of this module's own (three regions, the test principals), for subprocess tests."""
    return new_store(tmp_path_factory.mktemp("cli-store") / "store")


@pytest.fixture(scope="module", params=["local", "served"])
def cli_served(request: pytest.FixtureRequest, cli_store: Path, tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[Served | None]:
    """Every CLI test runs twice: on the store folder, and over `--endpoint` on `kmsplan serve`
    running on that same folder (access keys for the root and every registered test principal)."""
    if request.param == "local":
        yield None
        return
    keys = {arn: (key.access_key_id, key.secret)
            for arn in (ROOT, *(p.arn for p in PRINCIPALS))
            for key in [create_access_key(cli_store, arn)]}
    server = start_server(cli_store, tmp_path_factory.mktemp("serve") / "serve.log")
    yield Served(server.url, keys)
    assert server.stop() == 0, server.log.read_text()[-2000:]
    assert_no_server_failures(server)


@pytest.fixture
def cli(cli_store: Path, cli_served: Served | None, tmp_path: Path, request: pytest.FixtureRequest) -> CliStack:
    """A stack of this test's own on the module's store, driven through the real CLI."""
    return CliStack(cli_store, tmp_path / "stack", kit_name(request.node.nodeid, request.node.name), cli_served)
