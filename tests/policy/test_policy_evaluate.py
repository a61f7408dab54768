"""Authorization across layers: key policy, IAM identity policies, grants, and Deny precedence."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from policy_builders import (
    ACCOUNT, ADMIN, APP, AUDITOR, KEY, KEY_ARN, OTHER, OTHER_ROOT, PARTNER, ROOT, allow_iam,
    identity_policy, key_policy, principal, statement,
)

from kmsplan.policy import (
    Grant, KeyFacts, Policy, Principal, Request, authorize, lockout_check, parse_policy,
    parse_policy_cached, unknown_principals,
)

ROOT_STMT = statement("EnableIAM")  # the account root: IAM policies of this account count
APP_USES = statement("KeyUsers", principal={"AWS": APP}, action=["kms:Decrypt", "kms:Encrypt"])
IAM_ALL = identity_policy(allow_iam())
IAM_DECRYPT_THIS_KEY = identity_policy(allow_iam("kms:Decrypt", KEY_ARN, sid="UseKey"))
IAM_DECRYPT_OTHER_KEY = identity_policy(
    allow_iam("kms:Decrypt", f"arn:aws:kms:eu-west-1:{ACCOUNT}:key/other"))
IAM_DENY_DECRYPT = identity_policy(allow_iam("kms:Decrypt", effect="Deny", sid="NoDecrypt"))
OTHER_KEY = dataclasses.replace(KEY, arn=f"arn:aws:kms:eu-west-1:{OTHER}:key/k-other",
                                key_id="k-other", account=OTHER)
SESSION = f"arn:aws:sts::{ACCOUNT}:assumed-role/payments-app/build-42"


def run(policy: Policy, arn: str = APP, action: str = "kms:Decrypt", *,
        iam: tuple[Policy, ...] = (), grants: tuple[Grant, ...] = (), key: KeyFacts = KEY,
        context: dict[str, str] | None = None,
        org: str | None = "o-example") -> tuple[bool, tuple[str, ...]]:
    who = principal(arn, policies=iam, org=org)
    decision = authorize(Request(action, who, key, context or {}), policy, grants)
    return decision.allowed, decision.via


LAYER_ROWS: list[tuple[str, Policy, dict[str, Any], bool, tuple[str, ...]]] = [
    ("direct-same-account", key_policy(APP_USES), {}, True, ("key-policy:KeyUsers",)),
    ("direct-other-action", key_policy(APP_USES), {"action": "kms:ScheduleKeyDeletion"}, False, ()),
    ("root-delegates-to-iam", key_policy(ROOT_STMT), {"iam": (IAM_ALL,)}, True,
     ("key-policy:EnableIAM", f"iam:{APP}#0/0")),
    ("root-without-iam-denies", key_policy(ROOT_STMT), {}, False, ()),
    ("iam-ignored-without-root-statement",
     key_policy(statement("Admins", principal={"AWS": ADMIN})), {"iam": (IAM_ALL,)}, False, ()),
    ("iam-resource-must-match-key", key_policy(ROOT_STMT), {"iam": (IAM_DECRYPT_OTHER_KEY,)},
     False, ()),
    ("iam-resource-key-arn", key_policy(ROOT_STMT), {"iam": (IAM_DECRYPT_THIS_KEY,)}, True,
     ("key-policy:EnableIAM", f"iam:{APP}#0/UseKey")),
    ("iam-second-policy", key_policy(ROOT_STMT),
     {"iam": (IAM_DECRYPT_OTHER_KEY, IAM_DECRYPT_THIS_KEY)}, True,
     ("key-policy:EnableIAM", f"iam:{APP}#1/UseKey")),
    ("bare-account-id-is-root", key_policy(statement("EnableIAM", principal={"AWS": ACCOUNT})),
     {"iam": (IAM_ALL,)}, True, ("key-policy:EnableIAM", f"iam:{APP}#0/0")),
    ("account-root-itself", key_policy(ROOT_STMT), {"arn": ROOT}, True, ("key-policy:EnableIAM",)),
    ("root-statement-conditions-apply", key_policy(statement(
        "EnableIAM", condition={"StringEquals": {"kms:ViaService": "s3.eu-west-1.amazonaws.com"}})),
     {"iam": (IAM_ALL,)}, False, ()),
    ("star-principal", key_policy(statement("Everyone", principal="*", action="kms:Decrypt")), {},
     True, ("key-policy:Everyone",)),
    ("star-principal-narrowed-by-org", key_policy(statement(
        "Org", principal={"AWS": "*"}, action="kms:Decrypt",
        condition={"StringEquals": {"aws:PrincipalOrgID": "o-example"}})),
     {"org": "o-other"}, False, ()),
    ("session-of-named-role", key_policy(APP_USES), {"arn": SESSION}, True,
     ("key-policy:KeyUsers",)),
    ("other-role-not-matched", key_policy(APP_USES), {"arn": ADMIN}, False, ()),
    ("user-principal", key_policy(statement("Audit", principal={"AWS": [AUDITOR]},
                                            action="kms:Describe*")),
     {"arn": AUDITOR, "action": "kms:DescribeKey"}, True, ("key-policy:Audit",)),
    ("unnamed-statement-label", key_policy({"Effect": "Allow", "Principal": {"AWS": APP},
                                            "Action": "kms:Decrypt", "Resource": "*"}),
     {}, True, ("key-policy:#0",)),
    ("resource-other-key", key_policy(statement("Use", principal={"AWS": APP},
                                                resource=f"arn:aws:kms:eu-west-1:{ACCOUNT}:key/x")),
     {}, False, ()),
    ("resource-wildcard", key_policy(statement("Use", principal={"AWS": APP},
                                               resource=f"arn:aws:kms:*:{ACCOUNT}:key/*")),
     {}, True, ("key-policy:Use",)),
    ("resource-variable", key_policy(ROOT_STMT),
     {"iam": (identity_policy(allow_iam("kms:Decrypt",
                                        "arn:aws:kms:*:${aws:PrincipalAccount}:key/*")),)},
     True, ("key-policy:EnableIAM", f"iam:{APP}#0/0")),
    ("iam-not-resource-excludes-key", key_policy(ROOT_STMT),
     {"iam": (parse_policy({"Statement": {"Effect": "Allow", "Action": "kms:*",
                                          "NotResource": KEY_ARN}}, kind="identity"),)},
     False, ()),
    ("iam-not-resource-other-key", key_policy(ROOT_STMT),
     {"iam": (parse_policy({"Statement": {"Effect": "Allow", "Action": "kms:*",
                                          "NotResource": f"{KEY_ARN}-old"}}, kind="identity"),)},
     True, ("key-policy:EnableIAM", f"iam:{APP}#0/0")),
]


@pytest.mark.parametrize("name,policy,call,allowed,via", LAYER_ROWS,
                         ids=[row[0] for row in LAYER_ROWS])
def test_key_policy_and_iam_layers(name: str, policy: Policy, call: dict[str, Any],
                                   allowed: bool, via: tuple[str, ...]) -> None:
    assert run(policy, **call) == (allowed, via)


ACTION_ROWS = [
    ("kms:*", "kms:ScheduleKeyDeletion", True),
    ("*", "kms:Decrypt", True),
    ("KMS:decrypt", "kms:Decrypt", True),
    ("kms:GenerateDataKey*", "kms:GenerateDataKeyWithoutPlaintext", True),
    ("kms:GenerateDataKey*", "kms:GenerateDataKey", True),
    ("kms:GenerateDataKey*", "kms:Decrypt", False),
    ("kms:ReEncrypt*", "kms:ReEncryptFrom", True),
    ("kms:?ncrypt", "kms:Encrypt", True),
    ("kms:?ncrypt", "kms:Decrypt", False),
    (["kms:Describe*", "kms:List*"], "kms:ListGrants", True),
]


@pytest.mark.parametrize("pattern,action,allowed", ACTION_ROWS)
def test_action_patterns(pattern: Any, action: str, allowed: bool) -> None:
    policy = key_policy(statement("S", principal={"AWS": APP}, action=pattern))
    assert run(policy, action=action)[0] is allowed


def test_not_action_allows_everything_else() -> None:
    policy = key_policy(statement("AllButDelete", principal={"AWS": APP},
                                  not_action=["kms:ScheduleKeyDeletion", "kms:Put*"]))
    assert run(policy, action="kms:Decrypt")[0] is True
    assert run(policy, action="kms:ScheduleKeyDeletion")[0] is False
    assert run(policy, action="kms:PutKeyPolicy")[0] is False


NOT_PRINCIPAL_DENY = key_policy(
    statement("EveryoneUses", principal="*", action="kms:Decrypt"),
    statement("OnlyAdminAndItsAccount", effect="Deny", action="kms:Decrypt",
              not_principal={"AWS": [ADMIN, ACCOUNT]}),
    statement("OnlyAdminAlone", effect="Deny", action="kms:Decrypt",
              not_principal={"AWS": [ADMIN]},
              condition={"StringEquals": {"kms:EncryptionContext:x": "y"}}),
)


@pytest.mark.parametrize("arn,context,allowed,via", [
    (ADMIN, {}, True, ("key-policy:EveryoneUses",)),
    (APP, {}, False, ("key-policy:OnlyAdminAndItsAccount",)),
    # listing the role without its account does not exempt it (IAM matches the account too)
    (ADMIN, {"x": "y"}, False, ("key-policy:OnlyAdminAlone",)),
])
def test_not_principal(arn: str, context: dict[str, str], allowed: bool,
                       via: tuple[str, ...]) -> None:
    assert run(NOT_PRINCIPAL_DENY, arn, context=context) == (allowed, via)


GRANT_TO_APP = Grant("g-plain", APP, ("Decrypt", "PutKeyPolicy"), None, None, None, "plain")
DENY_ALL_DECRYPT = statement("DenyDecrypt", effect="Deny", principal="*", action="kms:Decrypt")

DENY_ROWS: list[tuple[str, Policy, dict[str, Any], tuple[str, ...]]] = [
    ("key-deny-beats-direct-allow", key_policy(APP_USES, DENY_ALL_DECRYPT), {},
     ("key-policy:DenyDecrypt",)),
    ("key-deny-beats-iam", key_policy(ROOT_STMT, DENY_ALL_DECRYPT), {"iam": (IAM_ALL,)},
     ("key-policy:DenyDecrypt",)),
    ("key-deny-beats-grant", key_policy(ROOT_STMT, DENY_ALL_DECRYPT), {"grants": (GRANT_TO_APP,)},
     ("key-policy:DenyDecrypt",)),
    ("iam-deny-beats-key-allow", key_policy(APP_USES), {"iam": (IAM_DENY_DECRYPT,)},
     (f"iam:{APP}#0/NoDecrypt",)),
    ("iam-deny-beats-grant", key_policy(ROOT_STMT), {"iam": (IAM_DENY_DECRYPT,),
                                                    "grants": (GRANT_TO_APP,)},
     (f"iam:{APP}#0/NoDecrypt",)),
    ("iam-deny-counts-without-delegation", key_policy(APP_USES),
     {"iam": (IAM_ALL, IAM_DENY_DECRYPT)},
     (f"iam:{APP}#1/NoDecrypt",)),
    ("account-root-deny-covers-its-principals",
     key_policy(APP_USES, statement("DenyAccount", effect="Deny", action="kms:Decrypt")), {},
     ("key-policy:DenyAccount",)),
]


@pytest.mark.parametrize("name,policy,call,via", DENY_ROWS, ids=[row[0] for row in DENY_ROWS])
def test_explicit_deny_wins(name: str, policy: Policy, call: dict[str, Any],
                            via: tuple[str, ...]) -> None:
    assert run(policy, **call) == (False, via)


def test_unresolvable_variable_voids_a_deny() -> None:
    policy = key_policy(APP_USES, statement(
        "OwnTenantOnly", effect="Deny", principal="*", action="kms:Decrypt",
        condition={"StringNotEquals": {"kms:EncryptionContext:tenant": "${aws:PrincipalTag/t}"}}))
    tagged = principal(APP, tags={"t": "acme"})
    assert authorize(Request("kms:Decrypt", tagged, KEY, {"tenant": "globex"}), policy).via == (
        "key-policy:OwnTenantOnly",)
    assert authorize(Request("kms:Decrypt", tagged, KEY, {"tenant": "acme"}), policy).allowed
    untagged = principal(APP)  # AWS: the statement is invalid, so it denies nothing
    assert authorize(Request("kms:Decrypt", untagged, KEY, {"tenant": "globex"}), policy).allowed


def test_deny_reason_names_the_statement() -> None:
    decision = authorize(Request("kms:Decrypt", principal(APP), KEY),
                         key_policy(APP_USES, DENY_ALL_DECRYPT))
    assert decision.reason == "explicitly denied by key policy statement 'DenyDecrypt'"


CROSS_ROWS: list[tuple[str, Policy, tuple[Policy, ...], bool]] = [
    ("root-and-iam", key_policy(statement("Partner", principal={"AWS": OTHER_ROOT})),
     (IAM_DECRYPT_THIS_KEY,), True),
    ("root-without-iam", key_policy(statement("Partner", principal={"AWS": OTHER_ROOT})), (),
     False),
    ("root-iam-other-key", key_policy(statement("Partner", principal={"AWS": OTHER_ROOT})),
     (IAM_DECRYPT_OTHER_KEY,), False),
    ("named-principal-and-iam", key_policy(statement("Partner", principal={"AWS": PARTNER})),
     (IAM_DECRYPT_THIS_KEY,), True),
    ("named-principal-without-iam", key_policy(statement("Partner", principal={"AWS": PARTNER})),
     (), False),
    ("iam-without-key-policy", key_policy(ROOT_STMT), (IAM_ALL,), False),
    ("own-account-root-does-not-admit-partner", key_policy(ROOT_STMT, APP_USES), (IAM_ALL,), False),
]


@pytest.mark.parametrize("name,policy,iam,allowed", CROSS_ROWS, ids=[row[0] for row in CROSS_ROWS])
def test_cross_account_needs_both_sides(name: str, policy: Policy, iam: tuple[Policy, ...],
                                        allowed: bool) -> None:
    assert run(policy, PARTNER, iam=iam)[0] is allowed


def test_cross_account_reason_says_what_is_missing() -> None:
    policy = key_policy(statement("Partner", principal={"AWS": OTHER_ROOT}))
    decision = authorize(Request("kms:Decrypt", principal(PARTNER), KEY), policy)
    assert "cross-account access also needs an IAM policy" in decision.reason
    assert PARTNER in decision.reason and KEY_ARN in decision.reason


def test_key_in_other_account_admits_this_account_root() -> None:
    policy = key_policy(statement("Consumer", principal={"AWS": ROOT}))
    assert run(policy, APP, key=OTHER_KEY, iam=(IAM_ALL,))[0] is True
    assert run(policy, APP, key=OTHER_KEY)[0] is False


EQUALS = Grant("g-eq", APP, ("Decrypt", "DescribeKey"), {"tenant": "acme", "app": "pay"}, None,
               None, "equals")
SUBSET = Grant("g-sub", APP, ("Decrypt", "GenerateDataKey"), None, {"tenant": "acme"}, None, None)
GRANT_ROWS: list[tuple[str, Grant, str, str, dict[str, str], bool]] = [
    ("plain-listed-op", GRANT_TO_APP, APP, "kms:Decrypt", {}, True),
    ("plain-unlisted-op", GRANT_TO_APP, APP, "kms:Encrypt", {}, False),
    ("never-allows-non-grant-op", GRANT_TO_APP, APP, "kms:PutKeyPolicy", {}, False),
    ("other-grantee", GRANT_TO_APP, ADMIN, "kms:Decrypt", {}, False),
    ("session-of-grantee-role", GRANT_TO_APP, SESSION, "kms:Decrypt", {}, True),
    ("equals-exact", EQUALS, APP, "kms:Decrypt", {"tenant": "acme", "app": "pay"}, True),
    ("equals-key-case-ignored", EQUALS, APP, "kms:Decrypt", {"Tenant": "acme", "APP": "pay"}, True),
    ("equals-value-case-matters", EQUALS, APP, "kms:Decrypt", {"tenant": "Acme", "app": "pay"},
     False),
    ("equals-extra-pair", EQUALS, APP, "kms:Decrypt", {"tenant": "acme", "app": "pay", "x": "1"},
     False),
    ("equals-missing-pair", EQUALS, APP, "kms:Decrypt", {"tenant": "acme"}, False),
    ("equals-not-applied-to-describe", EQUALS, APP, "kms:DescribeKey", {}, True),
    ("subset-superset-context", SUBSET, APP, "kms:GenerateDataKey", {"tenant": "acme", "x": "1"},
     True),
    ("subset-key-case-ignored", SUBSET, APP, "kms:Decrypt", {"TENANT": "acme"}, True),
    ("subset-value-case-matters", SUBSET, APP, "kms:Decrypt", {"tenant": "ACME"}, False),
    ("subset-missing", SUBSET, APP, "kms:Decrypt", {"other": "acme"}, False),
    ("subset-empty-context", SUBSET, APP, "kms:Decrypt", {}, False),
]


@pytest.mark.parametrize("name,grant,arn,action,context,allowed", GRANT_ROWS,
                         ids=[row[0] for row in GRANT_ROWS])
def test_grants(name: str, grant: Grant, arn: str, action: str, context: dict[str, str],
                allowed: bool) -> None:
    policy = key_policy(ROOT_STMT)  # no IAM policies: only the grant can allow
    result = run(policy, arn, action, grants=(grant,), context=context)
    assert result == ((True, (f"grant:{grant.grant_id}",)) if allowed else (False, ()))


def test_grant_constraint_ignored_for_asymmetric_key() -> None:
    rsa = dataclasses.replace(KEY, spec="RSA_2048")
    assert run(key_policy(ROOT_STMT), action="kms:Decrypt", key=rsa, grants=(SUBSET,))[0] is True


def test_iam_without_delegation_reason_suggests_the_root_statement() -> None:
    decision = authorize(Request("kms:Decrypt", principal(APP, policies=(IAM_ALL,)), KEY),
                         key_policy(statement("Admins", principal={"AWS": ADMIN})))
    assert not decision.allowed
    assert f"arn:aws:iam::{ACCOUNT}:root" in decision.reason


ADMIN_ONLY = key_policy(statement("Admins", principal={"AWS": ADMIN}))
LOCKOUT_ROWS: list[tuple[str, Policy, Principal, bool]] = [
    ("drops-caller", key_policy(APP_USES), principal(ADMIN), False),
    ("names-caller", ADMIN_ONLY, principal(ADMIN), True),
    ("root-and-iam-put", key_policy(ROOT_STMT),
     principal(ADMIN, policies=(identity_policy(allow_iam("kms:PutKeyPolicy", KEY_ARN)),)), True),
    ("root-without-iam", key_policy(ROOT_STMT), principal(ADMIN), False),
    ("root-iam-lacks-put", key_policy(ROOT_STMT),
     principal(ADMIN, policies=(identity_policy(allow_iam("kms:Decrypt")),)), False),
    ("caller-denied-put", key_policy(statement("Admins", principal={"AWS": ADMIN}),
                                     statement("NoPolicyEdits", effect="Deny", principal="*",
                                               action="kms:PutKeyPolicy")),
     principal(ADMIN), False),
    ("grants-never-count", key_policy(APP_USES), principal(APP), False),
]


@pytest.mark.parametrize("name,policy,caller,allowed", LOCKOUT_ROWS,
                         ids=[row[0] for row in LOCKOUT_ROWS])
def test_lockout_check(name: str, policy: Policy, caller: Principal, allowed: bool) -> None:
    decision = lockout_check(policy, caller, KEY)
    assert decision.allowed is allowed
    if not allowed:
        assert f"would lock {caller.arn} out" in decision.reason


@pytest.mark.parametrize("names,known,expected", [
    ([APP, ADMIN], [APP], [ADMIN]),
    ([ACCOUNT], [ROOT], []),
    ([ACCOUNT], [APP], [ROOT]),
    (["*"], [], []),
    ([SESSION], [APP], []),
    ([PARTNER, PARTNER, AUDITOR], [], [AUDITOR, PARTNER]),
])
def test_unknown_principals(names: list[str], known: list[str], expected: list[str]) -> None:
    policy = key_policy(statement("S", principal={"AWS": names}))
    assert unknown_principals(policy, known) == expected


def test_service_principal_is_not_an_unknown_iam_principal() -> None:
    policy = key_policy(statement("Logs", principal={"Service": "logs.eu-west-1.amazonaws.com"}))
    assert unknown_principals(policy, []) == []
    service = Principal("logs.eu-west-1.amazonaws.com", None, {}, ())
    assert authorize(Request("kms:Decrypt", service, KEY), policy).allowed


def test_cached_parse_shares_the_policy() -> None:
    text = ('{"Statement": {"Effect": "Allow", "Principal": "*", "Action": "kms:*", '
            '"Resource": "*"}}')
    assert parse_policy_cached(text) is parse_policy_cached(text)
    assert run(parse_policy_cached(text))[0] is True
