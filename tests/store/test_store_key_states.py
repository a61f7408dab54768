"""Key states and AWS's key-state table: what a Disabled or PendingDeletion key refuses (and with
which error), what it still allows, scheduled deletion by the clock, and multi-Region deletion."""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from datetime import timedelta

import pytest
from kms_support import key_ids, kms_error, list_all

from kmsplan.store.keystore import hsm_id

ROLE = "arn:aws:iam::111122223333:role/state-tests"


@dataclass
class Subject:
    """A key under test with everything around it: an alias, a tag, a grant, a blob, a spare key."""

    kms: object
    key: str
    arn: str
    alias: str
    blob: bytes
    grant_id: str
    grant_token: str
    spare: str
    spare_blob: bytes


def make_subject(kms, state: str) -> Subject:
    key = kms.create_key(Description="state subject")["KeyMetadata"]
    spare = kms.create_key(Description="state spare")["KeyMetadata"]["KeyId"]
    alias = f"alias/state-{uuid.uuid4().hex[:12]}"
    kms.create_alias(AliasName=alias, TargetKeyId=key["KeyId"])
    kms.tag_resource(KeyId=key["KeyId"], Tags=[{"TagKey": "t", "TagValue": "v"}])
    grant = kms.create_grant(KeyId=key["KeyId"], GranteePrincipal=ROLE, Operations=["Decrypt"], RetiringPrincipal=ROLE)
    blob = kms.encrypt(KeyId=key["KeyId"], Plaintext=b"state")["CiphertextBlob"]
    spare_blob = kms.encrypt(KeyId=spare, Plaintext=b"spare")["CiphertextBlob"]
    if state == "Disabled":
        kms.disable_key(KeyId=key["KeyId"])
    elif state == "PendingDeletion":
        kms.schedule_key_deletion(KeyId=key["KeyId"], PendingWindowInDays=30)
    assert kms.describe_key(KeyId=key["KeyId"])["KeyMetadata"]["KeyState"] == state
    return Subject(kms, key["KeyId"], key["Arn"], alias, blob, grant["GrantId"], grant["GrantToken"], spare,
                   spare_blob)


def policy_text(sid: str) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": [{
        "Sid": sid, "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::111122223333:root"},
        "Action": "kms:*", "Resource": "*"}]})


SYMMETRIC_CRYPTO = {
    "Encrypt": lambda s: s.kms.encrypt(KeyId=s.key, Plaintext=b"x"),
    "Encrypt-by-alias": lambda s: s.kms.encrypt(KeyId=s.alias, Plaintext=b"x"),
    "Decrypt": lambda s: s.kms.decrypt(CiphertextBlob=s.blob),
    "ReEncrypt-from": lambda s: s.kms.re_encrypt(CiphertextBlob=s.blob, DestinationKeyId=s.spare),
    "ReEncrypt-to": lambda s: s.kms.re_encrypt(CiphertextBlob=s.spare_blob, DestinationKeyId=s.key),
    "GenerateDataKey": lambda s: s.kms.generate_data_key(KeyId=s.key, KeySpec="AES_256"),
    "GenerateDataKeyWithoutPlaintext": lambda s: s.kms.generate_data_key_without_plaintext(KeyId=s.key,
                                                                                          NumberOfBytes=16),
    "GenerateDataKeyPair": lambda s: s.kms.generate_data_key_pair(KeyId=s.key, KeyPairSpec="ECC_NIST_P256"),
    "GenerateDataKeyPairWithoutPlaintext": lambda s: s.kms.generate_data_key_pair_without_plaintext(
        KeyId=s.key, KeyPairSpec="ECC_NIST_P256"),
    "EnableKeyRotation": lambda s: s.kms.enable_key_rotation(KeyId=s.key),
    "DisableKeyRotation": lambda s: s.kms.disable_key_rotation(KeyId=s.key),
    "RotateKeyOnDemand": lambda s: s.kms.rotate_key_on_demand(KeyId=s.key),
    "CreateGrant": lambda s: s.kms.create_grant(KeyId=s.key, GranteePrincipal=ROLE, Operations=["Encrypt"]),
}

