"""Access keys for `kmsplan serve`: an access key id bound to a registered principal, and a secret
that only the HSM token ever holds.

Why the token: SigV4 is symmetric, so the server needs the secret itself (a hash would not do).
Each secret is imported into the token of the store's first region as a sensitive,
non-extractable HMAC key whose value is `"AWS4" + secret`, i.e. exactly the key of SigV4's first
derivation step. The server asks the token for kDate = HMAC(that key, YYYYMMDD) once per access
key and day, and derives the rest (region, service, terminator) in memory. So:

- no file, database column, backup of metadata.db or log line holds a secret (the CLI prints it
  once, at creation);
- a worker's memory holds only day-scoped signing keys, as AWS's own services do;
- revoking destroys the token object, so even a copy of the folder taken before the revocation
  cannot bring the key back without the token's PIN.

The database keeps the access key id, its principal, the region whose token holds the secret,
a description, and the creation and revocation times (revoked keys stay listed).

Creating and revoking go through the store's write journal (as key material does), so a crash
between the token and the database is finished or undone at the next open, and both are written
to the audit log (eventSource iam.amazonaws.com, as CloudTrail records IAM's access keys).
"""

from __future__ import annotations

import re
import secrets
import sqlite3
import string
from dataclasses import dataclass

from kmsplan.errors import KmsplanError
from kmsplan.server.sigv4 import derive_signing_key
from kmsplan.store.audit import event_time
from kmsplan.store.hsm import CREDENTIAL_PREFIX, TokenError
from kmsplan.store.keystore import KeyStore
from kmsplan.store.params import PRINCIPAL_PATTERN

ACCESS_KEY_PATTERN = re.compile(r"^AKIA[A-Z2-7]{16}\Z")
_BASE32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
_ALPHANUMERIC = string.ascii_letters + string.digits
_SIGNING_CACHE_LIMIT = 4096


@dataclass(frozen=True)
class AccessKey:
    """One access key as `credentials list` shows it (never with its secret)."""

    access_key_id: str
    principal: str
    region: str
    description: str
    created: float
    revoked: float | None

    @property
    def status(self) -> str:
        return "Revoked" if self.revoked is not None else "Active"


def _hsm_id(access_key_id: str) -> bytes:
    return CREDENTIAL_PREFIX + access_key_id.encode()


def _new_access_key_id() -> str:
    # AKIA + 16 base32 characters: AWS's shape for long-term keys, so secret scanners that look
    # for leaked AWS keys find leaked kmsplan keys too.
    return "AKIA" + "".join(secrets.choice(_BASE32) for _ in range(16))


def _audit(store: KeyStore, event_name: str, principal: str, access_key_id: str) -> None:
    store.audit.append({
        "eventVersion": "1.08",
        "eventTime": event_time(store.now()),
        "eventSource": "iam.amazonaws.com",
        "eventName": event_name,
        "awsRegion": store.config.regions[0],
        "userIdentity": {"type": "Local", "arn": store.config.administrator},
        "sourceIPAddress": "local",
        "requestParameters": {"principal": principal, "accessKeyId": access_key_id},
        "resources": [],
        "outcome": "Success",
    })


def create_access_key(store: KeyStore, principal: str, description: str = "") -> tuple[AccessKey, str]:
    """Create an access key for `principal`; returns it with its secret (shown once, kept nowhere)."""
    if not PRINCIPAL_PATTERN.match(principal) or principal.endswith(".amazonaws.com"):
        raise KmsplanError(f"{principal!r} is not an IAM principal ARN",
                           hint="use an ARN such as arn:aws:iam::111122223333:role/name")
    if store.registry.get(principal) is None:
        raise KmsplanError(f"{principal} is not a registered principal",
                           hint="register it first with `kmsplan store principals apply FILE.yaml` "
                                f"(the account root arn:aws:iam::{store.config.account}:root is always registered)")
    if len(description) > 256:
        raise KmsplanError("the description takes at most 256 characters")
    region = store.config.regions[0]
    access_key_id = _new_access_key_id()
    # 40 characters, AWS's length, letters and digits only (about 238 bits) so shells and URLs
    # never need quoting.
    secret = "".join(secrets.choice(_ALPHANUMERIC) for _ in range(40))
    created = store.now().timestamp()
    object_id = _hsm_id(access_key_id)

    def build() -> None:
        store.tokens[region].import_hmac_secret(object_id, b"AWS4" + secret.encode())

    def commit(conn: sqlite3.Connection, _: object) -> None:
        conn.execute("INSERT INTO credentials (access_key_id, principal, region, description, created, revoked) "
                     "VALUES (?, ?, ?, ?, ?, NULL)", (access_key_id, principal, region, description, created))

    store.with_new_material([(region, object_id)], build, commit)
    _audit(store, "CreateAccessKey", principal, access_key_id)
    return AccessKey(access_key_id, principal, region, description, created, None), secret


