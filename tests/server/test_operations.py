"""Every operation of the store, over the network, through boto3 as an application would call it:
SigV4-signed AWS JSON 1.1 requests to a real `kmsplan serve` on a real SoftHSM2-backed store.
One test per operation family; error shapes arrive as botocore's modelled exceptions."""

from __future__ import annotations

import datetime
import json
import uuid

import pytest
from botocore.exceptions import ClientError
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding
from server_helpers import ACCOUNT, APP, AWAY, HOME, ROOT, call

from kmsplan.store import client as _registered  # noqa: F401  (fills OPERATIONS)
from kmsplan.store.calls import OPERATIONS

COVERED = {
    "CreateKey", "DescribeKey", "ListKeys", "EnableKey", "DisableKey", "UpdateKeyDescription", "ScheduleKeyDeletion",
    "CancelKeyDeletion", "CreateAlias", "UpdateAlias", "DeleteAlias", "ListAliases", "TagResource", "UntagResource",
    "ListResourceTags", "PutKeyPolicy", "GetKeyPolicy", "ListKeyPolicies", "EnableKeyRotation", "DisableKeyRotation",
    "GetKeyRotationStatus", "RotateKeyOnDemand", "ListKeyRotations", "CreateGrant", "ListGrants",
    "ListRetirableGrants", "RetireGrant", "RevokeGrant", "ReplicateKey", "UpdatePrimaryRegion", "Encrypt", "Decrypt",
    "ReEncrypt", "GenerateDataKey", "GenerateDataKeyWithoutPlaintext", "GenerateDataKeyPair",
    "GenerateDataKeyPairWithoutPlaintext", "GenerateRandom", "Sign", "Verify", "GetPublicKey", "GenerateMac",
    "VerifyMac",
}


def code(error: ClientError) -> str:
    return error.response["Error"]["Code"]


def new_key(kms, **params) -> dict:
    return kms.create_key(Description=f"test {uuid.uuid4().hex[:8]}", **params)["KeyMetadata"]


def test_every_store_operation_is_covered_here():
    assert set(OPERATIONS) == COVERED


def test_key_lifecycle_and_states(kms):
    key = new_key(kms, Tags=[{"TagKey": "team", "TagValue": "payments"}])
    assert key["KeyState"] == "Enabled" and key["KeySpec"] == "SYMMETRIC_DEFAULT"
    assert isinstance(key["CreationDate"], datetime.datetime)
    key_id = key["KeyId"]
    assert kms.describe_key(KeyId=key_id)["KeyMetadata"]["Arn"] == key["Arn"]
    kms.update_key_description(KeyId=key_id, Description="renamed")
    assert kms.describe_key(KeyId=key["Arn"])["KeyMetadata"]["Description"] == "renamed"

    first = kms.list_keys(Limit=1)
    assert len(first["Keys"]) == 1
    if first["Truncated"]:
        assert kms.list_keys(Limit=1, Marker=first["NextMarker"])["Keys"] != first["Keys"]
    assert key_id in {k["KeyId"] for k in kms.get_paginator("list_keys").paginate().build_full_result()["Keys"]}

    kms.disable_key(KeyId=key_id)
    with pytest.raises(kms.exceptions.DisabledException):
        kms.encrypt(KeyId=key_id, Plaintext=b"x")
    kms.enable_key(KeyId=key_id)

    deletion = kms.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7)
    assert deletion["KeyState"] == "PendingDeletion" and isinstance(deletion["DeletionDate"], datetime.datetime)
    with pytest.raises(kms.exceptions.KMSInvalidStateException) as refused:
        kms.encrypt(KeyId=key_id, Plaintext=b"x")
    assert "pending deletion" in str(refused.value)
    assert kms.cancel_key_deletion(KeyId=key_id)["KeyId"] == key["Arn"]
    assert kms.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "Disabled"

    with pytest.raises(kms.exceptions.NotFoundException):
        kms.describe_key(KeyId=str(uuid.uuid4()))


def test_aliases(kms):
    first, second = new_key(kms)["KeyId"], new_key(kms)["KeyId"]
    alias = f"alias/served-{uuid.uuid4().hex[:8]}"
    kms.create_alias(AliasName=alias, TargetKeyId=first)
    assert kms.describe_key(KeyId=alias)["KeyMetadata"]["KeyId"] == first
    listed = kms.list_aliases(KeyId=first)["Aliases"]
    assert [a["AliasName"] for a in listed] == [alias]
    assert isinstance(listed[0]["CreationDate"], datetime.datetime)
    kms.update_alias(AliasName=alias, TargetKeyId=second)
    assert kms.describe_key(KeyId=alias)["KeyMetadata"]["KeyId"] == second
    with pytest.raises(kms.exceptions.AlreadyExistsException):
        kms.create_alias(AliasName=alias, TargetKeyId=first)
    kms.delete_alias(AliasName=alias)
    with pytest.raises(kms.exceptions.NotFoundException):
        kms.describe_key(KeyId=alias)