# Operations AWS's key-state table allows on a Disabled key (each must succeed).
ALLOWED_WHEN_DISABLED = {
    "DescribeKey": lambda s: s.kms.describe_key(KeyId=s.key),
    "DescribeKey-by-alias": lambda s: s.kms.describe_key(KeyId=s.alias),
    "UpdateKeyDescription": lambda s: s.kms.update_key_description(KeyId=s.key, Description="still managed"),
    "TagResource": lambda s: s.kms.tag_resource(KeyId=s.key, Tags=[{"TagKey": "more", "TagValue": "x"}]),
    "UntagResource": lambda s: s.kms.untag_resource(KeyId=s.key, TagKeys=["t"]),
    "ListResourceTags": lambda s: s.kms.list_resource_tags(KeyId=s.key),
    "CreateAlias": lambda s: s.kms.create_alias(AliasName=f"alias/d-{uuid.uuid4().hex}", TargetKeyId=s.key),
    "UpdateAlias-to": lambda s: repoint_spare_alias_to(s),
    "DeleteAlias": lambda s: s.kms.delete_alias(AliasName=s.alias),
    "ListAliases": lambda s: s.kms.list_aliases(KeyId=s.key),
    "PutKeyPolicy": lambda s: s.kms.put_key_policy(KeyId=s.key, Policy=policy_text("Disabled")),
    "GetKeyPolicy": lambda s: s.kms.get_key_policy(KeyId=s.key),
    "ListKeyPolicies": lambda s: s.kms.list_key_policies(KeyId=s.key),
    "GetKeyRotationStatus": lambda s: s.kms.get_key_rotation_status(KeyId=s.key),
    "ListKeyRotations": lambda s: s.kms.list_key_rotations(KeyId=s.key),
    "ListGrants": lambda s: s.kms.list_grants(KeyId=s.key),
    "RevokeGrant": lambda s: s.kms.revoke_grant(KeyId=s.key, GrantId=s.grant_id),
    "RetireGrant": lambda s: s.kms.retire_grant(GrantToken=s.grant_token),
    "DisableKey": lambda s: s.kms.disable_key(KeyId=s.key),
}

# Management operations a key pending deletion refuses with KMSInvalidStateException.
REFUSED_WHEN_PENDING = {
    "EnableKey": lambda s: s.kms.enable_key(KeyId=s.key),
    "DisableKey": lambda s: s.kms.disable_key(KeyId=s.key),
    "UpdateKeyDescription": lambda s: s.kms.update_key_description(KeyId=s.key, Description="x"),
    "TagResource": lambda s: s.kms.tag_resource(KeyId=s.key, Tags=[{"TagKey": "a", "TagValue": "b"}]),
    "UntagResource": lambda s: s.kms.untag_resource(KeyId=s.key, TagKeys=["t"]),
    "CreateAlias": lambda s: s.kms.create_alias(AliasName=f"alias/p-{uuid.uuid4().hex}", TargetKeyId=s.key),
    "UpdateAlias-to": lambda s: repoint_spare_alias_to(s),
    "ScheduleKeyDeletion": lambda s: s.kms.schedule_key_deletion(KeyId=s.key, PendingWindowInDays=7),
}

# ... and what it still allows (AWS's key-state table).
ALLOWED_WHEN_PENDING = {
    "DescribeKey": lambda s: s.kms.describe_key(KeyId=s.key),
    "ListResourceTags": lambda s: s.kms.list_resource_tags(KeyId=s.key),
    "ListAliases": lambda s: s.kms.list_aliases(KeyId=s.key),
    "DeleteAlias": lambda s: s.kms.delete_alias(AliasName=s.alias),
    "UpdateAlias-away": lambda s: s.kms.update_alias(AliasName=s.alias, TargetKeyId=s.spare),
    "GetKeyPolicy": lambda s: s.kms.get_key_policy(KeyId=s.key),
    "PutKeyPolicy": lambda s: s.kms.put_key_policy(KeyId=s.key, Policy=policy_text("Pending")),
    "ListKeyPolicies": lambda s: s.kms.list_key_policies(KeyId=s.key),
    "GetKeyRotationStatus": lambda s: s.kms.get_key_rotation_status(KeyId=s.key),
    "ListKeyRotations": lambda s: s.kms.list_key_rotations(KeyId=s.key),
    "ListGrants": lambda s: s.kms.list_grants(KeyId=s.key),
    "RevokeGrant": lambda s: s.kms.revoke_grant(KeyId=s.key, GrantId=s.grant_id),
    "RetireGrant": lambda s: s.kms.retire_grant(GrantToken=s.grant_token),
}


