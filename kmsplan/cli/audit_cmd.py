"""`kmsplan audit ...`: query the store's audit log, verify its hash chain, find a key's last use.

    kmsplan audit [query] [--key K] [--principal ARN] [--operation NAME] [--since T] [--until T]
                          [--outcome success|failure] [--region R] [--limit N] [--format text|json|jsonl]
    kmsplan audit verify
    kmsplan audit last-use KEY

Querying only reads: the log is opened read-only (no token is logged into, so no PIN is needed)
and is streamed line by line, because a busy store's log grows without bound. Each line is first
tested on its raw bytes (the operation name, region and time are found by regular expressions, the
key and principal as substrings) and parsed as JSON only if it can still match; the parsed record is
then checked exactly, so the byte tests only ever save work and never decide a match on their own.

Alias names are resolved through the store's metadata database (read-only SQL, no token login and
no KMS call, so a query adds no record to the log it reads).
"""

from __future__ import annotations

import difflib
import json
import re
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import IO

import click
from click.core import ParameterSource

from kmsplan.cli.store_cmd import STORE_OPTION
from kmsplan.errors import KmsplanError
from kmsplan.store.audit import AuditLog
from kmsplan.store.layout import StoreConfig, default_store_dir

#: operations that use key material: what "last use" means (the same set the deletion guards use)
CRYPTO_EVENTS = frozenset({
    "Encrypt", "Decrypt", "ReEncrypt", "GenerateDataKey", "GenerateDataKeyWithoutPlaintext",
    "GenerateDataKeyPair", "GenerateDataKeyPairWithoutPlaintext", "Sign", "Verify", "GenerateMac",
    "VerifyMac",
})

#: request parameters that name a key or an alias: matched literally, so a call that failed before
#: its key was resolved (NotFoundException, a deleted alias) is still found by the name it used
_KEY_PARAMETERS = ("keyId", "targetKeyId", "sourceKeyId", "destinationKeyId", "aliasName")

_KEY_ID = re.compile(r"^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|mrk-[0-9a-f]{32})\Z")
_KEY_ARN = re.compile(r"^arn:aws:kms:([a-z0-9-]+):(\d{12}):(key|alias)/(.+)\Z")
_ALIAS = re.compile(r"^alias/[a-zA-Z0-9/_-]+\Z")
_ROLE = re.compile(r"^arn:aws:iam::(\d{12}):role/(?:[\w+=,.@-]+/)*([\w+=,.@-]+)\Z")
_RELATIVE = re.compile(r"^(\d+)\s*(s|m|h|d|w)\Z")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}

# Byte-level views of the top-level fields. The writer puts these before any caller-supplied
# value, but the tests below accept a line if *any* occurrence fits, so they stay necessary
# conditions whatever the field order: a line they reject cannot match.
_EVENT_NAME = re.compile(rb'"eventName":"([A-Za-z]+)"')
_REGION = re.compile(rb'"awsRegion":"([a-z0-9-]+)"')
_EVENT_TIME = re.compile(rb'"eventTime":"([0-9T:Z-]+)"')

FORMATS = ("text", "json", "jsonl")
TEXT_CHUNK = 500  # text rows aligned together: bounded memory, aligned columns for typical output


# -- parsing the user's filters ------------------------------------------------------------------

