"""The three layers through the real store API: key policy, IAM identity policies, grants; Deny
precedence; cross-account access; actions on no key (IAM alone decides); unregistered callers;
and the audit records of refused calls."""

from __future__ import annotations

import json

import pytest
from authz_world import (
    ACCOUNT, ADMIN, ALLOWED, APP, DENIED, ENABLE_IAM, KEY_ARN, OPS, OTHER, OTHER_ROOT, PARTNER, REGION, ROOT,
    Case, Req, allow, case_id, check, deny, iam, kp, snake, stmt, who,
)

from kmsplan.errors import KMSError

OTHER_KEY_ARN = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/00000000-0000-4000-8000-000000000000"
NEW_POLICY = json.dumps(kp(ENABLE_IAM))
GRANT_ENCRYPT = {"GranteePrincipal": APP, "Operations": ["Encrypt"], "Name": "app-encrypt"}

LAYERS = [
    # key policy alone
    Case("key-policy-names-caller", kp(ENABLE_IAM, stmt(APP, "kms:Encrypt", sid="AppEncrypts")),
         Req(APP, "Encrypt"), ALLOWED),
    Case("key-policy-names-caller-not-this-action", kp(ENABLE_IAM, stmt(APP, "kms:Encrypt")),
         Req(APP, "Decrypt", key=None), DENIED),
    Case("key-policy-names-caller-without-root-statement", kp(stmt(APP, ["kms:Encrypt", "kms:DescribeKey"])),
         Req(APP, "DescribeKey"), ALLOWED),
    Case("key-policy-names-someone-else", kp(ENABLE_IAM, stmt(OPS, "kms:Encrypt")), Req(APP, "Encrypt"), DENIED),
    Case("key-policy-principal-list", kp(stmt([OPS, APP], "kms:Encrypt")), Req(APP, "Encrypt"), ALLOWED),
    Case("key-policy-user-principal", kp(stmt(ADMIN), stmt(f"arn:aws:iam::{ACCOUNT}:user/auditor", "kms:DescribeKey")),
         Req(f"arn:aws:iam::{ACCOUNT}:user/auditor", "DescribeKey"), ALLOWED,
         principals=(who(ADMIN), who(f"arn:aws:iam::{ACCOUNT}:user/auditor"))),
    # root statement + IAM
    Case("root-statement-delegates-to-iam", kp(ENABLE_IAM), Req(APP, "Encrypt"), ALLOWED,
         principals=(who(APP, iam(allow("kms:Encrypt"))),)),
    Case("bare-account-id-delegates-to-iam", kp(stmt(ACCOUNT, sid="Account")), Req(APP, "Encrypt"), ALLOWED,
         principals=(who(APP, iam(allow("kms:Encrypt"))),)),
    Case("root-statement-iam-allows-other-action", kp(ENABLE_IAM), Req(APP, "Encrypt"), DENIED,
         principals=(who(APP, iam(allow("kms:Decrypt"))),)),
    Case("root-statement-without-iam", kp(ENABLE_IAM), Req(APP, "Encrypt"), DENIED),
    Case("root-statement-second-iam-policy", kp(ENABLE_IAM), Req(APP, "Encrypt"), ALLOWED,
         principals=(who(APP, iam(allow("kms:Decrypt")), iam(allow("kms:Encrypt"))),)),
    Case("root-statement-limited-to-some-actions", kp(stmt(ROOT, "kms:Decrypt"), stmt(ADMIN)),
         Req(APP, "Encrypt"), DENIED, principals=(who(APP, iam(allow())), who(ADMIN))),
    Case("iam-ignored-without-root-statement", kp(stmt(ADMIN)), Req(APP, "Encrypt"), DENIED,
         principals=(who(APP, iam(allow())), who(ADMIN))),
    Case("iam-resource-is-the-key-arn", kp(ENABLE_IAM), Req(APP, "Encrypt"), ALLOWED,
         principals=(who(APP, iam(allow("kms:Encrypt", KEY_ARN))),)),
    Case("iam-resource-is-another-key", kp(ENABLE_IAM), Req(APP, "Encrypt"), DENIED,
         principals=(who(APP, iam(allow("kms:Encrypt", OTHER_KEY_ARN))),)),
    Case("iam-resource-pattern-this-region", kp(ENABLE_IAM), Req(APP, "Encrypt"), ALLOWED,
         principals=(who(APP, iam(allow("kms:Encrypt", f"arn:aws:kms:{REGION}:{ACCOUNT}:key/*"))),)),
    Case("iam-resource-pattern-other-region", kp(ENABLE_IAM), Req(APP, "Encrypt"), DENIED,
         principals=(who(APP, iam(allow("kms:Encrypt", f"arn:aws:kms:us-east-1:{ACCOUNT}:key/*"))),)),
    # actions as patterns
    Case("action-wildcard-matches", kp(stmt(APP, "kms:GenerateDataKey*")),
         Req(APP, "GenerateDataKeyWithoutPlaintext"), ALLOWED),
    Case("action-wildcard-does-not-match", kp(stmt(APP, "kms:GenerateDataKey*")), Req(APP, "Encrypt"), DENIED),
    Case("action-names-ignore-case", kp(stmt(APP, "KMS:encrypt")), Req(APP, "Encrypt"), ALLOWED),
    Case("not-action-allows-the-rest", kp(stmt(APP, ["kms:Decrypt", "kms:Put*"], not_action=True)),
         Req(APP, "Encrypt"), ALLOWED),
    Case("not-action-excludes", kp(ENABLE_IAM, stmt(APP, ["kms:Decrypt", "kms:Put*"], not_action=True)),
         Req(APP, "PutKeyPolicy", {"Policy": NEW_POLICY}), DENIED),
    # grants alone
    Case("grant-only", kp(ENABLE_IAM), Req(APP, "Encrypt"), ALLOWED, grants=(GRANT_ENCRYPT,)),
    Case("grant-only-other-operation", kp(ENABLE_IAM), Req(APP, "GenerateDataKey"), DENIED, grants=(GRANT_ENCRYPT,)),
    Case("grant-for-someone-else", kp(ENABLE_IAM), Req(OPS, "Encrypt"), DENIED, grants=(GRANT_ENCRYPT,)),
    Case("grant-without-root-statement", kp(stmt(ADMIN)), Req(APP, "Encrypt"), ALLOWED, grants=(GRANT_ENCRYPT,),
         principals=(who(APP), who(ADMIN))),
    Case("grant-never-allows-management", kp(ENABLE_IAM), Req(APP, "PutKeyPolicy", {"Policy": NEW_POLICY}), DENIED,
         grants=({"GranteePrincipal": APP, "Operations": ["Encrypt", "DescribeKey"]},)),
    Case("grant-describe-key", kp(ENABLE_IAM), Req(APP, "DescribeKey"), ALLOWED,
         grants=({"GranteePrincipal": APP, "Operations": ["DescribeKey"]},)),
    Case("grant-decrypt", kp(ENABLE_IAM), Req(APP, "Decrypt", key=None), ALLOWED,
         grants=({"GranteePrincipal": APP, "Operations": ["Decrypt"]},)),
]


