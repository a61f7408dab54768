"""The key store: tokens, metadata and audit log opened together, kept consistent, kept on time.

Consistency rule: no key in the database whose material is missing from its token, and no
material in a token the database does not know. Every change that touches a token is bracketed
by the write journal: intents are committed before the token is touched and cleared in the same
transaction that records the result, so `recover()` (run at every open, under the write lock)
can finish or undo whatever a crashed process left half done.

Time comes from `clock` and nothing sleeps: scheduled deletions and automatic rotations happen
when a call observes that the clock has passed their date.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from kmsplan.errors import KMSError, KmsplanError
from kmsplan.store.audit import AuditLog
from kmsplan.store.authz import Authorizer
from kmsplan.store.db import KeyRecord, Metadata
from kmsplan.store.hsm import CREDENTIAL_PREFIX, TRANSPORT_ID, Token, TokenError, load_library
from kmsplan.store.layout import StoreConfig, default_store_dir, token_label, utcnow
from kmsplan.store.principals import Registry
from kmsplan.store.specs import KEY_SPECS, SIGN_VERIFY

Clock = Callable[[], datetime]
DAY = 86400.0


def hsm_id(key_id: str, version: int) -> bytes:
    """The CKA_ID of one material version of one key (the same in every region's token)."""
    return f"{key_id}/{version}".encode()


def to_datetime(timestamp: float | None) -> datetime | None:
    return None if timestamp is None else datetime.fromtimestamp(timestamp, timezone.utc)


@dataclass(frozen=True)
class KeyView:
    """A key as the hot path needs it: its record and the material version new data uses."""

    record: KeyRecord
    current_version: int


class KeyStore:
    """An opened store. `client()` hands out AWS-KMS-shaped clients bound to a region and principal."""

    def __init__(self, config: StoreConfig, clock: Clock, meta: Metadata, audit: AuditLog,
                 tokens: dict[str, Token]) -> None:
        self.config = config
        self._clock = clock
        self.meta = meta
        self.audit = audit
        self.tokens = tokens
        self._generation: int | None = None
        self._views: dict[tuple[str, str], KeyView] = {}
        self._next_event: float | None = None
        self.registry = Registry(meta, config.account)
        self.authz = Authorizer(self)

    @classmethod
    def open(cls, path: str | Path | None = None, clock: Clock | None = None) -> "KeyStore":
        """Open the store in `path` (default: $KMSPLAN_STORE or ./.kmsplan) and recover from any crash."""
        config = StoreConfig.load(Path(path) if path is not None else default_store_dir())
        pins = config.pins()
        meta = Metadata(config.path / "metadata.db", config.path / "store.lock")
        try:
            # SoftHSM rewrites the token's object file on C_Login, and C_Initialize reads every
            # token file: a process initialising while another logs in can read a half-written file
            # (UserPinNotInitialized; seen when `kmsplan serve` starts its workers together), and two
            # logins at once can truncate it. Both are serialised by the store lock.
            with meta.exclusive():
                loaded = load_library(config.pkcs11_module, str(config.softhsm_conf) if config.softhsm_conf else None)
                tokens = {region: Token(loaded, token_label(region), pins[region]) for region in config.regions}
        except (TokenError, KeyError) as error:
            meta.close()
            raise KmsplanError(f"cannot open the tokens of the store at {config.path}: {error}",
                               hint="check the PKCS#11 module path and that pins.json matches the tokens") from None
        meta.ensure_schema()
        store = cls(config, clock or utcnow, meta, AuditLog(config.path / "audit.log"), tokens)
        store.recover()
        store.refresh()  # deletions and rotations that fell due while nobody called
        return store

    def close(self) -> None:
        self.meta.close()
        self.audit.close()
        for token in self.tokens.values():
            token.close()

    def __enter__(self) -> "KeyStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def client(self, region: str, principal: str | None = None, *, via_service: str | None = None,
               source_ip: str | None = None):
        """A client for one region, acting as `principal` (default: the store's administrator)."""
        from kmsplan.store.client import KmsClient
        from kmsplan.store.params import PRINCIPAL_PATTERN

        if region not in self.tokens:
            raise KmsplanError(f"region {region!r} is not in this store (it has {', '.join(self.config.regions)})",
                               hint="use one of the store's regions")
        principal = principal or self.config.administrator
        if not PRINCIPAL_PATTERN.match(principal):
            raise KmsplanError(f"principal {principal!r} is not an IAM ARN",
                               hint="use an ARN such as arn:aws:iam::111122223333:role/name")
        return KmsClient(self, region, principal, via_service=via_service, source_ip=source_ip)

    # -- time and caches --------------------------------------------------------------------
    def now(self) -> datetime:
        moment = self._clock()
        if moment.tzinfo is None:
            raise KmsplanError("the store's clock returned a naive datetime", hint="return datetime.now(timezone.utc)")
        return moment

    def refresh(self) -> None:
        """Drop caches another process (or this one) made stale; run deletions/rotations now due."""
        generation = self.meta.generation()
        if generation != self._generation:
            self.drop_caches()
            self._generation = generation
        if self._next_event is not None and self.now().timestamp() >= self._next_event:
            self._maintain()

    def drop_caches(self) -> None:
        """Forget every cached key view, key fact and decision: as a newly opened store knows them."""
        self._views.clear()
        self.authz.clear()
        self._next_event = self.meta.next_event()

    def view(self, region: str, key_id: str) -> KeyView | None:
        cached = self._views.get((region, key_id))
        if cached is None:
            found = self.meta.key_and_version(region, key_id)
            if found is None:
                return None
            cached = self._views[(region, key_id)] = KeyView(*found)
        return cached

    def token_for(self, region: str) -> Token:
        return self.tokens[region]

    # -- material lifecycle -----------------------------------------------------------------
    def with_new_material(self, placements: list[tuple[str, bytes]], build: Callable[[], object],
                          commit: Callable[[sqlite3.Connection, object], None]) -> object:
        """Create token material under journal intents, then record it; undo on any failure."""
        with self.meta.exclusive():
            with self.meta.write() as conn:
                ids = [conn.execute("INSERT INTO journal (region, hsm_id, intent) VALUES (?, ?, 'create')",
                                    (region, object_id)).lastrowid for region, object_id in placements]
            try:
                result = build()
                with self.meta.write() as conn:
                    commit(conn, result)
                    conn.executemany("DELETE FROM journal WHERE id = ?", [(i,) for i in ids])
            except BaseException:
                self._undo(placements, ids)
                raise
            return result

    def _undo(self, placements: list[tuple[str, bytes]], ids: list[int]) -> None:
        for region, object_id in placements:
            try:
                self.tokens[region].destroy(object_id)
            except TokenError:
                return  # leave the journal: recovery at the next open finishes the job
        with self.meta.write() as conn:
            conn.executemany("DELETE FROM journal WHERE id = ?", [(i,) for i in ids])

    def create_material(self, record: KeyRecord, version: int, regions: list[str], rotation_type: str | None,
                        created: float, extra_commit: Callable[[sqlite3.Connection, bytes | None], None]) -> bytes | None:
        """Generate one material version in `record.region` and copy it (wrapped) to `regions`."""
        spec = KEY_SPECS[record.spec]
        object_id = hsm_id(record.key_id, version)
        sign = record.usage == SIGN_VERIFY

        def build() -> bytes | None:
            public = self.tokens[record.region].generate(object_id, spec, sign, extractable=record.multi_region)
            for region in regions:
                self._copy_material(record, version, record.region, region, public or record.public_key)
            return public

        def commit(conn: sqlite3.Connection, public: bytes | None) -> None:
            extra_commit(conn, public)
            conn.executemany(
                "INSERT INTO materials (region, key_id, version, created, rotation_type) VALUES (?, ?, ?, ?, ?)",
                [(region, record.key_id, version, created, rotation_type) for region in [record.region, *regions]],
            )

        placements = [(region, object_id) for region in [record.region, *regions]]
        return self.with_new_material(placements, build, commit)

    def copy_material(self, record: KeyRecord, versions: list[int], source: str, target: str,
                      commit: Callable[[sqlite3.Connection, object], None]) -> None:
        """Copy existing material versions of a multi-Region key into another region's token."""

        def build() -> None:
            for version in versions:
                self._copy_material(record, version, source, target, record.public_key)

        self.with_new_material([(target, hsm_id(record.key_id, v)) for v in versions], build, commit)

    def _copy_material(self, record: KeyRecord, version: int, source: str, target: str, public: bytes | None) -> None:
        spec = KEY_SPECS[record.spec]
        object_id = hsm_id(record.key_id, version)
        wrapped = self.tokens[source].export_wrapped(object_id, spec, bytes.fromhex(self.config.transport_points[target]))
        self.tokens[target].import_wrapped(object_id, spec, record.usage == SIGN_VERIFY, wrapped,
                                           bytes.fromhex(self.config.transport_points[source]), public)

    def destroy_key(self, region: str, key_id: str) -> None:
        """Remove a key from one region: rows first (under destroy intents), then its material."""
        with self.meta.exclusive():
            versions = [row[0] for row in self.meta.materials(region, key_id)]
            placements = [(region, hsm_id(key_id, v)) for v in versions]
            with self.meta.write() as conn:
                ids = [conn.execute("INSERT INTO journal (region, hsm_id, intent) VALUES (?, ?, 'destroy')",
                                    (region, object_id)).lastrowid for _, object_id in placements]
                for table in ("keys", "materials", "aliases", "tags", "grants"):
                    conn.execute(f"DELETE FROM {table} WHERE region = ? AND key_id = ?", (region, key_id))
            for _, object_id in placements:
                self.tokens[region].destroy(object_id)
            with self.meta.write() as conn:
                conn.executemany("DELETE FROM journal WHERE id = ?", [(i,) for i in ids])

    def recover(self) -> list[str]:
        """Finish or undo what a crashed process left in the journal; returns what was done."""
        done: list[str] = []
        with self.meta.exclusive():
            for entry_id, region, object_id, intent in self.meta.journal():
                known = self.meta.query(
                    "SELECT 1 FROM materials WHERE region = ? AND key_id || '/' || version = ?",
                    (region, object_id.decode()),
                )
                if intent == "destroy" or not known:
                    if region in self.tokens:
                        self.tokens[region].destroy(object_id)
                    done.append(f"removed unrecorded material {object_id.decode()} from {region}")
                with self.meta.write() as conn:
                    conn.execute("DELETE FROM journal WHERE id = ?", (entry_id,))
        return done

    def check(self) -> list[str]:
        """Compare every token with the database: the problems found (empty when consistent)."""
        problems = []
        for region, token in self.tokens.items():
            recorded = {hsm_id(key_id, version) for key_id, version in self.meta.query(
                "SELECT key_id, version FROM materials WHERE region = ?", (region,))}
            recorded |= {CREDENTIAL_PREFIX + row[0].encode() for row in self.meta.query(
                "SELECT access_key_id FROM credentials WHERE region = ? AND revoked IS NULL", (region,))}
            present = token.object_ids() - {TRANSPORT_ID}
            problems += [f"{region}: material {i.decode()} is recorded but missing from the token"
                         for i in sorted(recorded - present)]
            problems += [f"{region}: token object {i.decode(errors='replace')} is not recorded in the database"
                         for i in sorted(present - recorded)]
            keys_without = self.meta.query(
                "SELECT key_id FROM keys k WHERE region = ? AND NOT EXISTS "
                "(SELECT 1 FROM materials m WHERE m.region = k.region AND m.key_id = k.key_id)", (region,))
            problems += [f"{region}: key {row[0]} has no material" for row in keys_without]
        return problems

    # -- scheduled work ---------------------------------------------------------------------
    def _maintain(self) -> None:
        """Run every deletion and rotation whose date the clock has passed, oldest first."""
        with self.meta.exclusive():
            for _ in range(10_000):  # bounded: each pass consumes one due event
                now = self.now().timestamp()
                due = self.meta.query(
                    "SELECT region, key_id, deletion_date AS t, 'delete' FROM keys WHERE deletion_date <= ? "
                    "AND state = 'PendingDeletion' UNION ALL SELECT region, key_id, next_rotation AS t, 'rotate' "
                    "FROM keys WHERE rotation_enabled = 1 AND state = 'Enabled' AND next_rotation <= ? "
                    "AND (mr_type IS NULL OR mr_type = 'PRIMARY') ORDER BY t LIMIT 1", (now, now))
                if not due:
                    break
                region, key_id, when, action = due[0]
                if action == "delete":
                    self._delete_now(region, key_id, when)
                else:
                    self._rotate_due(region, key_id, when)
            self._views.clear()
            self.authz.clear()
            self._generation = self.meta.generation()
            self._next_event = self.meta.next_event()

    def _delete_now(self, region: str, key_id: str, when: float) -> None:
        self.destroy_key(region, key_id)
        # A primary waiting for its replicas starts its own window when the last one is gone.
        rows = self.meta.regions_of(key_id)
        if len(rows) == 1 and rows[0].state == "PendingReplicaDeletion":
            primary = rows[0]
            with self.meta.write() as conn:
                conn.execute("UPDATE keys SET state = 'PendingDeletion', deletion_date = ? WHERE region = ? AND "
                             "key_id = ?", (when + primary.pending_window * DAY, primary.region, key_id))

    def _rotate_due(self, region: str, key_id: str, when: float) -> None:
        record = self.meta.key(region, key_id)
        self.rotate(record, "AUTOMATIC", when)
        with self.meta.write() as conn:
            conn.execute("UPDATE keys SET next_rotation = ? WHERE key_id = ?",
                         (when + record.rotation_period * DAY, key_id))

    def rotate(self, record: KeyRecord, rotation_type: str, when: float) -> int:
        """Add a material version to a key (and every replica); returns the new version."""
        key_id = record.key_id
        versions = [row[0] for row in self.meta.materials(record.region, key_id)]
        version = versions[-1] + 1
        replicas = [row.region for row in self.meta.regions_of(key_id) if row.region != record.region]
        self.create_material(record, version, replicas, rotation_type, when, lambda conn, public: None)
        return version

    def rotation_dates(self, record: KeyRecord) -> list[tuple[float, str]]:
        return [(created, kind) for version, created, kind in self.meta.materials(record.region, record.key_id)
                if kind]

    def deletion_date_for(self, days: int) -> float:
        return (self.now() + timedelta(days=days)).timestamp()


__all__ = ["KeyStore", "KeyView", "KMSError", "hsm_id", "to_datetime", "DAY"]
