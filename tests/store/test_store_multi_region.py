"""Multi-Region keys: replicas share id, material, spec, usage and rotation; keep their own policy,
tags, aliases, state and description; ciphertext and signatures travel between regions; single-Region
keys stay in their region."""

from __future__ import annotations

import json
import re
import uuid

import pytest
from kms_support import kms_error, list_all, shared_key


@pytest.fixture
def regions(store):
    return store.config.regions


@pytest.fixture
def clients(store, regions):
    return {region: store.client(region) for region in regions}


@pytest.fixture
def mrk(kms, regions):
    """A multi-Region primary in the first region with replicas in the other two."""
    key = kms.create_key(MultiRegion=True, Description="primary description")["KeyMetadata"]
    for region in regions[1:]:
        kms.replicate_key(KeyId=key["KeyId"], ReplicaRegion=region)
    return key["KeyId"]


def test_multi_region_keys_have_mrk_ids_and_start_as_primaries(store, kms):
    key = kms.create_key(MultiRegion=True)["KeyMetadata"]
    assert re.fullmatch(r"mrk-[0-9a-f]{32}", key["KeyId"])
    assert key["MultiRegion"] is True
    assert key["MultiRegionConfiguration"] == {
        "MultiRegionKeyType": "PRIMARY", "PrimaryKey": {"Arn": key["Arn"], "Region": kms.region}, "ReplicaKeys": []}
    single = kms.create_key()["KeyMetadata"]
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", single["KeyId"])
    assert single["MultiRegion"] is False and "MultiRegionConfiguration" not in single


def test_replicate_key(store, kms, regions, clients):
    key = kms.create_key(MultiRegion=True, KeySpec="SYMMETRIC_DEFAULT")["KeyMetadata"]
    response = kms.replicate_key(KeyId=key["Arn"], ReplicaRegion=regions[1], Description="replica description",
                                 Tags=[{"TagKey": "where", "TagValue": "replica"}])
    replica = response["ReplicaKeyMetadata"]
    assert replica["KeyId"] == key["KeyId"]
    assert replica["Arn"] == f"arn:aws:kms:{regions[1]}:{store.config.account}:key/{key['KeyId']}"
    assert (replica["KeySpec"], replica["KeyUsage"], replica["KeyState"]) == ("SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT",
                                                                             "Enabled")
    assert replica["MultiRegionConfiguration"]["MultiRegionKeyType"] == "REPLICA"
    assert replica["MultiRegionConfiguration"]["PrimaryKey"] == {"Arn": key["Arn"], "Region": regions[0]}
    assert response["ReplicaTags"] == [{"TagKey": "where", "TagValue": "replica"}]
    assert json.loads(response["ReplicaPolicy"])["Statement"][0]["Principal"] == {
        "AWS": f"arn:aws:iam::{store.config.account}:root"}
    assert clients[regions[1]].describe_key(KeyId=key["KeyId"])["KeyMetadata"]["Description"] == \
        "replica description"


def test_one_replica_per_region(kms, regions, mrk):
    for region in regions[1:]:
        with kms_error("AlreadyExistsException", region):
            kms.replicate_key(KeyId=mrk, ReplicaRegion=region)


def test_replicate_key_refusals(store, kms, clients, regions):
    key_id = kms.create_key(MultiRegion=True)["KeyMetadata"]["KeyId"]
    with kms_error("ValidationException"):
        kms.replicate_key(KeyId=key_id, ReplicaRegion=regions[0])
    for region in ("ap-south-9", "not a region", ""):
        with kms_error("ValidationException"):
            kms.replicate_key(KeyId=key_id, ReplicaRegion=region)
    single = kms.create_key()["KeyMetadata"]["KeyId"]
    with kms_error("UnsupportedOperationException"):
        kms.replicate_key(KeyId=single, ReplicaRegion=regions[1])
    kms.replicate_key(KeyId=key_id, ReplicaRegion=regions[1])
    with kms_error("UnsupportedOperationException"):  # only the primary replicates
        clients[regions[1]].replicate_key(KeyId=key_id, ReplicaRegion=regions[2])
    with kms_error("NotFoundException"):
        clients[regions[2]].describe_key(KeyId=key_id)
    kms.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7)  # PendingReplicaDeletion
    with kms_error("KMSInvalidStateException"):
        kms.replicate_key(KeyId=key_id, ReplicaRegion=regions[2])