@pytest.mark.parametrize("case", LAYERS, ids=case_id)
def test_layers(world, case):
    check(world, case)


DENY_PRECEDENCE = [
    Case("key-policy-deny-beats-iam-allow",
         kp(ENABLE_IAM, stmt(APP, "kms:Encrypt", effect="Deny", sid="NoEncrypt")), Req(APP, "Encrypt"), DENIED,
         principals=(who(APP, iam(allow())),)),
    Case("key-policy-deny-leaves-other-actions",
         kp(ENABLE_IAM, stmt(APP, "kms:Encrypt", effect="Deny")), Req(APP, "DescribeKey"), ALLOWED,
         principals=(who(APP, iam(allow())),)),
    Case("key-policy-deny-beats-key-policy-allow",
         kp(stmt(APP, "kms:*", sid="AppAll"), stmt(APP, "kms:Encrypt", effect="Deny")), Req(APP, "Encrypt"), DENIED),
    Case("key-policy-deny-beats-grant", kp(ENABLE_IAM, stmt(APP, "kms:Encrypt", effect="Deny")),
         Req(APP, "Encrypt"), DENIED, grants=(GRANT_ENCRYPT,)),
    Case("key-policy-deny-on-account-root-covers-roles", kp(stmt(APP), stmt(ROOT, "kms:Encrypt", effect="Deny")),
         Req(APP, "Encrypt"), DENIED),
    Case("key-policy-deny-star", kp(stmt(APP), stmt("*", "kms:Encrypt", effect="Deny")), Req(APP, "Encrypt"), DENIED),
    Case("iam-deny-beats-key-policy-allow", kp(stmt(APP)), Req(APP, "Encrypt"), DENIED,
         principals=(who(APP, iam(deny("kms:Encrypt"))),)),
    Case("iam-deny-counts-without-root-statement", kp(stmt(APP), stmt(ADMIN)), Req(APP, "Encrypt"), DENIED,
         principals=(who(APP, iam(allow()), iam(deny("kms:Encrypt", sid="NoEncrypt"))), who(ADMIN))),
    Case("iam-deny-beats-grant", kp(ENABLE_IAM), Req(APP, "Encrypt"), DENIED, grants=(GRANT_ENCRYPT,),
         principals=(who(APP, iam(deny("kms:Encrypt"))),)),
    Case("iam-deny-on-another-key-does-not-apply", kp(stmt(APP)), Req(APP, "Encrypt"), ALLOWED,
         principals=(who(APP, iam(deny("kms:Encrypt", OTHER_KEY_ARN))),)),
    Case("iam-deny-beats-iam-allow", kp(ENABLE_IAM), Req(APP, "Encrypt"), DENIED,
         principals=(who(APP, iam(allow(), deny("kms:Encrypt"))),)),
    Case("deny-whose-condition-fails-does-not-apply",
         kp(stmt(APP), stmt(APP, "kms:Encrypt", effect="Deny",
                           condition={"StringEquals": {"kms:EncryptionContext:tenant": "blocked"}})),
         Req(APP, "Encrypt", {"EncryptionContext": {"tenant": "acme"}}), ALLOWED),
    Case("deny-whose-condition-holds",
         kp(stmt(APP), stmt(APP, "kms:Encrypt", effect="Deny",
                           condition={"StringEquals": {"kms:EncryptionContext:tenant": "blocked"}})),
         Req(APP, "Encrypt", {"EncryptionContext": {"tenant": "blocked"}}), DENIED),
    Case("not-principal-deny-spares-the-named-role-and-its-account",
         kp(ENABLE_IAM, stmt([APP, ROOT], "kms:Encrypt", effect="Deny", not_principal=True)),
         Req(APP, "Encrypt"), ALLOWED, principals=(who(APP, iam(allow())), who(OPS, iam(allow())))),
    Case("not-principal-deny-hits-everyone-else",
         kp(ENABLE_IAM, stmt([APP, ROOT], "kms:Encrypt", effect="Deny", not_principal=True)),
         Req(OPS, "Encrypt"), DENIED, principals=(who(APP, iam(allow())), who(OPS, iam(allow())))),
    Case("not-principal-deny-without-the-account-hits-the-role-too",
         kp(ENABLE_IAM, stmt(APP, "kms:Encrypt", effect="Deny", not_principal=True)),
         Req(APP, "Encrypt"), DENIED, principals=(who(APP, iam(allow())),)),
]


