"""Shared facts for the policy tests: one account's key, its principals, policy builders.

Imported by the test modules (a uniquely named module, so it never collides with other
test folders' helpers).
"""

from __future__ import annotations

from typing import Any

from kmsplan.policy import KeyFacts, Policy, Principal, parse_policy

ACCOUNT = "111122223333"
OTHER = "444455556666"
ROOT = f"arn:aws:iam::{ACCOUNT}:root"
OTHER_ROOT = f"arn:aws:iam::{OTHER}:root"
APP = f"arn:aws:iam::{ACCOUNT}:role/payments-app"
ADMIN = f"arn:aws:iam::{ACCOUNT}:role/admin"
AUDITOR = f"arn:aws:iam::{ACCOUNT}:user/auditor"
PARTNER = f"arn:aws:iam::{OTHER}:role/partner"
KEY_ARN = f"arn:aws:kms:eu-west-1:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"

KEY = KeyFacts(
    arn=KEY_ARN, key_id="1234abcd-12ab-34cd-56ef-1234567890ab", account=ACCOUNT,
    region="eu-west-1", spec="SYMMETRIC_DEFAULT", usage="ENCRYPT_DECRYPT", origin="AWS_KMS",
    multi_region=False, multi_region_type=None, aliases=("alias/payments",),
    tags={"Environment": "prod"},
)


def statement(sid: str | None = None, effect: str = "Allow", principal: Any = None,
              action: Any = "kms:*", resource: Any = "*", **extra: Any) -> dict[str, Any]:
    """A key policy statement; principal None means 'this account's root'."""
    out: dict[str, Any] = {"Effect": effect, "Action": action, "Resource": resource}
    if sid:
        out["Sid"] = sid
    if "not_principal" in extra:
        out["NotPrincipal"] = extra.pop("not_principal")
    else:
        out["Principal"] = principal if principal is not None else {"AWS": ROOT}
    if "not_action" in extra:
        del out["Action"]
        out["NotAction"] = extra.pop("not_action")
    if "condition" in extra:
        out["Condition"] = extra.pop("condition")
    assert not extra, extra
    return out


def key_policy(*statements: dict[str, Any]) -> Policy:
    return parse_policy({"Version": "2012-10-17", "Statement": list(statements)})


def identity_policy(*statements: dict[str, Any]) -> Policy:
    return parse_policy({"Version": "2012-10-17", "Statement": list(statements)}, kind="identity")


def allow_iam(action: Any = "kms:*", resource: Any = "*", sid: str | None = None,
              effect: str = "Allow", **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"Effect": effect, "Action": action, "Resource": resource, **extra}
    if sid:
        out["Sid"] = sid
    return out


def principal(arn: str, *, org: str | None = "o-example", tags: dict[str, str] | None = None,
              policies: tuple[Policy, ...] = ()) -> Principal:
    return Principal(arn=arn, org_id=org, tags=tags or {}, policies=policies)
