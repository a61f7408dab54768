"""Shared fixtures: one real SoftHSM2-backed store per test session, driven by a fake clock.

A PKCS#11 library is initialised once per process, so all in-process tests share one store (each
test creates its own keys). Tests that need a store of their own (init, crash, CLI) run kmsplan in
a subprocess with `fresh_store_dir`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from kmsplan.store import KeyStore
from kmsplan.store.layout import init_store

ACCOUNT = "111122223333"
REGIONS = ("eu-west-1", "eu-central-1", "us-east-1")
ADMIN = f"arn:aws:iam::{ACCOUNT}:root"
SERVED = os.environ.get("KMSPLAN_TEST_SERVED") == "1"


class FakeClock:
    """An aware UTC clock that only moves when a test moves it."""

    def __init__(self) -> None:
        # Under KMSPLAN_TEST_SERVED (the reconciler suites over `kmsplan serve`, see
        # tests/plan/test_served_suites.py) the server keeps real time, so this clock starts there.
        self.now = datetime.now(timezone.utc) if SERVED else datetime(2026, 1, 1, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, days: float = 0, seconds: float = 0) -> None:
        self.now += timedelta(days=days, seconds=seconds)


@pytest.fixture(scope="session")
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="session")
def store_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("store") / "kmsplan"
    init_store(path, ACCOUNT, REGIONS, None, None)
    return path


@pytest.fixture(scope="session")
def store(store_dir: Path, clock: FakeClock) -> KeyStore:
    opened = KeyStore.open(store_dir, clock=clock)
    yield opened
    opened.close()


@pytest.fixture
def kms(store: KeyStore):
    """A client in the first region, acting as the account root."""
    return store.client(region=REGIONS[0], principal=ADMIN)


def run_cli(*args: str, store: Path | None = None, env: dict | None = None, input: str | None = None,
            cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run the real CLI in a subprocess, as a user would."""
    full_env = {**os.environ, **(env or {})}
    if store is not None:
        full_env["KMSPLAN_STORE"] = str(store)
    return subprocess.run([sys.executable, "-m", "kmsplan", *args], capture_output=True, text=True, env=full_env,
                          input=input, cwd=cwd, timeout=300)


@pytest.fixture
def fresh_store_dir(tmp_path: Path) -> Path:
    """A new store of this test's own, created through the CLI (use it from subprocesses only)."""
    path = tmp_path / "store"
    result = run_cli("store", "init", "--store", str(path), "--account", ACCOUNT, "--regions", ",".join(REGIONS[:2]))
    assert result.returncode == 0, result.stderr
    return path