@pytest.mark.parametrize("case", DENY_PRECEDENCE, ids=case_id)
def test_deny_precedence(world, case):
    check(world, case)


PARTNER_IAM = iam(allow(["kms:Encrypt", "kms:Decrypt", "kms:DescribeKey"], KEY_ARN, sid="UseThePaymentsKey"))
CROSS_ACCOUNT = [
    Case("account-root-statement-and-partner-iam", kp(ENABLE_IAM, stmt(OTHER_ROOT, "kms:Encrypt", sid="Partner")),
         Req(PARTNER, "Encrypt", key="arn"), ALLOWED, principals=(who(PARTNER, PARTNER_IAM),)),
    Case("bare-account-id-and-partner-iam", kp(ENABLE_IAM, stmt(OTHER, "kms:Encrypt")),
         Req(PARTNER, "Encrypt", key="arn"), ALLOWED, principals=(who(PARTNER, PARTNER_IAM),)),
    Case("partner-role-named-and-partner-iam", kp(ENABLE_IAM, stmt(PARTNER, ["kms:Encrypt", "kms:Decrypt"])),
         Req(PARTNER, "Decrypt", key=None), ALLOWED, principals=(who(PARTNER, PARTNER_IAM),)),
    Case("partner-role-named-without-iam", kp(ENABLE_IAM, stmt(PARTNER, "kms:Encrypt")),
         Req(PARTNER, "Encrypt", key="arn"), DENIED, principals=(who(PARTNER),)),
    Case("account-root-statement-without-iam", kp(ENABLE_IAM, stmt(OTHER_ROOT, "kms:Encrypt")),
         Req(PARTNER, "Encrypt", key="arn"), DENIED, principals=(who(PARTNER),)),
    Case("partner-iam-without-key-policy", kp(ENABLE_IAM), Req(PARTNER, "Encrypt", key="arn"), DENIED,
         principals=(who(PARTNER, PARTNER_IAM),)),
    Case("partner-iam-names-another-key", kp(ENABLE_IAM, stmt(OTHER_ROOT, "kms:Encrypt")),
         Req(PARTNER, "Encrypt", key="arn"), DENIED,
         principals=(who(PARTNER, iam(allow("kms:Encrypt", OTHER_KEY_ARN))),)),
    Case("partner-iam-any-resource", kp(ENABLE_IAM, stmt(OTHER_ROOT, "kms:Encrypt")),
         Req(PARTNER, "Encrypt", key="arn"), ALLOWED, principals=(who(PARTNER, iam(allow("kms:Encrypt"))),)),
    Case("key-policy-allows-other-action-only", kp(ENABLE_IAM, stmt(OTHER_ROOT, "kms:Decrypt")),
         Req(PARTNER, "Encrypt", key="arn"), DENIED, principals=(who(PARTNER, iam(allow())),)),
    Case("partner-iam-deny", kp(ENABLE_IAM, stmt(PARTNER, "kms:Encrypt")), Req(PARTNER, "Encrypt", key="arn"),
         DENIED, principals=(who(PARTNER, iam(allow()), iam(deny("kms:Encrypt"))),)),
    Case("partner-account-root-itself", kp(ENABLE_IAM, stmt(OTHER_ROOT, "kms:DescribeKey")),
         Req(OTHER_ROOT, "DescribeKey", key="arn"), ALLOWED, principals=(who(OTHER_ROOT),)),
    Case("local-iam-grants-nothing-to-partner", kp(ENABLE_IAM), Req(PARTNER, "Encrypt", key="arn"), DENIED,
         principals=(who(APP, iam(allow())), who(PARTNER))),
    Case("partner-grant", kp(ENABLE_IAM), Req(PARTNER, "Encrypt", key="arn"), ALLOWED,
         grants=({"GranteePrincipal": PARTNER, "Operations": ["Encrypt"]},), principals=(who(PARTNER),)),
]