def test_every_region_describes_the_whole_set(store, clients, regions, mrk):
    account = store.config.account
    for region, client in clients.items():
        config = client.describe_key(KeyId=mrk)["KeyMetadata"]["MultiRegionConfiguration"]
        assert config["MultiRegionKeyType"] == ("PRIMARY" if region == regions[0] else "REPLICA")
        assert config["PrimaryKey"] == {"Arn": f"arn:aws:kms:{regions[0]}:{account}:key/{mrk}", "Region": regions[0]}
        assert sorted(r["Region"] for r in config["ReplicaKeys"]) == sorted(regions[1:])


def test_ciphertext_from_any_region_decrypts_in_every_region(clients, mrk):
    for source, client in clients.items():
        blob = client.encrypt(KeyId=mrk, Plaintext=source.encode(), EncryptionContext={"from": source})[
            "CiphertextBlob"]
        for target, other in clients.items():
            response = other.decrypt(CiphertextBlob=blob, EncryptionContext={"from": source})
            assert response["Plaintext"] == source.encode()
            assert f":{target}:" in response["KeyId"], "the answer names the local key"
            with kms_error("InvalidCiphertextException"):
                other.decrypt(CiphertextBlob=blob, EncryptionContext={"from": "elsewhere"})


def test_data_keys_travel_too(clients, regions, mrk):
    data_key = clients[regions[2]].generate_data_key(KeyId=mrk, KeySpec="AES_256")
    assert clients[regions[0]].decrypt(CiphertextBlob=data_key["CiphertextBlob"])["Plaintext"] == \
        data_key["Plaintext"]


def test_shared_and_independent_properties(store, kms, clients, regions, mrk):
    replica = clients[regions[1]]
    # independent: policy, tags, aliases, state, description
    policy = json.dumps({"Version": "2012-10-17", "Statement": [{
        "Sid": "ReplicaOnly", "Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{store.config.account}:root"},
        "Action": "kms:*", "Resource": "*"}]})
    replica.put_key_policy(KeyId=mrk, Policy=policy)
    replica.tag_resource(KeyId=mrk, Tags=[{"TagKey": "copy", "TagValue": "yes"}])
    replica.update_key_description(KeyId=mrk, Description="replica only")
    name = f"alias/mrk-{uuid.uuid4().hex[:12]}"
    replica.create_alias(AliasName=name, TargetKeyId=mrk)
    replica.disable_key(KeyId=mrk)
    assert kms.get_key_policy(KeyId=mrk)["Policy"] != policy
    assert replica.get_key_policy(KeyId=mrk)["Policy"] == policy
    assert kms.list_resource_tags(KeyId=mrk)["Tags"] == []
    assert kms.list_aliases(KeyId=mrk)["Aliases"] == []
    with kms_error("NotFoundException"):
        kms.describe_key(KeyId=name)
    primary = kms.describe_key(KeyId=mrk)["KeyMetadata"]
    assert (primary["KeyState"], primary["Description"]) == ("Enabled", "primary description")
    assert kms.encrypt(KeyId=mrk, Plaintext=b"primary still works")["CiphertextBlob"]
    with kms_error("DisabledException"):
        replica.encrypt(KeyId=mrk, Plaintext=b"x")
    # shared: id, spec, usage, rotation
    kms.enable_key_rotation(KeyId=mrk, RotationPeriodInDays=400)
    for client in clients.values():
        metadata = client.describe_key(KeyId=mrk)["KeyMetadata"]
        assert (metadata["KeyId"], metadata["KeySpec"], metadata["KeyUsage"]) == (mrk, "SYMMETRIC_DEFAULT",
                                                                                 "ENCRYPT_DECRYPT")
        status = client.get_key_rotation_status(KeyId=mrk)
        assert (status["KeyRotationEnabled"], status["RotationPeriodInDays"]) == (True, 400)


