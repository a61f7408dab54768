"""Who can use a key? Offline analysis of a key policy, IAM policies and grants.

The planner uses it to show, in a plan, every path by which each known principal can perform
each KMS action on a key, and to check claims such as "exactly these principals can decrypt".
Conditions that the principal and the key alone decide (tags, org id, key spec, caller
account...) are evaluated away; conditions on the request (encryption context, via service...)
remain as text, because only the request can decide them.
"""

from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Iterable, Mapping, Sequence

from kmsplan.policy.conditions import Condition, compile_template, parse_template
from kmsplan.policy.document import KMS_ACTIONS, Policy
from kmsplan.policy.evaluate import (
    ACCOUNT, DIRECT, GRANT_OPERATIONS, Caller, CompiledStatement, Grant, KeyFacts, Principal,
    Request, compiled, constraint_applies, iam_source, is_grantee,
)

#: actions that do not target a key, so never appear in a key's who-can report
_NOT_ON_A_KEY = frozenset(f"kms:{name}" for name in (
    "CreateKey", "CreateCustomKeyStore", "DeleteCustomKeyStore", "DescribeCustomKeyStores",
    "ConnectCustomKeyStore", "DisconnectCustomKeyStore", "UpdateCustomKeyStore", "GenerateRandom",
    "ListKeys", "ListAliases", "ListRetirableGrants",
))
KEY_ACTIONS: tuple[str, ...] = tuple(a for a in KMS_ACTIONS if a not in _NOT_ON_A_KEY)


@dataclass(frozen=True, order=True)
class AccessPath:
    """One way `principal` can perform `action`, provided `conditions` hold on the request."""

    principal: str
    action: str
    layer: str                     # "key-policy" | "iam" | "grant"
    source: str                    # Sid / "#<index>", "iam:<arn>#<policy>/<statement>", grant id
    conditions: tuple[str, ...]


def who_can(key_policy: Policy, grants: Sequence[Grant], principals: Sequence[Principal],
            key: KeyFacts, actions: Sequence[str] | None = None) -> list[AccessPath]:
    """Every path that allows each principal each action (default: every key action), sorted."""
    paths: set[AccessPath] = set()
    for principal in principals:
        for action in actions if actions is not None else KEY_ACTIONS:
            paths.update(_paths(key_policy, grants, principal, key, action))
    return sorted(paths)


def can(key_policy: Policy, grants: Sequence[Grant], principals: Sequence[Principal],
        key: KeyFacts, action: str, *, unconditionally: bool = False) -> set[str]:
    """The ARNs of `principals` with at least one path to `action` (with `unconditionally`:
    a path that needs nothing from the request)."""
    return {p.principal for p in who_can(key_policy, grants, principals, key, [action])
            if not (unconditionally and p.conditions)}


def _paths(key_policy: Policy, grants: Sequence[Grant], principal: Principal, key: KeyFacts,
           action: str) -> list[AccessPath]:
    request = Request(action, principal, key)
    lower = action.lower()
    who = Caller.of(principal.arn)
    caveats: list[str] = []
    direct: list[tuple[CompiledStatement, tuple[str, ...]]] = []
    gates: list[tuple[CompiledStatement, tuple[str, ...]]] = []
    for st in compiled(key_policy).for_action(lower):
        kind = st.principal(who)
        remaining = _remaining(st, request) if kind and st.resource(request) else None
        if remaining is None:
            continue
        if not st.allow:
            if not remaining:
                return []  # denied whatever the request carries
            caveats.append("unless: " + " and ".join(remaining))
        elif kind == DIRECT and who.local_to(key):
            direct.append((st, remaining))
        elif kind in (DIRECT, ACCOUNT):
            gates.append((st, remaining))
    iam: list[tuple[str, tuple[str, ...]]] = []
    for index, policy in enumerate(principal.policies):
        for st in compiled(policy).for_action(lower):
            remaining = _remaining(st, request) if st.resource(request) else None
            if remaining is None:
                continue
            if not st.allow:
                if not remaining:
                    return []
                caveats.append("unless: " + " and ".join(remaining))
            else:
                iam.append((iam_source(principal.arn, index, st.statement), remaining))
    tail = tuple(caveats)
    out = [AccessPath(principal.arn, action, "key-policy", st.label, rem + tail)
           for st, rem in direct]
    for gate, gate_rem in gates:
        if who.is_root:  # the account root needs no IAM policy in its own account
            out.append(AccessPath(principal.arn, action, "key-policy", gate.label, gate_rem + tail))
        for source, rem in iam:
            out.append(AccessPath(principal.arn, action, "iam", source,
                                  _merge(gate_rem, rem) + tail))
    out.extend(AccessPath(principal.arn, action, "grant", grant.grant_id, rem + tail)
               for grant, rem in _grants(grants, who, key, action))
    return out


def _remaining(st: CompiledStatement, request: Request) -> tuple[str, ...] | None:
    """Decide what the principal and key decide; None when that makes the statement not apply,
    else the text of the conditions only a request can decide."""
    remaining: list[str] = []
    for condition, check in zip(st.statement.conditions, st.checks, strict=True):
        if condition.determined:
            if not check(request):
                return None
        else:
            remaining.append(_describe(condition, request))
    return tuple(remaining)


def _describe(condition: Condition, request: Request) -> str:
    """The condition as text, with policy variables filled in from the principal."""
    values = []
    for value in condition.values:
        template = parse_template(value)
        rendered = compile_template(template, pattern=False)(request) \
            if not isinstance(template, str) else None
        values.append(rendered if rendered is not None else value)
    return condition.describe(values)


def _grants(grants: Sequence[Grant], who: Caller, key: KeyFacts,
            action: str) -> Iterable[tuple[Grant, tuple[str, ...]]]:
    if action[:4].lower() != "kms:" or action[4:] not in GRANT_OPERATIONS:
        return
    operation = action[4:]
    for grant in grants:
        if operation not in grant.operations or not is_grantee(grant.grantee, who):
            continue
        texts: list[str] = []
        if constraint_applies(grant, operation, key):
            if grant.encryption_context_equals is not None:
                texts.append("only with encryption context exactly "
                             + _pairs(grant.encryption_context_equals))
            if grant.encryption_context_subset is not None:
                texts.append("only with encryption context "
                             + _pairs(grant.encryption_context_subset))
        yield grant, tuple(texts)


def _pairs(context: Mapping[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(context.items())) or "(empty)"


def _merge(first: tuple[str, ...], second: tuple[str, ...]) -> tuple[str, ...]:
    return first + tuple(c for c in second if c not in first)