def _event_time(moment: datetime) -> str:
    """The log's eventTime format (second precision, UTC, trailing Z): comparable as a string."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str, option: str, now: datetime) -> str:
    """ISO 8601 (a date, or a date and time; no zone means UTC) or a relative age such as 24h, 7d."""
    value = text.strip()
    relative = _RELATIVE.match(value)
    iso = value[:-1] + "+00:00" if value[-1:] in ("Z", "z") else value  # Python 3.10 has no 'Z'
    try:
        if relative:
            return _event_time(now - timedelta(**{_UNITS[relative.group(2)]: int(relative.group(1))}))
        moment = datetime.fromisoformat(iso)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        return _event_time(moment)
    except (ValueError, OverflowError):  # not a time, or one outside datetime's years 1..9999
        raise KmsplanError(f"{option} {text!r} is not a time",
                           hint="give an ISO 8601 date or time (2026-01-31, 2026-01-31T08:00:00Z) "
                                "or an age such as 30m, 24h, 7d, 2w") from None


def _operation_names() -> dict[str, str]:
    """Every operation the store logs, by lower-case name (so --operation is case-insensitive)."""
    from kmsplan.store import client  # noqa: F401  (importing it registers every operation)
    from kmsplan.store.calls import OPERATIONS

    return {name.lower(): name for name in OPERATIONS}


def parse_operations(values: Iterable[str]) -> frozenset[str] | None:
    names = _operation_names()
    chosen = []
    for value in values:
        found = names.get(value.strip().lower())
        if found is None:
            close = [names[key] for key in difflib.get_close_matches(value.strip().lower(), names, n=3)]
            raise KmsplanError(f"--operation {value!r} is not a KMS operation the store logs",
                               hint=f"did you mean {', '.join(close)}?" if close else
                               "use an AWS KMS API name such as Encrypt, Decrypt, CreateKey, PutKeyPolicy")
        chosen.append(found)
    return frozenset(chosen) or None


def _complete_operation(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
    """Shell completion for --operation: the operation names the store logs."""
    return sorted(name for key, name in _operation_names().items() if key.startswith(incomplete.lower()))


@dataclass(frozen=True)
class PrincipalFilter:
    """One --principal: the ARN itself, and for a role every session of it (assumed-role/NAME/...)."""

    arn: str
    session_prefix: str | None

    @classmethod
    def parse(cls, value: str) -> PrincipalFilter:
        from kmsplan.store.params import PRINCIPAL_PATTERN

        if not PRINCIPAL_PATTERN.match(value):
            raise KmsplanError(f"--principal {value!r} is not an IAM principal ARN",
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
        arn = _KEY_ARN.match(value)
        if arn:
            arn_region, _, kind, rest = arn.groups()
            return self._named(arn_region, rest, self.keys) if kind == "key" else \
                self._named(arn_region, f"alias/{rest}", self.aliases)
        return self._named(region, value, self.aliases if value.startswith("alias/") else self.keys)

    def matches(self, record: dict) -> bool:
        for resource in record.get("resources") or ():
            arn = _KEY_ARN.match(resource.get("ARN", "")) if isinstance(resource, dict) else None
            if arn and arn.group(3) == "key" and self._named(arn.group(1), arn.group(4), self.keys):
                return True
        parameters = record.get("requestParameters") or {}
        region = record.get("awsRegion")
        return any(self.names(parameters.get(name), region) for name in _KEY_PARAMETERS)


def _store_regions(config: StoreConfig, regions: frozenset[str] | None) -> tuple[str, ...]:
    return tuple(region for region in config.regions if regions is None or region in regions)


def alias_targets(config: StoreConfig, alias: str, regions: Iterable[str]) -> dict[str, str]:
    """Region -> key id the alias points to now, read from the metadata database (no KMS call,
    so resolving it adds nothing to the log being read)."""
    from kmsplan.store.db import Metadata

    meta = Metadata(config.path / "metadata.db", config.path / "store.lock")
    try:
        return {region: target for region in regions if (target := meta.alias_target(region, alias))}
    finally:
        meta.close()


def known_key(config: StoreConfig, key_id: str, regions: Iterable[str]) -> bool:
    from kmsplan.store.db import Metadata

    meta = Metadata(config.path / "metadata.db", config.path / "store.lock")
    try:
        return any(meta.key(region, key_id) for region in regions)
    finally:
        meta.close()


def parse_key(value: str, config: StoreConfig, regions: frozenset[str] | None,
              warn: Callable[[str], None]) -> KeyFilter:
    """Turn a key id, key ARN, alias name or alias ARN into the regional keys it stands for."""
    reference = value.strip()
    found = KeyFilter(reference)
    arn = _KEY_ARN.match(reference)
    if arn:
        region, account, kind, rest = arn.groups()
        if account != config.account:
            raise KmsplanError(f"--key {value!r} is in account {account}; this store holds account {config.account}",
                               hint="give a key of this store's account")
        if kind == "key":
            if not _KEY_ID.match(rest):
                raise KmsplanError(f"--key {value!r} does not end in a key id", hint=_KEY_HINT)
            found.keys.add((region, rest))
            return found
        reference, scope = f"alias/{rest}", (region,)
        found.aliases.add((region, reference))
    elif _KEY_ID.match(reference):
        found.keys.add((None, reference))
        return found
    elif _ALIAS.match(reference):
        scope = _store_regions(config, regions)
        found.aliases.add((None, reference))
    else:
        raise KmsplanError(f"--key {value!r} is not a key id, key ARN or alias name", hint=_KEY_HINT)
    targets = alias_targets(config, reference, scope)
    found.keys.update(targets.items())
    if not targets:
        warn(f"{reference} names no key in {', '.join(scope)} now; only calls that named it are shown")
    return found


_KEY_HINT = ("give a key id (1234abcd-12ab-34cd-56ef-1234567890ab or mrk-...), a key ARN, "
             "or an alias name (alias/payments-prod)")


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
                m.group(1) in self._operation_bytes for m in _EVENT_NAME.finditer(raw)):
            return False
        if self._region_bytes is not None and not any(m.group(1) in self._region_bytes for m in _REGION.finditer(raw)):
            return False
        if self.outcome == "failure" and b'"errorCode":' not in raw:
            return False
        if self.outcome == "success" and b'"outcome":"Success"' not in raw:
            return False
        if (self._since or self._until) and not any(
                (self._since is None or m.group(1) >= self._since) and (self._until is None or m.group(1) < self._until)
                for m in _EVENT_TIME.finditer(raw)):
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


@dataclass
class Scan:
    """One pass over the log: what it yields, and what it saw along the way."""

    path: Path
    query: Query
    read: int = 0
    unreadable: int = 0

    def __iter__(self) -> Iterator[tuple[bytes, dict]]:
        """(raw line, record) of every matching record, in log order."""
        with open(self.path, "rb") as log:
            for raw in log:
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


# -- output ----------------------------------------------------------------------------------------

_HEADER = ("TIME", "REGION", "PRINCIPAL", "OPERATION", "KEY", "RESULT", "ENCRYPTION CONTEXT")


def _printable(text: str) -> str:
    """Escape control characters and spaces: a caller-chosen value must not forge a line or a
    column on someone's terminal."""
    return "".join(ch if ch.isprintable() and ch != " " else f"\\x{ord(ch):02x}" if ord(ch) < 256 else
                   f"\\u{ord(ch):04x}" for ch in text)


