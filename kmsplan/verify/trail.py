"""Where verify's audit check finds its records: the log file on the host, or a served store's log.

The audit check needs two things of the store's log: a mark taken before verify's first call,
and the records appended after that mark. On the store's host that is a byte offset into
`audit.log` (a log of millions of lines is not re-read); over `--endpoint` it is a LookupEvents
position (`FromEnd`, then the records after it, filtered to the verifying principal on the
server so only verify's own records cross the network). `audit_trail(backend)` picks one, so
verify_stack never touches a store's internals.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from kmsplan.plan.remote import RemoteBackend
from kmsplan.verify.recorder import audit_offset, records_since


class AuditTrail(Protocol):
    """The audit records a verify run made, as the store logged them."""

    def mark(self) -> object:
        """Where the log ends now: everything verify does comes after it."""
        ...

    def records_since(self, mark: object) -> Iterator[dict]:
        """The records appended after `mark` (a superset of verify's own is fine: the check
        matches each call to one record)."""
        ...


class LogFileTrail:
    """The embedded store's `audit.log`, read from a byte offset."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def mark(self) -> int:
        return audit_offset(self.path)

    def records_since(self, mark: object) -> Iterator[dict]:
        return records_since(self.path, int(mark))  # type: ignore[call-overload]


class ServedTrail:
    """A served store's log through `KmsplanService.LookupEvents`, as the verifying principal
    (who must be allowed to read the log: the account root or a `kms:*` administrator)."""

    def __init__(self, backend: RemoteBackend) -> None:
        self.backend = backend
        self._filters = {"Principals": [backend.principal]}  # a token is tied to its filters

    def mark(self) -> str:
        page = next(self.backend.lookup_events({**self._filters, "FromEnd": True}))
        return page["FollowToken"]

    def records_since(self, mark: object) -> Iterator[dict]:
        for page in self.backend.lookup_events({**self._filters, "NextToken": mark}):
            for line in page.get("Records", ()):
                yield json.loads(line)


def audit_trail(backend: object) -> AuditTrail:
    """The trail of whichever store `backend` reaches."""
    if isinstance(backend, RemoteBackend):
        return ServedTrail(backend)
    return LogFileTrail(backend.store.audit.path)  # type: ignore[attr-defined]  (LocalBackend)