def test_tags(kms):
    key_id = new_key(kms)["KeyId"]
    kms.tag_resource(KeyId=key_id, Tags=[{"TagKey": "env", "TagValue": "prod"}, {"TagKey": "team", "TagValue": "a"}])
    assert kms.list_resource_tags(KeyId=key_id)["Tags"] == [{"TagKey": "env", "TagValue": "prod"},
                                                            {"TagKey": "team", "TagValue": "a"}]
    kms.untag_resource(KeyId=key_id, TagKeys=["team"])
    assert [t["TagKey"] for t in kms.list_resource_tags(KeyId=key_id)["Tags"]] == ["env"]
    with pytest.raises(kms.exceptions.TagException):
        kms.tag_resource(KeyId=key_id, Tags=[{"TagKey": "aws:reserved", "TagValue": "x"}])


def test_key_policies(kms):
    key_id = new_key(kms)["KeyId"]
    assert kms.list_key_policies(KeyId=key_id)["PolicyNames"] == ["default"]
    policy = json.dumps({"Version": "2012-10-17", "Statement": [
        {"Sid": "Root", "Effect": "Allow", "Principal": {"AWS": ROOT}, "Action": "kms:*", "Resource": "*"},
        {"Sid": "App", "Effect": "Allow", "Principal": {"AWS": APP}, "Action": "kms:Decrypt", "Resource": "*"}]})
    kms.put_key_policy(KeyId=key_id, PolicyName="default", Policy=policy)
    assert kms.get_key_policy(KeyId=key_id, PolicyName="default")["Policy"] == policy
    with pytest.raises(kms.exceptions.MalformedPolicyDocumentException):
        kms.put_key_policy(KeyId=key_id, PolicyName="default", Policy="{not json")


def test_rotation(kms):
    key_id = new_key(kms)["KeyId"]
    kms.enable_key_rotation(KeyId=key_id, RotationPeriodInDays=90)
    status = kms.get_key_rotation_status(KeyId=key_id)
    assert status["KeyRotationEnabled"] is True and status["RotationPeriodInDays"] == 90
    assert isinstance(status["NextRotationDate"], datetime.datetime)
    blob = kms.encrypt(KeyId=key_id, Plaintext=b"before")["CiphertextBlob"]
    kms.rotate_key_on_demand(KeyId=key_id)
    rotations = kms.list_key_rotations(KeyId=key_id)["Rotations"]
    assert [r["RotationType"] for r in rotations] == ["ON_DEMAND"]
    assert isinstance(rotations[0]["RotationDate"], datetime.datetime)
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"before"
    kms.disable_key_rotation(KeyId=key_id)
    assert kms.get_key_rotation_status(KeyId=key_id)["KeyRotationEnabled"] is False


def test_grants_and_the_grantee_over_the_network(served, kms):
    key_id = new_key(kms)["KeyId"]
    app = served.client(served.keys["app"])
    blob = kms.encrypt(KeyId=key_id, Plaintext=b"for the app", EncryptionContext={"t": "1"})["CiphertextBlob"]
    granted = kms.create_grant(KeyId=key_id, GranteePrincipal=APP, RetiringPrincipal=ROOT, Operations=["Decrypt"],
                               Name="app-decrypt")
    assert app.decrypt(CiphertextBlob=blob, EncryptionContext={"t": "1"})["Plaintext"] == b"for the app"
    grants = kms.list_grants(KeyId=key_id)["Grants"]
    assert [g["GrantId"] for g in grants] == [granted["GrantId"]]
    assert isinstance(grants[0]["CreationDate"], datetime.datetime)
    assert granted["GrantId"] in {g["GrantId"] for g in kms.list_retirable_grants(RetiringPrincipal=ROOT)["Grants"]}
    kms.retire_grant(GrantToken=granted["GrantToken"])
    assert kms.list_grants(KeyId=key_id)["Grants"] == []
    second = kms.create_grant(KeyId=key_id, GranteePrincipal=APP, Operations=["Decrypt"])
    kms.revoke_grant(KeyId=key_id, GrantId=second["GrantId"])
    assert kms.list_grants(KeyId=key_id)["Grants"] == []
    with pytest.raises(ClientError) as refused:
        kms.revoke_grant(KeyId=key_id, GrantId="0" * 64)
    assert code(refused.value) in {"NotFoundException", "InvalidGrantIdException"}


