"""Key specs and usages: every valid pair creates a working key; every invalid pair is refused and
creates nothing; spec and usage never change."""

from __future__ import annotations

import pytest
from kms_support import key_ids, kms_error, list_all, shared_key

RSA_SIGNING = ["RSASSA_PKCS1_V1_5_SHA_256", "RSASSA_PKCS1_V1_5_SHA_384", "RSASSA_PKCS1_V1_5_SHA_512",
               "RSASSA_PSS_SHA_256", "RSASSA_PSS_SHA_384", "RSASSA_PSS_SHA_512"]
RSA_ENCRYPTION = ["RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256"]

# (spec, usage, the algorithm field DescribeKey shows, its value)
VALID = [
    ("SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT", "EncryptionAlgorithms", ["SYMMETRIC_DEFAULT"]),
    ("RSA_2048", "ENCRYPT_DECRYPT", "EncryptionAlgorithms", RSA_ENCRYPTION),
    ("RSA_3072", "ENCRYPT_DECRYPT", "EncryptionAlgorithms", RSA_ENCRYPTION),
    ("RSA_4096", "ENCRYPT_DECRYPT", "EncryptionAlgorithms", RSA_ENCRYPTION),
    ("RSA_2048", "SIGN_VERIFY", "SigningAlgorithms", RSA_SIGNING),
    ("RSA_3072", "SIGN_VERIFY", "SigningAlgorithms", RSA_SIGNING),
    ("RSA_4096", "SIGN_VERIFY", "SigningAlgorithms", RSA_SIGNING),
    ("ECC_NIST_P256", "SIGN_VERIFY", "SigningAlgorithms", ["ECDSA_SHA_256"]),
    ("ECC_NIST_P384", "SIGN_VERIFY", "SigningAlgorithms", ["ECDSA_SHA_384"]),
    ("ECC_NIST_P521", "SIGN_VERIFY", "SigningAlgorithms", ["ECDSA_SHA_512"]),
    ("ECC_SECG_P256K1", "SIGN_VERIFY", "SigningAlgorithms", ["ECDSA_SHA_256"]),
    ("HMAC_224", "GENERATE_VERIFY_MAC", "MacAlgorithms", ["HMAC_SHA_224"]),
    ("HMAC_256", "GENERATE_VERIFY_MAC", "MacAlgorithms", ["HMAC_SHA_256"]),
    ("HMAC_384", "GENERATE_VERIFY_MAC", "MacAlgorithms", ["HMAC_SHA_384"]),
    ("HMAC_512", "GENERATE_VERIFY_MAC", "MacAlgorithms", ["HMAC_SHA_512"]),
]
ALGORITHM_FIELDS = {"EncryptionAlgorithms", "SigningAlgorithms", "MacAlgorithms"}


def exercise(kms, key_id: str, usage: str, algorithms: list[str]) -> None:
    """Use the key for what its usage allows, through the store only."""
    if usage == "ENCRYPT_DECRYPT":
        algorithm = algorithms[-1]
        blob = kms.encrypt(KeyId=key_id, Plaintext=b"spec check", EncryptionAlgorithm=algorithm)["CiphertextBlob"]
        params = {} if algorithm == "SYMMETRIC_DEFAULT" else {"KeyId": key_id}
        plain = kms.decrypt(CiphertextBlob=blob, EncryptionAlgorithm=algorithm, **params)["Plaintext"]
        assert plain == b"spec check"
    elif usage == "SIGN_VERIFY":
        for algorithm in algorithms:
            signature = kms.sign(KeyId=key_id, Message=b"spec check", SigningAlgorithm=algorithm)["Signature"]
            assert kms.verify(KeyId=key_id, Message=b"spec check", Signature=signature,
                              SigningAlgorithm=algorithm)["SignatureValid"] is True
    else:
        mac = kms.generate_mac(KeyId=key_id, Message=b"spec check", MacAlgorithm=algorithms[0])["Mac"]
        assert kms.verify_mac(KeyId=key_id, Message=b"spec check", Mac=mac, MacAlgorithm=algorithms[0])["MacValid"]


