"""`KmsplanService.*`: what the reconciler and the audit commands need that the AWS KMS API does not offer.

A plan's guards need the applying principal (AWS has STS GetCallerIdentity; a served store knows
it from the SigV4 credential), the registered principals (for the lockout and who-loses-access
checks; AWS has IAM) and each key's last cryptographic use (the audit log; AWS has CloudTrail).
`kmsplan audit --endpoint` and `kmsplan verify --endpoint` need the audit records themselves
(AWS has CloudTrail's LookupEvents). A served store answers them on the same endpoint, under the
same SigV4 authentication, with `X-Amz-Target: KmsplanService.<Name>` — so a CI runner needs one
URL and one credential.

Any authenticated, registered principal may call WhoAmI, ListPrincipals and LastUse: they reveal
the registry (ARNs, tags and identity policies) and key usage times, never key material, and a
store's principals are the people who plan against it.

LookupEvents is narrower: the log shows every caller of every key, the encryption contexts they
sent (tenant ids, purposes) and every refusal — the whole account's activity. It is allowed to
principals of the store's own account that could already do anything with any key: the account
root, and principals whose identity policies allow every KMS action on every resource (`kms:*`
on `"*"`, with no condition an empty request fails and no Deny that bites). Policy documents
only know `kms:` actions, so a finer-grained permission would need an action the grammar cannot
express; tying it to administration needs none, and never grants more than the caller has.
Like the other extension calls, a lookup is in the server's request log, not in the audit log:
a query adds nothing to the log it reads.
"""

from __future__ import annotations

from typing import Any

from kmsplan.errors import KMSError
from kmsplan.plan.backend import last_crypto_use
from kmsplan.policy import Principal, parse_policy_cached
from kmsplan.policy.document import KMS_ACTIONS
from kmsplan.policy.evaluate import KeyFacts, Request, authorize
from kmsplan.store.audit_query import PAGE_RECORDS, Query, first_event_time, lookup

TARGET_PREFIX = "KmsplanService."


def handle(store, name: str, principal: str, region: str, params: dict[str, Any]) -> dict[str, Any]:
    """Answer one extension call as `principal`; raises KMSError for a bad call."""
    caller = store.registry.get(principal)
    if caller is None:
        raise KMSError("AccessDeniedException", f"{principal} is not a registered principal of this store")
    if name == "WhoAmI":
        return {"Principal": principal, "Account": store.config.account, "Regions": list(store.config.regions),
                "Region": region}
    if name == "ListPrincipals":
        return {"Principals": [{"Arn": p.arn, "OrgId": p.org_id, "Tags": dict(p.tags),
                                "Policies": [policy.text for policy in p.policies]}
                               for p in store.registry.all()]}
    if name == "LastUse":
        arns = params.get("KeyArns")
        if not isinstance(arns, list) or not all(isinstance(a, str) for a in arns) or len(arns) > 100_000:
            raise KMSError("ValidationException", "KeyArns must be a list of key ARNs")
        used = last_crypto_use(store.audit.path, arns)
        return {"LastUse": {arn: when.isoformat() for arn, when in used.items()}}
    if name == "LookupEvents":
        check_log_reader(caller, store.config.account)
        return lookup_events(store, params)
    raise KMSError("UnknownOperationException", f"unknown operation {TARGET_PREFIX}{name[:64]}")


# -- LookupEvents ---------------------------------------------------------------------------------

def _delegating_policy(account: str) -> str:
    """The key policy under which only the caller's identity policies decide (AWS's default)."""
    return ('{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::'
            + account + ':root"},"Action":"kms:*","Resource":"*"}]}')


def check_log_reader(caller: Principal, account: str) -> None:
    """Allow the store account's root, and its principals whose identity policies allow every
    KMS action on every resource; raise AccessDeniedException saying what is missing otherwise.

    Evaluated with the store's own evaluator, action by action, against a resource no specific
    ARN pattern matches (so `Resource: "*"` is needed) and an empty request (so a condition only
    some requests meet does not count)."""
    refused = f"User: {caller.arn} is not authorized to perform: KmsplanService.LookupEvents"
    rule = ("reading the audit log is allowed to the account root and to principals of account "
            f"{account} whose identity policies allow kms:* on Resource \"*\"")
    if caller.account != account:
        raise KMSError("AccessDeniedException", f"{refused}: {rule}")
    policy = parse_policy_cached(_delegating_policy(account))
    anything = KeyFacts(arn="*", key_id="*", account=account, region="*")
    for action in KMS_ACTIONS:
        decision = authorize(Request(action, caller, anything), policy)
        if not decision.allowed:
            why = decision.reason if decision.reason.startswith("explicitly denied") else \
                f"no identity policy of {caller.arn} allows {action} on Resource \"*\""
            raise KMSError("AccessDeniedException", f"{refused}: {rule}; {why}")


def lookup_events(store, params: dict[str, Any]) -> dict[str, Any]:
    """One page of an audit query: `Records` (each the stored line, CloudTrail field names), and
    `NextToken` while the query has more, `FollowToken` once it has not (see audit_query.lookup)."""
    known = {"Keys", "Principals", "Operations", "Regions", "Since", "Until", "Outcome", "Limit", "MaxResults",
             "NextToken", "FromEnd"}
    unknown = sorted(set(params) - known)
    if unknown:
        raise KMSError("ValidationException", f"LookupEvents has no member {unknown[0][:64]}")
    query = Query.from_wire(params, store.config.regions)
    limit = _integer(params, "Limit", 1, 10**9)
    max_results = _integer(params, "MaxResults", 1, PAGE_RECORDS) or PAGE_RECORDS
    token = params.get("NextToken")
    from_end = params.get("FromEnd", False)
    if not isinstance(from_end, bool):
        raise KMSError("ValidationException", "FromEnd must be a boolean")
    if token is not None and from_end:
        raise KMSError("ValidationException", "FromEnd starts a query; NextToken continues one: send one of them")
    path = store.audit.path
    answer = lookup(path, query, limit=limit, max_results=max_results, token=token, from_end=from_end).to_wire()
    log_start = first_event_time(path)
    if log_start:
        answer["LogStart"] = log_start
    return answer


def _integer(params: dict[str, Any], member: str, low: int, high: int) -> int | None:
    value = params.get(member)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise KMSError("ValidationException", f"{member} must be an integer from {low} to {high}")
    return value
