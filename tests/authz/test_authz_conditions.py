"""Conditions through real calls: every operator family (positively and negatively), every
condition key of the issue's list set by the request, the key or the principal that carries it,
and policy variables."""

from __future__ import annotations

import json

import pytest
from authz_world import (
    ACCOUNT, ALIAS, ALLOWED, APP, DENIED, EC2, ENABLE_IAM, KEY_ARN, ORG, OPS, OTHER_ROOT, PARTNER, REGION,
    REPLICA_REGION, ROOT, S3, Case, Req, allow, case_id, check, iam, kp, stmt, who,
)

from kmsplan.errors import KMSError


def app_may(action, condition: dict, *more: dict) -> dict:
    """A key policy: the account delegates to IAM (the app has no IAM policy), and one statement
    lets the payments app call `action` under `condition`."""
    return kp(ENABLE_IAM, stmt(APP, action, sid="AppUnderCondition", condition=condition), *more)


def enc(context: dict | None = None, **request) -> Req:
    return Req(APP, "Encrypt", {"EncryptionContext": context} if context is not None else {}, **request)


TENANT = "kms:EncryptionContext:tenant"

OPERATORS = [
    # String*
    Case("StringEquals-match", app_may("kms:Encrypt", {"StringEquals": {TENANT: "acme"}}), enc({"tenant": "acme"}),
         ALLOWED),
    Case("StringEquals-case-sensitive-value", app_may("kms:Encrypt", {"StringEquals": {TENANT: "acme"}}),
         enc({"tenant": "ACME"}), DENIED),
    Case("StringEquals-any-of-several-values", app_may("kms:Encrypt", {"StringEquals": {TENANT: ["globex", "acme"]}}),
         enc({"tenant": "acme"}), ALLOWED),
    Case("StringEquals-missing-key", app_may("kms:Encrypt", {"StringEquals": {TENANT: "acme"}}), enc(), DENIED),
    Case("StringNotEquals-other-value", app_may("kms:Encrypt", {"StringNotEquals": {TENANT: "globex"}}),
         enc({"tenant": "acme"}), ALLOWED),
    Case("StringNotEquals-same-value", app_may("kms:Encrypt", {"StringNotEquals": {TENANT: "globex"}}),
         enc({"tenant": "globex"}), DENIED),
    Case("StringNotEquals-none-of-several", app_may("kms:Encrypt", {"StringNotEquals": {TENANT: ["globex", "acme"]}}),
         enc({"tenant": "acme"}), DENIED),
    Case("StringNotEquals-missing-key-matches", app_may("kms:Encrypt", {"StringNotEquals": {TENANT: "globex"}}),
         enc(), ALLOWED),
    Case("StringEqualsIgnoreCase-match", app_may("kms:Encrypt", {"StringEqualsIgnoreCase": {TENANT: "ACME"}}),
         enc({"tenant": "acme"}), ALLOWED),
    Case("StringEqualsIgnoreCase-differs", app_may("kms:Encrypt", {"StringEqualsIgnoreCase": {TENANT: "ACME"}}),
         enc({"tenant": "acme-eu"}), DENIED),
    Case("StringNotEqualsIgnoreCase-differs",
         app_may("kms:Encrypt", {"StringNotEqualsIgnoreCase": {TENANT: "GLOBEX"}}), enc({"tenant": "acme"}), ALLOWED),
    Case("StringNotEqualsIgnoreCase-same",
         app_may("kms:Encrypt", {"StringNotEqualsIgnoreCase": {TENANT: "GLOBEX"}}), enc({"tenant": "globex"}), DENIED),
    Case("StringLike-star", app_may("kms:Encrypt", {"StringLike": {TENANT: "acme-*"}}), enc({"tenant": "acme-eu"}),
         ALLOWED),
    Case("StringLike-question-mark", app_may("kms:Encrypt", {"StringLike": {TENANT: "acme-??"}}),
         enc({"tenant": "acme-eu"}), ALLOWED),
    Case("StringLike-no-match", app_may("kms:Encrypt", {"StringLike": {TENANT: "acme-*"}}), enc({"tenant": "globex"}),
         DENIED),
    Case("StringLike-is-case-sensitive", app_may("kms:Encrypt", {"StringLike": {TENANT: "acme-*"}}),
         enc({"tenant": "ACME-eu"}), DENIED),
    Case("StringNotLike-no-match", app_may("kms:Encrypt", {"StringNotLike": {TENANT: "test-*"}}),
         enc({"tenant": "acme"}), ALLOWED),
    Case("StringNotLike-match", app_may("kms:Encrypt", {"StringNotLike": {TENANT: "test-*"}}),
         enc({"tenant": "test-1"}), DENIED),
    # Arn*
    Case("ArnEquals-match", app_may("kms:Encrypt", {"ArnEquals": {"aws:PrincipalArn": APP}}), enc(), ALLOWED),
    Case("ArnEquals-other", kp(ENABLE_IAM, stmt([APP, OPS], "kms:Encrypt", condition={"ArnEquals": {
        "aws:PrincipalArn": APP}})), Req(OPS, "Encrypt"), DENIED),
    Case("ArnLike-match",
         app_may("kms:Encrypt", {"ArnLike": {"aws:PrincipalArn": f"arn:aws:iam::{ACCOUNT}:role/pay*"}}),
         enc(), ALLOWED),
    Case("ArnLike-account-field", kp(ENABLE_IAM, stmt("*", "kms:Encrypt", condition={"ArnLike": {
        "aws:PrincipalArn": "arn:aws:iam::444455556666:*"}})), Req(APP, "Encrypt"), DENIED),
    Case("ArnNotEquals-other", app_may("kms:Encrypt", {"ArnNotEquals": {"aws:PrincipalArn": OPS}}), enc(), ALLOWED),
    Case("ArnNotEquals-same", app_may("kms:Encrypt", {"ArnNotEquals": {"aws:PrincipalArn": APP}}), enc(), DENIED),
    Case("ArnNotLike-no-match",
         app_may("kms:Encrypt", {"ArnNotLike": {"aws:PrincipalArn": "arn:aws:iam::*:role/ops*"}}),
         enc(), ALLOWED),
    Case("ArnNotLike-match", app_may("kms:Encrypt", {"ArnNotLike": {"aws:PrincipalArn": "arn:aws:iam::*:role/pay*"}}),
         enc(), DENIED),
    # Bool, Null
    Case("Bool-true", app_may("kms:Encrypt", {"Bool": {"kms:MultiRegion": "true"}}), enc(), ALLOWED,
         create={"MultiRegion": True}),
    Case("Bool-false-on-single-region", app_may("kms:Encrypt", {"Bool": {"kms:MultiRegion": True}}), enc(), DENIED),
    Case("Null-true-wants-missing", app_may("kms:Encrypt", {"Null": {"kms:ViaService": "true"}}), enc(), ALLOWED),
    Case("Null-true-refuses-present", app_may("kms:Encrypt", {"Null": {"kms:ViaService": "true"}}), enc(via=S3),
         DENIED),
    Case("Null-false-wants-present", app_may("kms:Encrypt", {"Null": {"kms:EncryptionContextKeys": "false"}}),
         enc({"tenant": "acme"}), ALLOWED),
    Case("Null-false-refuses-missing", app_may("kms:Encrypt", {"Null": {"kms:EncryptionContextKeys": False}}), enc(),
         DENIED),
    # Numeric*
    *[Case(f"{operator}-{days}-{'allowed' if ok else 'denied'}",
           app_may("kms:EnableKeyRotation", {operator: {"kms:RotationPeriodInDays": limit}}),
           Req(APP, "EnableKeyRotation", {"RotationPeriodInDays": days}), ALLOWED if ok else DENIED)
      for operator, limit, days, ok in [
          ("NumericEquals", 180, 180, True), ("NumericEquals", 180, 181, False),
          ("NumericNotEquals", "365", 180, True), ("NumericNotEquals", "365", 365, False),
          ("NumericLessThan", 180, 179, True), ("NumericLessThan", 180, 180, False),
          ("NumericLessThanEquals", 180, 180, True), ("NumericLessThanEquals", 180, 181, False),
          ("NumericGreaterThan", 90, 91, True), ("NumericGreaterThan", 90, 90, False),
          ("NumericGreaterThanEquals", 90, 90, True), ("NumericGreaterThanEquals", 91, 90, False)]],
    # IfExists
    Case("IfExists-missing-key-matches", app_may("kms:Encrypt", {"StringEqualsIfExists": {"kms:ViaService": S3}}),
         enc(), ALLOWED),
    Case("IfExists-present-and-equal", app_may("kms:Encrypt", {"StringEqualsIfExists": {"kms:ViaService": S3}}),
         enc(via=S3), ALLOWED),
    Case("IfExists-present-and-different", app_may("kms:Encrypt", {"StringEqualsIfExists": {"kms:ViaService": S3}}),
         enc(via=EC2), DENIED),
    Case("NumericIfExists-missing", app_may("kms:EnableKeyRotation", {
        "NumericLessThanEqualsIfExists": {"kms:RotationPeriodInDays": 365}}), Req(APP, "EnableKeyRotation"), ALLOWED),
    # ForAnyValue / ForAllValues on a multivalued key
    Case("ForAllValues-every-key-listed", app_may("kms:Encrypt", {
        "ForAllValues:StringEquals": {"kms:EncryptionContextKeys": ["tenant", "purpose"]}}),
         enc({"tenant": "acme", "purpose": "billing"}), ALLOWED),
    Case("ForAllValues-one-key-not-listed", app_may("kms:Encrypt", {
        "ForAllValues:StringEquals": {"kms:EncryptionContextKeys": ["tenant", "purpose"]}}),
         enc({"tenant": "acme", "debug": "1"}), DENIED),
    Case("ForAllValues-no-context-is-vacuously-true", app_may("kms:Encrypt", {
        "ForAllValues:StringEquals": {"kms:EncryptionContextKeys": ["tenant"]}}), enc(), ALLOWED),
    Case("ForAnyValue-one-key-listed", app_may("kms:Encrypt", {
        "ForAnyValue:StringEquals": {"kms:EncryptionContextKeys": "tenant"}}),
         enc({"tenant": "acme", "debug": "1"}), ALLOWED),
    Case("ForAnyValue-no-key-listed", app_may("kms:Encrypt", {
        "ForAnyValue:StringEquals": {"kms:EncryptionContextKeys": "tenant"}}), enc({"debug": "1"}), DENIED),
    Case("ForAnyValue-no-context", app_may("kms:Encrypt", {
        "ForAnyValue:StringEquals": {"kms:EncryptionContextKeys": "tenant"}}), enc(), DENIED),
    Case("ForAnyValue-StringLike", app_may("kms:Encrypt", {
        "ForAnyValue:StringLike": {"kms:EncryptionContextKeys": "aws:*"}}), enc({"aws:s3:arn": "bucket"}), ALLOWED),
    # combining: keys in one operator AND, operators AND
    Case("two-keys-both-hold", app_may("kms:Encrypt", {"StringEquals": {TENANT: "acme", "kms:ViaService": S3}}),
         enc({"tenant": "acme"}, via=S3), ALLOWED),
    Case("two-keys-one-fails", app_may("kms:Encrypt", {"StringEquals": {TENANT: "acme", "kms:ViaService": S3}}),
         enc({"tenant": "acme"}), DENIED),
    Case("two-operators-one-fails", app_may("kms:Encrypt", {"StringEquals": {TENANT: "acme"},
                                                           "StringLike": {"kms:ViaService": "ec2.*"}}),
         enc({"tenant": "acme"}, via=S3), DENIED),
    # condition key names ignore case; context keys in conditions ignore case too
    Case("condition-key-name-any-case",
         app_may("kms:Encrypt", {"StringEquals": {"KMS:encryptioncontext:Tenant": "acme"}}),
         enc({"tenant": "acme"}), ALLOWED),
]


