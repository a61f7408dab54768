"""What the store checks before it accepts a key policy (CreateKey, PutKeyPolicy, ReplicateKey):
the lockout safety check (evaluated with the caller's identity policies), principals it does not
know, and malformed documents — each refused with AWS's error code and a message that says what
and where, and nothing changed."""

from __future__ import annotations

import json

import pytest
from authz_world import (
    ACCOUNT, ADMIN, ALLOWED, APP, ENABLE_IAM, OTHER_ROOT, PARTNER, REGION, REPLICA_REGION, ROOT, S3, allow, deny,
    iam, kp, stmt, who,
)

from kmsplan.errors import KMSError

MALFORMED = "MalformedPolicyDocumentException"
LOCKOUT_MESSAGE = "The new key policy will not allow you to update the key policy in the future."

ADMIN_ALL = who(ADMIN, iam(allow()))
ADMIN_NO_PUT = who(ADMIN, iam(allow(["kms:CreateKey", "kms:Encrypt", "kms:ReplicateKey", "kms:DescribeKey"])))
ADMIN_MAY_PUT = stmt(ADMIN, ["kms:PutKeyPolicy", "kms:DescribeKey"], sid="KeyAdmin")

# (name, caller's registry entry, the new policy, bypass, expected outcome)
LOCKOUT = [
    ("policy-drops-the-caller", ADMIN_ALL, kp(stmt(APP, "kms:Encrypt")), False, MALFORMED),
    ("policy-drops-the-caller-bypassed", ADMIN_ALL, kp(stmt(APP, "kms:Encrypt")), True, ALLOWED),
    ("policy-names-the-caller", ADMIN_ALL, kp(ADMIN_MAY_PUT), False, ALLOWED),
    ("policy-names-the-caller-for-other-actions", ADMIN_ALL, kp(stmt(ADMIN, "kms:Describe*")), False, MALFORMED),
    ("root-statement-and-caller-iam", ADMIN_ALL, kp(ENABLE_IAM), False, ALLOWED),
    ("root-statement-but-caller-iam-lacks-put", ADMIN_NO_PUT, kp(ENABLE_IAM), False, MALFORMED),
    ("caller-iam-denies-put", who(ADMIN, iam(allow()), iam(deny("kms:PutKeyPolicy"))), kp(ENABLE_IAM, ADMIN_MAY_PUT),
     False, MALFORMED),
    ("policy-denies-the-caller-put", ADMIN_ALL, kp(ENABLE_IAM, stmt(ADMIN, "kms:PutKeyPolicy", effect="Deny")), False,
     MALFORMED),
    ("put-allowed-only-with-a-request-condition", ADMIN_ALL,
     kp(stmt(ADMIN, "kms:PutKeyPolicy", condition={"StringEquals": {"kms:ViaService": S3}})), False, MALFORMED),
    ("put-allowed-on-a-principal-condition", who(ADMIN, iam(allow()), tags={"role": "key-admin"}),
     kp(stmt("*", "kms:PutKeyPolicy", condition={"StringEquals": {"aws:PrincipalTag/role": "key-admin"}})), False,
     ALLOWED),
    ("put-through-a-wildcard-action", ADMIN_ALL, kp(stmt(ADMIN, "kms:Put*")), False, ALLOWED),
    ("put-excluded-by-not-action", ADMIN_ALL, kp(stmt(ADMIN, "kms:PutKeyPolicy", not_action=True)), False, MALFORMED),
]


def _create(world, caller, policy: dict, bypass: bool):
    return lambda: world.client(caller).create_key(Policy=json.dumps(policy), BypassPolicyLockoutSafetyCheck=bypass)


@pytest.mark.parametrize("name,caller,policy,bypass,expect", LOCKOUT, ids=[r[0] for r in LOCKOUT])
def test_lockout_check_on_create_key(world, name, caller, policy, bypass, expect):
    world.register(caller, who(APP))
    before = _key_count(world)
    outcome, message = _outcome(_create(world, ADMIN, policy, bypass))
    assert outcome == expect, message
    if expect == MALFORMED:
        assert message == LOCKOUT_MESSAGE
        assert _key_count(world) == before  # no key was made
    else:
        assert _key_count(world) == before + 1


