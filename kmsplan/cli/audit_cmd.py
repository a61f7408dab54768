"""`kmsplan audit ...`: query the store's audit log, verify its hash chain, find a key's last use.

    kmsplan audit [query] [--key K] [--principal ARN] [--operation NAME] [--since T] [--until T]
                          [--outcome success|failure] [--region R] [--limit N] [--format text|json|jsonl]
    kmsplan audit verify
    kmsplan audit last-use KEY

On the store's host (`--store`), querying only reads: the log is opened read-only (no token is
logged into, so no PIN is needed) and streamed, and alias names are resolved through the
metadata database (no KMS call, so a query adds no record to the log it reads). The query
engine itself is kmsplan.store.audit_query, shared with the server.

Over `--endpoint`, the same query runs on the served store (`KmsplanService.LookupEvents`,
paged) and the output is the same; alias names are resolved with the KMS API as the caller
(ListAliases, DescribeKey). `audit verify` needs the log file itself and runs on the host only.
"""

from __future__ import annotations

import json
import sys
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

import click
from click.core import ParameterSource

from kmsplan.cli.store_cmd import STORE_OPTION
from kmsplan.cli.target import ENDPOINT_OPTION, endpoint
from kmsplan.errors import KMSError, KmsplanError
from kmsplan.plan.remote import RemoteBackend
from kmsplan.store.audit import AuditLog
from kmsplan.store.audit_query import (
    CRYPTO_EVENTS, KEY_ARN, KEY_PARAMETERS, ApiResolver, KeyFilter, MetadataResolver, PrincipalFilter, Query, Resolver,
    Scan, first_event_time, mentioned, operation_names, parse_key, parse_operations, parse_time, store_regions,
)
from kmsplan.store.layout import StoreConfig, default_store_dir

FORMATS = ("text", "json", "jsonl")
TEXT_CHUNK = 500  # text rows aligned together: bounded memory, aligned columns for typical output