def repoint_spare_alias_to(subject: Subject) -> dict:
    name = f"alias/spare-{uuid.uuid4().hex}"
    subject.kms.create_alias(AliasName=name, TargetKeyId=subject.spare)
    return subject.kms.update_alias(AliasName=name, TargetKeyId=subject.key)


@pytest.mark.parametrize("operation", list(SYMMETRIC_CRYPTO))
def test_a_disabled_key_refuses_cryptographic_operations(kms, operation):
    subject = make_subject(kms, "Disabled")
    with kms_error("DisabledException", "disabled"):
        SYMMETRIC_CRYPTO[operation](subject)
    assert kms.describe_key(KeyId=subject.key)["KeyMetadata"]["KeyState"] == "Disabled"


@pytest.mark.parametrize("operation", list(SYMMETRIC_CRYPTO))
def test_a_key_pending_deletion_refuses_cryptographic_operations(kms, operation):
    subject = make_subject(kms, "PendingDeletion")
    with kms_error("KMSInvalidStateException", "pending deletion"):
        SYMMETRIC_CRYPTO[operation](subject)


ASYMMETRIC_CRYPTO = [
    ("ECC_NIST_P256", "SIGN_VERIFY", lambda k, key: k.sign(KeyId=key, Message=b"m", SigningAlgorithm="ECDSA_SHA_256")),
    ("ECC_NIST_P256", "SIGN_VERIFY", lambda k, key: k.verify(KeyId=key, Message=b"m", Signature=b"\x30\x00",
                                                            SigningAlgorithm="ECDSA_SHA_256")),
    ("ECC_NIST_P256", "SIGN_VERIFY", lambda k, key: k.get_public_key(KeyId=key)),
    ("HMAC_256", "GENERATE_VERIFY_MAC", lambda k, key: k.generate_mac(KeyId=key, Message=b"m",
                                                                      MacAlgorithm="HMAC_SHA_256")),
    ("HMAC_256", "GENERATE_VERIFY_MAC", lambda k, key: k.verify_mac(KeyId=key, Message=b"m", Mac=b"\x00" * 32,
                                                                    MacAlgorithm="HMAC_SHA_256")),
]


@pytest.mark.parametrize("state, code", [("Disabled", "DisabledException"),
                                         ("PendingDeletion", "KMSInvalidStateException")])
@pytest.mark.parametrize("spec, usage, call", ASYMMETRIC_CRYPTO, ids=["Sign", "Verify", "GetPublicKey", "GenerateMac",
                                                                      "VerifyMac"])
def test_signing_and_mac_keys_follow_the_same_state_rules(kms, spec, usage, call, state, code):
    key_id = kms.create_key(KeySpec=spec, KeyUsage=usage)["KeyMetadata"]["KeyId"]
    if state == "Disabled":
        kms.disable_key(KeyId=key_id)
    else:
        kms.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7)
    with kms_error(code):
        call(kms, key_id)


@pytest.mark.parametrize("operation", list(ALLOWED_WHEN_DISABLED))
def test_a_disabled_key_can_still_be_managed(kms, operation):
    subject = make_subject(kms, "Disabled")
    ALLOWED_WHEN_DISABLED[operation](subject)
    assert kms.describe_key(KeyId=subject.key)["KeyMetadata"]["KeyState"] == "Disabled"


@pytest.mark.parametrize("operation", list(REFUSED_WHEN_PENDING))
def test_a_key_pending_deletion_refuses_management_changes(kms, operation):
    subject = make_subject(kms, "PendingDeletion")
    before = kms.describe_key(KeyId=subject.key)["KeyMetadata"]
    with kms_error("KMSInvalidStateException", "pending deletion"):
        REFUSED_WHEN_PENDING[operation](subject)
    assert kms.describe_key(KeyId=subject.key)["KeyMetadata"] == before
    assert [t["TagKey"] for t in kms.list_resource_tags(KeyId=subject.key)["Tags"]] == ["t"]


