"""Every KMS call verify makes, recorded on the way out, and found again in the audit log.

verify promises that each of its operations is accounted for: the store writes a CloudTrail-style
record per call (kmsplan.store.audit), and the `audit` check proves that every call verify made -
reads, cryptography, the deliberate failures - is there, under the verifying principal and with
the encryption context it was sent. Clients are wrapped rather than trusted: what is checked is
what was actually called.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kmsplan.errors import KMSError
from kmsplan.verify.model import Check


@dataclass(frozen=True)
class Call:
    """One KMS call: what its audit record must show."""

    region: str
    operation: str                      # the API name, as CloudTrail's eventName
    key_id: str | None                  # the KeyId parameter, when the call had one
    context: Mapping[str, str] | None   # the EncryptionContext parameter, when it had one
    error: str | None                   # the AWS error code it ended with

    def describe(self) -> str:
        text = f"{self.operation} in {self.region}"
        if self.key_id:
            text += f" on {self.key_id}"
        if self.context is not None:
            text += f" with context {format_context(self.context)}"
        return text + (f" ({self.error})" if self.error else "")


def format_context(context: Mapping[str, str]) -> str:
    """`{purpose=settlement, kmsplan-verify=...}`: compact, for evidence lines."""
    return "{" + ", ".join(f"{k}={v}" for k, v in sorted(context.items())) + "}"


def _api_name(method: str) -> str:
    """`generate_data_key` -> `GenerateDataKey` (boto3 method name -> KMS API name)."""
    return "".join(part.capitalize() for part in method.split("_"))


class RecordingClient:
    """A KMS client whose every call is appended to `calls` (success or error) and passed on."""

    def __init__(self, inner: Any, region: str, calls: list[Call]) -> None:
        self._inner, self._region, self._calls = inner, region, calls

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._inner, name)

        def call(**params: Any) -> dict:
            error = None
            try:
                return method(**params)
            except KMSError as failure:
                error = failure.code
                raise
            finally:
                self._calls.append(Call(self._region, _api_name(name), params.get("KeyId"),
                                        params.get("EncryptionContext"), error))
        return call


def audit_offset(path: Path) -> int:
    """Where the log ends now: verify's records all come after it."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def records_since(path: Path, offset: int) -> Iterator[dict]:
    """The audit records appended after `offset` (a log of millions of lines is not re-read)."""
    with open(path, "rb") as log:
        log.seek(offset)
        for raw in log:
            try:
                yield json.loads(raw)
            except ValueError:
                continue


def _matches(record: dict, call: Call, principal: str) -> bool:
    params = record.get("requestParameters") or {}
    return (record.get("eventName") == call.operation and record.get("awsRegion") == call.region
            and (record.get("userIdentity") or {}).get("arn") == principal
            and params.get("keyId") == call.key_id
            and params.get("encryptionContext") == (dict(call.context) if call.context is not None else None)
            and record.get("errorCode") == call.error)


def audit_check(calls: list[Call], records: Iterator[dict], principal: str) -> Check:
    """Pass when each call has its own audit record (matched one to one, in order)."""
    pending = list(calls)
    for record in records:
        for index, call in enumerate(pending):
            if _matches(record, call, principal):
                del pending[index]
                break
        if not pending:
            break
    with_context = sum(1 for c in calls if c.context is not None)
    if not pending:
        return Check(None, None, "audit", True,
                     f"all {len(calls)} KMS calls verify made ({with_context} with an encryption context) "
                     f"are in the audit log as {principal}, with the context each was sent")
    shown = "; ".join(c.describe() for c in pending[:5]) + ("; ..." if len(pending) > 5 else "")
    return Check(None, None, "audit", False,
                 f"{len(pending)} of {len(calls)} KMS calls verify made have no audit record as "
                 f"{principal}: {shown}")