def _complete_operation(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
    """Shell completion for --operation: the operation names the store logs."""
    return sorted(name for key, name in operation_names().items() if key.startswith(incomplete.lower()))


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
        arn = KEY_ARN.match(resource.get("ARN", "")) if isinstance(resource, dict) else None
        if arn and arn.group(3) == "key":
            ids.append(arn.group(4))
    if ids:
        return ",".join(dict.fromkeys(ids))
    parameters = record.get("requestParameters") or {}
    named = next((parameters[name] for name in KEY_PARAMETERS if isinstance(parameters.get(name), str)), None)
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


# -- where the log is: this host, or a served store ---------------------------------------------

class _Matches(ABC):
    """The records one query yields (oldest first), and, once iterated, how many log records it
    read and how many it could not parse."""

    read: int = 0
    unreadable: int = 0

    @abstractmethod
    def __iter__(self) -> Iterator[tuple[bytes, dict]]:
        """(the stored line, the parsed record) of each match."""


class _HostMatches(_Matches):
    def __init__(self, scan: Scan, limit: int | None) -> None:
        self.scan, self.limit = scan, limit

    def __iter__(self) -> Iterator[tuple[bytes, dict]]:
        return iter(deque(self.scan, maxlen=self.limit)) if self.limit else iter(self.scan)

    @property  # type: ignore[override]
    def read(self) -> int:
        return self.scan.read

    @property  # type: ignore[override]
    def unreadable(self) -> int:
        return self.scan.unreadable


class _ServedMatches(_Matches):
    def __init__(self, log: _ServedLog, request: dict[str, Any]) -> None:
        self.log, self.request = log, request

    def __iter__(self) -> Iterator[tuple[bytes, dict]]:
        pages = self.log.backend.lookup_events(self.request)  # one page in memory at a time
        while True:
            try:
                page = next(pages)
            except StopIteration:
                return
            except KMSError as error:
                if error.code != "AccessDeniedException":
                    raise
                raise KmsplanError(error.message, hint="query as the account root or as a principal whose identity "
                                                       "policies allow kms:* on every resource, or run `kmsplan "
                                                       "audit --store DIR` on the store's host") from None
            self.read = page.get("RecordsRead", self.read)
            self.unreadable = page.get("UnreadableRecords", self.unreadable)
            self.log.log_start = page.get("LogStart", self.log.log_start)
            for line in page.get("Records", ()):
                yield line.encode(), json.loads(line)


class _HostLog:
    """audit.log in the store folder, read directly."""

    def __init__(self, config: StoreConfig) -> None:
        self.config = config
        self.regions: tuple[str, ...] = tuple(config.regions)
        self.resolver: Resolver = MetadataResolver(config)

    @property
    def path(self) -> Path:
        path = self.config.path / "audit.log"
        if not path.is_file():
            raise KmsplanError(f"the store at {self.config.path} has no audit log ({path} is missing)",
                               hint="restore the store folder from a backup; the log is part of it")
        return path

    def matches(self, query: Query, limit: int | None = None) -> _Matches:
        return _HostMatches(Scan(self.path, query), limit)

    def mentioned(self, key: KeyFilter) -> bool:
        return mentioned(self.path, key)

    def first_time(self) -> str | None:
        return first_event_time(self.path)

    def close(self) -> None:
        pass


class _ServedLog:
    """A served store's log, through LookupEvents as the caller's access key."""

    def __init__(self, backend: RemoteBackend) -> None:
        self.backend = backend
        self.regions = backend.regions
        self.resolver: Resolver = ApiResolver(backend.account, backend.regions, backend.client)
        self.log_start: str | None = None

    def matches(self, query: Query, limit: int | None = None) -> _Matches:
        return _ServedMatches(self, {**query.to_wire(), **({"Limit": limit} if limit else {})})

    def mentioned(self, key: KeyFilter) -> bool:
        return any(True for _ in self.matches(Query(keys=[key]), limit=1))

    def first_time(self) -> str | None:
        return self.log_start

    def close(self) -> None:
        self.backend.close()


def _open_log(store_dir: Path | None, regions: tuple[str, ...]) -> _HostLog | _ServedLog:
    """The log of --store, or of the served store at --endpoint (signed for the first --region
    when the AWS configuration names no region: any of the store's regions reaches it)."""
    url = endpoint(store_dir)
    if url:
        return _ServedLog(RemoteBackend.open(url, None, regions[0] if regions else None))
    return _HostLog(StoreConfig.load(store_dir or default_store_dir()))


def _region_filter(regions: tuple[str, ...], store: tuple[str, ...]) -> frozenset[str] | None:
    unknown = [region for region in regions if region not in store]
    if unknown:
        raise KmsplanError(f"--region {unknown[0]} is not a region of this store",
                           hint=f"the store's regions: {', '.join(store)}")
    return frozenset(regions) or None


# -- the commands ----------------------------------------------------------------------------------

def _warn(message: str) -> None:
    click.echo(f"Note: {message}", err=True)


def _query_options(command: Callable) -> Callable:
    """The filters, shared by `kmsplan audit` and `kmsplan audit query` (the same command)."""
    options = [
        STORE_OPTION,
        ENDPOINT_OPTION,
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
    log = _open_log(store_dir, regions)
    try:
        region_set = _region_filter(regions, log.regions)
        now = datetime.now(timezone.utc)
        query = Query(
            keys=[parse_key(key, log.resolver, region_set, _warn) for key in keys],
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
        matches = log.matches(query, limit)
        count = _write_records(matches, output)
    finally:
        log.close()
    if matches.unreadable:
        _warn(f"{matches.unreadable} line(s) of the log could not be read and were skipped; "
              "run `kmsplan audit verify`" + (" on the store's host" if isinstance(log, _ServedLog) else ""))
    if output == "text":
        shown = f"{count} record(s)" + (f" (the newest {limit} shown)" if limit and count == limit else "")
        click.echo(f"{shown} matched, of {matches.read} in the log." if count else
                   f"No audit records match ({matches.read} in the log).", err=True)


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
             if (param.name in filters and ctx.get_parameter_source(param.name) is not ParameterSource.DEFAULT)
             or (param.name == "endpoint" and ctx.get_parameter_source("endpoint") is ParameterSource.COMMANDLINE)]
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
@ENDPOINT_OPTION
def verify(store_dir: Path | None) -> None:
    """Check the hash chain; name the first altered, removed or reordered record. Runs on the
    store's host only: it needs the log file itself, not the records a served store returns."""
    if endpoint(store_dir):
        raise KmsplanError("`kmsplan audit verify` checks the log file's hash chain and cannot run over --endpoint",
                           hint="run `kmsplan audit verify --store DIR` on the store's host (unset KMSPLAN_ENDPOINT "
                                "there); over --endpoint, `kmsplan audit` and `audit last-use` work")
    log = AuditLog(_HostLog(StoreConfig.load(store_dir or default_store_dir())).path)
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
@ENDPOINT_OPTION
@click.option("--region", "regions", multiple=True, metavar="REGION",
              help="Only uses in this region (a multi-Region key is used in several). Repeatable.")
@click.option("--format", "output", type=click.Choice(["text", "json"]), default="text", show_default=True)
def last_use(key: str, store_dir: Path | None, regions: tuple[str, ...], output: str) -> None:
    """The last successful cryptographic use of KEY (key id, key ARN or alias name), or that it was
    never used. Cryptographic means Encrypt, Decrypt, ReEncrypt, GenerateDataKey*, Sign, Verify,
    GenerateMac or VerifyMac; reads and management calls do not count."""
    log = _open_log(store_dir, regions)
    try:
        region_set = _region_filter(regions, log.regions)
        wanted = parse_key(key, log.resolver, region_set, lambda message: None)
        if not wanted.keys:
            raise KmsplanError(f"{wanted.given} names no key in {', '.join(store_regions(log.regions, region_set))}",
                               hint="check the alias with `kmsplan audit --key ALIAS --operation CreateAlias "
                                    "--operation DeleteAlias`, or give the key id")
        # Only the keys count here, not the alias name: a use is a call that succeeded on the key itself.
        by_key = KeyFilter(wanted.given, keys=wanted.keys)
        matches = log.matches(Query(keys=[by_key], operations=CRYPTO_EVENTS, regions=region_set, outcome="success"),
                              limit=1)
        last: dict | None = None
        for _, record in matches:
            last = record
        if last is None and not any(log.resolver.known_key(key_id, store_regions(log.regions, region_set))
                                    for key_id in by_key.key_ids) and not log.mentioned(by_key):
            raise KmsplanError(f"key {wanted.given} is not in this store and the audit log never mentions it",
                               hint="check the key id or ARN; a deleted key's history stays in the log, under "
                                    "the id it had")
        _report_last_use(wanted, last, matches.read, log.first_time(), output)
    finally:
        log.close()


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
