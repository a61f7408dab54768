"""Where the reconciler reads and writes: the live store, seen through the KMS API.

The planner and applier only call KMS operations on per-region clients, so the same code can
later drive a served store or AWS KMS itself. Two things the KMS API does not offer come from
the backend too: the registered principals (for lockout and who-loses-access checks) and the
last cryptographic use of a key (from the audit log, for the deletion and disable guards).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from kmsplan.errors import KmsplanError
from kmsplan.policy import Principal
from kmsplan.store import KeyStore

#: operations that use key material: the audit records that count as "the key is in use"
CRYPTO_EVENTS = frozenset({
    "Encrypt", "Decrypt", "ReEncrypt", "GenerateDataKey", "GenerateDataKeyWithoutPlaintext",
    "GenerateDataKeyPair", "GenerateDataKeyPairWithoutPlaintext", "Sign", "Verify", "GenerateMac",
    "VerifyMac",
})
_EVENT_NAME = re.compile(rb'"eventName":"([A-Za-z]+)"')


def last_crypto_use(audit_path: str | Path, arns: Iterable[str]) -> dict[str, datetime]:
    """The newest successful cryptographic operation on each of `arns`, from the audit log."""
    wanted, found = set(arns), {}
    if not wanted:
        return found
    with open(audit_path, "rb") as log:
        for raw in log:
            # Most records are reads (a plan audits several per key): skip them unparsed.
            match = _EVENT_NAME.search(raw)
            if match is None or match.group(1).decode() not in CRYPTO_EVENTS:
                continue
            try:
                record = json.loads(raw)
            except ValueError:
                continue
            if "errorCode" in record:  # parsed: an encryption context may hold the word too
                continue
            for resource in record.get("resources") or ():
                arn = resource.get("ARN")
                if arn in wanted:
                    found[arn] = datetime.fromisoformat(record["eventTime"].replace("Z", "+00:00"))
    return found


class Backend(Protocol):
    """What the planner, applier and drift need: per-region KMS clients plus the registry and last
    use. `LocalBackend` opens the embedded store; `kmsplan.plan.remote.RemoteBackend` a served one."""

    account: str
    regions: tuple[str, ...]
    principal: str

    def client(self, region: str) -> Any: ...
    def clients(self) -> dict[str, Any]: ...
    def principals(self) -> list[Principal]: ...
    def principal_record(self, arn: str) -> Principal: ...
    def last_use(self, arns: Iterable[str]) -> dict[str, datetime] | None: ...  # None: cannot tell
    def now(self) -> datetime: ...


class LocalBackend:
    """The embedded store, opened in this process; every call is made as `principal`."""

    def __init__(self, store: KeyStore, principal: str | None = None) -> None:
        self.store = store
        self.account = store.config.account
        self.regions: tuple[str, ...] = tuple(store.config.regions)
        self.principal = principal or store.config.administrator
        self._clients: dict[str, object] = {}

    @classmethod
    def open(cls, path: str | Path | None, principal: str | None = None) -> LocalBackend:
        return cls(KeyStore.open(path), principal)

    def client(self, region: str):
        if region not in self._clients:
            self._clients[region] = self.store.client(region=region, principal=self.principal)
        return self._clients[region]

    def clients(self) -> dict[str, object]:
        return {region: self.client(region) for region in self.regions}

    def principals(self) -> list[Principal]:
        return self.store.registry.all()

    def principal_record(self, arn: str) -> Principal:
        found = self.store.registry.get(arn)
        if found is None:
            raise KmsplanError(f"principal {arn} is not registered in the store",
                               hint="register it with `kmsplan store principals apply FILE`, or pass --principal")
        return found

    def last_use(self, arns: Iterable[str]) -> dict[str, datetime]:
        return last_crypto_use(self.store.audit.path, arns)

    def now(self) -> datetime:
        return self.store.now()

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> LocalBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
