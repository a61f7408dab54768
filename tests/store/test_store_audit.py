"""The audit log: one record per call, allowed or refused, with who, where, what, on which key, the
encryption context and the outcome; never a secret. (Chain verification through the CLI, on a
store of its own, is in tests/cli/test_store_cli.py.)"""

from __future__ import annotations

import base64
import json
import os
import uuid

import pytest
from kms_support import audit_offset, audit_since, kms_error, shared_key

OUTSIDER = "arn:aws:iam::111122223333:role/not-registered"


@pytest.fixture
def key(kms):
    return kms.create_key(Description="audit tests")["KeyMetadata"]


def last_records(store, offset, count):
    records = audit_since(store, offset)
    assert len(records) == count, f"expected {count} new audit record(s), found {len(records)}"
    return records


def test_a_successful_call_is_recorded_with_who_where_what_and_context(store, kms, key, clock):
    offset = audit_offset(store)
    kms.encrypt(KeyId=key["KeyId"], Plaintext=b"audited", EncryptionContext={"tenant": "acme", "doc": "42"})
    (record,) = last_records(store, offset, 1)
    assert record["eventName"] == "Encrypt"
    assert record["eventTime"] == clock.now.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert record["awsRegion"] == kms.region
    assert record["userIdentity"]["arn"] == f"arn:aws:iam::{store.config.account}:root"
    assert record["requestParameters"]["keyId"] == key["KeyId"]
    assert record["requestParameters"]["encryptionContext"] == {"tenant": "acme", "doc": "42"}
    assert [resource["ARN"] for resource in record["resources"]] == [key["Arn"]]
    assert record["outcome"] == "Success" and "errorCode" not in record


def test_a_refused_call_is_recorded_with_its_error_code(store, kms, key):
    blob = kms.encrypt(KeyId=key["KeyId"], Plaintext=b"x", EncryptionContext={"a": "1"})["CiphertextBlob"]
    offset = audit_offset(store)
    with kms_error("InvalidCiphertextException"):
        kms.decrypt(CiphertextBlob=blob, EncryptionContext={"a": "2"})
    (record,) = last_records(store, offset, 1)
    assert (record["eventName"], record["outcome"], record["errorCode"]) == ("Decrypt", "Failure",
                                                                             "InvalidCiphertextException")
    assert record["requestParameters"]["encryptionContext"] == {"a": "2"}
    assert [resource["ARN"] for resource in record["resources"]] == [key["Arn"]]
    assert record["errorMessage"]


@pytest.mark.parametrize("call, name, code", [
    (lambda kms, key: kms.describe_key(KeyId=str(uuid.uuid4())), "DescribeKey", "NotFoundException"),
    (lambda kms, key: kms.encrypt(KeyId=key, Plaintext="text"), "Encrypt", "ValidationException"),
    (lambda kms, key: kms.encrypt(KeyId=key, Plaintext=b"x", Bogus=1), "Encrypt", "ValidationException"),
    (lambda kms, key: kms.schedule_key_deletion(KeyId=key, PendingWindowInDays=3), "ScheduleKeyDeletion",
     "ValidationException"),
    (lambda kms, key: kms.decrypt(CiphertextBlob=b"junk" * 20), "Decrypt", "InvalidCiphertextException"),
    (lambda kms, key: kms.create_alias(AliasName="alias/aws/x", TargetKeyId=key), "CreateAlias",
     "NotAuthorizedException"),
])
def test_every_refused_call_is_recorded(store, kms, key, call, name, code):
    offset = audit_offset(store)
    with kms_error(code):
        call(kms, key["KeyId"])
    (record,) = last_records(store, offset, 1)
    assert (record["eventName"], record["outcome"], record["errorCode"]) == (name, "Failure", code)
    assert record["awsRegion"] == kms.region


def test_the_calling_principal_and_region_are_recorded(store, key):
    region = store.config.regions[2]
    outsider = store.client(region, OUTSIDER)
    offset = audit_offset(store)
    with kms_error("AccessDeniedException", OUTSIDER):
        outsider.list_keys()
    (record,) = last_records(store, offset, 1)
    assert record["userIdentity"]["arn"] == OUTSIDER and record["awsRegion"] == region
    assert (record["eventName"], record["errorCode"]) == ("ListKeys", "AccessDeniedException")


def test_management_calls_are_recorded_too(store, kms, key):
    offset = audit_offset(store)
    kms.tag_resource(KeyId=key["KeyId"], Tags=[{"TagKey": "owner", "TagValue": "secret-owner-name"}])
    kms.disable_key(KeyId=key["KeyId"])
    kms.schedule_key_deletion(KeyId=key["KeyId"], PendingWindowInDays=9)
    records = last_records(store, offset, 3)
    assert [r["eventName"] for r in records] == ["TagResource", "DisableKey", "ScheduleKeyDeletion"]
    assert records[0]["requestParameters"]["tagKeys"] == ["owner"]
    assert records[2]["requestParameters"]["pendingWindowInDays"] == 9
    assert all(r["resources"][0]["ARN"] == key["Arn"] for r in records)


