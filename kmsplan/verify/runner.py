"""One verify run: read what the stack owns, check each declared key copy, then the audit log.

Keys are checked in the stack's order, each copy (the key in its region, then its replicas)
through the same sequence: what it is (state, rotation, replicas, access, required contexts),
then what it does (cryptography). Everything goes through the KMS API as one principal with
clients that record each call, which the last check finds again in the audit log (the log file
of an embedded store, or a served store's log through LookupEvents: kmsplan.verify.trail).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from kmsplan.errors import KMSError, KmsplanError
from kmsplan.plan.backend import Backend
from kmsplan.plan.diff import desired_copies, live_copies
from kmsplan.plan.live import read_live
from kmsplan.plan.planner import check_account
from kmsplan.stack import Stack
from kmsplan.verify import checks
from kmsplan.verify.crypto import crypto_checks
from kmsplan.verify.model import CHECK_NAMES, Check, Report
from kmsplan.verify.recorder import audit_check
from kmsplan.verify.session import Copy, Session
from kmsplan.verify.trail import AuditTrail, audit_trail

READ_HINT = ("verify reads the store as plan does (kms:ListKeys, kms:ListAliases, kms:ListResourceTags on every key, "
             "then kms:DescribeKey, kms:GetKeyPolicy, kms:GetKeyRotationStatus, kms:ListGrants) and then uses the "
             "keys; pass --principal with that access (the default is the store's administrator)")


def verify_stack(stack: Stack, backend: Backend, *, addresses: Sequence[str] = (),
                 progress: Callable[[str], None] = lambda line: None) -> Report:
    """Check every declared key of `stack` (or only `addresses`) in the live store.

    Raises KmsplanError for what the user must fix first (wrong store, unregistered principal,
    an address the stack does not declare); everything about the keys is a check in the report.
    """
    check_account(stack, backend)
    selected = _select(stack, addresses)
    session = Session(backend, backend.principal_record(backend.principal), backend.principals())
    trail = audit_trail(backend)
    try:
        start: object = trail.mark()
    except KMSError as error:  # over --endpoint: a principal not allowed to read the log
        start = error
    try:
        live = live_copies(read_live(session.clients(), stack.name))
    except KMSError as error:
        raise KmsplanError(f"cannot read the keys of stack {stack.name} as {backend.principal}: {error.message}",
                           hint=READ_HINT) from None
    wanted = desired_copies(stack)
    found: list[Check] = []
    keys = [key for key in stack.keys if key.name in selected]
    for number, key in enumerate(keys, start=1):
        copies = [Copy(copy, live.get(where)) for where, copy in wanted.items()
                  if copy.key.name == key.name and copy.address in selected[key.name]]
        copies.sort(key=lambda c: (not c.desired.is_primary, c.region))
        results = _key_checks(session, copies)
        found += results
        failed = sum(not c.passed for c in results)
        progress(f"[{number}/{len(keys)}] {key.address}: {len(results)} checks, "
                 + (f"{failed} failed" if failed else "all passed"))
    found.append(_audit(session, trail, start, backend.principal))
    return Report(stack.name, backend.account, backend.principal, tuple(found), len(session.calls))


def _audit(session: Session, trail: AuditTrail, start: object, principal: str) -> Check:
    """The run's last check; a log that cannot be read fails it (with why), it does not abort the
    run: every other check still stands."""
    try:
        if isinstance(start, KMSError):
            raise start
        return audit_check(session.calls, trail.records_since(start), principal)
    except KMSError as error:
        return Check(None, None, "audit", False,
                     f"cannot read the audit log as {principal}: {error.code}: {error.message}")


def _select(stack: Stack, addresses: Sequence[str]) -> dict[str, set[str]]:
    """Key name -> the addresses of its copies to check: all of them, or those `addresses` name
    (a key address selects the key and its replicas)."""
    every = {key.name: {key.address, *(r.address for r in key.replicas)} for key in stack.keys}
    if not addresses:
        return every
    chosen: dict[str, set[str]] = {}
    for address in addresses:
        name = next((n for n, names in every.items() if address in names), None)
        if name is None:
            known = ", ".join(sorted(a for names in every.values() for a in names)) or "none"
            raise KmsplanError(f"{address} is not a key or replica address of stack {stack.name}",
                               hint=f"the stack's addresses are: {known}")
        chosen.setdefault(name, set()).update(every[name] if address == f"key.{name}" else {address})
    return chosen


def _key_checks(session: Session, copies: list[Copy]) -> list[Check]:
    out: list[Check] = []
    for copy in copies:
        out.append(checks.state_check(copy))
        for check in (checks.rotation_check(copy), checks.replicas_check(session, copy, copies)):
            if check is not None:
                out.append(check)
        required = checks.context_required_check(session, copy)
        if required is not None:
            out.append(required)
    if copies:
        out += checks.access_checks(session, copies)
        out += crypto_checks(session, copies)
    return _in_report_order(out, copies)


def _in_report_order(found: list[Check], copies: list[Copy]) -> list[Check]:
    """Per copy (primary first), checks in CHECK_NAMES order; stable within a name."""
    rank = {c.address: i for i, c in enumerate(copies)}
    return sorted(found, key=lambda c: (rank.get(c.address, len(rank)), CHECK_NAMES.index(c.check)))