@pytest.mark.parametrize("case", CROSS_ACCOUNT, ids=case_id)
def test_cross_account(world, case):
    check(world, case)


SESSION = f"arn:aws:sts::{ACCOUNT}:assumed-role/payments-app/build-42"
SESSIONS = [  # a role session acts as its registered role
    Case("session-of-a-role-the-key-policy-names", kp(ENABLE_IAM, stmt(APP, "kms:Encrypt")), Req(SESSION, "Encrypt"),
         ALLOWED),
    Case("session-uses-its-role-iam", kp(ENABLE_IAM), Req(SESSION, "Encrypt"), ALLOWED,
         principals=(who(APP, iam(allow("kms:Encrypt"))),)),
    Case("session-uses-its-role-grant", kp(ENABLE_IAM), Req(SESSION, "Encrypt"), ALLOWED, grants=(GRANT_ENCRYPT,)),
    Case("session-principal-arn-is-the-role", kp(ENABLE_IAM, stmt("*", "kms:Encrypt", condition={
        "ArnEquals": {"aws:PrincipalArn": APP}})), Req(SESSION, "Encrypt"), ALLOWED),
    Case("session-of-a-role-with-a-path", kp(ENABLE_IAM, stmt(f"arn:aws:iam::{ACCOUNT}:role/teams/payments-app",
                                                            "kms:Encrypt")), Req(SESSION, "Encrypt"), ALLOWED,
         principals=(who(f"arn:aws:iam::{ACCOUNT}:role/teams/payments-app"),)),
    Case("session-role-iam-deny", kp(ENABLE_IAM, stmt(APP, "kms:Encrypt")), Req(SESSION, "Encrypt"), DENIED,
         principals=(who(APP, iam(deny("kms:Encrypt"))),)),
    Case("session-of-an-unregistered-role", kp(ENABLE_IAM, stmt(OPS, "kms:Encrypt")), Req(SESSION, "Encrypt"), DENIED,
         principals=(who(OPS),)),
    Case("session-of-a-same-named-role-elsewhere", kp(ENABLE_IAM, stmt(OTHER_ROOT, "kms:Encrypt")),
         Req(f"arn:aws:sts::{OTHER}:assumed-role/payments-app/x", "Encrypt", key="arn"), DENIED,
         principals=(who(APP, iam(allow())), who(PARTNER, iam(allow())))),
]