def forms(secret: bytes) -> list[bytes]:
    """Every way a secret could appear in a JSON log."""
    return [secret, secret.hex().encode(), secret.hex().upper().encode(), base64.b64encode(secret),
            base64.urlsafe_b64encode(secret), base64.b64encode(secret).rstrip(b"="), json.dumps(list(secret)).encode()]


def test_no_secret_ever_reaches_the_log(store, store_dir, kms, key):
    offset = audit_offset(store)
    secrets: list[bytes] = []

    plaintext = os.urandom(48)
    text_secret = f"hunter2-{uuid.uuid4()}".encode()
    blob = kms.encrypt(KeyId=key["KeyId"], Plaintext=plaintext, EncryptionContext={"c": "d"})["CiphertextBlob"]
    text_blob = kms.encrypt(KeyId=key["KeyId"], Plaintext=text_secret)["CiphertextBlob"]
    secrets += [plaintext, blob, text_blob]
    assert kms.decrypt(CiphertextBlob=text_blob)["Plaintext"] == text_secret
    with kms_error("InvalidCiphertextException"):  # a refused call with a secret blob
        kms.decrypt(CiphertextBlob=blob, EncryptionContext={"c": "wrong"})
    moved = kms.re_encrypt(CiphertextBlob=blob, SourceEncryptionContext={"c": "d"}, DestinationKeyId=key["KeyId"])
    secrets.append(moved["CiphertextBlob"])

    data_key = kms.generate_data_key(KeyId=key["KeyId"], KeySpec="AES_256")
    secrets += [data_key["Plaintext"], data_key["CiphertextBlob"]]
    secrets.append(kms.generate_data_key_without_plaintext(KeyId=key["KeyId"], NumberOfBytes=40)["CiphertextBlob"])
    pair = kms.generate_data_key_pair(KeyId=key["KeyId"], KeyPairSpec="ECC_NIST_P256")
    secrets += [pair["PrivateKeyPlaintext"], pair["PrivateKeyCiphertextBlob"]]
    secrets.append(kms.generate_random(NumberOfBytes=64)["Plaintext"])

    signer = shared_key(store, "ECC_NIST_P256", "SIGN_VERIFY")
    message = os.urandom(40)
    signature = kms.sign(KeyId=signer, Message=message, SigningAlgorithm="ECDSA_SHA_256")["Signature"]
    kms.verify(KeyId=signer, Message=message, Signature=signature, SigningAlgorithm="ECDSA_SHA_256")
    secrets += [message, signature]
    mac_key = shared_key(store, "HMAC_256", "GENERATE_VERIFY_MAC")
    mac_message = os.urandom(40)
    mac = kms.generate_mac(KeyId=mac_key, Message=mac_message, MacAlgorithm="HMAC_SHA_256")["Mac"]
    kms.verify_mac(KeyId=mac_key, Message=mac_message, Mac=mac, MacAlgorithm="HMAC_SHA_256")
    secrets += [mac_message, mac]
    grant = kms.create_grant(KeyId=key["KeyId"], GranteePrincipal="arn:aws:iam::111122223333:role/a",
                             Operations=["Decrypt"])
    kms.encrypt(KeyId=key["KeyId"], Plaintext=b"with token", GrantTokens=[grant["GrantToken"]])
    kms.retire_grant(GrantToken=grant["GrantToken"])

    with open(store.audit.path, "rb") as handle:
        handle.seek(offset)
        written = handle.read()
    assert written.count(b"\n") >= 15, "the calls above were logged"
    for secret in secrets:
        for form in forms(secret):
            assert form not in written, f"a secret reached the audit log ({form[:24]!r}...)"
    assert text_secret not in written and grant["GrantToken"].encode() not in written
    whole_log = store.audit.path.read_bytes() + store.audit.head_path.read_bytes()
    pins = json.loads((store_dir / "pins.json").read_text())
    assert pins and all(pin.encode() not in whole_log for pin in pins.values())


def test_records_carry_no_secret_fields(store, kms, key):
    offset = audit_offset(store)
    kms.generate_data_key(KeyId=key["KeyId"], NumberOfBytes=32, EncryptionContext={"x": "y"})
    (record,) = last_records(store, offset, 1)
    forbidden = {"plaintext", "ciphertextBlob", "message", "signature", "mac", "grantToken", "grantTokens",
                 "policy", "privateKeyPlaintext"}
    assert not forbidden & set(record["requestParameters"])
    assert not {"responseElements", "Plaintext", "CiphertextBlob"} & set(record)
