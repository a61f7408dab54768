"""The metadata database: keys, material versions, aliases, tags, grants, and the write journal.

SQLite in WAL mode. Writes from every process on one store are serialized twice over: an
exclusive `flock` on the store's lock file (it also covers the token, which SQLite cannot) and
SQLite's own `BEGIN IMMEDIATE`. Readers never block.

Timestamps are stored as POSIX seconds (UTC) and turned into aware datetimes at the API edge.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import mmap
import os
import sqlite3
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS keys (
    region TEXT NOT NULL,
    key_id TEXT NOT NULL,
    account TEXT NOT NULL,
    spec TEXT NOT NULL,
    usage TEXT NOT NULL,
    origin TEXT NOT NULL,
    description TEXT NOT NULL,
    state TEXT NOT NULL,
    created REAL NOT NULL,
    deletion_date REAL,
    pending_window INTEGER,
    multi_region INTEGER NOT NULL,
    mr_type TEXT,
    primary_region TEXT,
    rotation_enabled INTEGER NOT NULL DEFAULT 0,
    rotation_period INTEGER,
    next_rotation REAL,
    policy TEXT NOT NULL,
    public_key BLOB,
    PRIMARY KEY (region, key_id)
);
CREATE TABLE IF NOT EXISTS materials (
    region TEXT NOT NULL,
    key_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    created REAL NOT NULL,
    rotation_type TEXT,
    PRIMARY KEY (region, key_id, version)
);
CREATE TABLE IF NOT EXISTS aliases (
    region TEXT NOT NULL,
    name TEXT NOT NULL,
    key_id TEXT NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    PRIMARY KEY (region, name)
);
CREATE TABLE IF NOT EXISTS tags (
    region TEXT NOT NULL,
    key_id TEXT NOT NULL,
    tag_key TEXT NOT NULL,
    tag_value TEXT NOT NULL,
    PRIMARY KEY (region, key_id, tag_key)
);
CREATE TABLE IF NOT EXISTS grants (
    grant_id TEXT PRIMARY KEY,
    region TEXT NOT NULL,
    key_id TEXT NOT NULL,
    name TEXT,
    grantee TEXT NOT NULL,
    retiring TEXT,
    operations TEXT NOT NULL,
    constraints TEXT,
    token TEXT NOT NULL,
    issuer TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS grants_by_key ON grants (region, key_id);
CREATE INDEX IF NOT EXISTS aliases_of_key ON aliases (region, key_id, name);
CREATE INDEX IF NOT EXISTS keys_by_id ON keys (key_id);
-- next_event() runs after every write: without these it scans every key (10,000-key applies went superlinear)
CREATE INDEX IF NOT EXISTS keys_by_deletion ON keys (deletion_date);
CREATE INDEX IF NOT EXISTS keys_by_rotation ON keys (next_rotation) WHERE rotation_enabled = 1 AND state = 'Enabled';
CREATE TABLE IF NOT EXISTS journal (
    id INTEGER PRIMARY KEY,
    region TEXT NOT NULL,
    hsm_id BLOB NOT NULL,
    intent TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS principals (
    arn TEXT PRIMARY KEY,
    org_id TEXT,
    tags TEXT NOT NULL,
    policies TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

# -- kmsplan serve: SigV4 access keys (kmsplan.server.credentials) ---------------------------
# Kept apart from the KMS tables above. The secret is not here: it lives in the token of
# `region` as a non-extractable HMAC key with CKA_ID CREDENTIAL_PREFIX + access_key_id.
_CREDENTIALS_SCHEMA = """
CREATE TABLE IF NOT EXISTS credentials (
    access_key_id TEXT PRIMARY KEY,
    principal TEXT NOT NULL,
    region TEXT NOT NULL,
    description TEXT NOT NULL,
    created REAL NOT NULL,
    revoked REAL
);
"""


@dataclass(frozen=True)
class KeyRecord:
    """One key in one region, as the database holds it."""

    region: str
    key_id: str
    account: str
    spec: str
    usage: str
    origin: str
    description: str
    state: str
    created: float
    deletion_date: float | None
    pending_window: int | None
    multi_region: bool
    mr_type: str | None
    primary_region: str | None
    rotation_enabled: bool
    rotation_period: int | None
    next_rotation: float | None
    policy: str
    public_key: bytes | None

    @property
    def arn(self) -> str:
        return f"arn:aws:kms:{self.region}:{self.account}:key/{self.key_id}"


_KEY_COLUMNS = ", ".join(KeyRecord.__dataclass_fields__)


@dataclass(frozen=True)
class GrantRecord:
    grant_id: str
    region: str
    key_id: str
    name: str | None
    grantee: str
    retiring: str | None
    operations: tuple[str, ...]
    constraints: dict | None
    token: str
    issuer: str
    created: float


class Metadata:
    """The store's SQLite database, one connection per process (guarded for threads)."""

    def __init__(self, path: Path, lock_path: Path) -> None:
        self.path = path
        self._lock_path = lock_path
        self._thread_lock = threading.RLock()
        self._lock_depth = 0
        self._generation_map = _open_generation(path.with_suffix(".generation"))
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute("PRAGMA busy_timeout=30000")

    def ensure_schema(self) -> None:
        """Create missing tables (every statement is IF NOT EXISTS): new stores and upgrades alike."""
        with self.write() as conn:
            for statement in (_SCHEMA + _CREDENTIALS_SCHEMA).strip().split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))

    def close(self) -> None:
        self._conn.close()
        self._generation_map.close()

    # -- transactions -----------------------------------------------------------------------
    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the store's write lock (threads and processes); re-entrant within one thread.

        Token work happens inside it too, so a multi-step change (journal, token, rows) is never
        interleaved with another writer's, and recovery never mistakes live work for a crash.
        """
        with self._thread_lock:
            if self._lock_depth:
                self._lock_depth += 1
                try:
                    yield
                finally:
                    self._lock_depth -= 1
                return
            with open(self._lock_path, "a+") as lock_file:
                fcntl.flock(lock_file, fcntl.LOCK_EX)
                self._lock_depth = 1
                try:
                    yield
                finally:
                    self._lock_depth = 0
                    fcntl.flock(lock_file, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, inside the store's write lock."""
        with self.exclusive():
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")
            counter = _COUNTER.unpack_from(self._generation_map)[0]
            _COUNTER.pack_into(self._generation_map, 0, counter + 1)

    def generation(self) -> int:
        """Changes whenever any process commits: caches compare it to know they are stale.

        A shared 8-byte counter in a memory-mapped file, bumped by every writer under the write
        lock: reading it costs far less than asking SQLite on every call of the hot path.
        """
        return _COUNTER.unpack_from(self._generation_map)[0]

    def query(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._thread_lock:
            return self._conn.execute(sql, args).fetchall()

    # -- keys -------------------------------------------------------------------------------
    def key(self, region: str, key_id: str) -> KeyRecord | None:
        rows = self.query(f"SELECT {_KEY_COLUMNS} FROM keys WHERE region = ? AND key_id = ?", (region, key_id))
        return _key_record(rows[0]) if rows else None

    def key_ids_from(self, region: str, start: str, count: int) -> list[str]:
        """Up to `count` key ids of a region in key-id order, from `start` on (inclusive): one
        ListKeys page read through the primary key, whatever the number of keys."""
        return [row[0] for row in self.query(
            "SELECT key_id FROM keys WHERE region = ? AND key_id >= ? ORDER BY key_id LIMIT ?", (region, start, count))]

    def key_and_version(self, region: str, key_id: str) -> tuple[KeyRecord, int] | None:
        """A key's record and its newest material version (0 when it has none), in one query."""
        rows = self.query(f"SELECT {_KEY_COLUMNS}, (SELECT MAX(version) FROM materials AS m WHERE m.region = "
                          "keys.region AND m.key_id = keys.key_id) FROM keys WHERE region = ? AND key_id = ?",
                          (region, key_id))
        return (_key_record(rows[0][:-1]), rows[0][-1] or 0) if rows else None

    def keys_in(self, region: str) -> list[KeyRecord]:
        rows = self.query(f"SELECT {_KEY_COLUMNS} FROM keys WHERE region = ? ORDER BY key_id", (region,))
        return [_key_record(row) for row in rows]

    def regions_of(self, key_id: str) -> list[KeyRecord]:
        """Every region's record of one key id (a multi-Region key's primary and replicas)."""
        rows = self.query(f"SELECT {_KEY_COLUMNS} FROM keys WHERE key_id = ? ORDER BY region", (key_id,))
        return [_key_record(row) for row in rows]

    def next_event(self) -> float | None:
        """The earliest deletion date or rotation date of any key: when maintenance is next due."""
        row = self.query(
            "SELECT MIN(t) FROM (SELECT MIN(deletion_date) AS t FROM keys "
            "UNION ALL SELECT MIN(next_rotation) FROM keys WHERE rotation_enabled = 1 AND state = 'Enabled')"
        )
        return row[0][0]

    def materials(self, region: str, key_id: str) -> list[tuple[int, float, str | None]]:
        return self.query(
            "SELECT version, created, rotation_type FROM materials WHERE region = ? AND key_id = ? ORDER BY version",
            (region, key_id),
        )

    def tags(self, region: str, key_id: str) -> dict[str, str]:
        rows = self.query("SELECT tag_key, tag_value FROM tags WHERE region = ? AND key_id = ? ORDER BY tag_key",
                          (region, key_id))
        return dict(rows)

    def aliases(self, region: str, key_id: str | None = None) -> list[tuple[str, str, float, float]]:
        if key_id is None:
            return self.query("SELECT name, key_id, created, updated FROM aliases WHERE region = ? ORDER BY name",
                              (region,))
        return self.query(
            "SELECT name, key_id, created, updated FROM aliases WHERE region = ? AND key_id = ? ORDER BY name",
            (region, key_id),
        )

    def alias_target(self, region: str, name: str) -> str | None:
        rows = self.query("SELECT key_id FROM aliases WHERE region = ? AND name = ?", (region, name))
        return rows[0][0] if rows else None

    def grants(self, region: str, key_id: str | None = None) -> list[GrantRecord]:
        columns = ", ".join(GrantRecord.__dataclass_fields__)
        if key_id is None:
            rows = self.query(f"SELECT {columns} FROM grants WHERE region = ? ORDER BY created, grant_id", (region,))
        else:
            rows = self.query(
                f"SELECT {columns} FROM grants WHERE region = ? AND key_id = ? ORDER BY created, grant_id",
                (region, key_id),
            )
        return [_grant_record(row) for row in rows]

    def journal(self) -> list[tuple[int, str, bytes, str]]:
        return self.query("SELECT id, region, hsm_id, intent FROM journal ORDER BY id")


_COUNTER = struct.Struct("<Q")


def _open_generation(path: Path) -> mmap.mmap:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o640)
    try:
        if os.fstat(fd).st_size < _COUNTER.size:
            os.ftruncate(fd, _COUNTER.size)
        return mmap.mmap(fd, _COUNTER.size)
    finally:
        os.close(fd)


def _key_record(row: tuple) -> KeyRecord:
    values = list(row)
    for index in (11, 14):  # multi_region, rotation_enabled
        values[index] = bool(values[index])
    return KeyRecord(*values)


def _grant_record(row: tuple) -> GrantRecord:
    values = list(row)
    values[6] = tuple(json.loads(values[6]))
    values[7] = json.loads(values[7]) if values[7] else None
    return GrantRecord(*values)


def insert_key(conn: sqlite3.Connection, record: KeyRecord) -> None:
    values = [getattr(record, name) for name in KeyRecord.__dataclass_fields__]
    marks = ", ".join("?" for _ in values)
    conn.execute(f"INSERT INTO keys ({_KEY_COLUMNS}) VALUES ({marks})", values)


def secure_file(path: Path, content: str) -> None:
    """Write a file readable by its owner only (PINs): created 0600, never world-readable."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(content)
    os.chmod(path, 0o600)