@pytest.mark.parametrize("case", SESSIONS, ids=case_id)
def test_role_sessions(world, case):
    check(world, case)


# Actions on no existing key: the caller's identity policies alone decide (the root always may).
NO_KEY = [
    ("create-key-root", ROOT, "CreateKey", {}, (), ALLOWED),
    ("create-key-iam", APP, "CreateKey", {}, (iam(allow("kms:CreateKey")),), ALLOWED),
    ("create-key-no-iam", APP, "CreateKey", {}, (), DENIED),
    ("create-key-iam-resource-must-be-star", APP, "CreateKey", {},
     (iam(allow("kms:CreateKey", f"arn:aws:kms:{REGION}:{ACCOUNT}:key/*")),), DENIED),
    ("create-key-iam-deny", APP, "CreateKey", {}, (iam(allow()), iam(deny("kms:CreateKey"))), DENIED),
    ("list-keys-iam", APP, "ListKeys", {}, (iam(allow("kms:List*")),), ALLOWED),
    ("list-keys-no-iam", APP, "ListKeys", {}, (iam(allow("kms:Encrypt")),), DENIED),
    ("list-aliases-iam", APP, "ListAliases", {}, (iam(allow("kms:ListAliases")),), ALLOWED),
    ("list-aliases-no-iam", APP, "ListAliases", {}, (), DENIED),
    ("generate-random-iam", APP, "GenerateRandom", {"NumberOfBytes": 16}, (iam(allow("kms:GenerateRandom")),),
     ALLOWED),
    ("generate-random-no-iam", APP, "GenerateRandom", {"NumberOfBytes": 16}, (), DENIED),
    ("list-retirable-grants-iam", APP, "ListRetirableGrants", {"RetiringPrincipal": APP},
     (iam(allow("kms:ListRetirableGrants")),), ALLOWED),
    ("list-retirable-grants-no-iam", APP, "ListRetirableGrants", {"RetiringPrincipal": APP}, (), DENIED),
    ("partner-create-key-in-this-account", PARTNER, "CreateKey", {}, (iam(allow()),), ALLOWED),
]