@pytest.mark.parametrize("spec, usage, field, algorithms", VALID, ids=[f"{s}-{u}" for s, u, *_ in VALID])
def test_every_valid_spec_and_usage_creates_a_working_key(store, kms, spec, usage, field, algorithms):
    if spec == "SYMMETRIC_DEFAULT":
        key_id = kms.create_key(KeySpec=spec, KeyUsage=usage)["KeyMetadata"]["KeyId"]
    else:
        key_id = shared_key(store, spec, usage)
    metadata = kms.describe_key(KeyId=key_id)["KeyMetadata"]
    assert (metadata["KeySpec"], metadata["CustomerMasterKeySpec"], metadata["KeyUsage"]) == (spec, spec, usage)
    assert metadata["KeyState"] == "Enabled" and metadata["Enabled"] is True
    assert metadata["Origin"] == "AWS_KMS" and metadata["KeyManager"] == "CUSTOMER"
    assert metadata[field] == algorithms
    assert not (ALGORITHM_FIELDS - {field}) & set(metadata), "only the usage's algorithm list is shown"
    assert metadata["Arn"] == f"arn:aws:kms:{kms.region}:{store.config.account}:key/{key_id}"
    assert key_id in key_ids(kms)
    exercise(kms, key_id, usage, algorithms)


def test_create_key_defaults_to_a_symmetric_encryption_key(kms):
    metadata = kms.create_key()["KeyMetadata"]
    assert (metadata["KeySpec"], metadata["KeyUsage"], metadata["MultiRegion"]) == \
        ("SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT", False)
    assert metadata["Description"] == ""
    assert metadata["CreationDate"].tzinfo is not None


