"""Desired minus live: the changes that make the store match a stack (STYLE 2).

Keys are compared per *copy*: one (key name, region) pair for a single-Region key, one per region
for a multi-Region key (the primary's region and each replica's). Desired copies missing live are
created, live copies no longer declared are deleted, and the intersection is compared attribute
by attribute. Aliases and grants follow the same set algebra on their addresses. Everything is
sorted by address so plans are stable across runs. Nothing here writes to the store.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from datetime import datetime, timedelta
from typing import Any

from kmsplan.plan.live import LiveGrant, LiveKey, LiveState, parse_address
from kmsplan.plan.model import (
    ALIAS, CREATE, DELETE, GRANT, KEY, NOOP, REPLACE, REPLICA, UPDATE, Change,
)
from kmsplan.plan.policies import canonical
from kmsplan.stack.model import GrantDecl, KeySpecDecl, ReplicaDecl, Stack
from kmsplan.store.ops_keys import default_policy

GRANT_NAME_PREFIX = "kmsplan:"  # grants the reconciler creates; others on a managed key are drift


@dataclass(frozen=True)
class DesiredCopy:
    key: KeySpecDecl
    region: str
    decl: KeySpecDecl | ReplicaDecl

    @property
    def is_primary(self) -> bool:
        return self.region == self.key.region

    @property
    def address(self) -> str:
        return self.decl.address


def desired_copies(stack: Stack) -> dict[tuple[str, str], DesiredCopy]:
    copies: dict[tuple[str, str], DesiredCopy] = {}
    for key in stack.keys:
        copies[(key.name, key.region)] = DesiredCopy(key, key.region, key)
        for replica in key.replicas:
            copies[(key.name, replica.region)] = DesiredCopy(key, replica.region, replica)
    return copies


def live_copies(live: LiveState) -> dict[tuple[str, str], LiveKey]:
    """Live keys by (key name, region); a key whose address tag is unreadable is keyed by its id."""
    found: dict[tuple[str, str], LiveKey] = {}
    for key in live.keys:
        parsed = parse_address(key.address or "")
        name = parsed[0] if parsed else f"?{key.key_id}"
        previous = found.get((name, key.region))
        # two live copies for one address (an interrupted import, say): keep the usable one
        if previous is None or previous.pending_deletion and not key.pending_deletion:
            found[(name, key.region)] = key
    return found


# --- attributes --------------------------------------------------------------------------

def desired_attributes(copy: DesiredCopy, account: str) -> dict[str, Any]:
    key, decl = copy.key, copy.decl
    policy = json.loads(decl.policy.text) if decl.policy else json.loads(default_policy(account))
    rotation = None
    if copy.is_primary and key.spec == "SYMMETRIC_DEFAULT":
        rotation = {"enabled": key.rotation.enabled,
                    "period_days": key.rotation.period_days if key.rotation.enabled else None}
    return {
        "address": copy.address, "name": key.name, "region": copy.region, "spec": key.spec,
        "usage": key.usage, "multi_region": key.multi_region, "origin": "AWS_KMS",
        "primary_region": key.region if key.multi_region else None,
        "description": decl.description, "enabled": decl.enabled, "pending_deletion": False,
        "rotation": rotation, "policy": policy, "tags": dict(decl.tags),
        "protect": key.protect, "deletion_window_days": decl.deletion_window_days,
        "bypass_policy_lockout_safety_check": decl.bypass_policy_lockout_safety_check,
    }


def live_attributes(key: LiveKey) -> dict[str, Any]:
    parsed = parse_address(key.address or "")
    rotation = None
    if key.rotation_enabled is not None and key.multi_region_type != "REPLICA":
        rotation = {"enabled": key.rotation_enabled,
                    "period_days": key.rotation_period if key.rotation_enabled else None}
    return {
        "address": key.address, "name": parsed[0] if parsed else None, "region": key.region,
        "spec": key.spec, "usage": key.usage, "multi_region": key.multi_region, "origin": key.origin,
        "primary_region": key.primary_region if key.multi_region else None,
        "description": key.description, "enabled": key.state == "Enabled",
        "pending_deletion": key.pending_deletion, "rotation": rotation, "policy": json.loads(key.policy),
        "tags": key.user_tags, "protect": key.protected, "deletion_window_days": key.deletion_window,
        "bypass_policy_lockout_safety_check": False,
    }


#: attributes compared between live and desired (the bypass flag is a request option, not state)
COMPARED = ("address", "spec", "usage", "multi_region", "origin", "primary_region", "description",
            "enabled", "pending_deletion", "rotation", "policy", "tags", "protect", "deletion_window_days")
IMMUTABLE = ("spec", "usage", "multi_region", "origin")


@lru_cache(maxsize=4096)
def _canonical_text(text: str) -> str | None:
    """Canonical form of a policy text, cached: most keys of a stack share a few policy texts."""
    try:
        return json.dumps(canonical(text), sort_keys=True)
    except Exception:  # an unparseable live policy is a difference, shown as such
        return None


def _same_policy(before: str, after: str) -> bool:
    form = _canonical_text(before)
    return form is not None and form == _canonical_text(after)


def _key_change(copy: DesiredCopy, live: LiveKey, account: str) -> Change:
    before, after = live_attributes(live), desired_attributes(copy, account)
    desired_text = copy.decl.policy.text if copy.decl.policy else default_policy(account)
    if _same_policy(live.policy, desired_text):
        after["policy"] = before["policy"]  # semantic equality: no perpetual diff
    changed = [name for name in COMPARED if before[name] != after[name]]
    kind = KEY if copy.is_primary else REPLICA
    if not changed:
        return Change(copy.address, kind, copy.region, (NOOP,), before, after, key_id=live.key_id)
    reason = "cancel the scheduled deletion" + (" and enable" if after["enabled"] else "") \
        if live.pending_deletion else f"{', '.join(changed)} {'differs' if len(changed) == 1 else 'differ'}"
    return Change(copy.address, kind, copy.region, (UPDATE,), before, after, reason, live.key_id)


def _deletion(live: LiveKey, now: datetime, reason: str) -> Change:
    before = live_attributes(live)
    kind = REPLICA if live.multi_region_type == "REPLICA" else KEY
    address = live.address or f"key[{live.region}].{live.key_id}"
    window = live.deletion_window
    deletion_date = (now + timedelta(days=window)).isoformat(timespec="seconds")
    return Change(address, kind, live.region, (DELETE,), before, None,
                  f"{reason}; deletion scheduled with a {window}-day window, on {deletion_date[:10]}",
                  live.key_id, deletion_date)


# --- grants and aliases ------------------------------------------------------------------

def grant_attributes(grant: GrantDecl | LiveGrant) -> dict[str, Any]:
    if isinstance(grant, LiveGrant):
        constraints = None
        if grant.constraints:
            constraints = {"encryption_context_equals": dict(grant.constraints.get("EncryptionContextEquals") or {})
                           or None,
                           "encryption_context_subset": dict(grant.constraints.get("EncryptionContextSubset") or {})
                           or None}
        name = (grant.name or "")[len(GRANT_NAME_PREFIX):] if (grant.name or "").startswith(GRANT_NAME_PREFIX) \
            else grant.name
        return {"name": name, "grant_id": grant.grant_id, "grantee": grant.grantee,
                "operations": sorted(grant.operations), "constraints": constraints,
                "retiring_principal": grant.retiring_principal}
    constraints = None
    if grant.constraints:
        c = grant.constraints
        constraints = {"encryption_context_equals": dict(c.encryption_context_equals) if c.encryption_context_equals
                       else None,
                       "encryption_context_subset": dict(c.encryption_context_subset) if c.encryption_context_subset
                       else None}
    return {"name": grant.name, "grant_id": None, "grantee": grant.grantee, "operations": sorted(grant.operations),
            "constraints": constraints, "retiring_principal": grant.retiring_principal}


def _same_grant(before: dict[str, Any], after: dict[str, Any]) -> bool:
    return all(before[k] == after[k] for k in ("grantee", "operations", "constraints", "retiring_principal"))


def _grant_changes(copy: DesiredCopy, address: str, live: LiveKey | None) -> list[Change]:
    """Grants of one key copy: declared ones by name; live ones the reconciler created and the
    stack no longer declares are revoked. Grants are immutable, so a change is a replacement."""
    declared = {g.name: g for g in copy.decl.grants}
    ours: dict[str, list[LiveGrant]] = {}
    for grant in live.grants if live else ():
        if (grant.name or "").startswith(GRANT_NAME_PREFIX):
            ours.setdefault(grant.name[len(GRANT_NAME_PREFIX):], []).append(grant)
    region = copy.region
    key_id = live.key_id if live else None
    changes: list[Change] = []
    for name in sorted(set(declared) | set(ours)):
        decl, found = declared.get(name), ours.get(name, [])
        grant_address = decl.address if decl else _grant_address(address, name)
        after = grant_attributes(decl) if decl else None
        keep = next((g for g in found if after and _same_grant(grant_attributes(g), after)), None)
        extra = [g for g in found if g is not keep]
        if decl and keep:
            changes.append(Change(grant_address, GRANT, region, (NOOP,), grant_attributes(keep),
                                  {**after, "grant_id": keep.grant_id}, key_id=key_id))
        elif decl and extra:
            changes.append(Change(grant_address, GRANT, region, REPLACE, grant_attributes(extra[0]), after,
                                  "grants are immutable: a changed grant is replaced", key_id))
            extra = extra[1:]
        elif decl:
            changes.append(Change(grant_address, GRANT, region, (CREATE,), None, after, "declared, not live", key_id))
        for grant in extra:
            suffix = "" if not decl and grant is found[0] else f"#{grant.grant_id[:8]}"
            changes.append(Change(grant_address + suffix, GRANT, region, (DELETE,), grant_attributes(grant), None,
                                  "no longer declared" if not decl else "duplicate of the declared grant", key_id))
    return changes


def _grant_address(key_address: str, name: str) -> str:
    """`grant.<key>.<name>` or `grant.<key>.replica[<region>].<name>` from the key's address."""
    return "grant." + key_address[len("key."):] + "." + name


