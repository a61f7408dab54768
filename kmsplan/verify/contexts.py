"""Encryption contexts: which one verify may use, and which ones a stack requires of others.

Two questions, both answered with the evaluator the store authorizes with (kmsplan.policy), so
verify never guesses differently from the store:

* Which context can the verifying principal use on this key? A policy may admit a data-key call
  only under `kms:EncryptionContext:KEY` conditions, a grant only under its constraint. verify
  derives candidate contexts from those conditions (values of StringEquals/StringLike, keys of
  `kms:EncryptionContextKeys`, `Null: false`) and from grant constraints, adds its own marker pair
  (`kmsplan-verify`) where the policy tolerates it, and picks the first candidate the policy
  allows for every call it is about to make. None allowed: the check fails and says why.
* Which contexts does the stack require? AES-GCM binds the context to the ciphertext, so a
  wrong context never decrypts; what can silently break is the *policy* that was meant to insist
  on a context. A requirement is a (principal, action) the declared policy and grants allow under
  a derived context but refuse with no context and with that context's values changed; the live
  policy and grants must still do both.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from kmsplan.plan.live import LiveKey
from kmsplan.policy import Decision, Grant, KeyFacts, Policy, Principal, Request, authorize
from kmsplan.policy.conditions import OPERATORS, Template, getter, parse_template
from kmsplan.policy.evaluate import CONTEXT_OPERATIONS
from kmsplan.stack.model import GrantDecl
from kmsplan.store.authz import implied_attributes, request_attributes
from kmsplan.verify.recorder import format_context

MARKER = "kmsplan-verify"
_PREFIX = "kms:EncryptionContext:"
#: actions that take an encryption context (CreateGrant aside: verify creates no grants)
CONTEXT_ACTIONS = tuple(sorted(f"kms:{op}" for op in CONTEXT_OPERATIONS if op != "CreateGrant"))
_STRING_COMPARISONS = ("eq", "eq_ci", "like", "arn")

Context = dict[str, str]


def key_facts(key: LiveKey) -> KeyFacts:
    """What the evaluator knows of a live key, as the store builds it for its own checks."""
    return KeyFacts(arn=key.arn, key_id=key.key_id, account=key.arn.split(":")[4], region=key.region,
                    spec=key.spec, usage=key.usage, origin=key.origin, multi_region=key.multi_region,
                    multi_region_type=key.multi_region_type, aliases=key.aliases, tags=dict(key.tags))


def decide(principal: Principal, facts: KeyFacts, policy: Policy, grants: Sequence[Grant], action: str,
           params: Mapping[str, object]) -> Decision:
    """The store's own decision for a call with `params`, made offline (same condition keys)."""
    attributes = implied_attributes(action, facts.spec, request_attributes(dict(params), None, None, action))
    context = params.get("EncryptionContext") or {}
    return authorize(Request(action, principal, facts, context, attributes), policy, grants)  # type: ignore[arg-type]


def declared_grants(grants: Iterable[GrantDecl]) -> list[Grant]:
    """A stack's grants in the evaluator's terms (addresses stand in for grant ids)."""
    out = []
    for grant in grants:
        constraints = grant.constraints
        out.append(Grant(grant.address, grant.grantee, grant.operations,
                         constraints.encryption_context_equals if constraints else None,
                         constraints.encryption_context_subset if constraints else None,
                         grant.retiring_principal, grant.name))
    return out


# --- deriving contexts from policies and grants ----------------------------------------------

def _render(value: str, request: Request, like: bool) -> str | None:
    """A concrete value satisfying `value`: policy variables filled in from the principal,
    wildcards of a Like operator made concrete. None when a variable cannot be filled."""
    template = parse_template(value)
    if not isinstance(template, Template):
        return None
    out = []
    for kind, text in template.parts:
        if kind == "var":
            found = getter(text)(request)
            if found is None or isinstance(found, tuple):
                return None
            out.append(str(found).lower() if isinstance(found, bool) else str(found))
        elif kind == "text" and like:
            out.append(text.replace("*", "").replace("?", "x"))
        else:
            out.append(text)
    return "".join(out)


def _statement_context(conditions: Iterable, request: Request, allow: bool) -> Context:
    """The context an Allow statement's conditions ask for, or the one that escapes a Deny
    statement's ("deny unless purpose=x" is `StringNotEquals` in a Deny)."""
    context: Context = {}
    for condition in conditions:
        comparison, negated = OPERATORS[condition.operator]
        name = condition.key[len(_PREFIX):] if condition.key.startswith(_PREFIX) else None
        if comparison == "null":  # Null: false in an Allow, Null: true in a Deny -> the key must be sent
            if name and condition.values[:1] == ("false" if allow else "true",):
                context.setdefault(name, MARKER)
            continue
        if negated == allow or not condition.values:
            continue  # an Allow's negated test, or a Deny's positive one, asks for no value
        like = comparison == "like"
        if name and comparison in _STRING_COMPARISONS:
            value = _render(condition.values[0], request, like)
            if value is not None:
                context[name] = value
        elif condition.key == "kms:EncryptionContextKeys" and comparison in _STRING_COMPARISONS:
            key = _render(condition.values[0], request, like)
            if key:
                context.setdefault(key, MARKER)
    return context


