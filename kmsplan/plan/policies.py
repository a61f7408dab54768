"""Semantic policy comparison: two policies are equal when AWS would evaluate them the same way.

Statement order, action/principal/condition-value order, a string versus a one-item list, an
account id versus its root ARN, and the action names' case do not make a diff; anything else
does. Without this, every plan would show a perpetual policy change.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from kmsplan.policy import KMS_ACTIONS, Policy, Statement, parse_policy


_ACTION_SPELLING = {action.lower(): action for action in KMS_ACTIONS}


def _sorted(values: tuple[str, ...] | None, *, fold: bool = False) -> list[str] | None:
    """Sorted, without duplicates; with `fold`, action names in KMS's spelling (IAM ignores case)."""
    if values is None:
        return None
    return sorted({_ACTION_SPELLING.get(v.lower(), v.lower()) if fold else v for v in values})


def canonical_statement(statement: Statement) -> dict[str, Any]:
    """One statement as order-free plain data (absent members left out)."""
    data: dict[str, Any] = {"Effect": statement.effect}
    if statement.sid:
        data["Sid"] = statement.sid
    for name, values, fold in (("Principal", statement.principals, False),
                               ("NotPrincipal", statement.not_principals, False),
                               ("Action", statement.actions, True), ("NotAction", statement.not_actions, True),
                               ("Resource", statement.resources, False),
                               ("NotResource", statement.not_resources, False)):
        if values is not None:
            data[name] = _sorted(values, fold=fold)
    if statement.conditions:
        conditions: dict[str, dict[str, list[str]]] = {}
        for condition in statement.conditions:
            block = conditions.setdefault(condition.operator_name, {})
            block[condition.key] = sorted(set(block.get(condition.key, [])) | set(condition.values))
        data["Condition"] = {op: dict(sorted(keys.items())) for op, keys in sorted(conditions.items())}
    return data


def canonical(policy: Policy | str | Mapping[str, Any]) -> list[dict[str, Any]]:
    """The policy's statements, canonical and sorted: compare two policies with `==`."""
    if not isinstance(policy, Policy):
        policy = parse_policy(policy if not isinstance(policy, Mapping) else json.dumps(policy))
    statements = [canonical_statement(s) for s in policy.statements]
    return sorted(statements, key=lambda s: json.dumps(s, sort_keys=True))


def statement_label(statement: Mapping[str, Any]) -> str:
    """How a plan names a statement: its Sid, or its effect, actions and principals."""
    if statement.get("Sid"):
        return str(statement["Sid"])
    who = statement.get("Principal") or statement.get("NotPrincipal") or ["?"]
    what = statement.get("Action") or statement.get("NotAction") or ["?"]
    return f"{statement['Effect']} {', '.join(what)} for {', '.join(who)}"


def statement_diff(before: list[dict[str, Any]] | None, after: list[dict[str, Any]] | None) -> list[tuple[str, str]]:
    """Statement-level changes: ("+", label) added, ("-", label) removed, ("~", label) changed
    (same Sid, different content). Sorted by label."""
    old = {json.dumps(s, sort_keys=True): s for s in before or []}
    new = {json.dumps(s, sort_keys=True): s for s in after or []}
    removed = [s for k, s in old.items() if k not in new]
    added = [s for k, s in new.items() if k not in old]
    removed_sids = {s["Sid"]: s for s in removed if s.get("Sid")}
    out: list[tuple[str, str]] = []
    for statement in added:
        sid = statement.get("Sid")
        if sid and sid in removed_sids:
            out.append(("~", statement_label(statement)))
            removed.remove(removed_sids.pop(sid))
        else:
            out.append(("+", statement_label(statement)))
    out += [("-", statement_label(s)) for s in removed]
    return sorted(out, key=lambda item: (item[1], item[0]))