@pytest.mark.parametrize("name,caller,policy,bypass,expect", LOCKOUT, ids=[r[0] for r in LOCKOUT])
def test_lockout_check_on_put_key_policy(world, name, caller, policy, bypass, expect):
    if name == "caller-iam-denies-put":  # such a caller cannot call PutKeyPolicy in the first place
        expect = "AccessDeniedException"
    key = world.new_key()
    world.register(caller, who(APP))
    current = kp(ENABLE_IAM, ADMIN_MAY_PUT)  # the admin may call PutKeyPolicy now
    world.put_policy(key["KeyId"], current, {})
    stored = world.root.get_key_policy(KeyId=key["KeyId"])["Policy"]
    outcome, message = _outcome(lambda: world.client(ADMIN).put_key_policy(
        KeyId=key["KeyId"], Policy=json.dumps(policy), BypassPolicyLockoutSafetyCheck=bypass))
    assert outcome == expect, message
    if expect != ALLOWED:
        assert message == LOCKOUT_MESSAGE or expect == "AccessDeniedException"
        assert _stored_policy(world, key["KeyId"]) == stored
    else:  # (the new policy may admit nobody who could read it back: look in the database)
        assert json.loads(world.store.meta.key(REGION, key["KeyId"]).policy) == policy


@pytest.mark.parametrize("name,caller,policy,bypass,expect", LOCKOUT[:4], ids=[r[0] for r in LOCKOUT[:4]])
def test_lockout_check_on_replicate_key(world, name, caller, policy, bypass, expect):
    primary = world.new_key(MultiRegion=True)
    world.register(caller, who(APP))
    world.put_policy(primary["KeyId"], kp(ENABLE_IAM, stmt(ADMIN, "kms:ReplicateKey")), {})
    outcome, message = _outcome(lambda: world.client(ADMIN).replicate_key(
        KeyId=primary["KeyId"], ReplicaRegion=REPLICA_REGION, Policy=json.dumps(policy),
        BypassPolicyLockoutSafetyCheck=bypass))
    assert outcome == expect, message
    replica = _outcome(lambda: world.store.client(region=REPLICA_REGION, principal=ROOT).describe_key(
        KeyId=primary["KeyId"]))[0]
    if expect == MALFORMED:
        assert message == LOCKOUT_MESSAGE
        assert replica == "NotFoundException"  # no replica was made
    else:
        assert replica in (ALLOWED, "AccessDeniedException")  # it exists (the root may be locked out of it)


def test_root_caller_is_checked_too(world):
    world.register(who(APP))
    outcome, message = _outcome(_create(world, ROOT, kp(stmt(APP)), False))
    assert (outcome, message) == (MALFORMED, LOCKOUT_MESSAGE)
    assert _outcome(_create(world, ROOT, kp(ENABLE_IAM), False))[0] == ALLOWED


def test_create_key_without_a_policy_gets_the_default_and_no_lockout(world):
    """No Policy: AWS's default key policy (the account delegates to IAM); no check to fail."""
    world.register(ADMIN_NO_PUT)
    key = world.client(ADMIN).create_key()["KeyMetadata"]
    policy = json.loads(world.root.get_key_policy(KeyId=key["KeyId"])["Policy"])
    assert policy["Statement"] == [{"Sid": "Enable IAM User Permissions", "Effect": "Allow",
                                    "Principal": {"AWS": ROOT}, "Action": "kms:*", "Resource": "*"}]


# --- principals the registry does not know ----------------------------------------------------

GHOST = f"arn:aws:iam::{ACCOUNT}:role/ghost"
UNKNOWN_PRINCIPALS = [
    ("unknown-role", kp(ENABLE_IAM, stmt(GHOST, "kms:Encrypt")), [GHOST]),
    ("unknown-in-a-list", kp(ENABLE_IAM, stmt([APP, GHOST], "kms:Encrypt")), [GHOST]),
    ("unknown-in-not-principal", kp(ENABLE_IAM, stmt(GHOST, "kms:Encrypt", effect="Deny", not_principal=True)),
     [GHOST]),
    ("unknown-account-id", kp(ENABLE_IAM, stmt("999988887777", "kms:Encrypt")), ["arn:aws:iam::999988887777:root"]),
    ("unknown-user", kp(ENABLE_IAM, stmt(f"arn:aws:iam::{ACCOUNT}:user/nobody")),
     [f"arn:aws:iam::{ACCOUNT}:user/nobody"]),
    ("known-role-and-root", kp(ENABLE_IAM, stmt(APP, "kms:Encrypt")), []),
    ("account-of-a-registered-partner", kp(ENABLE_IAM, stmt(OTHER_ROOT, "kms:Encrypt")), []),
    ("star-and-service-principals", kp(ENABLE_IAM, stmt("*", "kms:Encrypt", condition={
        "StringEquals": {"kms:CallerAccount": ACCOUNT}}), stmt({"Service": "logs.eu-west-1.amazonaws.com"},
                                                               "kms:Encrypt")), []),
]