@pytest.mark.parametrize("name,caller,operation,params,policies,expect", NO_KEY, ids=[r[0] for r in NO_KEY])
def test_actions_on_no_key_follow_identity_policies(world, name, caller, operation, params, policies, expect):
    world.register(who(caller, *policies))
    method = getattr(world.client(caller), snake(operation))
    if expect == ALLOWED:
        method(**params)
        return
    with pytest.raises(KMSError) as raised:
        method(**params)
    assert raised.value.code == DENIED
    assert raised.value.message.startswith(
        f"User: {caller} is not authorized to perform: kms:{operation} on resource: *")


def test_partner_create_key_is_refused_without_iam(world):
    # the pair to the last NO_KEY row: a partner principal with no identity policy creates nothing
    world.register(who(PARTNER))
    assert world.outcome(lambda: world.client(PARTNER).create_key()) == DENIED


# --- unregistered callers ---------------------------------------------------------------------

STRANGER = f"arn:aws:iam::{ACCOUNT}:role/stranger"


@pytest.mark.parametrize("operation", ["Encrypt", "DescribeKey", "CreateKey", "ListKeys"])
def test_unregistered_principal_is_refused_even_by_an_open_policy(world, operation):
    key = world.new_key()
    world.register(who(APP))
    world.put_policy(key["KeyId"], kp(ENABLE_IAM, stmt("*")), {})
    params = {"Encrypt": {"KeyId": key["KeyId"], "Plaintext": b"x"}, "DescribeKey": {"KeyId": key["KeyId"]},
              "CreateKey": {}, "ListKeys": {}}[operation]
    method = getattr(world.client(STRANGER), snake(operation))
    with pytest.raises(KMSError) as raised:
        method(**params)
    assert raised.value.code == DENIED
    assert STRANGER in raised.value.message and "kmsplan store principals apply" in raised.value.message
    # the same call by a registered principal passes the open policy: the registry is the difference
    world.register(who(APP), who(STRANGER, iam(allow())))
    method(**params)


def test_removing_a_principal_from_the_registry_takes_effect_at_once(world):
    key = world.new_key()
    world.register(who(APP))
    world.put_policy(key["KeyId"], kp(ENABLE_IAM, stmt(APP, "kms:Encrypt")), {})
    app = world.client(APP)
    app.encrypt(KeyId=key["KeyId"], Plaintext=b"x")
    world.register(who(OPS))
    assert world.outcome(lambda: app.encrypt(KeyId=key["KeyId"], Plaintext=b"x")) == DENIED


def test_identity_policy_change_takes_effect_at_once(world):
    key = world.new_key()
    world.register(who(APP, iam(allow("kms:Encrypt"))))
    app = world.client(APP)
    app.encrypt(KeyId=key["KeyId"], Plaintext=b"x")
    world.register(who(APP, iam(allow("kms:Decrypt"))))
    assert world.outcome(lambda: app.encrypt(KeyId=key["KeyId"], Plaintext=b"x")) == DENIED