def derived_contexts(policies: Iterable[Policy], grants: Iterable[Grant], principal: Principal,
                     facts: KeyFacts) -> list[Context]:
    """Contexts the statements' conditions and the grants' constraints ask for, in order."""
    request = Request("kms:Decrypt", principal, facts)
    found: list[Context] = []
    for policy in policies:
        for statement in policy.statements:
            context = _statement_context(statement.conditions, request, statement.is_allow)
            if context:
                found.append(context)
    for grant in grants:
        for pairs in (grant.encryption_context_equals, grant.encryption_context_subset):
            if pairs:
                found.append(dict(pairs))
    return _unique(found)


def candidates(derived: Iterable[Context], run: str) -> list[Context]:
    """What verify tries, in order: each derived context with verify's marker pair, then without
    (an exact-context constraint tolerates no extra pair), then the marker alone, then nothing."""
    out: list[Context] = []
    for context in derived:
        out += [{**context, MARKER: run}, dict(context)]
    return _unique(out + [{MARKER: run}, {}])


def wrong_contexts(context: Mapping[str, str]) -> list[Context]:
    """Contexts that differ from `context`: decrypting under any of them must fail."""
    changed = {k: f"not-{v}" for k, v in context.items()}
    extra = {**context, f"{MARKER}-wrong": "1"}
    flipped = {**context, MARKER: f"wrong-{context[MARKER]}"} if MARKER in context else None
    return _unique([c for c in (flipped, extra, changed, {}) if c is not None and c != dict(context)])


def violations(context: Mapping[str, str]) -> list[Context]:
    """Contexts that break a requirement to send `context`: none at all, or its values changed.
    (An extra pair is no violation: StringEquals and subset constraints let it through.)"""
    return _unique([{k: f"not-{v}" for k, v in context.items()}, {}])


def _unique(contexts: Iterable[Context]) -> list[Context]:
    seen, out = set(), []
    for context in contexts:
        marker = tuple(sorted(context.items()))
        if marker not in seen:
            seen.add(marker)
            out.append(context)
    return out


# --- what the stack requires of other principals ---------------------------------------------

@dataclass(frozen=True)
class Requirement:
    """`principal` may call `action` only under `context` (declared by the stack)."""

    principal: str
    action: str
    context: tuple[tuple[str, str], ...]

    @property
    def pairs(self) -> Context:
        return dict(self.context)


def requirements(policy: Policy, grants: Sequence[Grant], principals: Sequence[Principal],
                 facts: KeyFacts) -> list[Requirement]:
    """Every (principal, context action) the declared policy and grants allow only with a context."""
    found: list[Requirement] = []
    for principal in principals:
        derived = derived_contexts([policy, *principal.policies], grants, principal, facts)
        for action in CONTEXT_ACTIONS:
            for context in derived:
                if not _allowed(principal, facts, policy, grants, action, context):
                    continue
                if not any(_allowed(principal, facts, policy, grants, action, wrong)
                           for wrong in violations(context)):
                    found.append(Requirement(principal.arn, action, tuple(sorted(context.items()))))
                break
    return found


def broken(requirement: Requirement, principal: Principal | None, facts: KeyFacts, policy: Policy,
           grants: Sequence[Grant]) -> tuple[str, str] | None:
    """How the live policy and grants fail `requirement`, as the words before and after the
    action ("may now call", "with context {...}; ..."), so failures of several actions of one
    principal read as one sentence. None when they still enforce it."""
    declared = format_context(requirement.pairs)
    if principal is None:
        return "(no longer a registered principal) cannot be checked for", f"(declared: only with {declared})"
    for wrong in violations(requirement.pairs):
        if _allowed(principal, facts, policy, grants, requirement.action, wrong):
            return "may now call", f"with context {format_context(wrong)}; the stack allows it only with {declared}"
    decision = decide(principal, facts, policy, grants, requirement.action, {"EncryptionContext": requirement.pairs})
    if not decision.allowed:
        return "may no longer call", f"even with the declared context {declared}: {decision.reason}"
    return None


def _allowed(principal: Principal, facts: KeyFacts, policy: Policy, grants: Sequence[Grant], action: str,
             context: Mapping[str, str]) -> bool:
    return decide(principal, facts, policy, grants, action, {"EncryptionContext": dict(context)}).allowed