@pytest.mark.parametrize("name,policy,unknown", UNKNOWN_PRINCIPALS, ids=[r[0] for r in UNKNOWN_PRINCIPALS])
@pytest.mark.parametrize("operation", ["CreateKey", "PutKeyPolicy"])
def test_policy_naming_an_unknown_principal_is_refused(world, operation, name, policy, unknown):
    world.register(who(APP), who(PARTNER))
    key = world.new_key()
    before = _stored_policy(world, key["KeyId"])
    text = json.dumps(policy)
    if operation == "CreateKey":  # bypassing the lockout check does not skip this one
        call = lambda: world.root.create_key(Policy=text, BypassPolicyLockoutSafetyCheck=True)  # noqa: E731
    else:
        call = lambda: world.root.put_key_policy(KeyId=key["KeyId"], Policy=text,  # noqa: E731
                                                 BypassPolicyLockoutSafetyCheck=True)
    outcome, message = _outcome(call)
    if not unknown:
        assert outcome == ALLOWED, message
        return
    assert outcome == MALFORMED
    assert message == f"Policy contains a statement with one or more invalid principals: {', '.join(unknown)}"
    assert _stored_policy(world, key["KeyId"]) == before


def test_registering_the_principal_makes_the_same_policy_acceptable(world):
    world.register(who(APP))
    policy = json.dumps(kp(ENABLE_IAM, stmt(GHOST, "kms:Encrypt")))
    assert _outcome(lambda: world.root.create_key(Policy=policy))[0] == MALFORMED
    world.register(who(APP), who(GHOST))
    assert _outcome(lambda: world.root.create_key(Policy=policy))[0] == ALLOWED


# --- malformed documents ----------------------------------------------------------------------

def _with(statement_extra: dict) -> str:
    """The admin policy plus a second statement carrying the defect."""
    return json.dumps(kp(ENABLE_IAM, {**stmt(APP, "kms:Encrypt"), **statement_extra}))


BAD_POLICIES = [
    # (name, policy text, error code, fragments the message must contain: what and where)
    ("not-json", '{"Version": "2012-10-17", "Statement": [', MALFORMED, ["not valid JSON", "line 1 column 41"]),
    ("not-an-object", '["Allow"]', MALFORMED, ["JSON object with a Statement"]),
    ("no-statement", '{"Version": "2012-10-17"}', MALFORMED, ["JSON object with a Statement"]),
    ("unknown-operator", _with({"Condition": {"StringEqualz": {"kms:ViaService": S3}}}), MALFORMED,
     ["Statement/1/Condition/StringEqualz", "unknown condition operator 'StringEqualz'",
      "did you mean 'StringEquals'"]),
    ("unknown-qualifier", _with({"Condition": {"ForSomeValues:StringEquals": {"kms:EncryptionContextKeys": "a"}}}),
     MALFORMED, ["Statement/1/Condition/ForSomeValues:StringEquals", "unknown condition operator"]),
    ("unknown-condition-key", _with({"Condition": {"StringEquals": {"aws:SourceIp": "10.0.0.1"}}}), MALFORMED,
     ["Statement/1/Condition/StringEquals/aws:SourceIp", "unknown condition key 'aws:SourceIp'"]),
    ("misspelt-condition-key", _with({"Condition": {"StringEquals": {"kms:ViaServices": S3}}}), MALFORMED,
     ["Statement/1/Condition/StringEquals/kms:ViaServices", "did you mean 'kms:ViaService'"]),
    ("unknown-policy-variable", _with({"Condition": {"StringEquals": {"kms:EncryptionContext:u": "${aws:username}"}}}),
     MALFORMED, ["Statement/1/Condition/StringEquals/kms:EncryptionContext:u", "unknown policy variable"]),
    ("multivalued-key-without-qualifier", _with({"Condition": {"StringEquals": {"kms:EncryptionContextKeys": "a"}}}),
     MALFORMED, ["kms:EncryptionContextKeys", "ForAnyValue:StringEquals"]),
    ("null-with-if-exists", _with({"Condition": {"NullIfExists": {"kms:ViaService": "true"}}}), MALFORMED,
     ["Statement/1/Condition/NullIfExists", "Null cannot take IfExists"]),
    ("numeric-on-a-string-key", _with({"Condition": {"NumericLessThan": {"kms:ViaService": 3}}}), MALFORMED,
     ["Statement/1/Condition/NumericLessThan/kms:ViaService", "not numeric"]),
    ("non-arn-principal", _with({"Principal": {"AWS": "bob"}}), MALFORMED,
     ["Statement/1/Principal/AWS", "'bob' is not a valid AWS principal"]),
    ("wildcard-in-principal-arn", _with({"Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:role/*"}}), MALFORMED,
     ["Statement/1/Principal/AWS", "is not a valid AWS principal"]),
    ("unknown-action", _with({"Action": "kms:Decrypts"}), MALFORMED,
     ["Statement/1/Action", "'kms:Decrypts' is not a KMS action", "did you mean 'kms:Decrypt'"]),
    ("missing-effect", json.dumps(kp(ENABLE_IAM, {"Principal": {"AWS": APP}, "Action": "kms:Encrypt",
                                                  "Resource": "*"})), MALFORMED,
     ["Statement/1/Effect", "statement has no Effect"]),
    ("unknown-statement-field", _with({"Conditions": {}}), MALFORMED,
     ["Statement/1/Conditions", "unknown statement field 'Conditions'"]),
    ("several-problems-all-named", _with({"Action": "kms:Decrypts", "Principal": {"AWS": "bob"}}), MALFORMED,
     ["Statement/1/Action", "Statement/1/Principal/AWS"]),
    ("over-32-kb", json.dumps(kp(ENABLE_IAM, stmt(APP, "kms:Encrypt", sid="S" * 33000))), "LimitExceededException",
     ["the limit is 32768 bytes"]),
]


