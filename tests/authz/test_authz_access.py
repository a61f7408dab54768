"""Who can? The offline analysis (`kmsplan.policy.who_can`, what `kmsplan access` prints) agrees
with what the store actually does: for a realistic key, every registered principal and every
read-only action, a path with no conditions left means the real call is allowed, no path means
it is refused, and a conditional path is allowed exactly when the request meets the condition."""

from __future__ import annotations

import pytest
from authz_world import (
    ADMIN, ALLOWED, APP, AUDITOR, DENIED, ENABLE_IAM, OPS, REGION, ROOT, allow, iam, kp, stmt, who,
)

from kmsplan.policy import parse_policy_cached, who_can

PAYMENTS = {"service": "payments"}
REPORTING = {"service": "reporting"}
ADMIN_ACTIONS = ["kms:Create*", "kms:Describe*", "kms:Enable*", "kms:List*", "kms:Put*", "kms:Update*",
                 "kms:Revoke*", "kms:Disable*", "kms:Get*", "kms:Delete*", "kms:TagResource", "kms:UntagResource",
                 "kms:ScheduleKeyDeletion", "kms:CancelKeyDeletion"]

#: a payments stack's key policy: admins manage, the app uses it under its context, and nobody but
#: the app may decrypt, whatever IAM says
PAYMENTS_POLICY = kp(
    ENABLE_IAM,
    stmt(ADMIN, ADMIN_ACTIONS, sid="KeyAdministrators"),
    stmt(APP, ["kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey*", "kms:DescribeKey"], sid="PaymentsUse",
         condition={"StringEquals": {"kms:EncryptionContext:service": "payments"}}),
    stmt(APP, "kms:DescribeKey", sid="PaymentsDescribe"),
    stmt("*", "kms:Decrypt", effect="Deny", sid="OnlyPaymentsDecrypts",
         condition={"ArnNotEquals": {"aws:PrincipalArn": APP}}),
)
PEOPLE = (
    who(ADMIN, iam(allow())),
    who(APP),
    who(OPS, iam(allow("kms:*"))),                                   # broad IAM, still no Decrypt
    who(AUDITOR, iam(allow(["kms:Describe*", "kms:Get*", "kms:List*"]))),
)
ACTIONS = ["kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey", "kms:DescribeKey", "kms:GetKeyPolicy",
           "kms:ListGrants", "kms:GetKeyRotationStatus", "kms:ListResourceTags"]


@pytest.fixture
def payments_key(world):
    key = world.new_key(Description="payments")
    world.register(*PEOPLE)
    world.root.create_grant(KeyId=key["KeyId"], GranteePrincipal=AUDITOR, Operations=["Encrypt"], Name="reports",
                            Constraints={"EncryptionContextSubset": REPORTING})
    blobs = {name: world.root.encrypt(KeyId=key["KeyId"], Plaintext=b"x", EncryptionContext=context)["CiphertextBlob"]
             for name, context in (("plain", {}), ("payments", PAYMENTS))}
    world.put_policy(key["KeyId"], PAYMENTS_POLICY, {})
    return key, blobs


def _call(world, principal: str, action: str, key: dict, blobs: dict, context: dict | None = None):
    client = world.client(principal)
    key_id = key["KeyId"]
    context = context or {}
    calls = {
        "kms:Encrypt": lambda: client.encrypt(KeyId=key_id, Plaintext=b"x", EncryptionContext=context),
        "kms:Decrypt": lambda: client.decrypt(CiphertextBlob=blobs["payments" if context else "plain"],
                                              EncryptionContext=context),
        "kms:GenerateDataKey": lambda: client.generate_data_key(KeyId=key_id, KeySpec="AES_256",
                                                                EncryptionContext=context),
        "kms:DescribeKey": lambda: client.describe_key(KeyId=key_id),
        "kms:GetKeyPolicy": lambda: client.get_key_policy(KeyId=key_id),
        "kms:ListGrants": lambda: client.list_grants(KeyId=key_id),
        "kms:GetKeyRotationStatus": lambda: client.get_key_rotation_status(KeyId=key_id),
        "kms:ListResourceTags": lambda: client.list_resource_tags(KeyId=key_id),
    }
    return world.outcome(calls[action])


def _analysis(world, key: dict):
    world.store.refresh()  # as every API call does first: drop what the last write made stale
    view = world.store.view(REGION, key["KeyId"])
    facts, grants = world.store.authz.facts(view)
    return who_can(parse_policy_cached(view.record.policy), grants, world.store.registry.all(), facts, ACTIONS)


def test_analysis_agrees_with_real_calls(world, payments_key):
    key, blobs = payments_key
    paths = _analysis(world, key)
    principals = [p.arn for p in world.store.registry.all()]
    assert principals == sorted([ADMIN, APP, OPS, AUDITOR, ROOT])
    checked = 0
    for principal in principals:
        for action in ACTIONS:
            mine = [p for p in paths if p.principal == principal and p.action == action]
            expected = ALLOWED if any(not p.conditions for p in mine) else DENIED
            assert _call(world, principal, action, key, blobs) == expected, (principal, action, mine)
            checked += 1
    assert checked == 40