@pytest.mark.parametrize("operation", list(ALLOWED_WHEN_PENDING))
def test_a_key_pending_deletion_still_allows_what_aws_allows(kms, operation):
    subject = make_subject(kms, "PendingDeletion")
    ALLOWED_WHEN_PENDING[operation](subject)
    assert kms.describe_key(KeyId=subject.key)["KeyMetadata"]["KeyState"] == "PendingDeletion"


def test_put_key_policy_on_a_key_pending_deletion_is_stored(kms):
    subject = make_subject(kms, "PendingDeletion")
    kms.put_key_policy(KeyId=subject.key, Policy=policy_text("WhilePending"))
    assert kms.get_key_policy(KeyId=subject.key)["Policy"] == policy_text("WhilePending")


def test_disable_then_enable(kms):
    subject = make_subject(kms, "Enabled")
    kms.disable_key(KeyId=subject.key)
    metadata = kms.describe_key(KeyId=subject.key)["KeyMetadata"]
    assert (metadata["KeyState"], metadata["Enabled"]) == ("Disabled", False)
    kms.disable_key(KeyId=subject.key)  # idempotent
    kms.enable_key(KeyId=subject.key)
    kms.enable_key(KeyId=subject.key)
    metadata = kms.describe_key(KeyId=subject.key)["KeyMetadata"]
    assert (metadata["KeyState"], metadata["Enabled"]) == ("Enabled", True)
    assert kms.decrypt(CiphertextBlob=subject.blob)["Plaintext"] == b"state"


def test_enable_and_disable_take_a_key_id_not_an_alias(kms):
    subject = make_subject(kms, "Enabled")
    with kms_error("NotFoundException"):
        kms.disable_key(KeyId=subject.alias)
    kms.disable_key(KeyId=subject.arn)
    assert kms.describe_key(KeyId=subject.key)["KeyMetadata"]["KeyState"] == "Disabled"


@pytest.mark.parametrize("window", [None, 7, 19, 30])
def test_schedule_key_deletion_window(kms, clock, window):
    key = kms.create_key()["KeyMetadata"]
    response = kms.schedule_key_deletion(KeyId=key["KeyId"], **({"PendingWindowInDays": window} if window else {}))
    days = window or 30
    assert response["KeyId"] == key["Arn"] and response["KeyState"] == "PendingDeletion"
    assert response["PendingWindowInDays"] == days
    assert response["DeletionDate"] == clock.now + timedelta(days=days)
    metadata = kms.describe_key(KeyId=key["KeyId"])["KeyMetadata"]
    assert (metadata["KeyState"], metadata["Enabled"]) == ("PendingDeletion", False)
    assert metadata["DeletionDate"] == clock.now + timedelta(days=days)
    assert metadata["PendingDeletionWindowInDays"] == days


@pytest.mark.parametrize("window", [6, 31, 0, -1, 365])
def test_schedule_key_deletion_refuses_windows_outside_7_to_30_days(kms, window):
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    with kms_error("ValidationException", "pendingWindowInDays"):
        kms.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=window)
    metadata = kms.describe_key(KeyId=key_id)["KeyMetadata"]
    assert metadata["KeyState"] == "Enabled" and "DeletionDate" not in metadata


def test_cancel_key_deletion_leaves_the_key_disabled(kms):
    subject = make_subject(kms, "PendingDeletion")
    response = kms.cancel_key_deletion(KeyId=subject.key)
    assert response == {"KeyId": subject.arn}
    metadata = kms.describe_key(KeyId=subject.key)["KeyMetadata"]
    assert metadata["KeyState"] == "Disabled"
    assert "DeletionDate" not in metadata and "PendingDeletionWindowInDays" not in metadata
    with kms_error("DisabledException"):
        kms.decrypt(CiphertextBlob=subject.blob)
    kms.enable_key(KeyId=subject.key)
    assert kms.decrypt(CiphertextBlob=subject.blob)["Plaintext"] == b"state"


