"""Authorization inside the store: turns a call into a policy `Request` and asks `kmsplan.policy`.

The evaluator is pure; this module gathers what it needs — the caller from the identity registry,
the key's facts, tags, aliases and grants (cached per key until the database changes), and the
request's condition keys from its parameters — and raises AccessDeniedException with AWS's wording
when the answer is no. It also guards new key policies: grammar, unknown principals, and the
lockout safety check.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from kmsplan.errors import KMSError
from kmsplan.policy import (
    Decision, Grant, KeyFacts, Policy, PolicyError, Principal, Request, authorize, lockout_check, parse_policy,
    parse_policy_cached, unknown_principals,
)
if TYPE_CHECKING:
    from kmsplan.store.keystore import KeyView

# Request parameters that become condition keys, by the operation-independent parameter name.
_ATTRIBUTE_PARAMS = {
    "EncryptionAlgorithm": "kms:EncryptionAlgorithm",
    "SourceEncryptionAlgorithm": "kms:EncryptionAlgorithm",
    "SigningAlgorithm": "kms:SigningAlgorithm",
    "MacAlgorithm": "kms:MacAlgorithm",
    "RotationPeriodInDays": "kms:RotationPeriodInDays",
    "PendingWindowInDays": "kms:ScheduleKeyDeletionPendingWindowInDays",
    "GranteePrincipal": "kms:GranteePrincipal",
    "RetiringPrincipal": "kms:RetiringPrincipal",
    "Operations": "kms:GrantOperations",
}


def request_attributes(params: dict, via_service: str | None, request_alias: str | None,
                       action: str | None = None) -> dict[str, object]:
    """The request-dependent condition keys of a call (the evaluator derives the rest).

    ReEncrypt is authorized twice; its kms:ReEncryptTo half sees the destination's algorithm."""
    attributes: dict[str, object] = {}
    for name, key in _ATTRIBUTE_PARAMS.items():
        if name in params:
            attributes[key] = params[name]
    if action == "kms:ReEncryptTo":
        attributes.pop("kms:EncryptionAlgorithm", None)
        if "DestinationEncryptionAlgorithm" in params:
            attributes["kms:EncryptionAlgorithm"] = params["DestinationEncryptionAlgorithm"]
    if via_service:
        attributes["kms:ViaService"] = via_service
    if request_alias:
        attributes["kms:RequestAlias"] = request_alias
    if "Constraints" in params and params["Constraints"]:
        attributes["kms:GrantConstraintType"] = sorted(params["Constraints"])[0]
    tags = params.get("Tags")
    if isinstance(tags, list):
        for tag in tags:
            attributes[f"aws:RequestTag/{tag['TagKey']}"] = tag["TagValue"]
        attributes["aws:TagKeys"] = [tag["TagKey"] for tag in tags]
    elif "TagKeys" in params:
        attributes["aws:TagKeys"] = list(params["TagKeys"])
    return attributes


# Actions whose kms:EncryptionAlgorithm is SYMMETRIC_DEFAULT on a symmetric key when the request
# names none: AWS evaluates request-parameter condition keys with the parameter's default value.
_SYMMETRIC_ALGORITHM_ACTIONS = frozenset(f"kms:{name}" for name in (
    "Encrypt", "Decrypt", "ReEncryptFrom", "ReEncryptTo", "GenerateDataKey", "GenerateDataKeyWithoutPlaintext",
    "GenerateDataKeyPair", "GenerateDataKeyPairWithoutPlaintext",
))
_DEFAULT_NUMBERS = {
    "kms:EnableKeyRotation": ("kms:RotationPeriodInDays", 365),
    "kms:ScheduleKeyDeletion": ("kms:ScheduleKeyDeletionPendingWindowInDays", 30),
}
# kms:GrantIsForAWSResource: true when an integrated AWS service (kms:ViaService) makes the call.
_GRANT_MANAGEMENT_ACTIONS = frozenset({"kms:CreateGrant", "kms:ListGrants", "kms:RevokeGrant"})


def implied_attributes(action: str, spec: str, attributes: Mapping[str, object]) -> Mapping[str, object]:
    """The condition keys a call carries without naming them: parameter defaults, and whether an
    AWS service asks for a grant operation. Returns `attributes` itself when nothing is added."""
    added: dict[str, object] = {}
    if action in _SYMMETRIC_ALGORITHM_ACTIONS:
        if spec == "SYMMETRIC_DEFAULT" and "kms:EncryptionAlgorithm" not in attributes:
            added["kms:EncryptionAlgorithm"] = "SYMMETRIC_DEFAULT"
    elif action in _GRANT_MANAGEMENT_ACTIONS:
        added["kms:GrantIsForAWSResource"] = "kms:ViaService" in attributes
    elif action in _DEFAULT_NUMBERS:
        key, default = _DEFAULT_NUMBERS[action]
        if key not in attributes:
            added[key] = default
    return {**attributes, **added} if added else attributes


