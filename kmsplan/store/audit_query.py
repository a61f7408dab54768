"""The audit log's query engine: filters, a streaming scan, and pages of results for the network.

One implementation for both places a query runs, so the same filters match the same records:

- `kmsplan audit` on the store's host scans `audit.log` directly (kmsplan.cli.audit_cmd);
- a served store answers `KmsplanService.LookupEvents` (kmsplan.server.extensions) with `lookup`,
  one bounded page per call, for `kmsplan audit --endpoint` and `kmsplan verify --endpoint`.

The log grows without bound, so it is streamed line by line, never loaded. Each line is first
tested on its raw bytes (the operation name, region and time are found by regular expressions, the
key and principal as substrings) and parsed as JSON only if it can still match; the parsed record
is then checked exactly, so the byte tests only ever save work and never decide a match on their
own.

Key names are resolved by the caller, before the scan: `--key alias/x` stands for the keys the
alias points to now. On the host the metadata database answers (`MetadataResolver`: no KMS call,
so a query adds nothing to the log it reads); over the network the KMS API does
(`ApiResolver`), with the caller's own permissions.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import hashlib
import json
import os
import re
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Protocol

from kmsplan.errors import KMSError, KmsplanError

#: operations that use key material: what "last use" means (the same set the deletion guards use)
CRYPTO_EVENTS = frozenset({
    "Encrypt", "Decrypt", "ReEncrypt", "GenerateDataKey", "GenerateDataKeyWithoutPlaintext",
    "GenerateDataKeyPair", "GenerateDataKeyPairWithoutPlaintext", "Sign", "Verify", "GenerateMac",
    "VerifyMac",
})

#: request parameters that name a key or an alias: matched literally, so a call that failed before
#: its key was resolved (NotFoundException, a deleted alias) is still found by the name it used
KEY_PARAMETERS = ("keyId", "targetKeyId", "sourceKeyId", "destinationKeyId", "aliasName")

KEY_ID = re.compile(r"^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|mrk-[0-9a-f]{32})\Z")
KEY_ARN = re.compile(r"^arn:aws:kms:([a-z0-9-]+):(\d{12}):(key|alias)/(.+)\Z")
ALIAS = re.compile(r"^alias/[a-zA-Z0-9/_-]+\Z")
_REGION_NAME = re.compile(r"^[a-z0-9-]{1,32}\Z")
_ROLE = re.compile(r"^arn:aws:iam::(\d{12}):role/(?:[\w+=,.@-]+/)*([\w+=,.@-]+)\Z")
_RELATIVE = re.compile(r"^(\d+)\s*(s|m|h|d|w)\Z")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}

# Byte-level views of the top-level fields. The writer puts these before any caller-supplied
# value, but the tests below accept a line if *any* occurrence fits, so they stay necessary
# conditions whatever the field order: a line they reject cannot match.
EVENT_NAME = re.compile(rb'"eventName":"([A-Za-z]+)"')
_REGION = re.compile(rb'"awsRegion":"([a-z0-9-]+)"')
EVENT_TIME = re.compile(rb'"eventTime":"([0-9T:Z-]+)"')

KEY_HINT = ("give a key id (1234abcd-12ab-34cd-56ef-1234567890ab or mrk-...), a key ARN, "
            "or an alias name (alias/payments-prod)")


# -- parsing the user's filters ------------------------------------------------------------------

def event_time(moment: datetime) -> str:
    """The log's eventTime format (second precision, UTC, trailing Z): comparable as a string."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str, option: str, now: datetime) -> str:
    """ISO 8601 (a date, or a date and time; no zone means UTC) or a relative age such as 24h, 7d."""
    value = text.strip()
    relative = _RELATIVE.match(value)
    iso = value[:-1] + "+00:00" if value[-1:] in ("Z", "z") else value  # Python 3.10 has no 'Z'
    try:
        if relative:
            return event_time(now - timedelta(**{_UNITS[relative.group(2)]: int(relative.group(1))}))
        moment = datetime.fromisoformat(iso)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        return event_time(moment)
    except (ValueError, OverflowError):  # not a time, or one outside datetime's years 1..9999
        raise KmsplanError(f"{option} {text!r} is not a time",
                           hint="give an ISO 8601 date or time (2026-01-31, 2026-01-31T08:00:00Z) "
                                "or an age such as 30m, 24h, 7d, 2w") from None