@pytest.mark.parametrize("case", OPERATORS, ids=case_id)
def test_operators(world, case):
    check(world, case)


GRANT_TO_OPS = {"GranteePrincipal": OPS, "Operations": ["Encrypt", "Decrypt"]}
ECC = {"KeySpec": "ECC_NIST_P256", "KeyUsage": "SIGN_VERIFY"}
HMAC = {"KeySpec": "HMAC_256", "KeyUsage": "GENERATE_VERIFY_MAC"}
TAG_PROJECT = {"Tags": [{"TagKey": "project", "TagValue": "payments"}]}
TAGGED_APP = who(APP, tags={"project": "payments", "team": "core"})
PARTNER_IAM = iam(allow("kms:*", KEY_ARN))


def grant_req(caller: str = APP, via: str | None = None, **params) -> Req:
    return Req(caller, "CreateGrant", {**GRANT_TO_OPS, **params}, via=via)


CONDITION_KEYS = [
    # kms:EncryptionContext:KEY on each operation that carries a context
    Case("EncryptionContext-Encrypt", app_may("kms:Encrypt", {"StringEquals": {TENANT: "acme"}}),
         enc({"tenant": "acme"}), ALLOWED),
    Case("EncryptionContext-Decrypt", app_may("kms:Decrypt", {"StringEquals": {TENANT: "acme"}}),
         Req(APP, "Decrypt", {"EncryptionContext": {"tenant": "acme"}}, key=None), ALLOWED),
    Case("EncryptionContext-Decrypt-other", app_may("kms:Decrypt", {"StringEquals": {TENANT: "acme"}}),
         Req(APP, "Decrypt", {"EncryptionContext": {"tenant": "globex"}}, key=None), DENIED),
    Case("EncryptionContext-GenerateDataKey", app_may("kms:GenerateDataKey", {"StringEquals": {TENANT: "acme"}}),
         Req(APP, "GenerateDataKey", {"EncryptionContext": {"tenant": "acme"}}), ALLOWED),
    Case("EncryptionContext-GenerateDataKey-missing",
         app_may("kms:GenerateDataKey", {"StringEquals": {TENANT: "acme"}}),
         Req(APP, "GenerateDataKey"), DENIED),
    Case("EncryptionContext-key-any-case-in-request", app_may("kms:Encrypt", {"StringEquals": {TENANT: "acme"}}),
         enc({"Tenant": "acme"}), ALLOWED),
    Case("EncryptionContextKeys", app_may("kms:Encrypt", {
        "ForAnyValue:StringEquals": {"kms:EncryptionContextKeys": "tenant"}}), enc({"tenant": "x"}), ALLOWED),
    # caller and principal
    Case("CallerAccount-same", app_may("kms:Encrypt", {"StringEquals": {"kms:CallerAccount": ACCOUNT}}), enc(),
         ALLOWED),
    Case("CallerAccount-partner", kp(ENABLE_IAM, stmt(OTHER_ROOT, "kms:Encrypt", condition={
        "StringEquals": {"kms:CallerAccount": ACCOUNT}})), Req(PARTNER, "Encrypt", key="arn"), DENIED,
         principals=(who(PARTNER, PARTNER_IAM),)),
    Case("CallerAccount-partner-allowed", kp(ENABLE_IAM, stmt(OTHER_ROOT, "kms:Encrypt", condition={
        "StringEquals": {"kms:CallerAccount": "444455556666"}})), Req(PARTNER, "Encrypt", key="arn"), ALLOWED,
         principals=(who(PARTNER, PARTNER_IAM),)),
    Case("PrincipalArn", app_may("kms:Encrypt", {"StringEquals": {"aws:PrincipalArn": APP}}), enc(), ALLOWED),
    Case("PrincipalAccount-same", kp(ENABLE_IAM, stmt("*", "kms:Encrypt", condition={
        "StringEquals": {"aws:PrincipalAccount": ACCOUNT}})), Req(APP, "Encrypt"), ALLOWED),
    Case("PrincipalAccount-partner", kp(ENABLE_IAM, stmt("*", "kms:Encrypt", condition={
        "StringEquals": {"aws:PrincipalAccount": ACCOUNT}})), Req(PARTNER, "Encrypt", key="arn"), DENIED,
         principals=(who(PARTNER, PARTNER_IAM),)),
    Case("PrincipalOrgID-member", kp(ENABLE_IAM, stmt("*", "kms:Encrypt", condition={
        "StringEquals": {"aws:PrincipalOrgID": ORG}})), Req(PARTNER, "Encrypt", key="arn"), ALLOWED,
         principals=(who(PARTNER, PARTNER_IAM),)),
    Case("PrincipalOrgID-outsider", kp(ENABLE_IAM, stmt("*", "kms:Encrypt", condition={
        "StringEquals": {"aws:PrincipalOrgID": ORG}})), Req(PARTNER, "Encrypt", key="arn"), DENIED,
         principals=(who(PARTNER, PARTNER_IAM, org_id="o-otherorg0001"),)),
    Case("PrincipalOrgID-none", kp(ENABLE_IAM, stmt("*", "kms:Encrypt", condition={
        "StringEquals": {"aws:PrincipalOrgID": ORG}})), Req(APP, "Encrypt"), DENIED,
         principals=(who(APP, org_id=None),)),
    Case("PrincipalTag-match", app_may("kms:Encrypt", {"StringEquals": {"aws:PrincipalTag/project": "payments"}}),
         enc(), ALLOWED, principals=(TAGGED_APP,)),
    Case("PrincipalTag-other", app_may("kms:Encrypt", {"StringEquals": {"aws:PrincipalTag/project": "billing"}}),
         enc(), DENIED, principals=(TAGGED_APP,)),
    Case("PrincipalTag-untagged", app_may("kms:Encrypt", {"StringEquals": {"aws:PrincipalTag/project": "payments"}}),
         enc(), DENIED),
    # via a service
    Case("ViaService-match", app_may("kms:Encrypt", {"StringEquals": {"kms:ViaService": S3}}), enc(via=S3), ALLOWED),
    Case("ViaService-direct-call", app_may("kms:Encrypt", {"StringEquals": {"kms:ViaService": S3}}), enc(), DENIED),
    Case("ViaService-other-service", app_may("kms:Encrypt", {"StringLike": {"kms:ViaService": "s3.*.amazonaws.com"}}),
         enc(via=EC2), DENIED),
    # grants being created
    Case("GrantOperations-within", app_may("kms:CreateGrant", {
        "ForAllValues:StringEquals": {"kms:GrantOperations": ["Encrypt", "Decrypt", "DescribeKey"]}}),
         grant_req(), ALLOWED),
    Case("GrantOperations-beyond", app_may("kms:CreateGrant", {
        "ForAllValues:StringEquals": {"kms:GrantOperations": ["Encrypt", "Decrypt"]}}),
         grant_req(Operations=["Decrypt", "CreateGrant"]), DENIED),
    Case("GrantOperations-any", app_may("kms:CreateGrant", {
        "ForAnyValue:StringEquals": {"kms:GrantOperations": "RetireGrant"}}), grant_req(), DENIED),
    Case("GrantIsForAWSResource-via-service", app_may("kms:CreateGrant", {
        "Bool": {"kms:GrantIsForAWSResource": "true"}}), grant_req(via=EC2), ALLOWED),
    Case("GrantIsForAWSResource-direct", app_may("kms:CreateGrant", {
        "Bool": {"kms:GrantIsForAWSResource": "true"}}), grant_req(), DENIED),
    Case("GrantIsForAWSResource-ListGrants", app_may("kms:ListGrants", {
        "Bool": {"kms:GrantIsForAWSResource": True}}), Req(APP, "ListGrants", via=EC2), ALLOWED),
    Case("GrantIsForAWSResource-RevokeGrant-direct", app_may("kms:RevokeGrant", {
        "Bool": {"kms:GrantIsForAWSResource": True}}), Req(APP, "RevokeGrant", {"GrantId": "0" * 64}), DENIED),
    Case("GranteePrincipal-match", app_may("kms:CreateGrant", {"StringEquals": {"kms:GranteePrincipal": OPS}}),
         grant_req(), ALLOWED),
    Case("GranteePrincipal-other", app_may("kms:CreateGrant", {"StringEquals": {"kms:GranteePrincipal": OPS}}),
         grant_req(GranteePrincipal=APP), DENIED),
    Case("GranteePrincipal-ArnLike", app_may("kms:CreateGrant", {
        "ArnLike": {"kms:GranteePrincipal": f"arn:aws:iam::{ACCOUNT}:role/*"}}), grant_req(), ALLOWED),
    Case("RetiringPrincipal-match", app_may("kms:CreateGrant", {"StringEquals": {"kms:RetiringPrincipal": APP}}),
         grant_req(RetiringPrincipal=APP), ALLOWED),
    Case("RetiringPrincipal-missing", app_may("kms:CreateGrant", {"StringEquals": {"kms:RetiringPrincipal": APP}}),
         grant_req(), DENIED),
    Case("GrantConstraintType-match", app_may("kms:CreateGrant", {
        "StringEquals": {"kms:GrantConstraintType": "EncryptionContextSubset"}}),
         grant_req(Constraints={"EncryptionContextSubset": {"tenant": "acme"}}), ALLOWED),
    Case("GrantConstraintType-missing", app_may("kms:CreateGrant", {
        "StringEquals": {"kms:GrantConstraintType": "EncryptionContextSubset"}}), grant_req(), DENIED),
    Case("EncryptionContext-of-a-grant-constraint", app_may("kms:CreateGrant", {"StringEquals": {TENANT: "acme"}}),
         grant_req(Constraints={"EncryptionContextEquals": {"tenant": "acme"}}), ALLOWED),
    # aliases
    Case("RequestAlias-alias-name", app_may("kms:Encrypt", {"StringEquals": {"kms:RequestAlias": ALIAS}}),
         enc(key="alias"), ALLOWED, alias=True),
    Case("RequestAlias-alias-arn", app_may("kms:Encrypt", {"StringLike": {"kms:RequestAlias": "alias/payments-*"}}),
         enc(key="alias-arn"), ALLOWED, alias=True),
    Case("RequestAlias-key-id-given", app_may("kms:Encrypt", {"StringEquals": {"kms:RequestAlias": ALIAS}}),
         enc(), DENIED, alias=True),
    Case("RequestAlias-Decrypt", app_may("kms:Decrypt", {"StringEquals": {"kms:RequestAlias": ALIAS}}),
         Req(APP, "Decrypt", key="alias"), ALLOWED, alias=True),
    Case("RequestAlias-Decrypt-blob-only", app_may("kms:Decrypt", {"StringEquals": {"kms:RequestAlias": ALIAS}}),
         Req(APP, "Decrypt", key=None), DENIED, alias=True),
    Case("RequestAlias-DescribeKey",
         app_may("kms:DescribeKey", {"StringLike": {"kms:RequestAlias": "alias/payments-*"}}),
         Req(APP, "DescribeKey", key="alias"), ALLOWED, alias=True),
    Case("ResourceAliases-match", app_may("kms:Encrypt", {
        "ForAnyValue:StringLike": {"kms:ResourceAliases": "alias/payments-*"}}), enc(), ALLOWED, alias=True),
    Case("ResourceAliases-none", app_may("kms:Encrypt", {
        "ForAnyValue:StringLike": {"kms:ResourceAliases": "alias/payments-*"}}), enc(), DENIED),
    # key properties
    Case("KeySpec-symmetric", app_may("kms:Encrypt", {"StringEquals": {"kms:KeySpec": "SYMMETRIC_DEFAULT"}}), enc(),
         ALLOWED),
    Case("KeySpec-ecc", app_may("kms:Sign", {"StringEquals": {"kms:KeySpec": "RSA_2048"}}),
         Req(APP, "Sign", {"SigningAlgorithm": "ECDSA_SHA_256"}), DENIED, create=ECC),
    Case("KeyUsage-sign", app_may("kms:Sign", {"StringEquals": {"kms:KeyUsage": "SIGN_VERIFY"}}),
         Req(APP, "Sign", {"SigningAlgorithm": "ECDSA_SHA_256"}), ALLOWED, create=ECC),
    Case("KeyUsage-encrypt", app_may("kms:DescribeKey", {"StringEquals": {"kms:KeyUsage": "SIGN_VERIFY"}}),
         Req(APP, "DescribeKey"), DENIED),
    Case("KeyOrigin-aws-kms", app_may("kms:Encrypt", {"StringEquals": {"kms:KeyOrigin": "AWS_KMS"}}), enc(), ALLOWED),
    Case("KeyOrigin-external", app_may("kms:Encrypt", {"StringEquals": {"kms:KeyOrigin": "EXTERNAL"}}), enc(), DENIED),
    Case("MultiRegion-true", app_may("kms:Encrypt", {"Bool": {"kms:MultiRegion": "true"}}), enc(), ALLOWED,
         create={"MultiRegion": True}),
    Case("MultiRegion-false", app_may("kms:Encrypt", {"Bool": {"kms:MultiRegion": "false"}}), enc(), DENIED,
         create={"MultiRegion": True}),
    Case("MultiRegionKeyType-primary", app_may("kms:Encrypt", {"StringEquals": {"kms:MultiRegionKeyType": "PRIMARY"}}),
         enc(), ALLOWED, create={"MultiRegion": True}),
    Case("MultiRegionKeyType-single-region", app_may("kms:Encrypt", {
        "StringEquals": {"kms:MultiRegionKeyType": "PRIMARY"}}), enc(), DENIED),
    # algorithms
    Case("EncryptionAlgorithm-named", app_may("kms:Encrypt", {
        "StringEquals": {"kms:EncryptionAlgorithm": "SYMMETRIC_DEFAULT"}}),
         Req(APP, "Encrypt", {"EncryptionAlgorithm": "SYMMETRIC_DEFAULT"}), ALLOWED),
    Case("EncryptionAlgorithm-default-when-omitted", app_may("kms:Encrypt", {
        "StringEquals": {"kms:EncryptionAlgorithm": "SYMMETRIC_DEFAULT"}}), enc(), ALLOWED),
    Case("EncryptionAlgorithm-Decrypt-default", app_may("kms:Decrypt", {
        "StringEquals": {"kms:EncryptionAlgorithm": "SYMMETRIC_DEFAULT"}}), Req(APP, "Decrypt", key=None), ALLOWED),
    Case("EncryptionAlgorithm-other", app_may("kms:Encrypt", {
        "StringEquals": {"kms:EncryptionAlgorithm": "RSAES_OAEP_SHA_256"}}), enc(), DENIED),
    Case("SigningAlgorithm-match", app_may("kms:Sign", {"StringEquals": {"kms:SigningAlgorithm": "ECDSA_SHA_256"}}),
         Req(APP, "Sign", {"SigningAlgorithm": "ECDSA_SHA_256"}), ALLOWED, create=ECC),
    Case("SigningAlgorithm-other", app_may("kms:Sign", {"StringLike": {"kms:SigningAlgorithm": "RSASSA_PSS_*"}}),
         Req(APP, "Sign", {"SigningAlgorithm": "ECDSA_SHA_256"}), DENIED, create=ECC),
    Case("MacAlgorithm-match", app_may("kms:GenerateMac", {"StringEquals": {"kms:MacAlgorithm": "HMAC_SHA_256"}}),
         Req(APP, "GenerateMac", {"MacAlgorithm": "HMAC_SHA_256"}), ALLOWED, create=HMAC),
    Case("MacAlgorithm-other", app_may("kms:GenerateMac", {"StringEquals": {"kms:MacAlgorithm": "HMAC_SHA_512"}}),
         Req(APP, "GenerateMac", {"MacAlgorithm": "HMAC_SHA_256"}), DENIED, create=HMAC),
    # numbers in requests
    Case("RotationPeriodInDays-within", app_may("kms:EnableKeyRotation", {
        "NumericLessThanEquals": {"kms:RotationPeriodInDays": 180}}),
         Req(APP, "EnableKeyRotation", {"RotationPeriodInDays": 90}), ALLOWED),
    Case("RotationPeriodInDays-default-365-exceeds-180", app_may("kms:EnableKeyRotation", {
        "NumericLessThanEquals": {"kms:RotationPeriodInDays": 180}}), Req(APP, "EnableKeyRotation"), DENIED),
    Case("RotationPeriodInDays-default-is-365", app_may("kms:EnableKeyRotation", {
        "NumericEquals": {"kms:RotationPeriodInDays": 365}}), Req(APP, "EnableKeyRotation"), ALLOWED),
    Case("PendingWindow-long-enough", app_may("kms:ScheduleKeyDeletion", {
        "NumericGreaterThanEquals": {"kms:ScheduleKeyDeletionPendingWindowInDays": 14}}),
         Req(APP, "ScheduleKeyDeletion", {"PendingWindowInDays": 14}), ALLOWED),
    Case("PendingWindow-too-short", app_may("kms:ScheduleKeyDeletion", {
        "NumericGreaterThanEquals": {"kms:ScheduleKeyDeletionPendingWindowInDays": 14}}),
         Req(APP, "ScheduleKeyDeletion", {"PendingWindowInDays": 7}), DENIED),
    Case("PendingWindow-default-30", app_may("kms:ScheduleKeyDeletion", {
        "NumericGreaterThanEquals": {"kms:ScheduleKeyDeletionPendingWindowInDays": 14}}),
         Req(APP, "ScheduleKeyDeletion"), ALLOWED),
    # tags
    Case("ResourceTag-match", app_may("kms:Encrypt", {"StringEquals": {"aws:ResourceTag/env": "prod"}}), enc(),
         ALLOWED, tags={"env": "prod"}),
    Case("ResourceTag-other", app_may("kms:Encrypt", {"StringEquals": {"aws:ResourceTag/env": "prod"}}), enc(),
         DENIED, tags={"env": "dev"}),
    Case("ResourceTag-untagged", app_may("kms:Encrypt", {"StringEquals": {"aws:ResourceTag/env": "prod"}}), enc(),
         DENIED),
    Case("RequestTag-TagResource", app_may("kms:TagResource", {"StringEquals": {"aws:RequestTag/project": "payments"}}),
         Req(APP, "TagResource", TAG_PROJECT), ALLOWED),
    Case("RequestTag-TagResource-other-value", app_may("kms:TagResource", {
        "StringEquals": {"aws:RequestTag/project": "billing"}}), Req(APP, "TagResource", TAG_PROJECT), DENIED),
    Case("TagKeys-TagResource", app_may("kms:TagResource", {
        "ForAllValues:StringEquals": {"aws:TagKeys": ["project", "env"]}}), Req(APP, "TagResource", TAG_PROJECT),
         ALLOWED),
    Case("TagKeys-TagResource-unlisted", app_may("kms:TagResource", {
        "ForAllValues:StringEquals": {"aws:TagKeys": ["env"]}}), Req(APP, "TagResource", TAG_PROJECT), DENIED),
    Case("TagKeys-UntagResource", app_may("kms:UntagResource", {
        "ForAnyValue:StringEquals": {"aws:TagKeys": "kmsplan:stack"}}),
         Req(APP, "UntagResource", {"TagKeys": ["project"]}), DENIED),
    Case("TagKeys-UntagResource-listed", app_may("kms:UntagResource", {
        "ForAllValues:StringEquals": {"aws:TagKeys": ["project"]}}),
         Req(APP, "UntagResource", {"TagKeys": ["project"]}), ALLOWED),
    Case("RequestTag-CreateKey-iam", kp(ENABLE_IAM), Req(APP, "CreateKey", TAG_PROJECT, key=None), ALLOWED,
         principals=(who(APP, iam(allow("kms:CreateKey", condition={
             "StringEquals": {"aws:RequestTag/project": "payments"}}))),)),
    Case("RequestTag-CreateKey-iam-untagged", kp(ENABLE_IAM), Req(APP, "CreateKey", key=None), DENIED,
         principals=(who(APP, iam(allow("kms:CreateKey", condition={
             "StringEquals": {"aws:RequestTag/project": "payments"}}))),)),
    Case("TagKeys-CreateKey-iam", kp(ENABLE_IAM), Req(APP, "CreateKey", {"Tags": [
        {"TagKey": "owner", "TagValue": "me"}]}, key=None), DENIED,
         principals=(who(APP, iam(allow("kms:CreateKey", condition={
             "ForAllValues:StringEquals": {"aws:TagKeys": ["project", "env"]}}))),)),
    Case("KeySpec-CreateKey-default", kp(ENABLE_IAM), Req(APP, "CreateKey", key=None), ALLOWED,
         principals=(who(APP, iam(allow("kms:CreateKey", condition={
             "StringEquals": {"kms:KeySpec": "SYMMETRIC_DEFAULT"}}))),)),
    Case("KeySpec-CreateKey-hmac", kp(ENABLE_IAM), Req(APP, "CreateKey", HMAC, key=None), DENIED,
         principals=(who(APP, iam(allow("kms:CreateKey", condition={
             "StringEquals": {"kms:KeySpec": "SYMMETRIC_DEFAULT"}}))),)),
    Case("MultiRegion-CreateKey", kp(ENABLE_IAM), Req(APP, "CreateKey", {"MultiRegion": True}, key=None), DENIED,
         principals=(who(APP, iam(allow("kms:CreateKey", condition={"Bool": {"kms:MultiRegion": "false"}}))),)),
]