def _context_text(parameters: dict) -> str:
    def shown(context: object) -> str:
        return json.dumps(context, sort_keys=True, separators=(",", ":"))  # ASCII-escaped: one safe line

    if parameters.get("encryptionContext"):
        return shown(parameters["encryptionContext"])
    source, destination = parameters.get("sourceEncryptionContext"), parameters.get("destinationEncryptionContext")
    if source or destination:
        return f"{shown(source or {})} -> {shown(destination or {})}"
    return "-"


def _key_text(record: dict) -> str:
    ids = []
    for resource in record.get("resources") or ():
        arn = _KEY_ARN.match(resource.get("ARN", "")) if isinstance(resource, dict) else None
        if arn and arn.group(3) == "key":
            ids.append(arn.group(4))
    if ids:
        return ",".join(dict.fromkeys(ids))
    parameters = record.get("requestParameters") or {}
    named = next((parameters[name] for name in _KEY_PARAMETERS if isinstance(parameters.get(name), str)), None)
    return _printable(named) if named else "-"


def text_row(record: dict) -> tuple[str, ...]:
    """One record as the columns of `_HEADER`."""
    identity = record.get("userIdentity") or {}
    return (
        _printable(str(record.get("eventTime", "-"))),
        _printable(str(record.get("awsRegion", "-"))),
        _printable(str(identity.get("arn", "-"))),
        _printable(str(record.get("eventName", "-"))),
        _key_text(record),
        _printable(str(record["errorCode"])) if "errorCode" in record else "success",
        _context_text(record.get("requestParameters") or {}),
    )