_MAX_DECISIONS = 8192


class Authorizer:
    """Decides calls for one opened store; caches key facts and grants per key."""

    def __init__(self, store) -> None:
        self.store = store
        self._facts: dict[tuple[str, str], tuple[KeyFacts, tuple[Grant, ...]]] = {}
        # Decisions of `check` by everything they depend on. The evaluator is pure and uses no
        # clock, so a decision holds until a policy, grant, tag, alias or principal changes, and
        # every such change clears this cache with the facts (KeyStore.refresh).
        self._decisions: dict[tuple, Decision] = {}

    def clear(self) -> None:
        self._facts.clear()
        self._decisions.clear()
        self.store.registry.invalidate()

    def caller(self, arn: str) -> Principal:
        principal = self.store.registry.get(arn)
        if principal is None:
            raise KMSError("AccessDeniedException",
                           f"User: {arn} is not a principal this store knows; register it with "
                           "`kmsplan store principals apply`")
        return principal

    def facts(self, view: KeyView) -> tuple[KeyFacts, tuple[Grant, ...]]:
        record = view.record
        cached = self._facts.get((record.region, record.key_id))
        if cached is None:
            meta = self.store.meta
            facts = KeyFacts(
                arn=record.arn, key_id=record.key_id, account=record.account, region=record.region,
                spec=record.spec, usage=record.usage, origin=record.origin, multi_region=record.multi_region,
                multi_region_type=record.mr_type,
                aliases=tuple(name for name, *_ in meta.aliases(record.region, record.key_id)),
                tags=meta.tags(record.region, record.key_id),
            )
            grants = tuple(
                Grant(grant_id=g.grant_id, grantee=g.grantee, operations=g.operations,
                      encryption_context_equals=(g.constraints or {}).get("EncryptionContextEquals"),
                      encryption_context_subset=(g.constraints or {}).get("EncryptionContextSubset"),
                      retiring_principal=g.retiring, name=g.name)
                for g in meta.grants(record.region, record.key_id)
            )
            cached = self._facts[(record.region, record.key_id)] = (facts, grants)
        return cached

    def check(self, principal: Principal, view: KeyView, action: str, encryption_context: Mapping[str, str],
              attributes: Mapping[str, object]) -> None:
        """Allow, or raise AccessDeniedException naming the caller, action and key."""
        record = view.record
        try:
            key: tuple | None = (principal.arn, record.region, record.key_id, record.policy, action,
                                 tuple(encryption_context.items()), tuple(attributes.items()))
            decision = self._decisions.get(key)
        except TypeError:  # a list among the condition values (grant operations, tag keys): not cached
            key, decision = None, None
        if decision is None:
            facts, grants = self.facts(view)
            request = Request(action, principal, facts, encryption_context,
                              implied_attributes(action, facts.spec, attributes))
            decision = authorize(request, parse_policy_cached(record.policy), grants)
            if key is not None:
                if len(self._decisions) >= _MAX_DECISIONS:
                    self._decisions.clear()
                self._decisions[key] = decision
        if not decision.allowed:
            raise KMSError("AccessDeniedException",
                           f"User: {principal.arn} is not authorized to perform: {action} on resource: "
                           f"{view.record.arn} ({decision.reason})")

    def check_identity(self, principal: Principal, action: str, facts: KeyFacts,
                       attributes: Mapping[str, object]) -> None:
        """Actions on no existing key (CreateKey, ListKeys, ...): the caller's IAM policies decide."""
        delegating = parse_policy_cached(_delegating_policy(principal.account))
        decision = authorize(Request(action, principal, facts, {}, attributes), delegating)
        if not decision.allowed:
            raise KMSError("AccessDeniedException",
                           f"User: {principal.arn} is not authorized to perform: {action} on resource: * "
                           f"because no identity-based policy allows the {action} action")

    def check_new_policy(self, principal: Principal, text: str, facts: KeyFacts, bypass: bool) -> Policy:
        """Grammar, unknown principals and (unless bypassed) the lockout safety check."""
        try:
            policy = parse_policy(text)
        except PolicyError as error:
            details = "; ".join(f"{'/'.join(str(p) for p in problem.path) or '(document)'}: {problem.message}"
                                for problem in error.problems)
            raise KMSError("MalformedPolicyDocumentException", f"The key policy is invalid: {details}") from None
        unknown = unknown_principals(policy, self.store.registry.known_arns())
        if unknown:
            raise KMSError("MalformedPolicyDocumentException",
                           f"Policy contains a statement with one or more invalid principals: {', '.join(unknown)}")
        if not bypass and not lockout_check(policy, principal, facts).allowed:
            raise KMSError("MalformedPolicyDocumentException",
                           "The new key policy will not allow you to update the key policy in the future.")
        return policy


def _delegating_policy(account: str) -> str:
    return ('{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::'
            + account + ':root"},"Action":"kms:*","Resource":"*"}]}')