def operation_names() -> dict[str, str]:
    """Every operation the store logs, by lower-case name (so --operation is case-insensitive)."""
    from kmsplan.store import client  # noqa: F401  (importing it registers every operation)
    from kmsplan.store.calls import OPERATIONS

    return {name.lower(): name for name in OPERATIONS}


def parse_operations(values: Iterable[str], option: str = "--operation") -> frozenset[str] | None:
    names = operation_names()
    chosen = []
    for value in values:
        found = names.get(value.strip().lower())
        if found is None:
            close = [names[key] for key in difflib.get_close_matches(value.strip().lower(), names, n=3)]
            raise KmsplanError(f"{option} {value!r} is not a KMS operation the store logs",
                               hint=f"did you mean {', '.join(close)}?" if close else
                               "use an AWS KMS API name such as Encrypt, Decrypt, CreateKey, PutKeyPolicy")
        chosen.append(found)
    return frozenset(chosen) or None


@dataclass(frozen=True)
class PrincipalFilter:
    """One --principal: the ARN itself, and for a role every session of it (assumed-role/NAME/...)."""

    arn: str
    session_prefix: str | None

    @classmethod
    def parse(cls, value: str, option: str = "--principal") -> PrincipalFilter:
        from kmsplan.store.params import PRINCIPAL_PATTERN

        if not PRINCIPAL_PATTERN.match(value):
            raise KmsplanError(f"{option} {value!r} is not an IAM principal ARN",
                               hint="use an ARN such as arn:aws:iam::111122223333:role/payments-app "
                                    "(a role also matches its sessions)")
        role = _ROLE.match(value)
        prefix = f"arn:aws:sts::{role.group(1)}:assumed-role/{role.group(2)}/" if role else None
        return cls(value, prefix)

    @property
    def needles(self) -> tuple[bytes, ...]:
        return (self.arn.encode(),) + ((self.session_prefix.encode(),) if self.session_prefix else ())

    def matches(self, arn: object) -> bool:
        return isinstance(arn, str) and (arn == self.arn or bool(self.session_prefix and
                                                                  arn.startswith(self.session_prefix)))


