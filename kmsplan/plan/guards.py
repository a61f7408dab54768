"""Guards: the plan's refusals of data loss and lockouts, checked before anything is applied.

Each guard reads the diff (never the store directly; the backend supplies the registered
principals and the audit log's last-use times) and returns findings with a code, the address and
what to do. Errors stop the plan; `--allow-delete ADDRESS`, `--allow-delete-recently-used` and a
key's `bypass_policy_lockout_safety_check` turn specific errors into warnings, as documented in
docs/reconciler.md.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from kmsplan.plan.diff import IMMUTABLE, grant_key_address
from kmsplan.plan.live import LiveState
from kmsplan.plan.model import ALIAS, CREATE, DELETE, ERROR, GRANT, UPDATE, WARNING, Change, Finding, Flags
from kmsplan.policy import Grant, KeyFacts, Principal, lockout_check, parse_policy, unknown_principals, who_can
from kmsplan.policy.document import PolicyError

ADMIN_ACTIONS = ("kms:PutKeyPolicy", "kms:ScheduleKeyDeletion", "kms:CancelKeyDeletion", "kms:EnableKey",
                 "kms:DisableKey")

#: every guard code, its severity when it fires, and one line for the docs
CODES: dict[str, str] = {
    "G101": "deleting a key needs --allow-delete ADDRESS",
    "G102": "a protected key is never deleted",
    "G103": "the key was used for cryptography within --recent-use-days",
    "G104": "a multi-Region primary cannot be deleted while its replicas remain",
    "G201": "an immutable attribute (spec, usage, multi_region, origin, a single-Region key's region) changed",
    "G301": "the applying principal would lose kms:PutKeyPolicy",
    "G302": "no registered principal would keep the administrative actions",
    "G303": "a principal loses a permission it has today",
    "G304": "the policy names principals the store does not know",
    "G401": "disabling a key used within --recent-use-days",
    "G402": "a new grant or a rotation change on a key that is disabled and stays disabled (KMS refuses both)",
    "G501": "an alias would point at a key of another spec or usage",
    "G502": "an alias would be left pointing at a deleted key",
    "G503": "the alias exists and points at a key this stack does not own",
}


@dataclass(frozen=True)
class GuardContext:
    """What the guards may consult besides the changes."""

    account: str
    principal: Principal
    principals: Sequence[Principal]
    last_use: Mapping[str, datetime] | None  # key ARN -> newest cryptographic use; None: unknown (AWS)
    flags: Flags
    now: datetime


def _finding(code: str, address: str, message: str, hint: str, severity: str = ERROR) -> Finding:
    return Finding(code, severity, address, message, hint)


def check(changes: Sequence[Change], live: LiveState, ctx: GuardContext) -> list[Finding]:
    """Every finding, sorted by address then code."""
    findings: list[Finding] = []
    findings += _deletions(changes, live, ctx)
    findings += _immutables(changes)
    findings += _policies(changes, live, ctx)
    findings += _disables(changes, live, ctx)
    findings += _aliases(changes, live)
    return sorted(findings, key=lambda f: (f.address, f.code))


def _recent(arn: str | None, ctx: GuardContext) -> datetime | None:
    used = (ctx.last_use or {}).get(arn or "")
    if used and used >= ctx.now - timedelta(days=ctx.flags.recent_use_days):
        return used
    return None


# --- deletions ---------------------------------------------------------------------------

def _deletions(changes: Sequence[Change], live: LiveState, ctx: GuardContext) -> list[Finding]:
    found: list[Finding] = []
    deleted = {(c.key_id, c.region) for c in changes if c.kind in ("key", "replica") and c.actions == (DELETE,)}
    by_id = {(key.key_id, key.region): key for key in live.keys}
    for change in changes:
        if change.kind not in ("key", "replica") or change.actions != (DELETE,):
            continue
        key = by_id[(change.key_id, change.region)]
        if key.protected:
            found.append(_finding(
                "G102", change.address, f"{change.address} ({key.arn}) is protected and would be deleted",
                "set `protect: false` on the key and apply that first, then remove it from the stack"))
        if change.address not in ctx.flags.allow_delete:
            found.append(_finding(
                "G101", change.address,
                f"{change.address} is no longer in the stack; deleting it destroys every ciphertext made under it "
                f"after its {key.deletion_window}-day window",
                f"if that is intended, plan again with --allow-delete {change.address}; otherwise put it back"))
        used = _recent(key.arn, ctx)
        if ctx.last_use is None:  # the backend cannot tell (AWS KMS: usage is in CloudTrail): assume in use
            allowed = ctx.flags.allow_delete_recently_used
            found.append(_finding(
                "G103", change.address,
                f"{change.address}: its last cryptographic use cannot be read from this backend, so it may be in use",
                "check its use in CloudTrail, then plan with --allow-delete-recently-used"
                if not allowed else "deletion allowed by --allow-delete-recently-used",
                WARNING if allowed else ERROR))
        elif used:
            allowed = ctx.flags.allow_delete_recently_used
            found.append(_finding(
                "G103", change.address,
                f"{change.address} was used for a cryptographic operation at {used.isoformat(timespec='seconds')}, "
                f"within the last {ctx.flags.recent_use_days} days",
                "make sure nothing still needs it (see `kmsplan audit`), then plan with --allow-delete-recently-used"
                if not allowed else "deletion allowed by --allow-delete-recently-used",
                WARNING if allowed else ERROR))
        if key.multi_region_type == "PRIMARY":
            remaining = sorted(k.region for k in live.keys if k.multi_region_type == "REPLICA"
                               and k.key_id == key.key_id and (k.key_id, k.region) not in deleted
                               and not k.pending_deletion)
            if remaining:
                found.append(_finding(
                    "G104", change.address,
                    f"{change.address} is a multi-Region primary with replicas in {', '.join(remaining)}",
                    "delete its replicas in the same plan, or promote a replica with a new primary region first"))
    return found


# --- immutable attributes ----------------------------------------------------------------

def _immutables(changes: Sequence[Change]) -> list[Finding]:
    found: list[Finding] = []
    by_name: dict[str, list[Change]] = {}
    for change in changes:
        if change.kind in ("key", "replica"):
            name = (change.after or change.before or {}).get("name")
            by_name.setdefault(str(name), []).append(change)
        if change.actions != (UPDATE,) or change.kind not in ("key", "replica"):
            continue
        for attribute in IMMUTABLE:
            before, after = change.before[attribute], change.after[attribute]  # type: ignore[index]
            if before != after:
                found.append(_finding(
                    "G201", change.address, f"{change.address}: {attribute} cannot change ({before} -> {after})",
                    _safe_path(change.address)))
    # a single-Region key declared in another region: the diff shows a create and a delete
    for name, group in by_name.items():
        created = [c for c in group if c.actions == (CREATE,) and c.kind == "key" and not c.after["multi_region"]]
        dropped = [c for c in group if c.actions == (DELETE,) and not c.before["multi_region"]]
        for new in created:
            for old in dropped:
                found.append(_finding(
                    "G201", new.address, f"{new.address}: a single-Region key cannot move from {old.region} "
                    f"to {new.region}", _safe_path(new.address)))
    return found


def _safe_path(address: str) -> str:
    return (f"declare a new key beside {address}, apply, repoint its aliases, re-encrypt the data under the new "
            "key, then remove the old key (with --allow-delete)")


# --- policies: lockout and lost access ---------------------------------------------------

def _facts(change: Change, account: str) -> KeyFacts:
    after = change.after or {}
    key_id = change.key_id or "planned"
    return KeyFacts(arn=f"arn:aws:kms:{change.region}:{account}:key/{key_id}", key_id=key_id, account=account,
                    region=change.region, spec=after["spec"], usage=after["usage"],
                    multi_region=bool(after["multi_region"]),
                    multi_region_type=None if not after["multi_region"] else
                    ("PRIMARY" if change.kind == "key" else "REPLICA"), tags=after.get("tags") or {})


def _policy_changes(changes: Sequence[Change]) -> list[Change]:
    return [c for c in changes if c.kind in ("key", "replica") and c.after is not None
            and (c.actions == (CREATE,) or (c.actions == (UPDATE,) and c.before["policy"] != c.after["policy"]))]


def _policies(changes: Sequence[Change], live: LiveState, ctx: GuardContext) -> list[Finding]:
    found: list[Finding] = []
    known = {p.arn for p in ctx.principals}
    known |= {f"arn:aws:iam::{p.account}:root" for p in ctx.principals if p.account}
    by_id = {(key.key_id, key.region): key for key in live.keys}
    for change in _policy_changes(changes):
        after: dict[str, Any] = change.after  # type: ignore[assignment]
        try:
            new = parse_policy(json.dumps(after["policy"]))
        except PolicyError as error:
            found.append(_finding("G304", change.address, f"{change.address}: {error}", error.hint or ""))
            continue
        facts = _facts(change, ctx.account)
        strangers = unknown_principals(new, known)
        if strangers:
            found.append(_finding(
                "G304", change.address, f"{change.address}: the policy names unknown principals: {', '.join(strangers)}",
                "register them (`kmsplan store principals apply FILE`) or fix the ARNs"))
        decision = lockout_check(new, ctx.principal, facts)
        if not decision.allowed:
            bypass = bool(after.get("bypass_policy_lockout_safety_check"))
            found.append(_finding(
                "G301", change.address,
                f"{change.address}: {decision.reason}" + (" — BYPASSED by bypass_policy_lockout_safety_check" if bypass
                                                          else ""),
                "keep a statement that lets the applying principal call kms:PutKeyPolicy" if not bypass
                else "make sure another principal can still manage this key, and plan this stack as that principal "
                     "from now on (--principal): a key the planner cannot read is invisible to it",
                WARNING if bypass else ERROR))
        grants = policy_grants(by_id.get((change.key_id, change.region)))
        admins = set.intersection(*({p.principal for p in who_can(new, grants, ctx.principals, facts, [action])
                                     if not p.conditions} for action in ADMIN_ACTIONS))
        if not admins:
            found.append(_finding(
                "G302", change.address,
                f"{change.address}: no registered principal could still call all of {', '.join(ADMIN_ACTIONS)}",
                "keep at least one administrator statement (for example the account root with kms:*)"))
        if change.actions == (UPDATE,):
            found += _losses(change, new, grants, facts, ctx)
    return found


def policy_grants(key: Any) -> list[Grant]:
    """A live key's grants as the policy evaluator takes them (none for a key not found)."""
    if key is None:
        return []
    out = []
    for g in key.grants:
        constraints = g.constraints or {}
        out.append(Grant(g.grant_id, g.grantee, g.operations, constraints.get("EncryptionContextEquals"),
                         constraints.get("EncryptionContextSubset"), g.retiring_principal, g.name))
    return out


