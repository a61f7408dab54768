"""Condition operators and condition keys, decided through `authorize` (IAM semantics).

Each row: a Condition block on the one statement that could allow the call, what the request
carries, and whether the call is allowed.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from policy_builders import ACCOUNT, APP, KEY, key_policy, principal, statement

from kmsplan.policy import Request, authorize

MR_KEY = dataclasses.replace(KEY, multi_region=True, multi_region_type="PRIMARY",
                             spec="SYMMETRIC_DEFAULT")
HMAC_KEY = dataclasses.replace(KEY, spec="HMAC_256", usage="GENERATE_VERIFY_MAC",
                               origin="EXTERNAL")


def decide(condition: dict[str, Any], *, context: dict[str, str] | None = None,
           attrs: dict[str, object] | None = None, tags: dict[str, str] | None = None,
           action: str = "kms:Decrypt", key: Any = KEY, arn: str = APP,
           org: str | None = "o-example") -> bool:
    policy = key_policy(statement("Use", principal={"AWS": APP}, condition=condition))
    caller = principal(arn, tags=tags or {}, org=org)
    request = Request(action, caller, key, context or {}, attrs or {})
    return authorize(request, policy).allowed


EC = "kms:EncryptionContext:tenant"
KEYS = "kms:EncryptionContextKeys"

OPERATOR_ROWS = [
    # StringEquals / StringNotEquals
    ("eq-match", {"StringEquals": {EC: "acme"}}, {"tenant": "acme"}, True),
    ("eq-value-is-case-sensitive", {"StringEquals": {EC: "acme"}}, {"tenant": "ACME"}, False),
    ("eq-context-key-ignores-case", {"StringEquals": {EC: "acme"}}, {"TENANT": "acme"}, True),
    ("eq-condition-key-name-ignores-case",
     {"StringEquals": {"KMS:encryptioncontext:tenant": "acme"}}, {"tenant": "acme"}, True),
    ("eq-values-are-or", {"StringEquals": {EC: ["globex", "acme"]}}, {"tenant": "acme"}, True),
    ("eq-missing-key-is-false", {"StringEquals": {EC: "acme"}}, {}, False),
    ("eq-no-wildcards", {"StringEquals": {EC: "ac*"}}, {"tenant": "acme"}, False),
    ("not-eq-differs", {"StringNotEquals": {EC: "acme"}}, {"tenant": "globex"}, True),
    ("not-eq-equal", {"StringNotEquals": {EC: "acme"}}, {"tenant": "acme"}, False),
    ("not-eq-missing-key-is-true", {"StringNotEquals": {EC: "acme"}}, {}, True),
    ("not-eq-values-are-nor", {"StringNotEquals": {EC: ["globex", "acme"]}}, {"tenant": "acme"},
     False),
    ("not-eq-values-none-match", {"StringNotEquals": {EC: ["globex", "acme"]}},
     {"tenant": "initech"}, True),
    # IgnoreCase
    ("eq-ignore-case", {"StringEqualsIgnoreCase": {EC: "ACME"}}, {"tenant": "acme"}, True),
    ("eq-ignore-case-differs", {"StringEqualsIgnoreCase": {EC: "ACME"}}, {"tenant": "acm"}, False),
    ("not-eq-ignore-case", {"StringNotEqualsIgnoreCase": {EC: "ACME"}}, {"tenant": "acme"}, False),
    ("not-eq-ignore-case-differs", {"StringNotEqualsIgnoreCase": {EC: "ACME"}},
     {"tenant": "globex"}, True),
    # Like
    ("like-star", {"StringLike": {EC: "ac*"}}, {"tenant": "acme"}, True),
    ("like-question", {"StringLike": {EC: "a?me"}}, {"tenant": "acme"}, True),
    ("like-question-is-one-char", {"StringLike": {EC: "a?e"}}, {"tenant": "acme"}, False),
    ("like-is-case-sensitive", {"StringLike": {EC: "AC*"}}, {"tenant": "acme"}, False),
    ("like-missing", {"StringLike": {EC: "*"}}, {}, False),
    ("not-like", {"StringNotLike": {EC: "glob*"}}, {"tenant": "acme"}, True),
    ("not-like-matches", {"StringNotLike": {EC: "ac*"}}, {"tenant": "acme"}, False),
    ("not-like-missing-is-true", {"StringNotLike": {EC: "ac*"}}, {}, True),
    # IfExists
    ("if-exists-missing", {"StringEqualsIfExists": {EC: "acme"}}, {}, True),
    ("if-exists-present-match", {"StringEqualsIfExists": {EC: "acme"}}, {"tenant": "acme"}, True),
    ("if-exists-present-mismatch", {"StringEqualsIfExists": {EC: "acme"}}, {"tenant": "x"}, False),
    ("not-like-if-exists-present", {"StringNotLikeIfExists": {EC: "ac*"}}, {"tenant": "acme"},
     False),
    # Null
    ("null-false-present", {"Null": {EC: "false"}}, {"tenant": "acme"}, True),
    ("null-false-missing", {"Null": {EC: "false"}}, {}, False),
    ("null-true-missing", {"Null": {EC: True}}, {}, True),
    ("null-true-present", {"Null": {EC: "true"}}, {"tenant": "acme"}, False),
    ("null-on-set-key-empty", {"Null": {KEYS: "true"}}, {}, True),
    # set qualifiers on kms:EncryptionContextKeys
    ("any-value-hit", {"ForAnyValue:StringEquals": {KEYS: ["tenant"]}},
     {"tenant": "a", "app": "b"}, True),
    ("any-value-miss", {"ForAnyValue:StringEquals": {KEYS: ["tenant"]}}, {"app": "b"}, False),
    ("any-value-empty-is-false", {"ForAnyValue:StringEquals": {KEYS: ["tenant"]}}, {}, False),
    ("any-value-if-exists-empty", {"ForAnyValue:StringEqualsIfExists": {KEYS: ["tenant"]}}, {},
     True),
    ("all-values-subset", {"ForAllValues:StringEquals": {KEYS: ["tenant", "app"]}},
     {"tenant": "a"}, True),
    ("all-values-extra-key", {"ForAllValues:StringEquals": {KEYS: ["tenant", "app"]}},
     {"tenant": "a", "other": "c"}, False),
    ("all-values-empty-is-true", {"ForAllValues:StringEquals": {KEYS: ["tenant"]}}, {}, True),
    ("all-values-keys-case-sensitive", {"ForAllValues:StringEquals": {KEYS: ["tenant"]}},
     {"Tenant": "a"}, False),
    ("all-values-like", {"ForAllValues:StringLike": {KEYS: ["aws:*"]}},
     {"aws:s3:arn": "x", "aws:pipeline": "y"}, True),
    ("any-value-not-equals", {"ForAnyValue:StringNotEquals": {KEYS: ["tenant"]}},
     {"tenant": "a", "x": "b"}, True),
    ("any-value-not-equals-all-listed", {"ForAnyValue:StringNotEquals": {KEYS: ["tenant"]}},
     {"tenant": "a"}, False),
    ("all-values-not-equals", {"ForAllValues:StringNotEquals": {KEYS: ["secret"]}},
     {"tenant": "a"}, True),
    ("all-values-not-equals-hit", {"ForAllValues:StringNotEquals": {KEYS: ["secret"]}},
     {"tenant": "a", "secret": "b"}, False),
    # statement-level logic
    ("operators-and", {"StringEquals": {EC: "acme"},
                       "StringLike": {"kms:EncryptionContext:app": "p*"}},
     {"tenant": "acme", "app": "payroll"}, True),
    ("operators-and-one-fails", {"StringEquals": {EC: "acme"},
                                 "StringLike": {"kms:EncryptionContext:app": "p*"}},
     {"tenant": "acme", "app": "hr"}, False),
    ("keys-in-one-operator-and", {"StringEquals": {EC: "acme", "kms:EncryptionContext:app": "p"}},
     {"tenant": "acme"}, False),
]


@pytest.mark.parametrize("name,condition,context,allowed", OPERATOR_ROWS,
                         ids=[row[0] for row in OPERATOR_ROWS])
def test_string_null_and_set_operators(name: str, condition: dict[str, Any],
                                       context: dict[str, str], allowed: bool) -> None:
    assert decide(condition, context=context) is allowed


ATTRIBUTE_ROWS = [
    # Bool
    ("bool-true", {"Bool": {"kms:GrantIsForAWSResource": "true"}},
     {"kms:GrantIsForAWSResource": True}, True),
    ("bool-json-true", {"Bool": {"kms:GrantIsForAWSResource": True}},
     {"kms:GrantIsForAWSResource": "true"}, True),
    ("bool-false-value", {"Bool": {"kms:GrantIsForAWSResource": "true"}},
     {"kms:GrantIsForAWSResource": False}, False),
    ("bool-missing", {"Bool": {"kms:GrantIsForAWSResource": "true"}}, {}, False),
    ("bool-if-exists-missing", {"BoolIfExists": {"kms:GrantIsForAWSResource": "true"}}, {}, True),
    # Numeric
    ("num-le", {"NumericLessThanEquals": {"kms:RotationPeriodInDays": "365"}},
     {"kms:RotationPeriodInDays": 365}, True),
    ("num-lt-boundary", {"NumericLessThan": {"kms:RotationPeriodInDays": 365}},
     {"kms:RotationPeriodInDays": 365}, False),
    ("num-gt", {"NumericGreaterThan": {"kms:RotationPeriodInDays": 90}},
     {"kms:RotationPeriodInDays": 365}, True),
    ("num-ge-fails", {"NumericGreaterThanEquals": {"kms:RotationPeriodInDays": 400}},
     {"kms:RotationPeriodInDays": 365}, False),
    ("num-eq-string", {"NumericEquals": {"kms:RotationPeriodInDays": "365"}},
     {"kms:RotationPeriodInDays": "365"}, True),
    ("num-eq-values-or", {"NumericEquals": {"kms:RotationPeriodInDays": [90, 365]}},
     {"kms:RotationPeriodInDays": 365}, True),
    ("num-not-eq", {"NumericNotEquals": {"kms:RotationPeriodInDays": 365}},
     {"kms:RotationPeriodInDays": 365}, False),
    ("num-not-eq-missing", {"NumericNotEquals": {"kms:RotationPeriodInDays": 365}}, {}, True),
    ("num-lt-missing", {"NumericLessThan": {"kms:RotationPeriodInDays": 365}}, {}, False),
    ("num-deletion-window", {"NumericGreaterThanEquals":
                             {"kms:ScheduleKeyDeletionPendingWindowInDays": 30}},
     {"kms:ScheduleKeyDeletionPendingWindowInDays": 7}, False),
    ("num-deletion-window-ok", {"NumericGreaterThanEquals":
                                {"kms:ScheduleKeyDeletionPendingWindowInDays": 7}},
     {"kms:ScheduleKeyDeletionPendingWindowInDays": 30}, True),
    # Arn
    ("arn-equals", {"ArnEquals": {"kms:GranteePrincipal": APP}}, {"kms:GranteePrincipal": APP},
     True),
    ("arn-like-star", {"ArnLike": {"kms:GranteePrincipal": f"arn:aws:iam::{ACCOUNT}:role/*"}},
     {"kms:GranteePrincipal": APP}, True),
    ("arn-like-any-account",
     {"ArnLike": {"kms:GranteePrincipal": "arn:aws:iam::*:role/pay?ents-app"}},
     {"kms:GranteePrincipal": APP}, True),
    ("arn-like-star-stays-in-its-field", {"ArnLike": {"kms:GranteePrincipal": "arn:aws:*"}},
     {"kms:GranteePrincipal": APP}, False),
    ("arn-like-other-account", {"ArnLike": {"kms:GranteePrincipal": "arn:aws:iam::999999999999:*"}},
     {"kms:GranteePrincipal": APP}, False),
    ("arn-not-equals", {"ArnNotEquals": {"kms:RetiringPrincipal": APP}},
     {"kms:RetiringPrincipal": APP}, False),
    ("arn-not-like", {"ArnNotLike": {"kms:RetiringPrincipal": "arn:aws:iam::*:role/admin*"}},
     {"kms:RetiringPrincipal": APP}, True),
    ("arn-not-a-arn", {"ArnLike": {"kms:RetiringPrincipal": "arn:aws:iam::*:role/*"}},
     {"kms:RetiringPrincipal": "payments-app"}, False),
]


@pytest.mark.parametrize("name,condition,attrs,allowed", ATTRIBUTE_ROWS,
                         ids=[row[0] for row in ATTRIBUTE_ROWS])
def test_bool_numeric_and_arn_operators(name: str, condition: dict[str, Any],
                                        attrs: dict[str, object], allowed: bool) -> None:
    assert decide(condition, attrs=attrs) is allowed


S3 = "s3.eu-west-1.amazonaws.com"
KEY_ROWS: list[tuple[str, dict[str, Any], dict[str, Any], bool]] = [
    ("CallerAccount", {"StringEquals": {"kms:CallerAccount": ACCOUNT}}, {}, True),
    ("CallerAccount-other", {"StringEquals": {"kms:CallerAccount": "999999999999"}}, {}, False),
    ("ViaService", {"StringEquals": {"kms:ViaService": S3}}, {"attrs": {"kms:ViaService": S3}},
     True),
    ("ViaService-direct-call", {"StringEquals": {"kms:ViaService": S3}}, {}, False),
    ("GrantOperations-all",
     {"ForAllValues:StringEquals": {"kms:GrantOperations": ["Decrypt", "Encrypt"]}},
     {"action": "kms:CreateGrant", "attrs": {"kms:GrantOperations": ["Decrypt"]}}, True),
    ("GrantOperations-extra", {"ForAllValues:StringEquals": {"kms:GrantOperations": ["Decrypt"]}},
     {"action": "kms:CreateGrant", "attrs": {"kms:GrantOperations": ["Decrypt", "RetireGrant"]}},
     False),
    ("GrantIsForAWSResource", {"Bool": {"kms:GrantIsForAWSResource": "true"}},
     {"action": "kms:CreateGrant", "attrs": {"kms:GrantIsForAWSResource": True}}, True),
    ("RequestAlias", {"StringEquals": {"kms:RequestAlias": "alias/payments"}},
     {"attrs": {"kms:RequestAlias": "alias/payments"}}, True),
    ("RequestAlias-by-key-id", {"StringEquals": {"kms:RequestAlias": "alias/payments"}}, {}, False),
    ("ResourceAliases", {"ForAnyValue:StringEquals": {"kms:ResourceAliases": "alias/payments"}}, {},
     True),
    ("ResourceAliases-miss", {"ForAnyValue:StringLike": {"kms:ResourceAliases": "alias/hr-*"}}, {},
     False),
    ("KeySpec", {"StringEquals": {"kms:KeySpec": "SYMMETRIC_DEFAULT"}}, {}, True),
    ("KeySpec-hmac", {"StringEquals": {"kms:KeySpec": "SYMMETRIC_DEFAULT"}}, {"key": HMAC_KEY},
     False),
    ("KeyUsage", {"StringEquals": {"kms:KeyUsage": "GENERATE_VERIFY_MAC"}}, {"key": HMAC_KEY},
     True),
    ("KeyUsage-miss", {"StringEquals": {"kms:KeyUsage": "SIGN_VERIFY"}}, {}, False),
    ("KeyOrigin", {"StringEquals": {"kms:KeyOrigin": "AWS_KMS"}}, {}, True),
    ("KeyOrigin-external", {"StringEquals": {"kms:KeyOrigin": "AWS_KMS"}}, {"key": HMAC_KEY},
     False),
    ("MultiRegion", {"Bool": {"kms:MultiRegion": "true"}}, {"key": MR_KEY}, True),
    ("MultiRegion-single", {"Bool": {"kms:MultiRegion": "true"}}, {}, False),
    ("MultiRegionKeyType", {"StringEquals": {"kms:MultiRegionKeyType": "PRIMARY"}}, {"key": MR_KEY},
     True),
    ("MultiRegionKeyType-missing", {"StringEquals": {"kms:MultiRegionKeyType": "PRIMARY"}}, {},
     False),
    ("EncryptionAlgorithm", {"StringEquals": {"kms:EncryptionAlgorithm": "SYMMETRIC_DEFAULT"}},
     {"attrs": {"kms:EncryptionAlgorithm": "SYMMETRIC_DEFAULT"}}, True),
    ("EncryptionAlgorithm-other",
     {"StringEquals": {"kms:EncryptionAlgorithm": "SYMMETRIC_DEFAULT"}},
     {"attrs": {"kms:EncryptionAlgorithm": "RSAES_OAEP_SHA_256"}}, False),
    ("SigningAlgorithm", {"StringLike": {"kms:SigningAlgorithm": "ECDSA_*"}},
     {"action": "kms:Sign", "attrs": {"kms:SigningAlgorithm": "ECDSA_SHA_256"}}, True),
    ("SigningAlgorithm-other", {"StringLike": {"kms:SigningAlgorithm": "ECDSA_*"}},
     {"action": "kms:Sign", "attrs": {"kms:SigningAlgorithm": "RSASSA_PSS_SHA_256"}}, False),
    ("MacAlgorithm", {"StringEquals": {"kms:MacAlgorithm": "HMAC_SHA_256"}},
     {"action": "kms:GenerateMac", "attrs": {"kms:MacAlgorithm": "HMAC_SHA_256"}}, True),
    ("MacAlgorithm-other", {"StringEquals": {"kms:MacAlgorithm": "HMAC_SHA_256"}},
     {"action": "kms:GenerateMac", "attrs": {"kms:MacAlgorithm": "HMAC_SHA_512"}}, False),
    ("GrantConstraintType",
     {"StringEquals": {"kms:GrantConstraintType": "EncryptionContextSubset"}},
     {"action": "kms:CreateGrant", "attrs": {"kms:GrantConstraintType": "EncryptionContextSubset"}},
     True),
    ("GrantConstraintType-none",
     {"StringEquals": {"kms:GrantConstraintType": "EncryptionContextSubset"}},
     {"action": "kms:CreateGrant"}, False),
    ("PrincipalArn", {"ArnEquals": {"aws:PrincipalArn": APP}}, {}, True),
    ("PrincipalArn-other", {"StringEquals": {"aws:PrincipalArn": f"arn:aws:iam::{ACCOUNT}:role/x"}},
     {}, False),
    ("PrincipalArn-of-session-is-role",
     {"ArnEquals": {"aws:PrincipalArn": f"arn:aws:iam::{ACCOUNT}:role/payments-app"}},
     {"arn": f"arn:aws:sts::{ACCOUNT}:assumed-role/payments-app/session-1"}, True),
    ("PrincipalAccount", {"StringEquals": {"aws:PrincipalAccount": ACCOUNT}}, {}, True),
    ("PrincipalAccount-other", {"StringNotEquals": {"aws:PrincipalAccount": ACCOUNT}}, {}, False),
    ("PrincipalOrgID", {"StringEquals": {"aws:PrincipalOrgID": "o-example"}}, {}, True),
    ("PrincipalOrgID-none", {"StringEquals": {"aws:PrincipalOrgID": "o-example"}}, {"org": None},
     False),
    ("PrincipalTag", {"StringEquals": {"aws:PrincipalTag/team": "payments"}},
     {"tags": {"team": "payments"}}, True),
    ("PrincipalTag-key-ignores-case", {"StringEquals": {"aws:PrincipalTag/Team": "payments"}},
     {"tags": {"team": "payments"}}, True),
    ("PrincipalTag-missing", {"StringEquals": {"aws:PrincipalTag/team": "payments"}}, {}, False),
    ("ResourceTag", {"StringEquals": {"aws:ResourceTag/Environment": "prod"}}, {}, True),
    ("ResourceTag-other", {"StringEquals": {"aws:ResourceTag/Environment": "dev"}}, {}, False),
    ("RequestTag", {"StringEquals": {"aws:RequestTag/owner": "payments"}},
     {"action": "kms:TagResource", "attrs": {"aws:RequestTag/owner": "payments"}}, True),
    ("RequestTag-other", {"StringEquals": {"aws:RequestTag/owner": "payments"}},
     {"action": "kms:TagResource", "attrs": {"aws:RequestTag/owner": "hr"}}, False),
    ("TagKeys", {"ForAllValues:StringEquals": {"aws:TagKeys": ["owner", "cost-center"]}},
     {"action": "kms:TagResource", "attrs": {"aws:TagKeys": ["owner"]}}, True),
    ("TagKeys-extra", {"ForAllValues:StringEquals": {"aws:TagKeys": ["owner"]}},
     {"action": "kms:TagResource", "attrs": {"aws:TagKeys": ["owner", "kmsplan:stack"]}}, False),
    ("RetiringPrincipal", {"StringEquals": {"kms:RetiringPrincipal": APP}},
     {"action": "kms:CreateGrant", "attrs": {"kms:RetiringPrincipal": APP}}, True),
    ("GranteePrincipal-other", {"StringEquals": {"kms:GranteePrincipal": APP}},
     {"action": "kms:CreateGrant", "attrs": {"kms:GranteePrincipal": "arn:aws:iam::1:role/x"}},
     False),
]


@pytest.mark.parametrize("name,condition,request_parts,allowed", KEY_ROWS,
                         ids=[row[0] for row in KEY_ROWS])
def test_each_condition_key(name: str, condition: dict[str, Any], request_parts: dict[str, Any],
                            allowed: bool) -> None:
    assert decide(condition, **request_parts) is allowed


VARIABLE_ROWS = [
    ("tag-matches-context", {"StringEquals": {EC: "${aws:PrincipalTag/tenant}"}},
     {"tenant": "acme"}, {"tenant": "acme"}, True),
    ("tag-differs", {"StringEquals": {EC: "${aws:PrincipalTag/tenant}"}},
     {"tenant": "acme"}, {"tenant": "globex"}, False),
    ("tag-missing-matches-nothing", {"StringEquals": {EC: "${aws:PrincipalTag/tenant}"}},
     {}, {"tenant": ""}, False),
    ("account-in-like", {"StringLike": {"kms:EncryptionContext:path": "${aws:PrincipalAccount}/*"}},
     {}, {"path": f"{ACCOUNT}/reports"}, True),
    ("arn-variable", {"StringEquals": {"kms:EncryptionContext:owner": "${aws:PrincipalArn}"}},
     {}, {"owner": APP}, True),
    ("org-variable", {"StringEquals": {"kms:EncryptionContext:org": "${aws:PrincipalOrgID}"}},
     {}, {"org": "o-example"}, True),
    ("substituted-value-is-literal", {"StringLike": {EC: "${aws:PrincipalTag/tenant}"}},
     {"tenant": "a*"}, {"tenant": "abc"}, False),
    ("substituted-value-literal-match", {"StringLike": {EC: "${aws:PrincipalTag/tenant}"}},
     {"tenant": "a*"}, {"tenant": "a*"}, True),
    ("escape-star-is-literal", {"StringLike": {EC: "a${*}"}}, {}, {"tenant": "a*"}, True),
    ("escape-star-not-wildcard", {"StringLike": {EC: "a${*}"}}, {}, {"tenant": "ab"}, False),
    ("escape-dollar", {"StringEquals": {EC: "${$}5"}}, {}, {"tenant": "$5"}, True),
    # an unresolvable variable invalidates the statement, even through a negated operator
    ("unresolved-negated", {"StringNotEquals": {EC: "${aws:PrincipalTag/tenant}"}},
     {}, {"tenant": "acme"}, False),
    ("resolved-negated", {"StringNotEquals": {EC: "${aws:PrincipalTag/tenant}"}},
     {"tenant": "globex"}, {"tenant": "acme"}, True),
]


@pytest.mark.parametrize("name,condition,tags,context,allowed", VARIABLE_ROWS,
                         ids=[row[0] for row in VARIABLE_ROWS])
def test_policy_variables(name: str, condition: dict[str, Any], tags: dict[str, str],
                          context: dict[str, str], allowed: bool) -> None:
    assert decide(condition, tags=tags, context=context) is allowed
