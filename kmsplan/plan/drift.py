"""Drift: the same diff as a plan, reported per attribute as live value versus declared value.

Plus what a plan leaves alone but a reviewer must see: grants on managed keys that the
reconciler did not create (out of band), and keys found Disabled or PendingDeletion.
"""

from __future__ import annotations

from collections.abc import Sequence

from kmsplan.plan.diff import COMPARED, GRANT_NAME_PREFIX
from kmsplan.plan.live import LiveState
from kmsplan.plan.model import ALIAS, CREATE, DELETE, GRANT, UPDATE, Change, Drift


def drift_items(changes: Sequence[Change], live: LiveState) -> list[Drift]:
    items: list[Drift] = []
    for change in changes:
        if change.is_noop:
            continue
        before, after = change.before or {}, change.after or {}
        if change.actions == (CREATE,):
            items.append(Drift(change.address, change.kind, change.region, "exists", False, True,
                               "declared in the stack but missing from the live store"))
        elif change.actions == (DELETE,):
            what = {"alias": "an alias on a key of this stack that the stack does not declare",
                    "grant": "a grant the reconciler created that the stack no longer declares"}.get(
                change.kind, "a key tagged for this stack that the stack no longer declares")
            items.append(Drift(change.address, change.kind, change.region, "undeclared", True, False, what))
        elif change.kind == GRANT:
            items.append(Drift(change.address, GRANT, change.region, "grant", before, after,
                               "the live grant differs from the declared one"))
        elif change.kind == ALIAS:
            items.append(Drift(change.address, ALIAS, change.region, "target",
                               before.get("target") or before.get("target_key_id"), after.get("target"),
                               f"the alias points at key {before.get('target_key_id')}, not the declared key"))
        elif change.actions == (UPDATE,):
            items += _key_items(change)
    items += _foreign_grants(live)
    return sorted(items, key=lambda d: (d.address, d.attribute))


def _key_items(change: Change) -> list[Drift]:
    before, after = change.before or {}, change.after or {}
    items = []
    if before.get("pending_deletion"):
        items.append(Drift(change.address, change.kind, change.region, "state", "PendingDeletion",
                           "Enabled" if after.get("enabled") else "Disabled",
                           "the key is scheduled for deletion; nobody declared that"))
    elif before.get("enabled") != after.get("enabled"):
        items.append(Drift(change.address, change.kind, change.region, "state",
                           "Enabled" if before.get("enabled") else "Disabled",
                           "Enabled" if after.get("enabled") else "Disabled",
                           "the key was disabled out of band" if after.get("enabled") else "the key is enabled"))
    for name in COMPARED:
        if name in ("enabled", "pending_deletion") or before.get(name) == after.get(name):
            continue
        items.append(Drift(change.address, change.kind, change.region, name, before.get(name), after.get(name),
                           f"the live {name.replace('_', ' ')} is not the declared one"))
    return items


def _foreign_grants(live: LiveState) -> list[Drift]:
    items = []
    for key in live.keys:
        if key.pending_deletion or not key.address:
            continue
        for grant in key.grants:
            if (grant.name or "").startswith(GRANT_NAME_PREFIX):
                continue
            address = "grant." + key.address[len("key."):] + f".{grant.name or grant.grant_id[:12]}"
            items.append(Drift(address, GRANT, key.region, "undeclared",
                               {"grant_id": grant.grant_id, "grantee": grant.grantee,
                                "operations": list(grant.operations)}, None,
                               "a grant on a managed key created out of band (the stack does not declare it)"))
    return items