@pytest.mark.parametrize("case", CONDITION_KEYS, ids=case_id)
def test_condition_keys(world, case):
    check(world, case)


TAG_VARIABLE = {"StringEquals": {"kms:EncryptionContext:project": "${aws:PrincipalTag/project}"}}
VARIABLES = [
    Case("variable-principal-tag-matches", app_may("kms:Encrypt", TAG_VARIABLE), enc({"project": "payments"}),
         ALLOWED, principals=(TAGGED_APP,)),
    Case("variable-principal-tag-differs", app_may("kms:Encrypt", TAG_VARIABLE), enc({"project": "billing"}),
         DENIED, principals=(TAGGED_APP,)),
    Case("variable-without-value-never-matches", app_may("kms:Encrypt", TAG_VARIABLE), enc({"project": "payments"}),
         DENIED, principals=(who(APP),)),
    Case("variable-without-value-not-even-negated", app_may("kms:Encrypt", {
        "StringNotEquals": {"kms:EncryptionContext:project": "${aws:PrincipalTag/project}"}}),
         enc({"project": "payments"}), DENIED, principals=(who(APP),)),
    Case("variable-in-StringLike", app_may("kms:Encrypt", {
        "StringLike": {"kms:EncryptionContext:team": "${aws:PrincipalTag/team}-*"}}), enc({"team": "core-eu"}),
         ALLOWED, principals=(TAGGED_APP,)),
    Case("variable-value-is-literal-in-StringLike", app_may("kms:Encrypt", {
        "StringLike": {"kms:EncryptionContext:team": "${aws:PrincipalTag/team}"}}), enc({"team": "core"}),
         DENIED, principals=(who(APP, tags={"team": "c*"}),)),
    Case("variable-value-literal-still-matches-itself", app_may("kms:Encrypt", {
        "StringLike": {"kms:EncryptionContext:team": "${aws:PrincipalTag/team}"}}), enc({"team": "c*"}),
         ALLOWED, principals=(who(APP, tags={"team": "c*"}),)),
    Case("variable-resource-tag-equals-principal-tag", app_may("kms:Encrypt", {
        "StringEquals": {"aws:ResourceTag/project": "${aws:PrincipalTag/project}"}}), enc(), ALLOWED,
         principals=(TAGGED_APP,), tags={"project": "payments"}),
    Case("variable-resource-tag-other-project", app_may("kms:Encrypt", {
        "StringEquals": {"aws:ResourceTag/project": "${aws:PrincipalTag/project}"}}), enc(), DENIED,
         principals=(TAGGED_APP,), tags={"project": "billing"}),
    Case("variable-principal-account-in-iam-resource", kp(ENABLE_IAM), enc(), ALLOWED,
         principals=(who(APP, iam(allow("kms:Encrypt", "arn:aws:kms:*:${aws:PrincipalAccount}:key/*"))),)),
    Case("variable-principal-account-in-iam-resource-partner", kp(ENABLE_IAM, stmt(OTHER_ROOT, "kms:Encrypt")),
         Req(PARTNER, "Encrypt", key="arn"), DENIED,
         principals=(who(PARTNER, iam(allow("kms:Encrypt", "arn:aws:kms:*:${aws:PrincipalAccount}:key/*"))),)),
    Case("variable-escape-star", app_may("kms:Encrypt", {"StringLike": {TENANT: "acme${*}"}}),
         enc({"tenant": "acme*"}), ALLOWED),
    Case("variable-escape-star-is-no-wildcard", app_may("kms:Encrypt", {"StringLike": {TENANT: "acme${*}"}}),
         enc({"tenant": "acme-eu"}), DENIED),
    Case("variable-principal-arn-in-retiring", app_may("kms:CreateGrant", {
        "StringEquals": {"kms:RetiringPrincipal": "${aws:PrincipalArn}"}}), grant_req(RetiringPrincipal=APP), ALLOWED),
]