def grant_key_address(address: str) -> str:
    """The key address of a grant address (a duplicate's `#id` suffix ignored):
    grant.NAME.GRANT -> key.NAME; grant.NAME.replica[R].GRANT -> key.NAME.replica[R]."""
    head, _, _ = address[len("grant."):].split("#", 1)[0].rpartition(".")
    return "key." + head


def _alias_changes(stack: Stack, live: LiveState, address_ids: dict[str, str | None],
                   owned_ids: set[tuple[str, str]]) -> list[Change]:
    changes: list[Change] = []
    declared = {(a.region, a.name): a for a in stack.aliases}
    id_to_address = {(key.key_id, key.region): key.address for key in live.keys}
    for (region, name), alias in sorted(declared.items()):
        target_id = address_ids.get(alias.target)
        after = {"name": name, "region": region, "target": alias.target, "target_key_id": target_id}
        current = live.aliases.get(region, {}).get(name)
        if current is None:
            changes.append(Change(alias.address, ALIAS, region, (CREATE,), None, after, "declared, not live"))
            continue
        before = {"name": name, "region": region, "target": id_to_address.get((current, region)),
                  "target_key_id": current}
        if current == target_id:
            changes.append(Change(alias.address, ALIAS, region, (NOOP,), before, after))
        elif (current, region) in owned_ids:
            changes.append(Change(alias.address, ALIAS, region, (UPDATE,), before, after, "repoint to its declared key"))
        else:
            changes.append(Change(alias.address, ALIAS, region, (UPDATE,), before, after,
                                  "the alias exists and points at a key this stack does not own"))
    for region, aliases in sorted(live.aliases.items()):
        for name, target in sorted(aliases.items()):
            if (target, region) in owned_ids and (region, name) not in declared:
                before = {"name": name, "region": region, "target": id_to_address.get((target, region)),
                          "target_key_id": target}
                changes.append(Change(f"alias[{region}].{name}", ALIAS, region, (DELETE,), before, None,
                                      "points at a key of this stack but is not declared"))
    return changes


