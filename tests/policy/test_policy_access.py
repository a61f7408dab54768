"""who_can / can: every path to every action, with only request-dependent conditions left."""

from __future__ import annotations

import dataclasses

from policy_builders import (
    ACCOUNT, ADMIN, APP, AUDITOR, KEY, KEY_ARN, OTHER_ROOT, PARTNER, ROOT, allow_iam,
    identity_policy, key_policy, principal, statement,
)

from kmsplan.policy import KEY_ACTIONS, AccessPath, Grant, can, who_can

S3 = "s3.eu-west-1.amazonaws.com"
POLICY = key_policy(
    statement("EnableIAM"),
    statement("Admins", principal={"AWS": ADMIN},
              action=["kms:Describe*", "kms:PutKeyPolicy", "kms:ScheduleKeyDeletion"]),
    statement("TenantUse", principal={"AWS": [APP, AUDITOR]}, action="kms:Decrypt",
              condition={"StringEquals": {
                  "kms:EncryptionContext:tenant": "${aws:PrincipalTag/tenant}",
                  "aws:PrincipalTag/team": "payments"}}),
    statement("ProdOnly", principal={"AWS": APP}, action="kms:Encrypt",
              condition={"StringEquals": {"aws:ResourceTag/Environment": "dev"}}),
    statement("Partner", principal={"AWS": OTHER_ROOT}, action="kms:Decrypt"),
    statement("ViaS3Only", effect="Deny", principal="*", action="kms:Decrypt",
              condition={"StringNotEquals": {"kms:ViaService": S3},
                         "ArnLike": {"aws:PrincipalArn":
                                     f"arn:aws:iam::{ACCOUNT}:role/payments-*"}}),
    statement("NoDeletes", effect="Deny", principal="*", action="kms:ScheduleKeyDeletion",
              condition={"StringNotEquals": {"aws:PrincipalOrgID": "o-example"}}),
)
APP_P = principal(APP, tags={"tenant": "acme", "team": "payments"})
AUDITOR_P = principal(AUDITOR, tags={"tenant": "acme", "team": "audit"},
                      policies=(identity_policy(allow_iam(["kms:Describe*", "kms:List*"])),))
ADMIN_P = principal(ADMIN, org="o-elsewhere")
PARTNER_P = principal(PARTNER, policies=(identity_policy(allow_iam("kms:Decrypt", KEY_ARN,
                                                                   sid="UsePartnerKey")),))
GRANT = Grant("grant-1", PARTNER, ("Decrypt", "DescribeKey"), None, {"tenant": "acme"})
EVERYONE = [APP_P, AUDITOR_P, ADMIN_P, PARTNER_P]
ACTIONS = ["kms:Decrypt", "kms:Encrypt", "kms:DescribeKey", "kms:ScheduleKeyDeletion"]


def test_who_can_lists_every_path_sorted() -> None:
    assert who_can(POLICY, [GRANT], EVERYONE, KEY, ACTIONS) == [
        AccessPath(ADMIN, "kms:DescribeKey", "key-policy", "Admins", ()),
        # ScheduleKeyDeletion: admin is outside the org, so NoDeletes removes the path
        AccessPath(APP, "kms:Decrypt", "key-policy", "TenantUse", (
            "kms:EncryptionContext:tenant StringEquals acme",
            f"unless: kms:ViaService StringNotEquals {S3}")),
        AccessPath(AUDITOR, "kms:DescribeKey", "iam", f"iam:{AUDITOR}#0/0", ()),
        AccessPath(PARTNER, "kms:Decrypt", "grant", "grant-1",
                   ("only with encryption context tenant=acme",)),
        AccessPath(PARTNER, "kms:Decrypt", "iam", f"iam:{PARTNER}#0/UsePartnerKey", ()),
        AccessPath(PARTNER, "kms:DescribeKey", "grant", "grant-1", ()),
    ]


def test_determined_conditions_are_evaluated_away() -> None:
    # aws:PrincipalTag/team and aws:ResourceTag are decided by the facts, never listed
    paths = who_can(POLICY, [], [APP_P, AUDITOR_P], KEY, ["kms:Decrypt", "kms:Encrypt"])
    assert [(p.principal, p.action) for p in paths] == [(APP, "kms:Decrypt")]
    dev_key = dataclasses.replace(KEY, tags={"Environment": "dev"})
    paths = who_can(POLICY, [], [APP_P], dev_key, ["kms:Encrypt"])
    assert paths == [AccessPath(APP, "kms:Encrypt", "key-policy", "ProdOnly", ())]


def test_unconditional_deny_removes_every_path() -> None:
    blocked = dataclasses.replace(APP_P, org_id=None)
    policy = key_policy(statement("Use", principal={"AWS": APP}),
                        statement("DenyOutsideOrg", effect="Deny", principal="*",
                                  condition={"Null": {"aws:PrincipalOrgID": "true"}}))
    grant = Grant("g", APP, ("Decrypt",))
    assert who_can(policy, [grant], [blocked], KEY, ["kms:Decrypt"]) == []
    assert len(who_can(policy, [grant], [APP_P], KEY, ["kms:Decrypt"])) == 2


def test_root_principal_and_default_action_list() -> None:
    root = principal(ROOT)
    paths = who_can(key_policy(statement("EnableIAM")), [], [root], KEY)
    assert {p.action for p in paths} == set(KEY_ACTIONS)
    assert "kms:CreateKey" not in KEY_ACTIONS and "kms:Decrypt" in KEY_ACTIONS
    assert all(p.layer == "key-policy" and p.source == "EnableIAM" for p in paths)


def test_iam_path_carries_the_gate_conditions() -> None:
    policy = key_policy(statement("EnableIAM", condition={
        "StringEquals": {"kms:CallerAccount": ACCOUNT, "kms:ViaService": S3}}))
    admin = principal(ADMIN, policies=(identity_policy(allow_iam("kms:Decrypt")),))
    assert who_can(policy, [], [admin], KEY, ["kms:Decrypt"]) == [
        AccessPath(ADMIN, "kms:Decrypt", "iam", f"iam:{ADMIN}#0/0",
                   (f"kms:ViaService StringEquals {S3}",))]


def test_can() -> None:
    assert can(POLICY, [GRANT], EVERYONE, KEY, "kms:Decrypt") == {APP, PARTNER}
    assert can(POLICY, [GRANT], EVERYONE, KEY, "kms:Decrypt", unconditionally=True) == {PARTNER}
    assert can(POLICY, [], EVERYONE, KEY, "kms:ScheduleKeyDeletion") == set()
