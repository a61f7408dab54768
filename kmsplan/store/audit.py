"""The audit log: one JSON line per API call, hash-chained, shared safely by every process.

Records use CloudTrail's field names where they exist (eventTime, eventName, awsRegion,
userIdentity.arn, requestParameters, errorCode), so log tooling that reads CloudTrail reads these.
Each record carries `seq`, the previous record's hash and its own hash (SHA-256 over the
previous hash and the line's exact bytes before the hash): editing, removing or reordering a record breaks
the chain at that record. A separate head file keeps the last seq and hash, so cutting records
off the end is caught too.

Only allow-listed request parameters are recorded: plaintext, data keys, messages, signatures,
MACs, ciphertext and grant tokens never reach the log.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import mmap
import os
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import orjson

GENESIS = "0" * 64
_HEAD_SIZE = 96

# Request parameters that are safe and useful to log (everything else is dropped).
RECORDED_PARAMETERS = (
    "KeyId", "GrantId", "AliasName", "TargetKeyId", "KeySpec", "KeyUsage", "CustomerMasterKeySpec",
    "EncryptionContext", "EncryptionAlgorithm", "SigningAlgorithm", "MacAlgorithm", "MessageType",
    "NumberOfBytes", "PendingWindowInDays", "RotationPeriodInDays", "ReplicaRegion", "PrimaryRegion",
    "Description", "MultiRegion", "Origin", "GranteePrincipal", "RetiringPrincipal", "Operations", "Name",
    "TagKeys", "Constraints", "SourceKeyId", "DestinationKeyId", "SourceEncryptionContext",
    "DestinationEncryptionContext", "SourceEncryptionAlgorithm", "DestinationEncryptionAlgorithm",
    "KeyPairSpec", "PolicyName", "BypassPolicyLockoutSafetyCheck", "Limit", "IncludeKeyMaterial", "DryRun",
)


_LOGGED_NAMES = {name: name[0].lower() + name[1:] for name in RECORDED_PARAMETERS}


def request_parameters(params: dict) -> dict:
    """The loggable subset of a request's parameters (tags are logged by key only)."""
    recorded = {_LOGGED_NAMES[name]: value for name, value in params.items() if name in _LOGGED_NAMES}
    if isinstance(params.get("Tags"), list):
        recorded["tagKeys"] = [tag.get("TagKey") for tag in params["Tags"] if isinstance(tag, dict)]
    if "Policy" in params and isinstance(params["Policy"], str):
        recorded["policySha256"] = hashlib.sha256(params["Policy"].encode()).hexdigest()
    return recorded


@dataclass(frozen=True)
class ChainBreak:
    """Where the chain first fails, and why."""

    line: int
    seq: int | None
    reason: str