class TextTable:
    """Aligned rows, flushed every TEXT_CHUNK rows so memory stays bounded on a huge result; column
    widths only grow, so a long result stays aligned except where a wider value first appears."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out
        self.rows: list[tuple[str, ...]] = [_HEADER]
        self.widths = [0] * len(_HEADER)

    def add(self, row: tuple[str, ...]) -> None:
        self.rows.append(row)
        if len(self.rows) >= TEXT_CHUNK:
            self.flush()

    def flush(self) -> None:
        for row in self.rows:
            self.widths = [max(width, len(cell)) for width, cell in zip(self.widths, row)]
        for row in self.rows:
            cells = [cell.ljust(width) for cell, width in zip(row[:-1], self.widths)] + [row[-1]]
            self.out.write("  ".join(cells).rstrip() + "\n")
        self.rows = []


def _write_records(matches: Iterable[tuple[bytes, dict]], output: str) -> int:
    """Write matches to stdout in `output` format; return how many were written."""
    count = 0
    if output == "text":
        table = TextTable(sys.stdout)
        for _, record in matches:
            table.add(text_row(record))
            count += 1
        if count:
            table.flush()
        return count
    binary = sys.stdout.buffer
    if output == "json":  # CloudTrail's own file shape, so CloudTrail tooling reads it as is
        binary.write(b'{"Records":[')
    for raw, _ in matches:
        line = raw.rstrip(b"\r\n")
        if output == "json":
            binary.write((b",\n" if count else b"\n") + line)
        else:
            binary.write(line + b"\n")  # the record's exact bytes: its hash can still be checked
        count += 1
    if output == "json":
        binary.write(b"\n]}\n" if count else b"]}\n")
    binary.flush()
    return count


# -- the commands ----------------------------------------------------------------------------------

def _config(store_dir: Path | None) -> StoreConfig:
    return StoreConfig.load(store_dir or default_store_dir())


def _log_path(config: StoreConfig) -> Path:
    path = config.path / "audit.log"
    if not path.is_file():
        raise KmsplanError(f"the store at {config.path} has no audit log ({path} is missing)",
                           hint="restore the store folder from a backup; the log is part of it")
    return path


def _warn(message: str) -> None:
    click.echo(f"Note: {message}", err=True)


def _query_options(command: Callable) -> Callable:
    """The filters, shared by `kmsplan audit` and `kmsplan audit query` (the same command)."""
    options = [
        STORE_OPTION,
        click.option("--key", "keys", multiple=True, metavar="KEY",
                     help="Key id, key ARN or alias name (alias: the key it points to now). Repeatable."),
        click.option("--principal", "principals", multiple=True, metavar="ARN",
                     help="Caller's IAM ARN; a role also matches its sessions. Repeatable."),
        click.option("--operation", "operations", multiple=True, metavar="NAME", shell_complete=_complete_operation,
                     help="KMS operation, e.g. Decrypt (any case). Repeatable."),
        click.option("--since", metavar="TIME", help="From this time on: ISO 8601 (UTC unless a zone is given) or an "
                                                     "age such as 30m, 24h, 7d."),
        click.option("--until", metavar="TIME", help="Before this time (exclusive); same forms as --since."),
        click.option("--outcome", type=click.Choice(["success", "failure"], case_sensitive=False), default=None,
                     help="Only calls that succeeded, or only calls that failed (with an error code)."),
        click.option("--region", "regions", multiple=True, metavar="REGION", help="Only calls in this region. "
                                                                                  "Repeatable."),
        click.option("--limit", type=click.IntRange(min=1), default=None, metavar="N",
                     help="Show only the newest N matching records (still oldest first)."),
        click.option("--format", "output", type=click.Choice(FORMATS), default="text", show_default=True,
                     help="text: aligned lines; json: {\"Records\": [...]} as CloudTrail files; jsonl: the log's "
                          "lines as stored."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def run_query(store_dir: Path | None, keys: tuple[str, ...], principals: tuple[str, ...],
              operations: tuple[str, ...], since: str | None, until: str | None, outcome: str | None,
              regions: tuple[str, ...], limit: int | None, output: str) -> None:
    """Check every filter before reading a byte of the log, then stream the matches out."""
    config = _config(store_dir)
    unknown = [region for region in regions if region not in config.regions]
    if unknown:
        raise KmsplanError(f"--region {unknown[0]} is not a region of this store",
                           hint=f"the store's regions: {', '.join(config.regions)}")
    region_set = frozenset(regions) or None
    now = datetime.now(timezone.utc)
    query = Query(
        keys=[parse_key(key, config, region_set, _warn) for key in keys],
        principals=[PrincipalFilter.parse(value) for value in principals],
        operations=parse_operations(operations),
        regions=region_set,
        since=parse_time(since, "--since", now) if since is not None else None,  # "" is a mistake, not "no filter"
        until=parse_time(until, "--until", now) if until is not None else None,
        outcome=outcome.lower() if outcome else None,
    )
    if query.since and query.until and query.since >= query.until:
        raise KmsplanError(f"--since ({query.since}) is not before --until ({query.until})",
                           hint="--since is the start of the window and --until its (exclusive) end")
    scan = Scan(_log_path(config), query)
    matches: Iterable[tuple[bytes, dict]] = deque(scan, maxlen=limit) if limit else scan
    count = _write_records(matches, output)
    if scan.unreadable:
        _warn(f"{scan.unreadable} line(s) of the log could not be read and were skipped; "
              "run `kmsplan audit verify`")
    if output == "text":
        shown = f"{count} record(s)" + (f" (the newest {limit} shown)" if limit and count == limit else "")
        click.echo(f"{shown} matched, of {scan.read} in the log." if count else
                   f"No audit records match ({scan.read} in the log).", err=True)


@click.group(invoke_without_command=True)
@_query_options
@click.pass_context
def audit(ctx: click.Context, **filters: object) -> None:
    """Query the audit log (the options below), verify its hash chain, or find a key's last use.

    Without a subcommand, prints the records that match every given filter, oldest first.
    """
    if ctx.invoked_subcommand is None:
        run_query(**filters)  # type: ignore[arg-type]
        return
    given = [param.opts[0] for param in ctx.command.params
             if param.name in filters and ctx.get_parameter_source(param.name) is not ParameterSource.DEFAULT]
    if given:
        raise KmsplanError(f"{', '.join(given)} given before `{ctx.invoked_subcommand}`: query options belong to the "
                           "query itself",
                           hint=f"put options after the subcommand (kmsplan audit {ctx.invoked_subcommand} ...), or "
                                "drop the subcommand to query")


@audit.command("query")
@_query_options
def query_cmd(**filters: object) -> None:
    """Print the audit records that match every given filter, oldest first (same as `kmsplan audit`)."""
    run_query(**filters)  # type: ignore[arg-type]


@audit.command("verify")
@STORE_OPTION
def verify(store_dir: Path | None) -> None:
    """Check the hash chain; name the first altered, removed or reordered record."""
    log = AuditLog(_log_path(_config(store_dir)))
    try:
        count, broken = log.verify()
    finally:
        log.close()
    if broken is not None:
        raise KmsplanError(
            f"audit log chain broken at line {broken.line}" + (f" (record {broken.seq})" if broken.seq else "")
            + f": {broken.reason}; {count} record(s) before it verified",
            hint="the log was edited outside kmsplan: keep this copy as evidence and investigate",
        )
    click.echo(f"Audit log intact: {count} record(s), hash chain verified.")


@audit.command("last-use")
@click.argument("key")
@STORE_OPTION
@click.option("--region", "regions", multiple=True, metavar="REGION",
              help="Only uses in this region (a multi-Region key is used in several). Repeatable.")
@click.option("--format", "output", type=click.Choice(["text", "json"]), default="text", show_default=True)
def last_use(key: str, store_dir: Path | None, regions: tuple[str, ...], output: str) -> None:
    """The last successful cryptographic use of KEY (key id, key ARN or alias name), or that it was
    never used. Cryptographic means Encrypt, Decrypt, ReEncrypt, GenerateDataKey*, Sign, Verify,
    GenerateMac or VerifyMac; reads and management calls do not count."""
    config = _config(store_dir)
    unknown = [region for region in regions if region not in config.regions]
    if unknown:
        raise KmsplanError(f"--region {unknown[0]} is not a region of this store",
                           hint=f"the store's regions: {', '.join(config.regions)}")
    region_set = frozenset(regions) or None
    wanted = parse_key(key, config, region_set, lambda message: None)
    if not wanted.keys:
        raise KmsplanError(f"{wanted.given} names no key in {', '.join(_store_regions(config, region_set))}",
                           hint="check the alias with `kmsplan audit --key ALIAS --operation CreateAlias "
                                "--operation DeleteAlias`, or give the key id")
    # Only the keys count here, not the alias name: a use is a call that succeeded on the key itself.
    by_key = KeyFilter(wanted.given, keys=wanted.keys)
    scan = Scan(_log_path(config), Query(keys=[by_key], operations=CRYPTO_EVENTS, regions=region_set,
                                         outcome="success"))
    last: dict | None = None
    for _, record in scan:
        last = record
    if last is None and not any(known_key(config, key_id, _store_regions(config, region_set))
                                for key_id in by_key.key_ids) and not _mentioned(scan.path, by_key):
        raise KmsplanError(f"key {wanted.given} is not in this store and the audit log never mentions it",
                           hint="check the key id or ARN; a deleted key's history stays in the log, under "
                                "the id it had")
    _report_last_use(wanted, last, scan.read, _first_time(scan.path), output)


def _mentioned(path: Path, key: KeyFilter) -> bool:
    """Whether any record names the key at all (a deleted key's history still counts)."""
    return any(True for _ in Scan(path, Query(keys=[key])))


def _first_time(path: Path) -> str | None:
    with open(path, "rb") as log:
        match = _EVENT_TIME.search(log.readline())
    return match.group(1).decode() if match else None


def _report_last_use(wanted: KeyFilter, last: dict | None, read: int, first_time: str | None, output: str) -> None:
    ids = wanted.key_ids
    if output == "json":
        found = None if last is None else {
            "eventTime": last.get("eventTime"), "eventName": last.get("eventName"),
            "principal": (last.get("userIdentity") or {}).get("arn"), "awsRegion": last.get("awsRegion"),
            "keyArn": next((r.get("ARN") for r in last.get("resources") or () if isinstance(r, dict)), None),
        }
        click.echo(json.dumps({"key": wanted.given, "keyIds": ids, "lastUse": found,
                               "logRecords": read, "logSince": first_time}, indent=2))
        return
    name = wanted.given if wanted.given in ids else f"{wanted.given} (key {', '.join(ids)})"
    if last is None:
        since = f" since {first_time}" if first_time else ""
        click.echo(f"{name}: never used for cryptography (the audit log holds {read} record(s){since}).")
        return
    row = text_row(last)
    click.echo(f"{name}: last used {row[0]}, {row[3]} by {row[2]} in {row[1]}.")