@pytest.mark.parametrize("state", ["Enabled", "Disabled"])
def test_cancel_key_deletion_of_a_key_not_pending_is_invalid_state(kms, state):
    subject = make_subject(kms, state)
    with kms_error("KMSInvalidStateException", "not pending deletion"):
        kms.cancel_key_deletion(KeyId=subject.key)
    assert kms.describe_key(KeyId=subject.key)["KeyMetadata"]["KeyState"] == state


def test_a_disabled_key_can_be_scheduled_and_cancelled(kms):
    subject = make_subject(kms, "Disabled")
    assert kms.schedule_key_deletion(KeyId=subject.key, PendingWindowInDays=7)["KeyState"] == "PendingDeletion"
    kms.cancel_key_deletion(KeyId=subject.key)
    assert kms.describe_key(KeyId=subject.key)["KeyMetadata"]["KeyState"] == "Disabled"


def test_when_the_window_passes_the_key_and_its_material_are_gone(store, kms, clock):
    subject = make_subject(kms, "Enabled")
    kms.rotate_key_on_demand(KeyId=subject.key)  # two material versions to destroy
    token = store.token_for(kms.region)
    material = [hsm_id(subject.key, version) for version in (1, 2)]
    assert all(token.has(object_id) for object_id in material)
    kms.schedule_key_deletion(KeyId=subject.key, PendingWindowInDays=7)

    clock.advance(days=7, seconds=-1)
    assert kms.describe_key(KeyId=subject.key)["KeyMetadata"]["KeyState"] == "PendingDeletion"
    assert all(token.has(object_id) for object_id in material)

    clock.advance(seconds=2)
    with kms_error("NotFoundException", subject.key):
        kms.describe_key(KeyId=subject.key)
    assert subject.key not in key_ids(kms)
    assert subject.alias not in {a["AliasName"] for a in list_all(kms.list_aliases, "Aliases", Limit=1000)}
    with kms_error("NotFoundException"):
        kms.describe_key(KeyId=subject.alias)
    with kms_error("NotFoundException"):
        kms.decrypt(CiphertextBlob=subject.blob)
    with kms_error("NotFoundException"):
        kms.list_grants(KeyId=subject.key)
    with kms_error("NotFoundException"):
        kms.cancel_key_deletion(KeyId=subject.key)
    assert not any(token.has(object_id) for object_id in material)
    assert store.check() == []
    # the alias name is free again
    kms.create_alias(AliasName=subject.alias, TargetKeyId=subject.spare)


def test_a_primary_with_replicas_waits_for_its_last_replica(store, kms, clock):
    home, second, third = store.config.regions
    key_id = kms.create_key(MultiRegion=True, Description="mrk deletion")["KeyMetadata"]["KeyId"]
    kms.replicate_key(KeyId=key_id, ReplicaRegion=second)
    kms.replicate_key(KeyId=key_id, ReplicaRegion=third)
    blob = kms.encrypt(KeyId=key_id, Plaintext=b"multi")["CiphertextBlob"]
    clients = {region: store.client(region) for region in (home, second, third)}

    response = kms.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7)
    assert response["KeyState"] == "PendingReplicaDeletion" and "DeletionDate" not in response
    metadata = kms.describe_key(KeyId=key_id)["KeyMetadata"]
    assert metadata["KeyState"] == "PendingReplicaDeletion" and "DeletionDate" not in metadata
    with kms_error("KMSInvalidStateException"):
        kms.decrypt(CiphertextBlob=blob)
    assert clients[second].decrypt(CiphertextBlob=blob)["Plaintext"] == b"multi", "replicas keep working"

    start = clock.now
    clients[second].schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7)
    clients[third].schedule_key_deletion(KeyId=key_id, PendingWindowInDays=10)
    clock.advance(days=8)
    with kms_error("NotFoundException"):
        clients[second].describe_key(KeyId=key_id)
    assert kms.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "PendingReplicaDeletion"
    replicas = kms.describe_key(KeyId=key_id)["KeyMetadata"]["MultiRegionConfiguration"]["ReplicaKeys"]
    assert [replica["Region"] for replica in replicas] == [third]

    clock.advance(days=3)  # the last replica's window (10 days) is over: the primary's own 7 days begin
    with kms_error("NotFoundException"):
        clients[third].describe_key(KeyId=key_id)
    metadata = kms.describe_key(KeyId=key_id)["KeyMetadata"]
    assert metadata["KeyState"] == "PendingDeletion"
    assert metadata["DeletionDate"] == start + timedelta(days=10 + 7)
    assert metadata["MultiRegionConfiguration"]["ReplicaKeys"] == []

    clock.advance(days=7)
    for client in clients.values():
        with kms_error("NotFoundException"):
            client.describe_key(KeyId=key_id)
        assert not store.token_for(client.region).has(hsm_id(key_id, 1))
    assert store.check() == []