# --- the whole diff ----------------------------------------------------------------------

def diff(stack: Stack, live: LiveState, now: datetime) -> list[Change]:
    """Every change, sorted by address: keys and replicas, grants, aliases."""
    desired, current = desired_copies(stack), live_copies(live)
    changes: list[Change] = []
    address_ids: dict[str, str | None] = {}
    for ident in sorted(set(desired) | set(current)):
        copy, found = desired.get(ident), current.get(ident)
        if copy is not None:
            address_ids[copy.address] = found.key_id if found else None
        if copy and found:
            changes.append(_key_change(copy, found, stack.account))
        elif copy:
            after = desired_attributes(copy, stack.account)
            reason = "declared, not live" if copy.is_primary or not copy.key.multi_region \
                else f"replicate from {copy.key.region}"
            changes.append(Change(copy.address, KEY if copy.is_primary else REPLICA, copy.region, (CREATE,),
                                  None, after, reason))
        elif found and not found.pending_deletion:
            changes.append(_deletion(found, now, "no longer declared in the stack"))
        if copy:  # a deleted key takes its grants with it
            changes += _grant_changes(copy, copy.address, found)
    owned = {(key.key_id, key.region) for key in live.keys}
    changes += _alias_changes(stack, live, address_ids, owned)
    return sorted(changes, key=lambda c: c.address)