def _losses(change: Change, new: Any, grants: list[Grant], facts: KeyFacts, ctx: GuardContext) -> list[Finding]:
    try:
        old = parse_policy(json.dumps(change.before["policy"]))  # type: ignore[index]
    except PolicyError:
        return []
    before = {(p.principal, p.action) for p in who_can(old, grants, ctx.principals, facts)}
    after = {(p.principal, p.action) for p in who_can(new, grants, ctx.principals, facts)}
    lost: dict[str, list[str]] = {}
    for principal, action in sorted(before - after):
        lost.setdefault(principal, []).append(action)
    return [_finding("G303", change.address, f"{change.address}: {principal} loses {', '.join(actions)}",
                     "intended? then nothing to do; otherwise keep the statement that allowed it", WARNING)
            for principal, actions in sorted(lost.items())]


# --- disabling a key in use --------------------------------------------------------------

def _disables(changes: Sequence[Change], live: LiveState, ctx: GuardContext) -> list[Finding]:
    found = _while_disabled(changes)
    by_id = {(key.key_id, key.region): key for key in live.keys}
    for change in changes:
        if change.kind in ("key", "replica") and change.actions == (UPDATE,) \
                and change.before["enabled"] and not change.after["enabled"]:
            key = by_id.get((change.key_id, change.region))
            used = _recent(key.arn if key else None, ctx)
            if ctx.last_use is None:
                found.append(_finding(
                    "G401", change.address, f"{change.address} is being disabled and its last use cannot be read "
                                            "from this backend", "check its use in CloudTrail first", WARNING))
            elif used:
                found.append(_finding(
                    "G401", change.address,
                    f"{change.address} is being disabled but was used at {used.isoformat(timespec='seconds')}",
                    "every caller using it will get DisabledException; make sure none still does", WARNING))
    return found