@pytest.mark.parametrize("name,text,code,fragments", BAD_POLICIES, ids=[r[0] for r in BAD_POLICIES])
def test_malformed_policy_put_key_policy(world, name, text, code, fragments):
    world.register(who(APP))
    key = world.new_key()
    before = _stored_policy(world, key["KeyId"])
    outcome, message = _outcome(lambda: world.root.put_key_policy(KeyId=key["KeyId"], Policy=text))
    assert outcome == code, message
    for fragment in fragments:
        assert fragment in message, message
    record = _last_record(world)
    assert (record["eventName"], record["outcome"], record["errorCode"]) == ("PutKeyPolicy", "Failure", code)
    assert _stored_policy(world, key["KeyId"]) == before


@pytest.mark.parametrize("name,text,code,fragments", BAD_POLICIES, ids=[r[0] for r in BAD_POLICIES])
def test_malformed_policy_create_key(world, name, text, code, fragments):
    world.register(who(APP))
    before = _key_count(world)
    outcome, message = _outcome(lambda: world.root.create_key(Policy=text, BypassPolicyLockoutSafetyCheck=True))
    assert outcome == code, message
    for fragment in fragments:
        assert fragment in message, message
    assert _key_count(world) == before


def test_policy_at_exactly_32_kb_is_accepted(world):
    world.register(who(APP))
    base = kp(ENABLE_IAM, stmt(APP, "kms:Encrypt", sid="S"))
    padding = 32768 - len(json.dumps(base).encode()) + 1
    text = json.dumps(kp(ENABLE_IAM, stmt(APP, "kms:Encrypt", sid="S" * padding)))
    assert len(text.encode()) == 32768
    key = world.new_key()
    world.root.put_key_policy(KeyId=key["KeyId"], Policy=text)
    assert _stored_policy(world, key["KeyId"]) == text


def test_put_key_policy_needs_put_key_policy_under_the_current_policy(world):
    """The caller is authorized under the policy in force, then the new one is checked."""
    key = world.new_key()
    world.register(who(ADMIN, iam(allow())), who(APP))
    world.put_policy(key["KeyId"], kp(stmt(ADMIN, "kms:Describe*")), {})
    outcome, message = _outcome(lambda: world.client(ADMIN).put_key_policy(
        KeyId=key["KeyId"], Policy=json.dumps(kp(ENABLE_IAM))))
    assert outcome == "AccessDeniedException"
    assert "kms:PutKeyPolicy" in message


# --- helpers ----------------------------------------------------------------------------------

def _outcome(call) -> tuple[str, str]:
    try:
        call()
    except KMSError as error:
        return error.code, error.message
    return ALLOWED, ""


def _stored_policy(world, key_id: str) -> str:
    """GetKeyPolicy, as the account root (every policy these tests leave in place admits it)."""
    return world.root.get_key_policy(KeyId=key_id)["Policy"]


def _key_count(world) -> int:
    return len(world.store.meta.keys_in(REGION))


def _last_record(world) -> dict:
    *_, last = world.store.audit.records()
    return last