@pytest.mark.parametrize("case", VARIABLES, ids=case_id)
def test_policy_variables(world, case):
    check(world, case)


def test_resource_tag_condition_follows_tag_changes(world):
    """aws:ResourceTag reads the key's tags as they are now (the store's per-key cache refreshes)."""
    key = world.new_key()
    world.register(who(APP))
    world.put_policy(key["KeyId"], app_may("kms:Encrypt", {"StringEquals": {"aws:ResourceTag/env": "prod"}}), {})
    app = world.client(APP)
    encrypt = lambda: app.encrypt(KeyId=key["KeyId"], Plaintext=b"x")  # noqa: E731
    assert world.outcome(encrypt) == DENIED
    world.root.tag_resource(KeyId=key["KeyId"], Tags=[{"TagKey": "env", "TagValue": "prod"}])
    assert world.outcome(encrypt) == ALLOWED
    world.root.untag_resource(KeyId=key["KeyId"], TagKeys=["env"])
    assert world.outcome(encrypt) == DENIED


def test_resource_aliases_follow_alias_changes(world):
    key = world.new_key()
    world.register(who(APP))
    world.put_policy(key["KeyId"], app_may("kms:Encrypt", {
        "ForAnyValue:StringLike": {"kms:ResourceAliases": "alias/payments-*"}}), {})
    app = world.client(APP)
    encrypt = lambda: app.encrypt(KeyId=key["KeyId"], Plaintext=b"x")  # noqa: E731
    assert world.outcome(encrypt) == DENIED
    alias = world.new_alias(key["KeyId"])
    assert world.outcome(encrypt) == ALLOWED
    world.root.delete_alias(AliasName=alias)
    assert world.outcome(encrypt) == DENIED


