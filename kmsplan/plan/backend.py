"""Where the reconciler reads and writes: the live store, seen through the KMS API.

The planner and applier only call KMS operations on per-region clients, so the same code can
later drive a served store or AWS KMS itself. Two things the KMS API does not offer come from
the backend too: the registered principals (for lockout and who-loses-access checks) and the
last cryptographic use of a key (from the audit log, for the deletion and disable guards).
"""

from __future__ import annotations

import json
import mmap
import os
import re
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from kmsplan.errors import KmsplanError
from kmsplan.policy import Principal
from kmsplan.store import KeyStore
from kmsplan.store.audit_query import CRYPTO_EVENTS

# The writer's fixed opening of every record (kmsplan.store.audit): the top-level eventTime and
# eventName come before any caller-supplied value, so this anchored match cannot be fooled by an
# encryption context that holds the same words.
_OPENING = re.compile(rb'\{"seq":\d+,"prevHash":"[0-9a-f]{64}","eventVersion":"[^"]*","eventTime":"([^"]+)",'
                      rb'"eventSource":"[^"]*","eventName":"([A-Za-z]+)"')
# A candidate line: some crypto operation's name anywhere (the opening match then decides).
_CRYPTO_NAME = re.compile(rb'"eventName"\s*:\s*"(?:' + b"|".join(sorted(e.encode() for e in CRYPTO_EVENTS)) + rb')"')
# The resources of a successful call. A map of strings (all a caller can put in a record) cannot
# produce `"resources":[`, so this finds the top-level field.
_SUCCESS_RESOURCES = re.compile(rb'"resources":\[([^\]]*)\],"outcome":"Success"')
_ARN = re.compile(rb'"ARN":"([^"]+)"')
_CRYPTO_NAMES = frozenset(name.encode() for name in CRYPTO_EVENTS)


def last_crypto_use(audit_path: str | Path, arns: Iterable[str]) -> dict[str, datetime]:
    """The newest successful cryptographic operation on each of `arns`, from the audit log.

    Every plan reads the whole log, and most of it is reads a plan itself audited: the file is
    memory-mapped and searched for crypto operations' names in one regular-expression pass, and
    only the lines found are looked at, by their raw bytes (a line in another shape is parsed).
    """
    wanted = {arn.encode() for arn in arns}
    last: dict[bytes, bytes] = {}
    if not wanted:
        return {}
    with open(audit_path, "rb") as log:
        if os.fstat(log.fileno()).st_size == 0:
            return {}
        with mmap.mmap(log.fileno(), 0, access=mmap.ACCESS_READ) as data:
            line_start = -1
            for match in _CRYPTO_NAME.finditer(data):
                start = data.rfind(b"\n", 0, match.start()) + 1
                if start == line_start:
                    continue  # a second name in a line already looked at
                line_start = start
                end = data.find(b"\n", match.end())
                line = data[start:end if end >= 0 else len(data)]
                for arn, when in _successful_uses(line):
                    if arn in wanted:
                        last[arn] = when
    return {arn.decode(): datetime.fromisoformat(when.decode().replace("Z", "+00:00")) for arn, when in last.items()}


def _successful_uses(line: bytes) -> list[tuple[bytes, bytes]]:
    """(key ARN, eventTime) of a successful crypto operation recorded in `line`, else []."""
    opening = _OPENING.match(line)
    if opening is None:  # not the writer's shape (edited by hand?): decide on the parsed record
        try:
            record = json.loads(line)
        except ValueError:
            return []
        if not isinstance(record, dict) or record.get("eventName") not in CRYPTO_EVENTS or "errorCode" in record:
            return []
        when = record.get("eventTime")
        try:
            datetime.fromisoformat(str(when).replace("Z", "+00:00"))
        except ValueError:
            return []
        return [(str(r.get("ARN")).encode(), str(when).encode())
                for r in record.get("resources") or () if isinstance(r, dict)]
    if opening.group(2) not in _CRYPTO_NAMES:
        return []
    resources = _SUCCESS_RESOURCES.search(line)
    return [(arn, opening.group(1)) for arn in _ARN.findall(resources.group(1))] if resources else []


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