def _while_disabled(changes: Sequence[Change]) -> list[Finding]:
    """G402: KMS refuses CreateGrant and rotation changes on a disabled key, and apply never
    enables a key the stack declares disabled, not even for a moment."""
    stays_disabled = {c.address for c in changes if c.kind in ("key", "replica") and c.before and c.after
                      and not c.before["enabled"] and not c.after["enabled"]}
    found = []
    for change in changes:
        before, after = change.before or {}, change.after or {}
        if change.kind == GRANT and CREATE in change.actions:
            key_address, what = grant_key_address(change.address), "create grants on"
        elif change.address in stays_disabled and before["rotation"] != after["rotation"]:
            key_address, what = change.address, "change the rotation of"
        else:
            continue
        if key_address in stays_disabled:
            found.append(_finding(
                "G402", change.address, f"{change.address}: {key_address} is disabled, and KMS refuses to {what} "
                "a disabled key", f"enable {key_address} in the stack for one apply (the change is made with it), "
                "then disable it again" + ("; or drop the grant" if change.kind == GRANT else "")))
    return found


# --- aliases -----------------------------------------------------------------------------

def _aliases(changes: Sequence[Change], live: LiveState) -> list[Finding]:
    found: list[Finding] = []
    by_id = {(key.key_id, key.region): key for key in live.keys}
    keys = {c.address: c for c in changes if c.kind in ("key", "replica")}
    deleted_ids = {(c.key_id, c.region) for c in keys.values() if c.actions == (DELETE,)}
    for change in changes:
        if change.kind != ALIAS:
            continue
        if change.actions == (UPDATE,):
            before, after = change.before or {}, change.after or {}
            if (before.get("target_key_id"), change.region) not in by_id:
                found.append(_finding(
                    "G503", change.address, f"{change.address} already exists and points at "
                    f"{before.get('target_key_id')}, a key this stack does not own",
                    "choose another alias name, or delete or import that alias's key first"))
                continue
            old, new = by_id[(before["target_key_id"], change.region)], keys.get(after["target"])
            new_state = (new.after or {}) if new else {}
            if new_state and (old.spec, old.usage) != (new_state.get("spec"), new_state.get("usage")):
                found.append(_finding(
                    "G501", change.address,
                    f"{change.address} would move from a {old.spec}/{old.usage} key to a "
                    f"{new_state.get('spec')}/{new_state.get('usage')} key; callers using the alias would break",
                    "point the alias at a key of the same spec and usage, or give the new key a new alias"))
        if change.actions != (DELETE,) and ((change.after or {}).get("target_key_id"), change.region) in deleted_ids:
            found.append(_finding(
                "G502", change.address, f"{change.address} would point at a key scheduled for deletion",
                "repoint or remove the alias in the same plan"))
    return found