def test_update_primary_region_swaps_the_roles(store, kms, clients, regions, mrk):
    new_home = clients[regions[1]]
    before = kms.encrypt(KeyId=mrk, Plaintext=b"before the move")["CiphertextBlob"]
    with kms_error("UnsupportedOperationException"):  # called where the primary is not
        new_home.update_primary_region(KeyId=mrk, PrimaryRegion=regions[1])
    kms.update_primary_region(KeyId=mrk, PrimaryRegion=regions[1])
    for region, client in clients.items():
        config = client.describe_key(KeyId=mrk)["KeyMetadata"]["MultiRegionConfiguration"]
        assert config["MultiRegionKeyType"] == ("PRIMARY" if region == regions[1] else "REPLICA")
        assert config["PrimaryKey"]["Region"] == regions[1]
        assert sorted(r["Region"] for r in config["ReplicaKeys"]) == sorted([regions[0], regions[2]])
        assert client.decrypt(CiphertextBlob=before)["Plaintext"] == b"before the move"
    after = kms.encrypt(KeyId=mrk, Plaintext=b"after the move")["CiphertextBlob"]
    assert new_home.decrypt(CiphertextBlob=after)["Plaintext"] == b"after the move"
    # the new primary manages rotation and replication; the old one no longer can
    with kms_error("UnsupportedOperationException"):
        kms.rotate_key_on_demand(KeyId=mrk)
    new_home.rotate_key_on_demand(KeyId=mrk)
    rotated = new_home.encrypt(KeyId=mrk, Plaintext=b"rotated")["CiphertextBlob"]
    for client in clients.values():
        assert client.decrypt(CiphertextBlob=rotated)["Plaintext"] == b"rotated"
    with kms_error("AlreadyExistsException"):
        new_home.replicate_key(KeyId=mrk, ReplicaRegion=regions[0])


def test_update_primary_region_refusals(store, kms, clients, regions):
    key_id = kms.create_key(MultiRegion=True)["KeyMetadata"]["KeyId"]
    with kms_error("NotFoundException"):  # no replica there yet
        kms.update_primary_region(KeyId=key_id, PrimaryRegion=regions[1])
    with kms_error("ValidationException"):
        kms.update_primary_region(KeyId=key_id, PrimaryRegion="mars-north-1")
    single = kms.create_key()["KeyMetadata"]["KeyId"]
    with kms_error("UnsupportedOperationException"):
        kms.update_primary_region(KeyId=single, PrimaryRegion=regions[1])
    kms.replicate_key(KeyId=key_id, ReplicaRegion=regions[1])
    clients[regions[1]].schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7)
    with kms_error("KMSInvalidStateException"):
        kms.update_primary_region(KeyId=key_id, PrimaryRegion=regions[1])
    assert kms.describe_key(KeyId=key_id)["KeyMetadata"]["MultiRegionConfiguration"]["MultiRegionKeyType"] == \
        "PRIMARY"


def test_single_region_keys_do_not_exist_in_other_regions(store, kms, clients, regions):
    key = kms.create_key()["KeyMetadata"]
    blob = kms.encrypt(KeyId=key["KeyId"], Plaintext=b"stay home")["CiphertextBlob"]
    for region in regions[1:]:
        with kms_error("NotFoundException"):
            clients[region].describe_key(KeyId=key["KeyId"])
        with kms_error("NotFoundException"):
            clients[region].decrypt(CiphertextBlob=blob)
        with kms_error("NotFoundException"):
            clients[region].encrypt(KeyId=key["KeyId"], Plaintext=b"x")
        assert key["KeyId"] not in {k["KeyId"] for k in list_all(clients[region].list_keys, "Keys", Limit=1000)}


@pytest.mark.parametrize("spec, algorithm", [("ECC_NIST_P256", "ECDSA_SHA_256"),
                                             ("RSA_2048", "RSASSA_PSS_SHA_256")])