def test_access_denied_is_the_signers_and_the_audit_log_names_them(served):
    app = served.client(served.keys["app"])
    with pytest.raises(ClientError) as refused:
        app.create_key()
    assert code(refused.value) == "AccessDeniedException"
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    records = [json.loads(line) for line in (served.store / "audit.log").read_text().splitlines()]
    denied = [r for r in records if r["eventName"] == "CreateKey" and r.get("errorCode") == "AccessDeniedException"]
    assert denied[-1]["userIdentity"]["arn"] == APP
    assert denied[-1]["sourceIPAddress"] == "127.0.0.1"
    assert denied[-1]["awsRegion"] == HOME


def test_multi_region_keys_and_the_region_from_the_credential_scope(served, kms):
    key = new_key(kms, MultiRegion=True)
    assert key["KeyId"].startswith("mrk-")
    replica = kms.replicate_key(KeyId=key["KeyId"], ReplicaRegion=AWAY)["ReplicaKeyMetadata"]
    assert replica["MultiRegionConfiguration"]["MultiRegionKeyType"] == "REPLICA"
    away = served.client(region=AWAY)
    blob = kms.encrypt(KeyId=key["KeyId"], Plaintext=b"everywhere")["CiphertextBlob"]
    assert away.decrypt(CiphertextBlob=blob)["Plaintext"] == b"everywhere"
    kms.update_primary_region(KeyId=key["KeyId"], PrimaryRegion=AWAY)
    config = away.describe_key(KeyId=key["KeyId"])["KeyMetadata"]["MultiRegionConfiguration"]
    assert config["MultiRegionKeyType"] == "PRIMARY" and config["PrimaryKey"]["Region"] == AWAY
    single = new_key(kms)["KeyId"]
    with pytest.raises(away.exceptions.NotFoundException):
        away.describe_key(KeyId=single)


def test_symmetric_cryptography(kms):
    key_id, other = new_key(kms)["KeyId"], new_key(kms)["KeyId"]
    context = {"tenant": "acme", "purpose": "test"}
    blob = kms.encrypt(KeyId=key_id, Plaintext=b"\x00secret\xff", EncryptionContext=context)["CiphertextBlob"]
    assert isinstance(blob, bytes)
    assert kms.decrypt(CiphertextBlob=blob, EncryptionContext=context)["Plaintext"] == b"\x00secret\xff"
    with pytest.raises(kms.exceptions.InvalidCiphertextException):
        kms.decrypt(CiphertextBlob=blob, EncryptionContext={"tenant": "other"})
    with pytest.raises(kms.exceptions.IncorrectKeyException):
        kms.decrypt(CiphertextBlob=blob, EncryptionContext=context, KeyId=other)
    moved = kms.re_encrypt(CiphertextBlob=blob, SourceEncryptionContext=context, DestinationKeyId=other,
                           DestinationEncryptionContext={"moved": "yes"})
    assert kms.decrypt(CiphertextBlob=moved["CiphertextBlob"], EncryptionContext={"moved": "yes"})["Plaintext"] == \
        b"\x00secret\xff"
    data_key = kms.generate_data_key(KeyId=key_id, KeySpec="AES_256", EncryptionContext=context)
    assert len(data_key["Plaintext"]) == 32
    assert kms.decrypt(CiphertextBlob=data_key["CiphertextBlob"], EncryptionContext=context)["Plaintext"] == \
        data_key["Plaintext"]
    bare = kms.generate_data_key_without_plaintext(KeyId=key_id, NumberOfBytes=16)
    assert "Plaintext" not in bare and len(kms.decrypt(CiphertextBlob=bare["CiphertextBlob"])["Plaintext"]) == 16
    assert len(kms.generate_random(NumberOfBytes=64)["Plaintext"]) == 64


