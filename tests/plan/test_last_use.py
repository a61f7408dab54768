"""The last cryptographic use of keys, as the deletion and disable guards read it from the audit log:
only successful crypto operations count, the newest wins, and nothing a caller can put in a request
(encryption context keys and values that spell out record fields) can fake or hide a use."""

from __future__ import annotations

import json
from datetime import timedelta

from kmsplan.errors import KMSError
from kmsplan.plan.backend import last_crypto_use


def test_only_successful_crypto_operations_count_and_the_newest_wins(store, kms, clock):
    used, described, refused, other = (kms.create_key()["KeyMetadata"] for _ in range(4))
    arns = [key["Arn"] for key in (used, described, refused, other)]
    tricky = {"eventName": "Decrypt", "errorCode": "x", "resources": "[", "outcome": "Success",
              "eventTime": "2001-01-01T00:00:00Z", "ARN": other["Arn"]}
    blob = kms.encrypt(KeyId=used["KeyId"], Plaintext=b"x", EncryptionContext=tricky)["CiphertextBlob"]
    first = clock.now
    clock.advance(seconds=90)
    kms.decrypt(CiphertextBlob=blob, EncryptionContext=tricky)
    kms.describe_key(KeyId=described["KeyId"])                       # not a crypto operation
    kms.create_grant(KeyId=described["KeyId"], GranteePrincipal="arn:aws:iam::111122223333:root",
                     Operations=["Decrypt"], Constraints={"EncryptionContextSubset": tricky})
    kms.disable_key(KeyId=refused["KeyId"])
    for call in (lambda: kms.encrypt(KeyId=refused["KeyId"], Plaintext=b"x"),          # a failure
                 lambda: kms.encrypt(KeyId=other["KeyId"], Plaintext=b"x", DryRun=True)):  # a dry run
        try:
            call()
        except KMSError:
            pass
    kms.enable_key(KeyId=refused["KeyId"])

    found = last_crypto_use(store.audit.path, arns)

    assert set(found) == {used["Arn"]}
    assert found[used["Arn"]] == (first + timedelta(seconds=90)).replace(microsecond=0)


def test_a_line_in_another_shape_is_read_as_json(store, kms, tmp_path):
    key = kms.create_key()["KeyMetadata"]
    log = tmp_path / "audit.log"
    records = [
        {"eventTime": "2026-03-01T10:00:00Z", "eventName": "Sign", "resources": [{"ARN": key["Arn"]}]},
        {"eventTime": "2026-03-02T10:00:00Z", "eventName": "Sign", "errorCode": "DisabledException",
         "resources": [{"ARN": key["Arn"]}]},
        {"eventTime": "not a time", "eventName": "Sign", "resources": [{"ARN": key["Arn"]}]},
    ]
    log.write_text("\n".join(json.dumps(record, indent=None) for record in records) + "\nnot json\n")
    assert {arn: when.isoformat() for arn, when in last_crypto_use(log, [key["Arn"]]).items()} == \
        {key["Arn"]: "2026-03-01T10:00:00+00:00"}
    empty = tmp_path / "empty.log"
    empty.write_bytes(b"")
    assert last_crypto_use(empty, [key["Arn"]]) == {}