def test_re_encrypt_to_sees_the_destination_algorithm_not_the_source(world):
    """ReEncrypt is authorized twice; kms:EncryptionAlgorithm of the ReEncryptTo half is the
    destination's (here RSA), not the source's SYMMETRIC_DEFAULT."""
    source = world.new_key()
    destination = world.new_key(KeySpec="RSA_2048", KeyUsage="ENCRYPT_DECRYPT")
    world.register(who(APP))
    world.put_policy(source["KeyId"], kp(ENABLE_IAM, stmt(APP, "kms:ReEncryptFrom")), {})
    blob = world.root.encrypt(KeyId=source["KeyId"], Plaintext=b"x")["CiphertextBlob"]
    app = world.client(APP)

    def re_encrypt():
        return app.re_encrypt(CiphertextBlob=blob, DestinationKeyId=destination["KeyId"],
                              SourceEncryptionAlgorithm="SYMMETRIC_DEFAULT",
                              DestinationEncryptionAlgorithm="RSAES_OAEP_SHA_256")

    for algorithm, expected in (("RSAES_OAEP_SHA_256", ALLOWED), ("SYMMETRIC_DEFAULT", DENIED)):
        condition = {"StringEquals": {"kms:EncryptionAlgorithm": algorithm}}
        world.put_policy(destination["KeyId"], kp(ENABLE_IAM, stmt(APP, "kms:ReEncryptTo", condition=condition)), {})
        assert world.outcome(re_encrypt) == expected, algorithm


# --- audit records of refusals ----------------------------------------------------------------

def _last_record(store) -> dict:
    *_, last = store.audit.records()
    return last


def test_access_denied_is_audited_with_the_caller_and_key(world, store):
    key = world.new_key()
    world.register(who(APP))
    world.put_policy(key["KeyId"], kp(ENABLE_IAM, stmt(APP, "kms:Decrypt")), {})
    outcome = world.outcome(lambda: world.client(APP).encrypt(
        KeyId=key["KeyId"], Plaintext=b"secret", EncryptionContext={"tenant": "acme"}))
    assert outcome == DENIED
    record = _last_record(store)
    assert record["eventName"] == "Encrypt"
    assert record["outcome"] == "Failure"
    assert record["errorCode"] == "AccessDeniedException"
    assert record["userIdentity"]["arn"] == APP
    assert record["userIdentity"]["accountId"] == ACCOUNT
    assert record["resources"] == [{"ARN": key["Arn"], "type": "AWS::KMS::Key"}]
    assert f"User: {APP} is not authorized to perform: kms:Encrypt on resource: {key['Arn']}" in record["errorMessage"]
    assert record["requestParameters"]["encryptionContext"] == {"tenant": "acme"}
    assert "secret" not in str(record)
    # the same principal's allowed call is a Success record
    blob = world.root.encrypt(KeyId=key["KeyId"], Plaintext=b"x")["CiphertextBlob"]
    world.client(APP).decrypt(CiphertextBlob=blob)
    record = _last_record(store)
    assert (record["eventName"], record["outcome"], record["userIdentity"]["arn"]) == ("Decrypt", "Success", APP)
    assert "errorCode" not in record


def test_unregistered_caller_is_audited(world, store):
    key = world.new_key()
    world.register()
    stranger = world.client(STRANGER, via="s3.eu-west-1.amazonaws.com")
    assert world.outcome(lambda: stranger.describe_key(KeyId=key["KeyId"])) == DENIED
    record = _last_record(store)
    assert (record["eventName"], record["outcome"], record["errorCode"]) == \
        ("DescribeKey", "Failure", "AccessDeniedException")
    assert record["userIdentity"]["arn"] == STRANGER
    assert record["viaService"] == "s3.eu-west-1.amazonaws.com"


def test_cross_account_denial_is_audited_with_the_partner_account(world, store):
    key = world.new_key()
    world.register(who(PARTNER))
    world.put_policy(key["KeyId"], kp(ENABLE_IAM, stmt(OTHER_ROOT, "kms:Encrypt")), {})
    assert world.outcome(lambda: world.client(PARTNER).encrypt(KeyId=key["Arn"], Plaintext=b"x")) == DENIED
    record = _last_record(store)
    assert record["userIdentity"] == {"type": "AssumedRole", "arn": PARTNER, "accountId": OTHER}
    assert record["errorCode"] == "AccessDeniedException"
    assert "cross-account access also needs an IAM policy" in record["errorMessage"]
    count, broken = store.audit.verify()
    assert broken is None and count > 0