def test_only_the_payments_role_can_decrypt(world, payments_key):
    key, blobs = payments_key
    decrypt = [p for p in _analysis(world, key) if p.action == "kms:Decrypt"]
    assert {p.principal for p in decrypt} == {APP}
    assert [(p.layer, p.source, p.conditions) for p in decrypt] == [
        ("key-policy", "PaymentsUse", ("kms:EncryptionContext:service StringEquals payments",))]
    # and the store agrees, with and without the condition met
    assert _call(world, APP, "kms:Decrypt", key, blobs, PAYMENTS) == ALLOWED
    assert _call(world, APP, "kms:Decrypt", key, blobs) == DENIED
    for other in (ROOT, ADMIN, OPS, AUDITOR):
        assert _call(world, other, "kms:Decrypt", key, blobs, PAYMENTS) == DENIED, other


def test_conditional_paths_open_exactly_under_their_condition(world, payments_key):
    key, blobs = payments_key
    paths = _analysis(world, key)
    grant_path = [p for p in paths if p.principal == AUDITOR and p.action == "kms:Encrypt"]
    assert [(p.layer, p.conditions) for p in grant_path] == [
        ("grant", ("only with encryption context service=reporting",))]
    assert _call(world, AUDITOR, "kms:Encrypt", key, blobs, REPORTING) == ALLOWED
    assert _call(world, AUDITOR, "kms:Encrypt", key, blobs, PAYMENTS) == DENIED
    app_paths = {p.action: p for p in paths if p.principal == APP}
    assert app_paths["kms:GenerateDataKey"].conditions == ("kms:EncryptionContext:service StringEquals payments",)
    assert _call(world, APP, "kms:GenerateDataKey", key, blobs, PAYMENTS) == ALLOWED
    assert _call(world, APP, "kms:GenerateDataKey", key, blobs, {"service": "billing"}) == DENIED


def test_analysis_names_the_iam_layer(world, payments_key):
    key, _ = payments_key
    paths = [p for p in _analysis(world, key) if p.principal == OPS and p.action == "kms:Encrypt"]
    assert [(p.layer, p.source, p.conditions) for p in paths] == [("iam", f"iam:{OPS}#0/0", ())]


def test_analysis_follows_grant_and_policy_changes(world, payments_key):
    """The store's cached key facts follow changes: a new grant and a new policy both show up."""
    key, blobs = payments_key
    assert not [p for p in _analysis(world, key) if p.principal == OPS and p.layer == "grant"]
    world.root.create_grant(KeyId=key["KeyId"], GranteePrincipal=OPS, Operations=["DescribeKey"])
    assert [p.action for p in _analysis(world, key) if p.principal == OPS and p.layer == "grant"] == \
        ["kms:DescribeKey"]
    world.put_policy(key["KeyId"], kp(stmt(ROOT, "kms:*")), {})  # no Deny: IAM decides for the account
    assert {p.principal for p in _analysis(world, key) if p.action == "kms:Decrypt"} == {ROOT, ADMIN, OPS}


def test_the_same_call_follows_every_change_that_decides_it(world, payments_key):
    """The store remembers decisions between identical calls; each kind of change that could turn
    one (a grant made and revoked, a policy, a tag a condition reads, the principal's IAM policies)
    is seen by the very next identical call."""
    key, blobs = payments_key
    key_id = key["KeyId"]
    describe = lambda: _call(world, OPS, "kms:ListResourceTags", key, blobs)  # noqa: E731
    world.register(*[p for p in PEOPLE if p.arn != OPS], who(OPS))            # OPS without IAM policies
    assert describe() == DENIED and describe() == DENIED

    grant = world.root.create_grant(KeyId=key_id, GranteePrincipal=OPS, Operations=["DescribeKey"])["GrantId"]
    assert _call(world, OPS, "kms:DescribeKey", key, blobs) == ALLOWED
    world.root.revoke_grant(KeyId=key_id, GrantId=grant)
    assert _call(world, OPS, "kms:DescribeKey", key, blobs) == DENIED

    world.register(*PEOPLE)                                                   # OPS gets kms:* from IAM
    assert describe() == ALLOWED
    world.put_policy(key_id, kp(stmt(ROOT, "kms:*"), stmt("*", "kms:ListResourceTags", effect="Deny",
                                                             condition={"StringEquals": {"aws:ResourceTag/locked": "yes"}})), {})
    assert describe() == ALLOWED
    world.root.tag_resource(KeyId=key_id, Tags=[{"TagKey": "locked", "TagValue": "yes"}])
    assert describe() == DENIED
    world.root.untag_resource(KeyId=key_id, TagKeys=["locked"])
    assert describe() == ALLOWED