@dataclass
class KeyFilter:
    """One --key, as the set of regional keys it stands for.

    `keys` holds (region, key id) pairs, region None meaning any region: a key id matches the key
    (or a multi-Region key's primary and replicas) in every region, a key ARN only in its region,
    an alias the key it points to now in each region where it exists. A record matches when one of
    its `resources` is such a key, whichever name the call used, or when a key or alias parameter
    of the request names it literally (`aliases` holds the alias names, for the same test).
    """

    given: str
    keys: set[tuple[str | None, str]] = field(default_factory=set)
    aliases: set[tuple[str | None, str]] = field(default_factory=set)

    @property
    def key_ids(self) -> list[str]:
        return sorted({key_id for _, key_id in self.keys})

    @property
    def needles(self) -> tuple[bytes, ...]:
        return tuple({name.encode() for _, name in self.keys | self.aliases})

    def _named(self, region: str | None, key_id: str, pairs: set[tuple[str | None, str]]) -> bool:
        return (region, key_id) in pairs or (None, key_id) in pairs

    def names(self, value: object, region: str | None) -> bool:
        """Does a request parameter (key id, key ARN, alias name or alias ARN) name this key?"""
        if not isinstance(value, str):
            return False
        arn = KEY_ARN.match(value)
        if arn:
            arn_region, _, kind, rest = arn.groups()
            return self._named(arn_region, rest, self.keys) if kind == "key" else \
                self._named(arn_region, f"alias/{rest}", self.aliases)
        return self._named(region, value, self.aliases if value.startswith("alias/") else self.keys)

    def matches(self, record: dict) -> bool:
        for resource in record.get("resources") or ():
            arn = KEY_ARN.match(resource.get("ARN", "")) if isinstance(resource, dict) else None
            if arn and arn.group(3) == "key" and self._named(arn.group(1), arn.group(4), self.keys):
                return True
        parameters = record.get("requestParameters") or {}
        region = record.get("awsRegion")
        return any(self.names(parameters.get(name), region) for name in KEY_PARAMETERS)

    # The wire form: the resolved names, so the server needs no alias lookup of its own.
    def to_wire(self) -> dict[str, Any]:
        def pairs(found: set[tuple[str | None, str]], name: str) -> list[dict[str, str]]:
            return [{name: value, **({"Region": region} if region else {})} for region, value in sorted(
                found, key=lambda pair: (pair[0] or "", pair[1]))]

        return {"Name": self.given, "KeyIds": pairs(self.keys, "KeyId"),
                "AliasNames": pairs(self.aliases, "AliasName")}

    @classmethod
    def from_wire(cls, value: object) -> KeyFilter:
        """Checked like every request value: the server trusts none of it."""
        if not isinstance(value, dict) or not isinstance(value.get("Name", ""), str):
            raise KMSError("ValidationException", "each member of Keys must be an object with KeyIds and AliasNames")
        found = cls(value.get("Name", "")[:2048])
        for member, name, pattern, into in (("KeyIds", "KeyId", KEY_ID, found.keys),
                                            ("AliasNames", "AliasName", ALIAS, found.aliases)):
            entries = value.get(member, [])
            if not isinstance(entries, list) or len(entries) > _MAX_NAMES:
                raise KMSError("ValidationException", f"Keys[].{member} must be a list of at most {_MAX_NAMES}")
            for entry in entries:
                region = entry.get("Region") if isinstance(entry, dict) else None
                named = entry.get(name) if isinstance(entry, dict) else None
                if not isinstance(named, str) or not pattern.match(named) or len(named) > 256 or not (
                        region is None or (isinstance(region, str) and _REGION_NAME.match(region))):
                    raise KMSError("ValidationException",
                                   f"Keys[].{member}[] must be {{\"{name}\": ..., \"Region\": ...}} with a valid "
                                   f"{name} (Region optional)")
                into.add((region, named))
        if not found.keys and not found.aliases:
            raise KMSError("ValidationException", "a member of Keys names no key id and no alias")
        return found


# -- resolving key names ---------------------------------------------------------------------------

class Resolver(Protocol):
    """What turning `--key NAME` into keys needs to know about the store."""

    account: str
    regions: tuple[str, ...]

    def alias_targets(self, alias: str, regions: Iterable[str]) -> dict[str, str]:
        """Region -> key id the alias points to now, in those of `regions` where it exists."""
        ...

    def known_key(self, key_id: str, regions: Iterable[str]) -> bool:
        """Whether the store holds the key (in any state) in one of `regions`."""
        ...


class MetadataResolver:
    """The store's metadata database, read-only SQL: no token login and no KMS call, so resolving
    a name adds nothing to the log being read."""

    def __init__(self, config: Any) -> None:
        self.account: str = config.account
        self.regions: tuple[str, ...] = tuple(config.regions)
        self._path: Path = config.path

    def _meta(self):
        from kmsplan.store.db import Metadata

        return Metadata(self._path / "metadata.db", self._path / "store.lock")

    def alias_targets(self, alias: str, regions: Iterable[str]) -> dict[str, str]:
        meta = self._meta()
        try:
            return {region: target for region in regions if (target := meta.alias_target(region, alias))}
        finally:
            meta.close()

    def known_key(self, key_id: str, regions: Iterable[str]) -> bool:
        meta = self._meta()
        try:
            return any(meta.key(region, key_id) for region in regions)
        finally:
            meta.close()


