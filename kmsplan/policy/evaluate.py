"""AWS KMS authorization: key policy, IAM identity policies and grants, decided per request.

The key policy is authoritative. IAM policies count only where the key policy lets them (a
statement naming the principal's account root delegates to that account's IAM), cross-account
access needs both sides, grants allow exactly their operations, and an explicit Deny anywhere
(key policy or IAM) beats every Allow, grants included. This runs on the store's hot path, so
each `Policy` is compiled once (action sets, regexes, condition predicates) and memoized on it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from types import MappingProxyType
from collections.abc import Collection, Mapping, Sequence

from kmsplan.policy.conditions import (
    Check, Template, compile_condition, compile_template, parse_template,
)
from kmsplan.policy.document import KMS_ACTIONS, Policy, Statement, action_matches

_EMPTY: Mapping[str, str] = MappingProxyType({})

#: operations a grant can allow (CreateGrant's GrantOperations); anything else never via a grant
GRANT_OPERATIONS = frozenset({
    "Decrypt", "Encrypt", "GenerateDataKey", "GenerateDataKeyWithoutPlaintext", "ReEncryptFrom",
    "ReEncryptTo", "Sign", "Verify", "GetPublicKey", "CreateGrant", "RetireGrant", "DescribeKey",
    "GenerateDataKeyPair", "GenerateDataKeyPairWithoutPlaintext", "GenerateMac", "VerifyMac",
    "DeriveSharedSecret",
})
#: operations that take an encryption context; grant constraints apply only to these
CONTEXT_OPERATIONS = frozenset({
    "Decrypt", "Encrypt", "GenerateDataKey", "GenerateDataKeyWithoutPlaintext", "ReEncryptFrom",
    "ReEncryptTo", "GenerateDataKeyPair", "GenerateDataKeyPairWithoutPlaintext", "CreateGrant",
})
DIRECT, ACCOUNT = 1, 2  # how a key policy statement's principal matched


@dataclass(frozen=True)
class Principal:
    """A registered IAM identity; `policies` are its identity policies (kind="identity")."""

    arn: str
    org_id: str | None = None
    tags: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    policies: tuple[Policy, ...] = ()

    @property
    def account(self) -> str:
        """The 12-digit account id from the ARN ("" for a service principal)."""
        parts = self.arn.split(":", 5)
        return parts[4] if len(parts) == 6 else ""


@dataclass(frozen=True)
class KeyFacts:
    """What the evaluator needs to know about the key a request targets."""

    arn: str
    key_id: str
    account: str
    region: str
    spec: str = "SYMMETRIC_DEFAULT"
    usage: str = "ENCRYPT_DECRYPT"
    origin: str = "AWS_KMS"
    multi_region: bool = False
    multi_region_type: str | None = None
    aliases: tuple[str, ...] = ()
    tags: Mapping[str, str] = field(default_factory=lambda: _EMPTY)


@dataclass(frozen=True)
class Grant:
    """A grant on the key; exactly one or neither of the two context constraints is set."""

    grant_id: str
    grantee: str
    operations: tuple[str, ...]
    encryption_context_equals: Mapping[str, str] | None = None
    encryption_context_subset: Mapping[str, str] | None = None
    retiring_principal: str | None = None
    name: str | None = None


@dataclass(frozen=True)
class Request:
    """One API call to authorize. `attributes` holds other condition keys by canonical name
    ("kms:ViaService", "kms:GrantOperations" (a list), "aws:RequestTag/K", ...).

    For kms:CreateGrant, pass the new grant's constraint pairs as `encryption_context` and its
    constraint kind as the "kms:GrantConstraintType" attribute ("EncryptionContextEquals" when it
    has one): a grant that allows CreateGrant under a constraint then admits only derived grants
    that are as strict (an EncryptionContextEquals grant admits only EncryptionContextEquals).
    """

    action: str
    principal: Principal
    key: KeyFacts
    encryption_context: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    attributes: Mapping[str, object] = field(default_factory=lambda: _EMPTY)


@dataclass(frozen=True)
class Decision:
    """The answer, why, and which statements or grants decided it (for audit records)."""

    allowed: bool
    reason: str
    via: tuple[str, ...]


# --- who is asking ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Caller:
    """A principal ARN taken apart once (cached): what statement and grant matching needs."""

    arn: str
    account: str
    role: tuple[str, str] | None  # (account, role name) for a role or a session of it
    is_root: bool

    @property
    def is_session(self) -> bool:
        return ":assumed-role/" in self.arn

    def local_to(self, key: KeyFacts) -> bool:
        """Same account as the key, or a service principal (services act in the key's account):
        then a key policy statement naming the caller suffices on its own."""
        return self.account == key.account or not self.arn.startswith("arn:")

    @classmethod
    @lru_cache(maxsize=4096)
    def of(cls, arn: str) -> Caller:
        parts = arn.split(":", 5)
        account = parts[4] if len(parts) == 6 else ""
        resource = parts[5] if len(parts) == 6 else ""
        role = None
        if resource.startswith("assumed-role/") or resource.startswith("role/"):
            names = resource.split("/")
            role = (account, names[1] if names[0] == "assumed-role" else names[-1])
        return cls(arn, account, role, resource == "root")


def _role_key(arn: str) -> tuple[str, str] | None:
    return Caller.of(arn).role


# --- compiled statements ---------------------------------------------------------------------

_KNOWN = tuple(a.lower() for a in KMS_ACTIONS)


class CompiledStatement:
    """One statement, prepared so that each check is a set lookup or a precompiled regex."""

    __slots__ = ("statement", "label", "allow", "_actions", "_patterns", "_not_action",
                 "_any_resource", "_resources", "_not_resource", "_principal_kind", "_star",
                 "_arns", "_roles", "_roots", "checks")

    def __init__(self, statement: Statement) -> None:
        self.statement = statement
        self.label = statement.label
        self.allow = statement.is_allow
        patterns = statement.actions if statement.actions is not None else statement.not_actions
        self._patterns = tuple(patterns or ())
        self._not_action = statement.actions is None
        self._actions = {a: any(action_matches(p, a) for p in self._patterns) for a in _KNOWN}
        resources = statement.resources if statement.resources is not None \
            else statement.not_resources
        self._not_resource = statement.resources is None
        self._any_resource = "*" in (resources or ())
        templates = [t for t in (parse_template(r) for r in resources or ())
                     if isinstance(t, Template)]
        self._resources = tuple(compile_template(t, pattern=True) for t in templates)
        names = statement.principals if statement.principals is not None \
            else statement.not_principals
        self._principal_kind = "none" if names is None else (
            "in" if statement.principals is not None else "not-in")
        names = names or ()
        self._star = "*" in names
        self._arns = frozenset(names)
        self._roles = frozenset(r for r in (_role_key(n) for n in names if ":role/" in n) if r)
        self._roots = frozenset(n.split(":")[4] for n in names if n.endswith(":root"))
        self.checks: tuple[Check, ...] = tuple(compile_condition(c) for c in statement.conditions)

    def action(self, action: str) -> bool:
        hit = self._actions.get(action)
        if hit is None:
            hit = any(action_matches(p, action) for p in self._patterns)
        return hit != self._not_action

    def resource(self, request: Request) -> bool:
        if self._any_resource:
            return not self._not_resource
        arn = request.key.arn
        hit = False
        for render in self._resources:
            pattern = render(request)
            if pattern is None:
                return False  # an unresolvable variable makes the statement invalid
            if re.fullmatch(pattern, arn, re.DOTALL):
                hit = True
                break
        return hit != self._not_resource

    def principal(self, who: Caller) -> int:
        """0 (no match), DIRECT, or ACCOUNT (the account root delegating to IAM)."""
        if self._principal_kind == "none":
            return DIRECT
        named = self._named(who)
        if self._principal_kind == "in":
            return named
        # NotPrincipal: like IAM, a principal escapes only if it AND its account are excluded
        excluded = self._star or (named == DIRECT and (who.is_root or who.account in self._roots))
        return 0 if excluded else DIRECT

    def _named(self, who: Caller) -> int:
        if self._star or who.arn in self._arns or (who.role and who.role in self._roles):
            return DIRECT
        if who.account in self._roots:
            return DIRECT if who.is_root else ACCOUNT
        return 0

    def conditions(self, request: Request) -> bool:
        for check in self.checks:
            if not check(request):
                return False
        return True


def iam_source(arn: str, policy_index: int, statement: Statement) -> str:
    """How reports name an identity policy statement: "iam:<arn>#<policy>/<Sid or index>"."""
    return f"iam:{arn}#{policy_index}/{statement.sid or statement.index}"


class CompiledPolicy:
    """A policy's compiled statements, plus, per action, the statements that name it (most
    statements of a real key policy never apply to a given action: skip them up front)."""

    __slots__ = ("statements", "_by_action")

    def __init__(self, policy: Policy) -> None:
        self.statements = tuple(CompiledStatement(s) for s in policy.statements)
        self._by_action: dict[str, tuple[CompiledStatement, ...]] = {}

    def for_action(self, action: str) -> tuple[CompiledStatement, ...]:
        """Statements whose Action / NotAction covers `action` (lower-case)."""
        found = self._by_action.get(action)
        if found is None:
            found = tuple(st for st in self.statements if st.action(action))
            if len(self._by_action) < 512:
                self._by_action[action] = found
        return found


def compiled(policy: Policy) -> CompiledPolicy:
    """The compiled form, built on first use and kept on the (immutable) `Policy`."""
    found = policy._cache.get("compiled")
    if found is None:
        found = policy._cache["compiled"] = CompiledPolicy(policy)
    return found


# --- authorization ---------------------------------------------------------------------------

def authorize(request: Request, key_policy: Policy, grants: Sequence[Grant] = ()) -> Decision:
    """Decide one request the way AWS KMS does (see the module docstring)."""
    if key_policy.kind != "key":  # an identity policy has no Principal: it would admit anyone
        raise ValueError("authorize() needs a key policy (parse_policy(..., kind='key'))")
    action = request.action.lower()
    principal = request.principal
    who = Caller.of(principal.arn)
    direct: CompiledStatement | None = None
    delegated: CompiledStatement | None = None
    for st in compiled(key_policy).for_action(action):
        kind = st.principal(who)
        if not kind or not st.resource(request) or not st.conditions(request):
            continue
        if not st.allow:
            return Decision(False, f"explicitly denied by key policy statement '{st.label}'",
                            (f"key-policy:{st.label}",))
        if kind == DIRECT and direct is None:
            direct = st
        elif kind == ACCOUNT and delegated is None:
            delegated = st
    iam_allow: str | None = None
    for index, policy in enumerate(principal.policies):
        for st in compiled(policy).for_action(action):
            if st.resource(request) and st.conditions(request):
                source = iam_source(principal.arn, index, st.statement)
                if not st.allow:
                    return Decision(False, f"explicitly denied by IAM policy statement "
                                           f"'{st.label}' of {principal.arn}", (source,))
                iam_allow = iam_allow or source
    same_account = who.local_to(request.key)
    if direct is not None and same_account:
        return Decision(True, f"allowed by key policy statement '{direct.label}'",
                        (f"key-policy:{direct.label}",))
    gate = direct or delegated
    if gate is not None and who.is_root:
        return Decision(True, f"allowed by key policy statement '{gate.label}' (account root)",
                        (f"key-policy:{gate.label}",))
    if gate is not None and iam_allow is not None:
        return Decision(True, f"allowed by IAM policy {iam_allow[4:]}, which key policy statement "
                              f"'{gate.label}' lets count", (f"key-policy:{gate.label}", iam_allow))
    grant = _grant_for(request, grants, who)
    if grant is not None:
        return Decision(True, f"allowed by grant '{grant.name or grant.grant_id}'",
                        (f"grant:{grant.grant_id}",))
    return Decision(False, _why_not(request, who, gate, iam_allow, same_account), ())


def _why_not(request: Request, who: Caller, gate: CompiledStatement | None, iam_allow: str | None,
             same_account: bool) -> str:
    base = f"no statement allows {request.action} for {who.arn}"
    if gate is not None and not same_account:
        return (f"{base}: key policy statement '{gate.label}' admits account {who.account}, but "
                f"cross-account access also needs an IAM policy of {who.arn} allowing "
                f"{request.action} on {request.key.arn}")
    if gate is not None:
        return (f"{base}: key policy statement '{gate.label}' lets IAM policies of account "
                f"{who.account} grant access, but none of {who.arn}'s does")
    if iam_allow is not None:
        return (f"{base}: IAM policy {iam_allow[4:]} allows it, but the key policy does not let "
                f"IAM policies count (it needs a statement for arn:aws:iam::{who.account}:root)")
    return base


def _grant_for(request: Request, grants: Sequence[Grant], who: Caller) -> Grant | None:
    action = request.action
    if action[:4].lower() != "kms:":
        return None
    operation = action[4:]
    if operation not in GRANT_OPERATIONS:
        return None
    for grant in grants:
        if grant.grantee != who.arn and not (who.is_session and is_grantee(grant.grantee, who)):
            continue  # the cheap test first: most grants name someone else
        if operation in grant.operations and _constraint_holds(grant, request, operation):
            return grant
    return None


def is_grantee(grantee: str, who: Caller) -> bool:
    """Grants name a user or role ARN; a session of a granted role uses the grant too."""
    return grantee == who.arn or (who.role is not None and ":role/" in grantee
                                  and _role_key(grantee) == who.role)


def constraint_applies(grant: Grant, operation: str, key: KeyFacts) -> bool:
    """AWS applies grant constraints only to operations that take an encryption context on a
    symmetric key (not to DescribeKey, RetireGrant, or asymmetric and HMAC keys)."""
    has = grant.encryption_context_equals is not None or grant.encryption_context_subset is not None
    return has and operation in CONTEXT_OPERATIONS and key.spec == "SYMMETRIC_DEFAULT"


def _constraint_holds(grant: Grant, request: Request, operation: str) -> bool:
    """Grant constraints: context keys compared case-insensitively, values case-sensitively;
    they apply only to operations that take an encryption context on a symmetric key."""
    if not constraint_applies(grant, operation, request.key):
        return True
    equals, subset = grant.encryption_context_equals, grant.encryption_context_subset
    context = {k.lower(): v for k, v in request.encryption_context.items()}
    if equals is not None and {k.lower(): v for k, v in equals.items()} != context:
        return False
    if equals is not None and operation == "CreateGrant" \
            and request.attributes.get("kms:GrantConstraintType") != "EncryptionContextEquals":
        return False  # a derived grant must be as strict: a Subset constraint would widen Equals
    if subset is not None and any(context.get(k.lower()) != v for k, v in subset.items()):
        return False
    return True


# --- checks the store and planner run before writing -----------------------------------------

def lockout_check(new_policy: Policy, caller: Principal, key: KeyFacts) -> Decision:
    """Could `caller` still call kms:PutKeyPolicy under `new_policy`? (no grants, no context)

    AWS KMS refuses a policy that would lock its author out unless told to bypass the check;
    the store and the planner refuse it when this decision is not allowed.
    """
    decision = authorize(Request("kms:PutKeyPolicy", caller, key), new_policy)
    if decision.allowed:
        return decision
    return Decision(False, f"the new key policy would lock {caller.arn} out: {decision.reason}; "
                           "keep a statement that lets it call kms:PutKeyPolicy", decision.via)


def unknown_principals(policy: Policy, known: Collection[str]) -> list[str]:
    """AWS principal ARNs the policy names that are not in `known` (sorted, no duplicates).

    A role session ARN counts as known when its role is known: AWS matches sessions by role.
    """
    known_roles = {r for r in (_role_key(k) for k in known if ":role/" in k) if r}
    missing: set[str] = set()
    for st in policy.statements:
        for name in (st.principals or ()) + (st.not_principals or ()):
            if name == "*" or not name.startswith("arn:") or name in known:
                continue
            if ":assumed-role/" in name and _role_key(name) in known_roles:
                continue
            missing.add(name)
    return sorted(missing)

