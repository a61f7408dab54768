"""`KmsplanService.*`: the three things the reconciler needs that the AWS KMS API does not offer.

A plan's guards need the applying principal (AWS has STS GetCallerIdentity; a served store knows
it from the SigV4 credential), the registered principals (for the lockout and who-loses-access
checks; AWS has IAM) and each key's last cryptographic use (the audit log; AWS has CloudTrail).
A served store answers them on the same endpoint, under the same SigV4 authentication, with
`X-Amz-Target: KmsplanService.<Name>` — so a CI runner needs one URL and one credential.

Any authenticated, registered principal may call them: they reveal the registry (ARNs, tags and
identity policies) and key usage times, never key material, and a store's principals are the
people who plan against it.
"""

from __future__ import annotations

from typing import Any

from kmsplan.errors import KMSError
from kmsplan.plan.backend import last_crypto_use

TARGET_PREFIX = "KmsplanService."


def handle(store, name: str, principal: str, region: str, params: dict[str, Any]) -> dict[str, Any]:
    """Answer one extension call as `principal`; raises KMSError for a bad call."""
    if store.registry.get(principal) is None:
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
    raise KMSError("UnknownOperationException", f"unknown operation {TARGET_PREFIX}{name[:64]}")