def list_access_keys(store: KeyStore) -> list[AccessKey]:
    rows = store.meta.query("SELECT access_key_id, principal, region, description, created, revoked FROM credentials "
                            "ORDER BY created, access_key_id")
    return [AccessKey(*row) for row in rows]


def revoke_access_key(store: KeyStore, access_key_id: str) -> AccessKey:
    """Revoke for good: the row is marked (and kept for the record), the secret destroyed in the token."""
    if not ACCESS_KEY_PATTERN.match(access_key_id):
        raise KmsplanError(f"{access_key_id!r} is not an access key id (AKIA and 16 letters or digits 2-7)",
                           hint="`kmsplan store credentials list` shows the store's access keys")
    with store.meta.exclusive():
        found = [key for key in list_access_keys(store) if key.access_key_id == access_key_id]
        if not found:
            raise KmsplanError(f"no access key {access_key_id!r} in this store",
                               hint="`kmsplan store credentials list` shows the store's access keys")
        key = found[0]
        if key.revoked is not None:
            return key
        revoked = store.now().timestamp()
        object_id = _hsm_id(access_key_id)
        # Same discipline as key deletion: the row changes under a 'destroy' intent, then the token.
        with store.meta.write() as conn:
            entry = conn.execute("INSERT INTO journal (region, hsm_id, intent) VALUES (?, ?, 'destroy')",
                                 (key.region, object_id)).lastrowid
            conn.execute("UPDATE credentials SET revoked = ? WHERE access_key_id = ?", (revoked, access_key_id))
        try:
            store.tokens[key.region].destroy(object_id)
        except TokenError:
            pass  # the key is revoked already (its row); recovery at the next open destroys the secret
        else:
            with store.meta.write() as conn:
                conn.execute("DELETE FROM journal WHERE id = ?", (entry,))
    _audit(store, "DeleteAccessKey", key.principal, access_key_id)
    return AccessKey(key.access_key_id, key.principal, key.region, key.description, key.created, revoked)


class SigningKeys:
    """What a server worker needs from the credentials: who an access key is, and its signing key.

    Reads the table again whenever any process has written to the store (the shared generation
    counter), so a revocation takes effect on the next request in every worker. Signing keys are
    cached per (access key, date, region): one token HMAC per key and day, the rest in memory.
    """

    def __init__(self, store: KeyStore, service: str = "kms") -> None:
        self._store = store
        self._service = service
        self._generation: int | None = None
        self._active: dict[str, tuple[str, str]] = {}  # access key id -> (principal, token region)
        self._signing: dict[tuple[str, str, str], bytes] = {}

    def _refresh(self) -> None:
        generation = self._store.meta.generation()
        if generation != self._generation:
            rows = self._store.meta.query("SELECT access_key_id, principal, region FROM credentials "
                                          "WHERE revoked IS NULL")
            self._active = {row[0]: (row[1], row[2]) for row in rows}
            self._signing = {k: v for k, v in self._signing.items() if k[0] in self._active}
            self._generation = generation

    def principal_of(self, access_key_id: str) -> str | None:
        """The principal of an active access key; None for unknown and revoked keys alike."""
        self._refresh()
        found = self._active.get(access_key_id)
        return found[0] if found else None

    def signing_key(self, access_key_id: str, date: str, region: str) -> bytes:
        cache_key = (access_key_id, date, region)
        key = self._signing.get(cache_key)
        if key is None:
            principal, token_region = self._active[access_key_id]
            date_key = self._store.tokens[token_region].hmac_sha256(_hsm_id(access_key_id), date.encode())
            key = derive_signing_key(date_key, region, self._service)
            if len(self._signing) >= _SIGNING_CACHE_LIMIT:
                self._signing.clear()
            self._signing[cache_key] = key
        return key