class ApiResolver:
    """The KMS API of a served store, as the caller: ListAliases names an alias's target without
    needing access to the key itself (as the metadata database does on the host), DescribeKey
    whether a key exists. These calls are audited like any other."""

    def __init__(self, account: str, regions: Iterable[str], client: Callable[[str], Any]) -> None:
        self.account = account
        self.regions = tuple(regions)
        self._client = client

    def alias_targets(self, alias: str, regions: Iterable[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        for region in regions:
            marker: str | None = None
            while True:
                page = self._client(region).list_aliases(Limit=100, **({"Marker": marker} if marker else {}))
                target = next((a.get("TargetKeyId") for a in page.get("Aliases", ()) if a.get("AliasName") == alias),
                              None)
                if target:
                    found[region] = target
                    break
                marker = page.get("NextMarker") if page.get("Truncated") else None
                if not marker:
                    break
        return found

    def known_key(self, key_id: str, regions: Iterable[str]) -> bool:
        for region in regions:
            try:
                self._client(region).describe_key(KeyId=key_id)
                return True
            except KMSError as error:
                if error.code != "NotFoundException":  # refused: it exists, the caller may not read it
                    return True
        return False


def parse_key(value: str, resolver: Resolver, regions: frozenset[str] | None, warn: Callable[[str], None],
              option: str = "--key") -> KeyFilter:
    """Turn a key id, key ARN, alias name or alias ARN into the regional keys it stands for."""
    reference = value.strip()
    found = KeyFilter(reference)
    arn = KEY_ARN.match(reference)
    if arn:
        region, account, kind, rest = arn.groups()
        if account != resolver.account:
            raise KmsplanError(f"{option} {value!r} is in account {account}; this store holds account "
                               f"{resolver.account}", hint="give a key of this store's account")
        if kind == "key":
            if not KEY_ID.match(rest):
                raise KmsplanError(f"{option} {value!r} does not end in a key id", hint=KEY_HINT)
            found.keys.add((region, rest))
            return found
        reference, scope = f"alias/{rest}", (region,)
        found.aliases.add((region, reference))
    elif KEY_ID.match(reference):
        found.keys.add((None, reference))
        return found
    elif ALIAS.match(reference):
        scope = store_regions(resolver.regions, regions)
        found.aliases.add((None, reference))
    else:
        raise KmsplanError(f"{option} {value!r} is not a key id, key ARN or alias name", hint=KEY_HINT)
    targets = resolver.alias_targets(reference, scope)
    found.keys.update(targets.items())
    if not targets:
        warn(f"{reference} names no key in {', '.join(scope)} now; only calls that named it are shown")
    return found


def store_regions(regions: Iterable[str], chosen: frozenset[str] | None) -> tuple[str, ...]:
    """The store's regions, or those of them a --region filter chose."""
    return tuple(region for region in regions if chosen is None or region in chosen)


# -- the query -------------------------------------------------------------------------------------

@dataclass
class Query:
    """Every filter of one query; within an option any value may match, across options all must."""

    keys: list[KeyFilter] = field(default_factory=list)
    principals: list[PrincipalFilter] = field(default_factory=list)
    operations: frozenset[str] | None = None
    regions: frozenset[str] | None = None
    since: str | None = None
    until: str | None = None
    outcome: str | None = None

    def __post_init__(self) -> None:
        self._operation_bytes = {name.encode() for name in self.operations} if self.operations else None
        self._region_bytes = {region.encode() for region in self.regions} if self.regions else None
        self._since = self.since.encode() if self.since else None
        self._until = self.until.encode() if self.until else None
        self._key_needles = tuple(needle for key in self.keys for needle in key.needles)
        self._principal_needles = tuple(needle for p in self.principals for needle in p.needles)

    def may_match(self, raw: bytes) -> bool:
        """The cheap test on the line's bytes: False only when the record cannot match."""
        if self._operation_bytes is not None and not any(
                m.group(1) in self._operation_bytes for m in EVENT_NAME.finditer(raw)):
            return False
        if self._region_bytes is not None and not any(m.group(1) in self._region_bytes for m in _REGION.finditer(raw)):
            return False
        if self.outcome == "failure" and b'"errorCode":' not in raw:
            return False
        if self.outcome == "success" and b'"outcome":"Success"' not in raw:
            return False
        if (self._since or self._until) and not any(
                (self._since is None or m.group(1) >= self._since) and (self._until is None or m.group(1) < self._until)
                for m in EVENT_TIME.finditer(raw)):
            return False
        if self.keys and not any(needle in raw for needle in self._key_needles):
            return False
        if self.principals and not any(needle in raw for needle in self._principal_needles):
            return False
        return True

    def matches(self, record: dict) -> bool:
        """The exact test on the parsed record."""
        if self.operations is not None and record.get("eventName") not in self.operations:
            return False
        if self.regions is not None and record.get("awsRegion") not in self.regions:
            return False
        failed = "errorCode" in record
        if (self.outcome == "failure" and not failed) or (self.outcome == "success" and failed):
            return False
        if self.since or self.until:
            moment = record.get("eventTime")
            if not isinstance(moment, str) or (self.since and moment < self.since) or \
                    (self.until and moment >= self.until):
                return False
        if self.keys and not any(key.matches(record) for key in self.keys):
            return False
        identity = record.get("userIdentity") or {}
        if self.principals and not any(p.matches(identity.get("arn")) for p in self.principals):
            return False
        return True

    # The wire form (LookupEvents' filter members): resolved, absolute, canonical.
    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {}
        if self.keys:
            wire["Keys"] = [key.to_wire() for key in self.keys]
        if self.principals:
            wire["Principals"] = [p.arn for p in self.principals]
        if self.operations:
            wire["Operations"] = sorted(self.operations)
        if self.regions:
            wire["Regions"] = sorted(self.regions)
        if self.since:
            wire["Since"] = self.since
        if self.until:
            wire["Until"] = self.until
        if self.outcome:
            wire["Outcome"] = self.outcome
        return wire

    @classmethod
    def from_wire(cls, params: Mapping[str, Any], regions: Iterable[str]) -> Query:
        """The filters of a LookupEvents request, checked as the CLI checks its options (a mistake
        is a ValidationException naming the member)."""
        store = tuple(regions)

        def strings(member: str, most: int) -> list[str]:
            value = params.get(member, [])
            if not isinstance(value, list) or len(value) > most or not all(isinstance(v, str) for v in value):
                raise KMSError("ValidationException", f"{member} must be a list of at most {most} strings")
            return value

        def time(member: str) -> str | None:
            value = params.get(member)
            if value is None:
                return None
            # absolute only: an age would move between the pages of one query (and change its token)
            if not isinstance(value, str) or len(value) > 64 or _RELATIVE.match(value.strip()):
                raise KMSError("ValidationException", f"{member} must be an ISO 8601 date or time (the client "
                                                      "turns ages such as 24h into times)")
            return parse_time(value, member, datetime.now(timezone.utc))  # the clock is not read for ISO

        keys = params.get("Keys", [])
        if not isinstance(keys, list) or len(keys) > _MAX_FILTERS:
            raise KMSError("ValidationException", f"Keys must be a list of at most {_MAX_FILTERS} key filters")
        outcome = params.get("Outcome")
        if outcome is not None and outcome not in ("success", "failure"):
            raise KMSError("ValidationException", "Outcome must be success or failure")
        region_list = strings("Regions", _MAX_FILTERS)
        unknown = [region for region in region_list if region not in store]
        if unknown:
            raise KMSError("ValidationException",
                           f"Regions: {unknown[0][:32]} is not a region of this store ({', '.join(store)})")
        try:
            query = cls(
                keys=[KeyFilter.from_wire(key) for key in keys],
                principals=[PrincipalFilter.parse(value, "Principals") for value in strings("Principals", _MAX_FILTERS)],
                operations=parse_operations(strings("Operations", 100), "Operations"),
                regions=frozenset(region_list) or None,
                since=time("Since"), until=time("Until"), outcome=outcome)
        except KMSError:
            raise
        except KmsplanError as error:
            raise KMSError("ValidationException", error.message) from None
        if query.since and query.until and query.since >= query.until:
            raise KMSError("ValidationException", f"Since ({query.since}) is not before Until ({query.until})")
        return query


@dataclass
class Scan:
    """One pass over the log from byte `start`: what it yields, and what it saw along the way.

    `partial_tail=False` stops at a last line without its newline (a record being appended right
    now) instead of reading it: pages of a served query resume at `offset`, which must always be
    the start of a line, so the record is read whole by a later call.
    """

    path: Path
    query: Query
    start: int = 0
    partial_tail: bool = True
    read: int = 0
    unreadable: int = 0
    offset: int = 0       # just after the last line consumed
    line_start: int = 0   # where the last line consumed began

    def __iter__(self) -> Iterator[tuple[bytes, dict]]:
        """(raw line, record) of every matching record, in log order."""
        self.offset = self.start
        with open(self.path, "rb") as log:
            if self.start:
                log.seek(self.start)
            for raw in log:
                if not self.partial_tail and not raw.endswith(b"\n"):
                    return
                self.line_start, self.offset = self.offset, self.offset + len(raw)
                self.read += 1
                if not self.query.may_match(raw):
                    continue
                try:
                    record = json.loads(raw)
                except ValueError:
                    self.unreadable += 1
                    continue
                if isinstance(record, dict) and self.query.matches(record):
                    yield raw, record
                elif not isinstance(record, dict):
                    self.unreadable += 1


def mentioned(path: Path, key: KeyFilter) -> bool:
    """Whether any record names the key at all (a deleted key's history still counts)."""
    return any(True for _ in Scan(path, Query(keys=[key])))


def first_event_time(path: Path) -> str | None:
    """The eventTime of the log's first record: from when the log knows."""
    with open(path, "rb") as log:
        match = EVENT_TIME.search(log.readline())
    return match.group(1).decode() if match else None


# -- pages, for a served store ---------------------------------------------------------------------

#: a LookupEvents page holds at most this many records, and stops growing past PAGE_BYTES
PAGE_RECORDS = 1000
PAGE_BYTES = 4 * 1024 * 1024
#: `Limit` (newest N) remembers the offsets of up to this many matches in one pass; beyond it a
#: second pass finds where the newest N begin, so memory stays bounded whatever N is
_RING = 10_000
_MAX_FILTERS = 50
_MAX_NAMES = 100


@dataclass(frozen=True)
class Position:
    """Where a paged query resumes: a byte offset at the start of a line, the lines before it
    (-1: unknown, after FromEnd), unreadable lines so far, the records still owed to a `Limit`
    query, and which query it belongs to. Tampering gains nothing: the caller may read the whole
    log anyway, and an offset is accepted only at a line boundary."""

    offset: int
    read: int
    unreadable: int
    remaining: int | None
    query: str

    def token(self) -> str:
        data = {"v": 1, "o": self.offset, "n": self.read, "u": self.unreadable, "r": self.remaining, "q": self.query}
        return base64.urlsafe_b64encode(json.dumps(data, separators=(",", ":")).encode()).decode().rstrip("=")

    @classmethod
    def parse(cls, token: object, query: str, path: Path) -> Position:
        try:
            if not isinstance(token, str) or len(token) > 1024:
                raise ValueError
            data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
            values = [data[name] for name in ("o", "n", "u", "q")]
            remaining = data.get("r")
            if data.get("v") != 1 or not all(isinstance(v, int) and not isinstance(v, bool) for v in values[:3]) \
                    or values[0] < 0 or values[2] < 0 or not isinstance(values[3], str) \
                    or not (remaining is None or (isinstance(remaining, int) and remaining > 0)):
                raise ValueError
        except (ValueError, KeyError, TypeError, binascii.Error):
            raise KMSError("InvalidMarkerException", "NextToken is not a token this server issued") from None
        if values[3] != query:
            raise KMSError("InvalidMarkerException",
                           "NextToken belongs to another query: send the same filters and Limit with it")
        if not _at_line_start(path, values[0]):
            raise KMSError("InvalidMarkerException", "NextToken does not point into this store's audit log")
        return cls(values[0], values[1], values[2], remaining, values[3])


def _at_line_start(path: Path, offset: int) -> bool:
    if offset == 0:
        return True
    with open(path, "rb") as log:
        if offset > os.fstat(log.fileno()).st_size:
            return False
        log.seek(offset - 1)
        return log.read(1) == b"\n"


def _end_of_complete_lines(path: Path) -> int:
    """The offset just after the log's last newline: where records appended from now on begin."""
    with open(path, "rb") as log:
        end = os.fstat(log.fileno()).st_size
        position = end
        while position > 0:
            step = min(65536, position)
            log.seek(position - step)
            chunk = log.read(step)
            newline = chunk.rfind(b"\n")
            if newline >= 0:
                return position - step + newline + 1
            position -= step
        return 0


def fingerprint(query: Query, limit: int | None) -> str:
    """Ties a token to its query: a page of one query must not be continued as another."""
    canonical = json.dumps({"q": query.to_wire(), "l": limit}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


@dataclass
class Page:
    """One LookupEvents answer. `records` are the matching lines exactly as stored (so a record's
    hash can still be checked); `read` is the number of log records the query has read so far
    (all of them once it is done; None when unknown, after FromEnd)."""

    records: list[bytes]
    next: Position | None
    follow: Position | None
    read: int | None
    unreadable: int

    def to_wire(self) -> dict[str, Any]:
        answer: dict[str, Any] = {"Records": [raw.rstrip(b"\r\n").decode("utf-8", "replace") for raw in self.records],
                                  "UnreadableRecords": self.unreadable}
        if self.read is not None:
            answer["RecordsRead"] = self.read
        if self.next is not None:
            answer["NextToken"] = self.next.token()
        if self.follow is not None:
            answer["FollowToken"] = self.follow.token()
        return answer


def lookup(path: Path, query: Query, *, limit: int | None = None, max_results: int = PAGE_RECORDS,
           token: str | None = None, from_end: bool = False) -> Page:
    """One page of a query, read straight from the log file in bounded memory.

    Without `limit`, matches come oldest first from where `token` left off, up to `max_results`
    records (and PAGE_BYTES); a page that fills up carries `next`, the last page `follow`: a
    position that later returns only records appended since (`from_end` starts there at once).
    With `limit`, the first call finds where the newest `limit` matches begin, and the pages
    return exactly those, oldest first; records appended meanwhile are not among them.
    """
    max_results = max(1, min(max_results, PAGE_RECORDS))
    tag = fingerprint(query, limit)
    if token is not None:
        position = Position.parse(token, tag, path)
        if (limit is None) != (position.remaining is None):
            raise KMSError("InvalidMarkerException", "NextToken belongs to another query")
    elif from_end:
        if limit is not None:
            raise KMSError("ValidationException", "FromEnd and Limit do not go together")
        return Page([], None, Position(_end_of_complete_lines(path), -1, 0, None, tag), None, 0)
    elif limit is not None:
        newest = _newest(path, query, limit, tag)
        if isinstance(newest, Page):
            return newest
        position = newest
    else:
        position = Position(0, 0, 0, None, tag)
    return _page(path, query, position, max_results)


def _page(path: Path, query: Query, position: Position, max_results: int) -> Page:
    wanted = max_results if position.remaining is None else min(max_results, position.remaining)
    scan = Scan(path, query, start=position.offset, partial_tail=False)
    records: list[bytes] = []
    size = 0
    full = False
    for raw, _ in scan:
        records.append(raw)
        size += len(raw)
        if len(records) >= wanted or size >= PAGE_BYTES:
            full = True
            break
    if position.remaining is not None:
        # a Limit query: the counts are those of its first call's pass over the whole log
        owed = position.remaining - len(records)
        following = Position(scan.offset, position.read, position.unreadable, owed, position.query) \
            if full and owed > 0 else None
        return Page(records, following, None, position.read, position.unreadable)
    read = position.read + scan.read if position.read >= 0 else -1
    unreadable = position.unreadable + scan.unreadable
    at = Position(scan.offset, read, unreadable, None, position.query)
    return Page(records, at if full else None, None if full else at, read if read >= 0 else None, unreadable)


def _newest(path: Path, query: Query, limit: int, tag: str) -> Position | Page:
    """Where the newest `limit` matches begin, and how many there are (an empty Page if none):
    one pass when their offsets fit the ring, else a second pass to find the first of them."""
    scan = Scan(path, query, partial_tail=False)
    ring: deque[int] = deque(maxlen=min(limit, _RING))
    matched = 0
    for _ in scan:
        ring.append(scan.line_start)
        matched += 1
    keep = min(limit, matched)
    if keep == 0:
        return Page([], None, None, scan.read, scan.unreadable)
    if keep <= len(ring):
        start = ring[-keep]
    else:
        skip, start = matched - keep, 0
        again = Scan(path, query, partial_tail=False)
        for index, _ in enumerate(again):
            if index == skip:
                start = again.line_start
                break
    return Position(start, scan.read, scan.unreadable, keep, tag)