def test_a_replica_can_be_deleted_on_its_own(store, kms, clock):
    second = store.config.regions[1]
    key_id = kms.create_key(MultiRegion=True)["KeyMetadata"]["KeyId"]
    kms.replicate_key(KeyId=key_id, ReplicaRegion=second)
    replica = store.client(second)
    assert replica.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7)["KeyState"] == "PendingDeletion"
    assert kms.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "Enabled"
    clock.advance(days=7, seconds=1)
    with kms_error("NotFoundException"):
        replica.describe_key(KeyId=key_id)
    assert not store.token_for(second).has(hsm_id(key_id, 1))
    assert store.token_for(kms.region).has(hsm_id(key_id, 1))
    blob = kms.encrypt(KeyId=key_id, Plaintext=b"primary lives")["CiphertextBlob"]
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"primary lives"
    # and it can be replicated there again
    kms.replicate_key(KeyId=key_id, ReplicaRegion=second)
    assert replica.decrypt(CiphertextBlob=blob)["Plaintext"] == b"primary lives"


def test_list_keys_pages_through_every_key_once_in_order(store, kms):
    made = {kms.create_key()["KeyMetadata"]["KeyId"] for _ in range(3)}
    seen: list[str] = []
    marker = None
    while True:
        page = kms.list_keys(Limit=7, **({"Marker": marker} if marker else {}))
        assert 0 < len(page["Keys"]) <= 7
        for key in page["Keys"]:
            assert key["KeyArn"] == f"arn:aws:kms:{kms.region}:{store.config.account}:key/{key['KeyId']}"
        seen += [key["KeyId"] for key in page["Keys"]]
        if not page["Truncated"]:
            assert "NextMarker" not in page
            break
        marker = page["NextMarker"]
    assert seen == sorted(set(seen)) and made <= set(seen)
    with kms_error("InvalidMarkerException"):
        kms.list_keys(Marker="not-a-key-id")
    for limit in (0, 1001):
        with kms_error("ValidationException", "limit"):
            kms.list_keys(Limit=limit)


@pytest.mark.parametrize("sql", [
    "SELECT name FROM aliases WHERE region = ? AND key_id = ? ORDER BY name",
    "SELECT region FROM keys WHERE key_id = ? ORDER BY region",
    "SELECT tag_key FROM tags WHERE region = ? AND key_id = ? ORDER BY tag_key",
    "SELECT grant_id FROM grants WHERE region = ? AND key_id = ?",
    "SELECT version FROM materials WHERE region = ? AND key_id = ? ORDER BY version",
    "SELECT key_id FROM keys WHERE region = ? AND key_id >= ? ORDER BY key_id LIMIT ?",
])
def test_per_key_lookups_search_an_index_instead_of_scanning(store, sql):
    """Plans read every key of a region one by one: a lookup that scans a table makes them
    quadratic (it did for aliases: 168 us a key at 10,000 keys)."""
    steps = [row[-1] for row in store.meta.query("EXPLAIN QUERY PLAN " + sql, ("r",) * sql.count("?"))]
    searches = [step for step in steps if step.startswith("SEARCH")]
    assert len(searches) == 1 and re.search(r"\(.*key_id[=>]", searches[0]), steps  # the index finds the key
    assert not any(step.startswith("SCAN") for step in steps), steps
