"""Bad input: every malformed request is a KMSError carrying the AWS error code and a clear message
(never another exception type), is written to the audit log as a failure, and changes nothing."""

from __future__ import annotations

import os
import re
import uuid

import pytest
from kms_support import audit_offset, audit_since, kms_error, snapshot

RANDOM_ID = "0b7c9a52-8a5e-4a3f-9d3e-5c1d2b3a4f60"
RANDOM_MRK = "mrk-" + "ab" * 16
GOOD_ROLE = "arn:aws:iam::111122223333:role/app"
PLACEHOLDER = re.compile(r"\{(K|S|H|ALIAS|ARN|HOME|AWAY|ACCOUNT)\}")


@pytest.fixture(scope="module")
def world(store):
    """Keys the bad requests aim at (K: symmetric, S: ECC signing, H: HMAC), with an alias, a tag,
    a grant and a blob, so that 'changes nothing' has something to change."""
    home = store.config.regions[0]
    kms = store.client(home)
    key = kms.create_key(Description="bad input target")["KeyMetadata"]["KeyId"]
    signer = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
    mac = kms.create_key(KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC")["KeyMetadata"]["KeyId"]
    alias = f"alias/bad-input-{uuid.uuid4().hex[:8]}"
    kms.create_alias(AliasName=alias, TargetKeyId=key)
    kms.tag_resource(KeyId=key, Tags=[{"TagKey": "keep", "TagValue": "me"}])
    grant = kms.create_grant(KeyId=key, GranteePrincipal=GOOD_ROLE, Operations=["Decrypt"])
    blob = kms.encrypt(KeyId=key, Plaintext=b"target", EncryptionContext={"a": "b"})["CiphertextBlob"]
    return {"K": key, "S": signer, "H": mac, "ALIAS": alias, "GRANT": grant["GrantId"], "BLOB": blob,
            "ARN": f"arn:aws:kms:{home}:{store.config.account}:key/{key}", "HOME": home,
            "AWAY": store.config.regions[1], "ACCOUNT": store.config.account}


def fill(value, world):
    """Substitute {K}, {ARN}, ... in strings (recursively); 'BLOB' becomes the world's blob."""
    if isinstance(value, str):
        if value == "BLOB":
            return world["BLOB"]
        return PLACEHOLDER.sub(lambda match: world[match.group(1)], value)
    if isinstance(value, dict):
        return {fill(k, world): fill(v, world) for k, v in value.items()}
    if isinstance(value, list):
        return [fill(item, world) for item in value]
    return value


def case(operation, params, code, *mentions, id=None):
    return pytest.param(operation, params, code, mentions, id=id or f"{operation}-{code}")


CASES = [
    # wrong types
    case("describe_key", {"KeyId": 12345}, "ValidationException", "KeyId", id="int-KeyId"),
    case("describe_key", {"KeyId": None}, "ValidationException", "KeyId", id="None-KeyId"),
    case("describe_key", {"KeyId": b"{K}"}, "ValidationException", "KeyId", id="bytes-KeyId"),
    case("encrypt", {"KeyId": "{K}", "Plaintext": "text, not bytes"}, "ValidationException", "Plaintext",
         id="str-Plaintext"),
    case("encrypt", {"KeyId": "{K}", "Plaintext": [1, 2]}, "ValidationException", "Plaintext", id="list-Plaintext"),
    case("encrypt", {"KeyId": "{K}", "Plaintext": b"x", "EncryptionContext": {"a": 1}}, "ValidationException",
         "EncryptionContext", id="int-context-value"),
    case("encrypt", {"KeyId": "{K}", "Plaintext": b"x", "EncryptionContext": {"a": None}}, "ValidationException",
         "EncryptionContext", id="None-context-value"),
    case("encrypt", {"KeyId": "{K}", "Plaintext": b"x", "EncryptionContext": {"a": b"b"}}, "ValidationException",
         "EncryptionContext", id="bytes-context-value"),
    case("encrypt", {"KeyId": "{K}", "Plaintext": b"x", "EncryptionContext": {1: "a"}}, "ValidationException",
         "EncryptionContext", id="int-context-key"),
    case("encrypt", {"KeyId": "{K}", "Plaintext": b"x", "EncryptionContext": [["a", "b"]]}, "ValidationException",
         "EncryptionContext", id="list-context"),
    case("encrypt", {"KeyId": "{K}", "Plaintext": b"x", "EncryptionContext": {"": "empty key"}},
         "ValidationException", "EncryptionContext", id="empty-context-key"),
    case("decrypt", {"CiphertextBlob": "not bytes"}, "ValidationException", "CiphertextBlob", id="str-blob"),
    case("decrypt", {"CiphertextBlob": "BLOB", "EncryptionContext": {"a": {"nested": "b"}}}, "ValidationException",
         "EncryptionContext", id="nested-context"),
    case("create_key", {"Description": 5}, "ValidationException", "Description", id="int-Description"),
    case("create_key", {"MultiRegion": "yes"}, "ValidationException", "MultiRegion", id="str-MultiRegion"),
    case("create_key", {"MultiRegion": 1}, "ValidationException", "MultiRegion", id="int-MultiRegion"),
    case("create_key", {"Tags": {"a": "b"}}, "ValidationException", "Tags", id="dict-Tags"),
    case("create_key", {"Tags": [{"TagKey": "a"}]}, "ValidationException", "Tags", id="tag-without-value"),
    case("create_key", {"Tags": [{"TagKey": "a", "TagValue": "b", "Extra": "c"}]}, "ValidationException", "Tags",
         id="tag-extra-field"),
    case("tag_resource", {"KeyId": "{K}", "Tags": [{"TagKey": "a", "TagValue": 1}]}, "ValidationException", "Tags",
         id="int-TagValue"),
    case("untag_resource", {"KeyId": "{K}", "TagKeys": "keep"}, "ValidationException", "TagKeys", id="str-TagKeys"),
    case("schedule_key_deletion", {"KeyId": "{K}", "PendingWindowInDays": "7"}, "ValidationException",
         "PendingWindowInDays", id="str-window"),
    case("schedule_key_deletion", {"KeyId": "{K}", "PendingWindowInDays": True}, "ValidationException",
         "PendingWindowInDays", id="bool-window"),
    case("schedule_key_deletion", {"KeyId": "{K}", "PendingWindowInDays": 7.0}, "ValidationException",
         "PendingWindowInDays", id="float-window"),
    case("enable_key_rotation", {"KeyId": "{K}", "RotationPeriodInDays": "365"}, "ValidationException",
         "RotationPeriodInDays", id="str-period"),
    case("generate_data_key", {"KeyId": "{K}", "NumberOfBytes": 32.0}, "ValidationException", "NumberOfBytes",
         id="float-NumberOfBytes"),
    case("create_grant", {"KeyId": "{K}", "GranteePrincipal": GOOD_ROLE, "Operations": "Decrypt"},
         "ValidationException", "Operations", id="str-Operations"),
    case("create_grant", {"KeyId": "{K}", "GranteePrincipal": GOOD_ROLE, "Operations": ["Decrypt"],
                          "Constraints": {"EncryptionContextEquals": {"a": 1}}}, "ValidationException", "Constraints",
         id="int-constraint-value"),
    case("create_grant", {"KeyId": "{K}", "GranteePrincipal": GOOD_ROLE, "Operations": ["Decrypt"],
                          "Constraints": {"EncryptionContextLike": {"a": "b"}}}, "ValidationException", "Constraints",
         id="unknown-constraint"),
    case("list_keys", {"Limit": "10"}, "ValidationException", "Limit", id="str-Limit"),
    case("sign", {"KeyId": "{S}", "Message": "text", "SigningAlgorithm": "ECDSA_SHA_256"}, "ValidationException",
         "Message", id="str-Message"),
    case("verify_mac", {"KeyId": "{H}", "Message": b"m", "Mac": "00", "MacAlgorithm": "HMAC_SHA_256"},
         "ValidationException", "Mac", id="str-Mac"),
    # unknown parameter names
    case("describe_key", {"KeyId": "{K}", "Foo": 1}, "ValidationException", "Foo", id="unknown-Foo"),
    case("encrypt", {"KeyId": "{K}", "Plaintext": b"x", "encryptionContext": {}}, "ValidationException",
         "encryptionContext", id="lowercase-name"),
    case("encrypt", {"KeyId": "{K}", "Plaintext": b"x", "KeySpec": "AES_256"}, "ValidationException", "KeySpec",
         id="param-of-another-operation"),
    case("create_key", {"keySpec": "RSA_2048"}, "ValidationException", "keySpec", id="create-lowercase"),
    case("list_keys", {"KeyId": "{K}"}, "ValidationException", "KeyId", id="list-keys-KeyId"),
    # missing required parameters
    case("encrypt", {"Plaintext": b"x"}, "ValidationException", "KeyId", id="missing-KeyId"),
    case("encrypt", {"KeyId": "{K}"}, "ValidationException", "Plaintext", id="missing-Plaintext"),
    case("decrypt", {}, "ValidationException", "CiphertextBlob", id="missing-blob"),
    case("create_alias", {"AliasName": "alias/missing-target"}, "ValidationException", "TargetKeyId",
         id="missing-TargetKeyId"),
    case("create_grant", {"KeyId": "{K}", "Operations": ["Decrypt"]}, "ValidationException", "GranteePrincipal",
         id="missing-grantee"),
    case("sign", {"KeyId": "{S}", "Message": b"m"}, "ValidationException", "SigningAlgorithm",
         id="missing-algorithm"),
    case("replicate_key", {"KeyId": "{K}"}, "ValidationException", "ReplicaRegion", id="missing-ReplicaRegion"),
    case("put_key_policy", {"KeyId": "{K}"}, "ValidationException", "Policy", id="missing-Policy"),
    # unknown key ids
    case("describe_key", {"KeyId": RANDOM_ID}, "NotFoundException", RANDOM_ID, id="unknown-uuid"),
    case("describe_key", {"KeyId": RANDOM_MRK}, "NotFoundException", id="unknown-mrk"),
    case("encrypt", {"KeyId": RANDOM_ID, "Plaintext": b"x"}, "NotFoundException", id="encrypt-unknown"),
    case("enable_key", {"KeyId": RANDOM_ID}, "NotFoundException", id="enable-unknown"),
    case("schedule_key_deletion", {"KeyId": RANDOM_ID}, "NotFoundException", id="schedule-unknown"),
    case("create_alias", {"AliasName": "alias/to-nothing", "TargetKeyId": RANDOM_ID}, "NotFoundException",
         id="alias-to-unknown"),
    case("tag_resource", {"KeyId": RANDOM_ID, "Tags": [{"TagKey": "a", "TagValue": "b"}]}, "NotFoundException",
         id="tag-unknown"),
    case("describe_key", {"KeyId": "alias/never-created"}, "NotFoundException", "alias/never-created",
         id="unknown-alias"),
    case("update_key_description", {"KeyId": "{ALIAS}", "Description": "x"}, "NotFoundException",
         id="alias-where-key-id-needed"),
    # malformed ids
    case("describe_key", {"KeyId": "not-a-key"}, "NotFoundException", id="word"),
    case("describe_key", {"KeyId": ""}, "NotFoundException", id="empty"),
    case("describe_key", {"KeyId": "{K}x"}, "NotFoundException", id="id-plus-char"),
    case("describe_key", {"KeyId": "{K}\n"}, "NotFoundException", id="id-plus-newline"),
    case("describe_key", {"KeyId": " {K}"}, "NotFoundException", id="leading-space"),
    case("describe_key", {"KeyId": "mrk-xyz"}, "NotFoundException", id="short-mrk"),
    case("describe_key", {"KeyId": "../../etc/passwd"}, "NotFoundException", id="path"),
    case("describe_key", {"KeyId": "' OR 1=1 --"}, "NotFoundException", id="sql"),
    case("describe_key", {"KeyId": "k" * 5000}, "NotFoundException", id="huge"),
    # bad ARNs
    case("describe_key", {"KeyId": "arn:aws:kms:{AWAY}:{ACCOUNT}:key/{K}"}, "NotFoundException", id="arn-other-region"),
    case("describe_key", {"KeyId": "arn:aws:kms:{HOME}:999999999999:key/{K}"}, "NotFoundException",
         id="arn-other-account"),
    case("describe_key", {"KeyId": "arn:aws:kms:{HOME}:{ACCOUNT}:widget/{K}"}, "NotFoundException",
         id="arn-bad-resource"),
    case("describe_key", {"KeyId": "arn:aws:s3:::bucket"}, "NotFoundException", id="arn-other-service"),
    case("describe_key", {"KeyId": "arn:"}, "NotFoundException", id="arn-stub"),
    case("describe_key", {"KeyId": "arn:aws:kms:{HOME}:{ACCOUNT}:key/"}, "NotFoundException", id="arn-no-id"),
    case("describe_key", {"KeyId": "arn:aws:kms:{HOME}:{ACCOUNT}:alias/nope"}, "NotFoundException",
         id="arn-unknown-alias"),
    case("describe_key", {"KeyId": "arn:aws:kms:{HOME}:{ACCOUNT}:key/{K}\n"}, "NotFoundException",
         id="arn-trailing-newline"),
    case("encrypt", {"KeyId": "arn:aws:kms:{AWAY}:{ACCOUNT}:{ALIAS}", "Plaintext": b"x"}, "NotFoundException",
         id="alias-arn-other-region"),
    # oversized or empty payloads
    case("encrypt", {"KeyId": "{K}", "Plaintext": b"p" * 4097}, "ValidationException", "plaintext",
         id="plaintext-4097"),
    case("encrypt", {"KeyId": "{K}", "Plaintext": b""}, "ValidationException", "plaintext", id="plaintext-empty"),
    case("generate_mac", {"KeyId": "{H}", "Message": b"m" * 4097, "MacAlgorithm": "HMAC_SHA_256"},
         "ValidationException", id="mac-message-4097"),
    case("sign", {"KeyId": "{S}", "Message": b"m" * 4097, "SigningAlgorithm": "ECDSA_SHA_256"},
         "ValidationException", id="sign-message-4097"),
    case("create_key", {"Description": "d" * 8193}, "ValidationException", "description", id="description-8193"),
    # junk blobs
    case("decrypt", {"CiphertextBlob": b""}, "ValidationException", id="blob-empty"),
    case("decrypt", {"CiphertextBlob": b"\x00" * 6145}, "ValidationException", id="blob-6145"),
    case("decrypt", {"CiphertextBlob": b"junk"}, "InvalidCiphertextException", id="blob-junk"),
    case("decrypt", {"CiphertextBlob": bytes(range(256))}, "InvalidCiphertextException", id="blob-bytes"),
    case("re_encrypt", {"CiphertextBlob": b"junk" * 30, "DestinationKeyId": "{K}"}, "InvalidCiphertextException",
         id="reencrypt-junk"),
    case("decrypt", {"CiphertextBlob": "BLOB", "EncryptionContext": {"a": "c"}}, "InvalidCiphertextException",
         id="blob-wrong-context"),
    # invalid windows, periods, sizes, enums
    case("schedule_key_deletion", {"KeyId": "{K}", "PendingWindowInDays": 6}, "ValidationException", id="window-6"),
    case("schedule_key_deletion", {"KeyId": "{K}", "PendingWindowInDays": 31}, "ValidationException", id="window-31"),
    case("enable_key_rotation", {"KeyId": "{K}", "RotationPeriodInDays": 89}, "ValidationException", id="period-89"),
    case("enable_key_rotation", {"KeyId": "{K}", "RotationPeriodInDays": 2561}, "ValidationException",
         id="period-2561"),
    case("generate_data_key", {"KeyId": "{K}", "NumberOfBytes": 1025}, "ValidationException", id="data-key-1025"),
    case("generate_random", {"NumberOfBytes": 0}, "ValidationException", id="random-0"),
    case("create_key", {"KeySpec": "AES_256"}, "ValidationException", "AES_256", id="bad-KeySpec"),
    case("sign", {"KeyId": "{S}", "Message": b"m", "SigningAlgorithm": "SHA256"}, "ValidationException",
         id="bad-SigningAlgorithm"),
    case("sign", {"KeyId": "{S}", "Message": b"m", "SigningAlgorithm": "ECDSA_SHA_256", "MessageType": "TEXT"},
         "ValidationException", id="bad-MessageType"),
    case("encrypt", {"KeyId": "{K}", "Plaintext": b"x", "EncryptionAlgorithm": "AES_GCM"}, "ValidationException",
         id="bad-EncryptionAlgorithm"),
    case("decrypt", {"CiphertextBlob": "BLOB", "EncryptionAlgorithm": "ROT13"}, "ValidationException",
         id="bad-decrypt-algorithm"),
    case("replicate_key", {"KeyId": "{K}", "ReplicaRegion": "moon-1"}, "UnsupportedOperationException",
         id="replicate-single-region"),
    case("create_key", {"Origin": "EXTERNAL"}, "UnsupportedOperationException", id="external-origin"),
    case("list_keys", {"Limit": 0}, "ValidationException", id="limit-0"),
    case("list_keys", {"Marker": "garbage"}, "InvalidMarkerException", id="bad-marker"),
    # aliases, tags and policies
    case("create_alias", {"AliasName": "no-prefix", "TargetKeyId": "{K}"}, "ValidationException", id="alias-syntax"),
    case("create_alias", {"AliasName": "alias/aws/mine", "TargetKeyId": "{K}"}, "NotAuthorizedException",
         id="alias-reserved"),
    case("create_alias", {"AliasName": "{ALIAS}", "TargetKeyId": "{K}"}, "AlreadyExistsException", id="alias-taken"),
    case("delete_alias", {"AliasName": "alias/not-there"}, "NotFoundException", id="delete-missing-alias"),
    case("tag_resource", {"KeyId": "{K}", "Tags": [{"TagKey": "aws:x", "TagValue": "y"}]}, "TagException",
         id="tag-reserved"),
    case("put_key_policy", {"KeyId": "{K}", "Policy": "{"}, "MalformedPolicyDocumentException", id="policy-json"),
    case("put_key_policy", {"KeyId": "{K}", "Policy": "{}" + " " * 32767}, "LimitExceededException",
         id="policy-size"),
    case("get_key_policy", {"KeyId": "{K}", "PolicyName": "mine"}, "NotFoundException", id="policy-name"),
    # grants
    case("create_grant", {"KeyId": "{K}", "GranteePrincipal": "bob", "Operations": ["Decrypt"]},
         "ValidationException", "GranteePrincipal", id="grantee-not-arn"),
    case("create_grant", {"KeyId": "{K}", "GranteePrincipal": "arn:aws:iam::1:role/x", "Operations": ["Decrypt"]},
         "ValidationException", "GranteePrincipal", id="grantee-short-account"),
    case("create_grant", {"KeyId": "{K}", "GranteePrincipal": GOOD_ROLE, "RetiringPrincipal": "arn:aws:iam::x",
                          "Operations": ["Decrypt"]}, "ValidationException", "RetiringPrincipal",
         id="retiring-not-arn"),
    case("create_grant", {"KeyId": "{K}", "GranteePrincipal": GOOD_ROLE, "Operations": ["Sign"]},
         "ValidationException", "Sign", id="grant-op-for-other-spec"),
    case("revoke_grant", {"KeyId": "{K}", "GrantId": "not-a-grant-id"}, "InvalidGrantIdException", id="grant-id"),
    case("revoke_grant", {"KeyId": "{K}", "GrantId": "f" * 64}, "NotFoundException", id="grant-unknown"),
    case("retire_grant", {"GrantToken": "not a token"}, "InvalidGrantTokenException", id="grant-token"),
    case("encrypt", {"KeyId": "{K}", "Plaintext": b"x", "GrantTokens": ["forged"]}, "InvalidGrantTokenException",
         id="grant-tokens"),
    case("list_retirable_grants", {"RetiringPrincipal": "someone"}, "ValidationException", id="retirable-principal"),
    # text with no UTF-8 form (lone surrogates)
    case("describe_key", {"KeyId": "\ud800"}, "ValidationException", "KeyId", id="surrogate-KeyId"),
    case("create_key", {"Description": "bad \udc80 text"}, "ValidationException", "Description",
         id="surrogate-Description"),
    case("encrypt", {"KeyId": "{K}", "Plaintext": b"x", "EncryptionContext": {"k": "\udfff"}}, "ValidationException",
         "EncryptionContext", id="surrogate-context"),
    case("put_key_policy", {"KeyId": "{K}", "Policy": '{"Statement": []}\ud800'}, "ValidationException", "Policy",
         id="surrogate-Policy"),
    case("tag_resource", {"KeyId": "{K}", "Tags": [{"TagKey": "\ud83d", "TagValue": "v"}]}, "ValidationException",
         "Tags", id="surrogate-tag"),
    case("create_alias", {"AliasName": "alias/\udc00", "TargetKeyId": "{K}"}, "ValidationException",
         id="surrogate-alias"),
]


@pytest.mark.parametrize("operation, params, code, mentions", CASES)
def test_bad_request_is_an_aws_error_is_audited_and_changes_nothing(store, world, operation, params, code, mentions):
    kms = store.client(world["HOME"])
    watched = ((world["HOME"], world["K"]), (world["HOME"], world["S"]), (world["HOME"], world["H"]))
    before = snapshot(store, watched)
    offset = audit_offset(store)
    with kms_error(code, *(fill(m, world) for m in mentions)):
        getattr(kms, operation)(**fill(params, world))
    (record, *others) = audit_since(store, offset)
    assert not others, "one call, one audit record"
    assert (record["outcome"], record["errorCode"]) == ("Failure", code)
    assert snapshot(store, watched) == before


@pytest.mark.parametrize("params", [{"KeyId": "{K}", "Plaintext": b"x", "EncryptionContext": {"a": "b"}},
                                    {"KeyId": "{ARN}", "Plaintext": bytearray(b"x")},
                                    {"KeyId": "{ALIAS}", "Plaintext": memoryview(b"x")}])
def test_the_same_requests_done_right_succeed(store, world, params):
    """The control group: the targets of the bad requests above do work."""
    kms = store.client(world["HOME"])
    blob = kms.encrypt(**fill(params, world))["CiphertextBlob"]
    context = params.get("EncryptionContext", {})
    assert kms.decrypt(CiphertextBlob=blob, EncryptionContext=context)["Plaintext"] == b"x"


def test_positional_arguments_are_a_python_error_like_boto3(store, world):
    kms = store.client(world["HOME"])
    with pytest.raises(TypeError):
        kms.describe_key(world["K"])


def test_random_garbage_never_escapes_as_another_exception(store, world):
    """Fuzz a few operations with random values of random types: only KMSErrors come out."""
    from kmsplan.errors import KMSError

    kms = store.client(world["HOME"])
    values = [None, 0, -1, 2**70, 3.5, True, "", "x", "\x00", "é" * 3, b"", b"\xff" * 3, os.urandom(64), [], ["a"], {},
              {"a": "b"}, {"a": ["b"]}, [{"TagKey": "a"}], object(), world["K"], world["BLOB"], "alias/aws/x"]
    rng = __import__("random").Random(int.from_bytes(os.urandom(4), "big"))
    operations = {"encrypt": ["KeyId", "Plaintext", "EncryptionContext", "EncryptionAlgorithm", "GrantTokens"],
                  "decrypt": ["CiphertextBlob", "KeyId", "EncryptionContext", "EncryptionAlgorithm"],
                  "create_alias": ["AliasName", "TargetKeyId"],
                  "create_grant": ["KeyId", "GranteePrincipal", "Operations", "Constraints", "Name"],
                  "tag_resource": ["KeyId", "Tags"],
                  "sign": ["KeyId", "Message", "SigningAlgorithm", "MessageType"],
                  "generate_data_key": ["KeyId", "KeySpec", "NumberOfBytes", "EncryptionContext"],
                  "schedule_key_deletion": ["KeyId", "PendingWindowInDays"]}
    watched = ((world["HOME"], world["K"]),)
    before = snapshot(store, watched)
    for _ in range(300):
        operation = rng.choice(list(operations))
        params = {name: rng.choice(values) for name in rng.sample(operations[operation],
                                                                   rng.randint(0, len(operations[operation])))}
        if operation in ("tag_resource", "schedule_key_deletion", "create_alias", "create_grant") and \
                params.get("KeyId", params.get("TargetKeyId")) == world["K"]:
            continue  # a well-formed request could legitimately change the watched key
        try:
            getattr(kms, operation)(**params)
        except KMSError as error:
            assert error.code and error.message
    assert snapshot(store, watched) == before