def test_multi_region_key_type_of_a_replica(world):
    """kms:MultiRegionKeyType is REPLICA in the replica's region, PRIMARY in the primary's."""
    world.register(who(APP))
    primary = world.new_key(MultiRegion=True)
    policy = json.dumps(app_may("kms:Encrypt", {"StringEquals": {"kms:MultiRegionKeyType": "REPLICA"}}))
    world.root.replicate_key(KeyId=primary["KeyId"], ReplicaRegion=REPLICA_REGION, Policy=policy,
                             BypassPolicyLockoutSafetyCheck=True)
    world.put_policy(primary["KeyId"], json.loads(policy), {})
    for region, expect in ((REPLICA_REGION, ALLOWED), (REGION, DENIED)):
        app = world.client(APP, region=region)
        assert world.outcome(lambda app=app: app.encrypt(KeyId=primary["KeyId"], Plaintext=b"x")) == expect, region


def test_denied_message_names_the_failing_statement_context(world):
    """The refusal tells the caller which action on which key was refused, and why."""
    key = world.new_key()
    world.register(who(APP))
    world.put_policy(key["KeyId"], app_may("kms:Encrypt", {"StringEquals": {TENANT: "acme"}}), {})
    with pytest.raises(KMSError) as raised:
        world.client(APP).encrypt(KeyId=key["KeyId"], Plaintext=b"x", EncryptionContext={"tenant": "globex"})
    assert raised.value.code == DENIED
    assert raised.value.message.startswith(f"User: {APP} is not authorized to perform: kms:Encrypt on resource: "
                                           f"{key['Arn']} (")
    assert ROOT not in raised.value.message.split("(")[0]