def test_customer_master_key_spec_is_accepted_as_the_deprecated_name(kms):
    metadata = kms.create_key(CustomerMasterKeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC")["KeyMetadata"]
    assert metadata["KeySpec"] == "HMAC_256"


INVALID = [
    ({"KeySpec": "SYMMETRIC_DEFAULT", "KeyUsage": "SIGN_VERIFY"}, "SIGN_VERIFY"),
    ({"KeySpec": "SYMMETRIC_DEFAULT", "KeyUsage": "GENERATE_VERIFY_MAC"}, "GENERATE_VERIFY_MAC"),
    ({"KeyUsage": "SIGN_VERIFY"}, "SIGN_VERIFY"),  # default spec is symmetric
    ({"KeySpec": "RSA_2048", "KeyUsage": "GENERATE_VERIFY_MAC"}, "RSA_2048"),
    ({"KeySpec": "RSA_4096", "KeyUsage": "KEY_AGREEMENT"}, "RSA_4096"),
    ({"KeySpec": "ECC_NIST_P256", "KeyUsage": "ENCRYPT_DECRYPT"}, "ECC_NIST_P256"),
    ({"KeySpec": "ECC_NIST_P384"}, "ECC_NIST_P384"),  # default usage ENCRYPT_DECRYPT does not fit
    ({"KeySpec": "ECC_SECG_P256K1", "KeyUsage": "GENERATE_VERIFY_MAC"}, "ECC_SECG_P256K1"),
    ({"KeySpec": "HMAC_256", "KeyUsage": "ENCRYPT_DECRYPT"}, "HMAC_256"),
    ({"KeySpec": "HMAC_512", "KeyUsage": "SIGN_VERIFY"}, "HMAC_512"),
    ({"KeySpec": "HMAC_384"}, "HMAC_384"),
    ({"KeySpec": "AES_256"}, "AES_256"),
    ({"KeySpec": "RSA_1024", "KeyUsage": "SIGN_VERIFY"}, "RSA_1024"),
    ({"KeySpec": "symmetric_default"}, "symmetric_default"),
    ({"KeyUsage": "ENCRYPT"}, "ENCRYPT"),
    ({"CustomerMasterKeySpec": "ECC_NIST_P521", "KeyUsage": "ENCRYPT_DECRYPT"}, "ECC_NIST_P521"),
]


@pytest.mark.parametrize("params, named", INVALID, ids=[str(sorted(p.values())) for p, _ in INVALID])
def test_invalid_spec_and_usage_is_a_validation_error_and_creates_nothing(store, kms, params, named):
    before = {region: key_ids(store.client(region)) for region in store.config.regions}
    with kms_error("ValidationException", named):
        kms.create_key(**params)
    assert {region: key_ids(store.client(region)) for region in store.config.regions} == before


def test_other_origins_are_refused_and_create_nothing(kms):
    before = key_ids(kms)
    with kms_error("UnsupportedOperationException"):
        kms.create_key(Origin="EXTERNAL")
    with kms_error("ValidationException"):
        kms.create_key(Origin="SOMEWHERE")
    assert key_ids(kms) == before


IMMUTABLE_ATTEMPTS = [
    ("update_key_description", {"Description": "x"}),
    ("enable_key", {}),
    ("disable_key", {}),
    ("tag_resource", {"Tags": [{"TagKey": "k", "TagValue": "v"}]}),
    ("enable_key_rotation", {}),
    ("put_key_policy", {"Policy": '{"Statement": []}'}),
]


@pytest.mark.parametrize("operation, params", IMMUTABLE_ATTEMPTS, ids=[op for op, _ in IMMUTABLE_ATTEMPTS])
@pytest.mark.parametrize("field", ["KeySpec", "KeyUsage", "CustomerMasterKeySpec"])
def test_no_operation_takes_a_new_spec_or_usage(kms, operation, params, field):
    key_id = kms.create_key(Description="immutable")["KeyMetadata"]["KeyId"]
    before = kms.describe_key(KeyId=key_id)["KeyMetadata"]
    with kms_error("ValidationException", field):
        getattr(kms, operation)(KeyId=key_id, **params, **{field: "HMAC_256" if "Spec" in field else "SIGN_VERIFY"})
    assert kms.describe_key(KeyId=key_id)["KeyMetadata"] == before


def test_spec_and_usage_survive_every_management_change(store, kms):
    other = store.client(store.config.regions[1])
    key = kms.create_key(KeySpec="HMAC_384", KeyUsage="GENERATE_VERIFY_MAC", MultiRegion=True)["KeyMetadata"]
    key_id = key["KeyId"]
    kms.update_key_description(KeyId=key_id, Description="changed")
    kms.tag_resource(KeyId=key_id, Tags=[{"TagKey": "team", "TagValue": "a"}])
    kms.disable_key(KeyId=key_id)
    kms.enable_key(KeyId=key_id)
    kms.replicate_key(KeyId=key_id, ReplicaRegion=other.region)
    kms.update_primary_region(KeyId=key_id, PrimaryRegion=other.region)
    for client in (kms, other):
        metadata = client.describe_key(KeyId=key_id)["KeyMetadata"]
        assert (metadata["KeySpec"], metadata["KeyUsage"], metadata["MacAlgorithms"]) == \
            ("HMAC_384", "GENERATE_VERIFY_MAC", ["HMAC_SHA_384"])


def test_list_keys_pages_through_every_key_once(kms):
    created = {kms.create_key(Description=f"page {i}")["KeyMetadata"]["KeyId"] for i in range(5)}
    pages = []
    marker = None
    while True:
        page = kms.list_keys(Limit=2, **({"Marker": marker} if marker else {}))
        assert len(page["Keys"]) <= 2
        pages.append(page["Keys"])
        if not page["Truncated"]:
            assert "NextMarker" not in page
            break
        marker = page["NextMarker"]
    listed = [key["KeyId"] for chunk in pages for key in chunk]
    assert len(listed) == len(set(listed)), "a key was listed twice"
    assert created <= set(listed)
    assert all(key["KeyArn"].endswith(f":key/{key['KeyId']}") for chunk in pages for key in chunk)
    with kms_error("InvalidMarkerException"):
        kms.list_keys(Marker="not-a-marker")
    for limit in (0, 1001):
        with kms_error("ValidationException"):
            kms.list_keys(Limit=limit)
    assert len(list_all(kms.list_keys, "Keys", Limit=1000)) == len(listed)