class AuditLog:
    """Appends records under an exclusive lock; caches the chain head between appends."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.head_path = path.with_name(path.name + ".head")
        self._lock = threading.Lock()
        self._fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o640)
        self._head_fd = os.open(self.head_path, os.O_RDWR | os.O_CREAT, 0o640)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            if os.fstat(self._head_fd).st_size < _HEAD_SIZE:
                os.ftruncate(self._head_fd, _HEAD_SIZE)
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        # The head is memory-mapped: every process maps the same page, so reading it tells whether
        # another process appended, and updating it costs no system call on each API call.
        self._head = mmap.mmap(self._head_fd, _HEAD_SIZE)
        self._known_head = b""
        self._seq = 0
        self._hash = GENESIS

    def close(self) -> None:
        self._head.close()
        os.close(self._fd)
        os.close(self._head_fd)

    def append(self, event: dict) -> None:
        """Chain and write one record (one `write` of one line, under an exclusive lock)."""
        try:  # orjson: the same compact UTF-8 bytes as json.dumps, 15x faster on every API call
            payload = orjson.dumps(event)
        except TypeError:  # what orjson does not encode (integers beyond 64 bits): the standard encoder
            payload = json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode()
        with self._lock:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                head = self._head[:]
                if head != self._known_head:  # another process appended since our last record
                    self._seq, self._hash = _parse_head(head)
                seq = self._seq + 1
                body = b'{"seq":%d,"prevHash":"%s",%s' % (seq, self._hash.encode(), payload[1:])
                digest = hashlib.sha256(self._hash.encode() + body).hexdigest()
                # The hash goes last, outside the hashed bytes; `verify` strips it and rehashes.
                os.write(self._fd, body[:-1] + b',"hash":"' + digest.encode() + b'"}\n')
                self._known_head = (b"%d %s" % (seq, digest.encode())).ljust(_HEAD_SIZE)
                self._head[:] = self._known_head
                self._seq, self._hash = seq, digest
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    # -- reading ----------------------------------------------------------------------------
    def records(self) -> Iterator[dict]:
        """Every readable record in order (unparseable lines are skipped; `verify` reports them)."""
        with open(self.path, "rb") as handle:
            for raw in handle:
                try:
                    yield json.loads(raw)
                except ValueError:
                    continue

    def verify(self) -> tuple[int, ChainBreak | None]:
        """Walk the chain over the raw bytes: (records checked, first break or None)."""
        previous, expected_seq, count = GENESIS, 1, 0
        with open(self.path, "rb") as handle:
            for line_number, raw in enumerate(handle, start=1):
                match = _HASH_SUFFIX.search(raw)
                try:
                    record = json.loads(raw)
                except ValueError:
                    record = None
                if match is None or not isinstance(record, dict):
                    return count, ChainBreak(line_number, None, "the line is not a valid audit record (altered)")
                seq = record.get("seq")
                if seq != expected_seq:
                    return count, ChainBreak(line_number, seq, _sequence_break(expected_seq, seq, handle))
                if record.get("prevHash") != previous:
                    return count, ChainBreak(line_number, seq, f"the link to record {expected_seq - 1} is broken: "
                                                               "a record was altered and re-hashed, or replaced")
                body = raw[: match.start()] + b"}"
                claimed = match.group(1).decode()
                if hashlib.sha256(previous.encode() + body).hexdigest() != claimed:
                    return count, ChainBreak(line_number, seq, "the record's content was altered")
                previous, expected_seq, count = claimed, expected_seq + 1, count + 1
        head_seq, head_hash = _parse_head(self._head[:])
        if head_seq > count or (head_seq == count and count and head_hash != previous):
            return count, ChainBreak(count + 1, count + 1, f"records {count + 1}..{head_seq} were removed from "
                                                           "the end of the log")
        return count, None


def _parse_head(raw: bytes) -> tuple[int, str]:
    """The head file's last seq and hash; (0, GENESIS) for a new store's zero-filled head."""
    fields = raw.decode(errors="replace").split()
    if len(fields) == 2 and fields[0].isdigit():
        return int(fields[0]), fields[1]
    return 0, GENESIS


_HASH_SUFFIX = re.compile(rb',"hash":"([0-9a-f]{64})"\}\r?\n?$')
_SEQ_PREFIX = re.compile(rb'^\{"seq":(\d+),')


def _sequence_break(expected: int, found: object, rest: Iterator[bytes]) -> str:
    """Say what happened when the line that should hold record `expected` holds `found` instead:
    records 1..expected-1 were each seen once, so a smaller number came back (duplicated), and a
    larger one means `expected` is either further down (reordered) or gone (removed)."""
    if not isinstance(found, int) or isinstance(found, bool):
        return f"expected record {expected}, found a record without a valid sequence number (altered)"
    if found < expected:
        return f"expected record {expected}, found record {found} again: records duplicated"
    if any((match := _SEQ_PREFIX.match(line)) and int(match.group(1)) == expected for line in rest):
        return f"expected record {expected}, found record {found}: records reordered"
    gone = f"record {expected} was" if found == expected + 1 else f"records {expected}..{found - 1} were"
    return f"expected record {expected}, found record {found}: {gone} removed"
_LAST_SECOND: list = [None, ""]


def event_time(moment: datetime) -> str:
    """CloudTrail's eventTime format: second precision, UTC, trailing Z (memoized per second)."""
    second = int(moment.timestamp())
    if _LAST_SECOND[0] != second:
        _LAST_SECOND[:] = [second, moment.astimezone(timezone.utc).isoformat(timespec="seconds")[:19] + "Z"]
    return _LAST_SECOND[1]