def test_asymmetric_keys_data_key_pairs_and_macs(kms):
    signer = new_key(kms, KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyId"]
    signature = kms.sign(KeyId=signer, Message=b"message", SigningAlgorithm="ECDSA_SHA_256")["Signature"]
    assert kms.verify(KeyId=signer, Message=b"message", Signature=signature,
                      SigningAlgorithm="ECDSA_SHA_256")["SignatureValid"] is True
    with pytest.raises(kms.exceptions.KMSInvalidSignatureException):
        kms.verify(KeyId=signer, Message=b"other", Signature=signature, SigningAlgorithm="ECDSA_SHA_256")
    public = kms.get_public_key(KeyId=signer)
    serialization.load_der_public_key(public["PublicKey"]).verify(signature, b"message", ec.ECDSA(hashes.SHA256()))

    rsa_key = new_key(kms, KeySpec="RSA_2048", KeyUsage="ENCRYPT_DECRYPT")["KeyId"]
    rsa_public = serialization.load_der_public_key(kms.get_public_key(KeyId=rsa_key)["PublicKey"])
    sealed = rsa_public.encrypt(b"to the token", padding.OAEP(mgf=padding.MGF1(hashes.SHA256()),
                                                              algorithm=hashes.SHA256(), label=None))
    assert kms.decrypt(KeyId=rsa_key, CiphertextBlob=sealed, EncryptionAlgorithm="RSAES_OAEP_SHA_256")["Plaintext"] \
        == b"to the token"

    wrapping = new_key(kms)["KeyId"]
    pair = kms.generate_data_key_pair(KeyId=wrapping, KeyPairSpec="ECC_NIST_P256")
    private = serialization.load_der_private_key(pair["PrivateKeyPlaintext"], password=None)
    assert private.public_key().public_bytes(serialization.Encoding.DER,
                                             serialization.PublicFormat.SubjectPublicKeyInfo) == pair["PublicKey"]
    assert kms.decrypt(CiphertextBlob=pair["PrivateKeyCiphertextBlob"])["Plaintext"] == pair["PrivateKeyPlaintext"]
    bare_pair = kms.generate_data_key_pair_without_plaintext(KeyId=wrapping, KeyPairSpec="ECC_NIST_P256")
    assert "PrivateKeyPlaintext" not in bare_pair and bare_pair["PublicKey"]

    mac_key = new_key(kms, KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC")["KeyId"]
    mac = kms.generate_mac(KeyId=mac_key, Message=b"m", MacAlgorithm="HMAC_SHA_256")["Mac"]
    assert kms.verify_mac(KeyId=mac_key, Message=b"m", Mac=mac, MacAlgorithm="HMAC_SHA_256")["MacValid"] is True
    with pytest.raises(kms.exceptions.KMSInvalidMacException):
        kms.verify_mac(KeyId=mac_key, Message=b"n", Mac=mac, MacAlgorithm="HMAC_SHA_256")
    with pytest.raises(kms.exceptions.InvalidKeyUsageException):
        kms.encrypt(KeyId=mac_key, Plaintext=b"x")


def test_validation_errors_have_aws_shape(served):
    """What botocore would refuse locally, sent anyway: the server refuses it the same way."""
    reply = call(served, "ListKeys", {"Limit": 0})
    assert (reply.status, reply.code) == (400, "ValidationException")
    assert reply.json["message"].startswith("1 validation error detected: Value '0' at 'limit'")
    reply = call(served, "Encrypt", {"Plaintext": "eA=="})
    assert (reply.status, reply.code) == (400, "ValidationException")
    assert "Value null at 'keyId'" in reply.json["message"]
    reply = call(served, "DescribeKey", {"KeyId": "k", "Unknown": 1})
    assert reply.code == "ValidationException" and 'Unknown parameter in input: "Unknown"' in reply.json["message"]
    reply = call(served, "CreateKey", {"KeySpec": "NOT_A_SPEC"})
    assert reply.code == "ValidationException" and "enum value set" in reply.json["message"]


def test_timestamps_are_epoch_seconds_and_blobs_base64_on_the_wire(served):
    reply = call(served, "CreateKey", {"Description": "wire"})
    assert reply.status == 200 and reply.headers["content-type"] == "application/x-amz-json-1.1"
    assert reply.headers["x-amzn-requestid"]
    metadata = reply.json["KeyMetadata"]
    assert isinstance(metadata["CreationDate"], float) and metadata["AWSAccountId"] == ACCOUNT
    reply = call(served, "Encrypt", {"KeyId": metadata["KeyId"], "Plaintext": "aGVsbG8="})
    blob = reply.json["CiphertextBlob"]
    assert isinstance(blob, str)
    assert call(served, "Decrypt", {"CiphertextBlob": blob}).json["Plaintext"] == "aGVsbG8="


def test_kmsplan_extension_calls_for_the_reconciler(served, kms):
    """`KmsplanService.*` (kmsplan.server.extensions): who the signer is, the registry, last use."""
    who = call(served, "WhoAmI", {}, key=served.keys["app"], target_prefix="KmsplanService")
    assert who.status == 200 and who.json["Principal"] == APP and who.json["Region"] == HOME
    listed = call(served, "ListPrincipals", {}, target_prefix="KmsplanService").json["Principals"]
    assert APP in {p["Arn"] for p in listed}
    key = new_key(kms)
    kms.encrypt(KeyId=key["KeyId"], Plaintext=b"used")
    used = call(served, "LastUse", {"KeyArns": [key["Arn"]]}, target_prefix="KmsplanService").json["LastUse"]
    assert list(used) == [key["Arn"]]
    assert call(served, "Nope", {}, target_prefix="KmsplanService").code == "UnknownOperationException"
    assert call(served, "WhoAmI", {}, target_prefix="KmsplanService", content_type="text/plain").code == \
        "UnknownOperationException"