def test_signing_keys_sign_in_one_region_and_verify_in_another(kms, clients, regions, spec, algorithm):
    key_id = kms.create_key(KeySpec=spec, KeyUsage="SIGN_VERIFY", MultiRegion=True)["KeyMetadata"]["KeyId"]
    kms.replicate_key(KeyId=key_id, ReplicaRegion=regions[1])
    replica = clients[regions[1]]
    assert replica.get_public_key(KeyId=key_id)["PublicKey"] == kms.get_public_key(KeyId=key_id)["PublicKey"]
    signature = kms.sign(KeyId=key_id, Message=b"release", SigningAlgorithm=algorithm)["Signature"]
    assert replica.verify(KeyId=key_id, Message=b"release", Signature=signature,
                          SigningAlgorithm=algorithm)["SignatureValid"]
    signature = replica.sign(KeyId=key_id, Message=b"other way", SigningAlgorithm=algorithm)["Signature"]
    assert kms.verify(KeyId=key_id, Message=b"other way", Signature=signature, SigningAlgorithm=algorithm)[
        "SignatureValid"]
    with kms_error("KMSInvalidSignatureException"):
        kms.verify(KeyId=key_id, Message=b"other wax", Signature=signature, SigningAlgorithm=algorithm)


def test_hmac_keys_verify_across_regions(kms, clients, regions):
    key_id = kms.create_key(KeySpec="HMAC_384", KeyUsage="GENERATE_VERIFY_MAC", MultiRegion=True)[
        "KeyMetadata"]["KeyId"]
    kms.replicate_key(KeyId=key_id, ReplicaRegion=regions[2])
    mac = kms.generate_mac(KeyId=key_id, Message=b"m", MacAlgorithm="HMAC_SHA_384")["Mac"]
    assert clients[regions[2]].generate_mac(KeyId=key_id, Message=b"m", MacAlgorithm="HMAC_SHA_384")["Mac"] == mac
    assert clients[regions[2]].verify_mac(KeyId=key_id, Message=b"m", Mac=mac, MacAlgorithm="HMAC_SHA_384")[
        "MacValid"]


def test_rsa_encryption_keys_decrypt_in_every_region(kms, clients, regions):
    key_id = kms.create_key(KeySpec="RSA_2048", KeyUsage="ENCRYPT_DECRYPT", MultiRegion=True)["KeyMetadata"]["KeyId"]
    kms.replicate_key(KeyId=key_id, ReplicaRegion=regions[1])
    blob = clients[regions[1]].encrypt(KeyId=key_id, Plaintext=b"rsa", EncryptionAlgorithm="RSAES_OAEP_SHA_1")[
        "CiphertextBlob"]
    assert kms.decrypt(KeyId=key_id, CiphertextBlob=blob, EncryptionAlgorithm="RSAES_OAEP_SHA_1")["Plaintext"] == \
        b"rsa"


def test_single_region_signing_keys_stay_home(store, clients, regions):
    key_id = shared_key(store, "ECC_NIST_P384", "SIGN_VERIFY")
    with kms_error("NotFoundException"):
        clients[regions[1]].get_public_key(KeyId=key_id)


def test_after_a_lookup_misses_every_region_keeps_working(store, clients, regions):
    """A token lookup that finds nothing re-initializes the PKCS#11 module (SoftHSM2 can keep a
    stale view of an object another process just wrote); every region's session comes back."""
    first, second = regions[0], regions[1]
    key = clients[first].create_key(MultiRegion=True)["KeyMetadata"]["KeyId"]
    blob = clients[first].encrypt(KeyId=key, Plaintext=b"before the reload")["CiphertextBlob"]
    session = store.token_for(second)._session

    store.token_for(first).destroy(b"no-such-object")

    assert store.token_for(second)._session is not session, "the miss did not re-initialize the module"
    clients[first].replicate_key(KeyId=key, ReplicaRegion=second)
    for region in (first, second):
        assert clients[region].decrypt(CiphertextBlob=blob)["Plaintext"] == b"before the reload"
    assert store.check() == []
