"""Helpers for the key-store tests, imported by name from the test modules.

Kept out of a `conftest.py` on purpose: test folders here are not packages, so a second
`conftest.py` would shadow the shared `tests/conftest.py` for any test that imports from it.

Everything here runs against the real session store (SoftHSM2 tokens); nothing is mocked.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kmsplan.errors import KMSError

WORKER = Path(__file__).with_name("kms_worker.py")


@contextlib.contextmanager
def kms_error(code: str, *mentions: str) -> Iterator[pytest.ExceptionInfo]:
    """Expect exactly a KMSError with this AWS code (any other exception type fails the test)."""
    with pytest.raises(KMSError) as caught:
        yield caught
    error = caught.value
    assert error.code == code, f"expected {code}, got {error.code}: {error.message}"
    assert error.message and len(error.message) >= 10, f"unclear message for {code}: {error.message!r}"
    assert "Traceback" not in error.message
    for word in mentions:
        assert word in error.message, f"{word!r} not in {error.message!r}"


def list_all(method: Callable[..., dict], field: str, **params) -> list:
    """Every item of a paginated List* call, following NextMarker."""
    items: list = []
    marker = None
    for _ in range(10_000):
        page = method(**params, **({"Marker": marker} if marker else {}))
        items += page[field]
        if not page.get("Truncated"):
            return items
        marker = page["NextMarker"]
    raise AssertionError("pagination never ended")


def key_ids(client) -> set[str]:
    return {key["KeyId"] for key in list_all(client.list_keys, "Keys", Limit=1000)}


def snapshot(store, keys: tuple[tuple[str, str], ...] = ()) -> dict:
    """What a user can see through the API: every region's keys and aliases, and for each
    (region, key id) given, its metadata, tags, grants, policy and material versions."""
    seen: dict = {}
    for region in store.config.regions:
        client = store.client(region)
        seen[region, "keys"] = sorted(key_ids(client))
        seen[region, "aliases"] = sorted((a["AliasName"], a.get("TargetKeyId"))
                                         for a in list_all(client.list_aliases, "Aliases", Limit=1000))
    for region, key_id in keys:
        client = store.client(region)
        metadata = client.describe_key(KeyId=key_id)["KeyMetadata"]
        seen[key_id, region, "metadata"] = metadata
        seen[key_id, region, "tags"] = list_all(client.list_resource_tags, "Tags", KeyId=key_id)
        seen[key_id, region, "grants"] = list_all(client.list_grants, "Grants", KeyId=key_id)
        seen[key_id, region, "policy"] = client.get_key_policy(KeyId=key_id)["Policy"]
        if metadata["KeySpec"] == "SYMMETRIC_DEFAULT":
            seen[key_id, region, "rotation"] = client.get_key_rotation_status(KeyId=key_id)
            seen[key_id, region, "versions"] = list_all(client.list_key_rotations, "Rotations", KeyId=key_id)
    return seen


_SHARED: dict[tuple, str] = {}


def shared_key(store, spec: str, usage: str, region: str | None = None) -> str:
    """A key of this spec and usage, created once per session and shared by every test that only
    uses it (asymmetric key generation is slow). Never change a shared key's state or policy."""
    region = region or store.config.regions[0]
    cache_key = (id(store), region, spec, usage)
    if cache_key not in _SHARED:
        created = store.client(region).create_key(KeySpec=spec, KeyUsage=usage,
                                                  Description=f"shared test key {spec} {usage}")
        _SHARED[cache_key] = created["KeyMetadata"]["KeyId"]
    return _SHARED[cache_key]


def audit_offset(store) -> int:
    return store.audit.path.stat().st_size


def audit_since(store, offset: int) -> list[dict]:
    """The audit records appended since `offset` (a byte position in the log)."""
    import json

    with open(store.audit.path, "rb") as handle:
        handle.seek(offset)
        return [json.loads(line) for line in handle.read().splitlines() if line.strip()]


def kmsplan(*args: str, store: Path | None = None, env: dict | None = None,
            cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the real CLI in a subprocess (as the shared `run_cli` does)."""
    full_env = {**os.environ, **(env or {})}
    if store is not None:
        full_env["KMSPLAN_STORE"] = str(store)
    return subprocess.run([sys.executable, "-m", "kmsplan", *args], capture_output=True, text=True,
                          env=full_env, cwd=cwd, timeout=timeout, check=False)


def worker(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run kms_worker.py (a store of its own, opened in a subprocess)."""
    return subprocess.run([sys.executable, str(WORKER), *args], capture_output=True, text=True, timeout=timeout,
                          check=False)
