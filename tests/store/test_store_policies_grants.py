"""Key policies (kept byte for byte, AWS's default, size and JSON checks) and grants (operations valid
for the key, constraints, names, tokens, listing, retiring and revoking)."""

from __future__ import annotations

import json
import re
import uuid

import pytest
from kms_support import key_ids, kms_error, list_all, shared_key

ROOT = "arn:aws:iam::111122223333:root"
APP = "arn:aws:iam::111122223333:role/payments-app"
OPS = "arn:aws:iam::111122223333:user/ops"


def root_policy(sid: str = "Root", extra: str = "") -> str:
    return ('{\n  "Version" : "2012-10-17",\n\t"Id": "custom ✓' + extra + '",\n  "Statement": [ {"Sid":"' + sid +
            '","Effect":"Allow","Principal":{"AWS":"' + ROOT + '"},"Action":"kms:*","Resource":"*"} ]   \n}\n')


def test_a_policy_given_at_creation_is_returned_byte_for_byte(kms):
    policy = root_policy()
    key_id = kms.create_key(Policy=policy)["KeyMetadata"]["KeyId"]
    response = kms.get_key_policy(KeyId=key_id)
    assert response["Policy"] == policy and response["PolicyName"] == "default"
    assert kms.get_key_policy(KeyId=key_id, PolicyName="default")["Policy"] == policy


def test_put_key_policy_replaces_it_byte_for_byte(kms):
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    policy = root_policy("Replaced", extra=" " * 10)
    assert kms.put_key_policy(KeyId=key_id, Policy=policy) == {}
    assert kms.get_key_policy(KeyId=key_id)["Policy"] == policy
    kms.put_key_policy(KeyId=key_id, Policy=root_policy("Again"), PolicyName="default")
    assert kms.get_key_policy(KeyId=key_id)["Policy"] == root_policy("Again")


def test_without_a_policy_a_key_gets_aws_default_policy(store, kms):
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    document = json.loads(kms.get_key_policy(KeyId=key_id)["Policy"])
    assert document["Version"] == "2012-10-17"
    statements = document["Statement"]
    assert len(statements) == 1
    assert statements[0] == {"Sid": "Enable IAM User Permissions", "Effect": "Allow",
                             "Principal": {"AWS": f"arn:aws:iam::{store.config.account}:root"},
                             "Action": "kms:*", "Resource": "*"}


def test_only_the_default_policy_name_exists(kms):
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    before = kms.get_key_policy(KeyId=key_id)["Policy"]
    assert kms.list_key_policies(KeyId=key_id) == {"PolicyNames": ["default"], "Truncated": False}
    with kms_error("NotFoundException", "default"):
        kms.get_key_policy(KeyId=key_id, PolicyName="other")
    with kms_error("NotFoundException", "default"):
        kms.put_key_policy(KeyId=key_id, Policy=root_policy(), PolicyName="Default")
    assert kms.get_key_policy(KeyId=key_id)["Policy"] == before
    with kms_error("NotFoundException"):
        kms.list_key_policies(KeyId=str(uuid.uuid4()))


def sized_policy(size: int, filler: str = " ") -> str:
    base = root_policy("Sized")
    return base + filler * ((size - len(base.encode())) // len(filler.encode()))


def test_policies_up_to_32768_bytes(kms):
    policy = sized_policy(32768)
    assert len(policy.encode()) == 32768
    key_id = kms.create_key(Policy=policy)["KeyMetadata"]["KeyId"]
    assert kms.get_key_policy(KeyId=key_id)["Policy"] == policy
    kms.put_key_policy(KeyId=key_id, Policy=policy)


@pytest.mark.parametrize("policy", [sized_policy(32769), sized_policy(40000),
                                    root_policy("Wide") + "é" * 16384],  # under 32768 characters, over in bytes
                         ids=["32769-bytes", "40000-bytes", "multibyte"])
def test_larger_policies_are_refused(kms, policy):
    assert len(policy.encode()) > 32768
    before = key_ids(kms)
    with kms_error("LimitExceededException", "32768"):
        kms.create_key(Policy=policy)
    assert key_ids(kms) == before
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    original = kms.get_key_policy(KeyId=key_id)["Policy"]
    with kms_error("LimitExceededException"):
        kms.put_key_policy(KeyId=key_id, Policy=policy)
    assert kms.get_key_policy(KeyId=key_id)["Policy"] == original


@pytest.mark.parametrize("policy", ["{", "not json", '{"Statement": [}', "[]", '"a string"', "{}", "null",
                                    root_policy()[:-5]])
def test_malformed_policies_are_refused(kms, policy):
    before = key_ids(kms)
    with kms_error("MalformedPolicyDocumentException"):
        kms.create_key(Policy=policy)
    assert key_ids(kms) == before
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    original = kms.get_key_policy(KeyId=key_id)["Policy"]
    with kms_error("MalformedPolicyDocumentException"):
        kms.put_key_policy(KeyId=key_id, Policy=policy)
    assert kms.get_key_policy(KeyId=key_id)["Policy"] == original


def test_policy_calls_take_key_ids_not_aliases(kms):
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    name = f"alias/policy-{uuid.uuid4().hex[:10]}"
    kms.create_alias(AliasName=name, TargetKeyId=key_id)
    for call in (lambda: kms.get_key_policy(KeyId=name), lambda: kms.put_key_policy(KeyId=name, Policy=root_policy()),
                 lambda: kms.list_key_policies(KeyId=name)):
        with kms_error("NotFoundException"):
            call()


# -- grants -------------------------------------------------------------------------------------
@pytest.fixture
def key(kms):
    return kms.create_key(Description="grant tests")["KeyMetadata"]


def grants_of(kms, key_id, **filters):
    return list_all(kms.list_grants, "Grants", KeyId=key_id, **filters)


def test_create_grant_is_stored_with_everything_given(kms, key, clock):
    response = kms.create_grant(KeyId=key["KeyId"], GranteePrincipal=APP, RetiringPrincipal=OPS,
                                Operations=["Encrypt", "Decrypt", "GenerateDataKey"], Name="payments-read",
                                Constraints={"EncryptionContextSubset": {"tenant": "acme"}})
    assert re.fullmatch(r"[0-9a-f]{64}", response["GrantId"]) and response["GrantToken"]
    (grant,) = grants_of(kms, key["KeyId"])
    assert grant == {
        "KeyId": key["Arn"], "GrantId": response["GrantId"], "CreationDate": clock.now, "GranteePrincipal": APP,
        "IssuingAccount": ROOT, "Operations": ["Decrypt", "Encrypt", "GenerateDataKey"], "Name": "payments-read",
        "RetiringPrincipal": OPS, "Constraints": {"EncryptionContextSubset": {"tenant": "acme"}},
    }


@pytest.mark.parametrize("constraints", [{"EncryptionContextEquals": {"a": "1", "b": "2"}},
                                         {"EncryptionContextSubset": {"a": "1"}},
                                         {"EncryptionContextEquals": {"a": "1"}, "EncryptionContextSubset": {"b": "2"}}])
def test_grant_constraints_are_kept(kms, key, constraints):
    kms.create_grant(KeyId=key["KeyId"], GranteePrincipal=APP, Operations=["Decrypt"], Constraints=constraints)
    assert grants_of(kms, key["KeyId"])[0]["Constraints"] == constraints


INVALID_OPERATIONS = [
    ("SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT", ["Sign"]),
    ("SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT", ["Decrypt", "GenerateMac"]),
    ("SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT", ["GetPublicKey"]),
    ("HMAC_256", "GENERATE_VERIFY_MAC", ["Encrypt"]),
    ("ECC_NIST_P256", "SIGN_VERIFY", ["Decrypt"]),
    ("RSA_2048", "ENCRYPT_DECRYPT", ["GenerateDataKey"]),
    ("RSA_2048", "SIGN_VERIFY", ["Encrypt"]),
    ("SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT", ["Frobnicate"]),
    ("SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT", ["decrypt"]),
    ("SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT", []),
]


@pytest.mark.parametrize("spec, usage, operations", INVALID_OPERATIONS,
                         ids=[f"{s}-{'+'.join(o) or 'none'}" for s, _, o in INVALID_OPERATIONS])
def test_grant_operations_must_suit_the_key(store, kms, spec, usage, operations):
    key_id = kms.create_key()["KeyMetadata"]["KeyId"] if spec == "SYMMETRIC_DEFAULT" else \
        shared_key(store, spec, usage)
    before = grants_of(kms, key_id)
    with kms_error("ValidationException"):
        kms.create_grant(KeyId=key_id, GranteePrincipal=APP, Operations=operations)
    assert grants_of(kms, key_id) == before


@pytest.mark.parametrize("spec, usage, operations", [("HMAC_256", "GENERATE_VERIFY_MAC", ["GenerateMac"]),
                                                     ("ECC_NIST_P256", "SIGN_VERIFY", ["Sign", "Verify"]),
                                                     ("RSA_2048", "ENCRYPT_DECRYPT", ["Decrypt"])])
def test_constraints_are_refused_on_hmac_and_asymmetric_keys(store, kms, spec, usage, operations):
    key_id = shared_key(store, spec, usage)
    before = grants_of(kms, key_id)
    with kms_error("ValidationException"):
        kms.create_grant(KeyId=key_id, GranteePrincipal=APP, Operations=operations,
                         Constraints={"EncryptionContextEquals": {"a": "b"}})
    assert grants_of(kms, key_id) == before
    grant_id = kms.create_grant(KeyId=key_id, GranteePrincipal=APP, Operations=operations)["GrantId"]
    kms.revoke_grant(KeyId=key_id, GrantId=grant_id)


def test_create_grant_with_the_same_name_and_parameters_is_idempotent(kms, key):
    params = {"KeyId": key["KeyId"], "GranteePrincipal": APP, "Operations": ["Decrypt", "Encrypt"],
              "Name": "same-name", "RetiringPrincipal": OPS, "Constraints": {"EncryptionContextEquals": {"t": "1"}}}
    first = kms.create_grant(**params)
    second = kms.create_grant(**{**params, "Operations": ["Encrypt", "Decrypt"]})  # order does not matter
    assert second["GrantId"] == first["GrantId"]
    assert second["GrantToken"] != first["GrantToken"]
    assert len(grants_of(kms, key["KeyId"])) == 1
    # the same name with different parameters is another grant; so are the same parameters without a name
    third = kms.create_grant(**{**params, "Operations": ["Decrypt"]})
    fourth = kms.create_grant(**{k: v for k, v in params.items() if k != "Name"})
    fifth = kms.create_grant(**{k: v for k, v in params.items() if k != "Name"})
    assert len({first["GrantId"], third["GrantId"], fourth["GrantId"], fifth["GrantId"]}) == 4
    assert len(grants_of(kms, key["KeyId"])) == 4
    # every token of the grant names it
    kms.retire_grant(GrantToken=second["GrantToken"])
    assert first["GrantId"] not in {g["GrantId"] for g in grants_of(kms, key["KeyId"])}


@pytest.mark.parametrize("name", ["has space", "x" * 257, "", "semi;colon", "line\n"])
def test_invalid_grant_names_are_refused(kms, key, name):
    with kms_error("ValidationException"):
        kms.create_grant(KeyId=key["KeyId"], GranteePrincipal=APP, Operations=["Decrypt"], Name=name)
    assert grants_of(kms, key["KeyId"]) == []


@pytest.mark.parametrize("principal", ["bob", "", "arn:aws:iam::123:role/x", "arn:aws:iam::111122223333:group/devs",
                                       "arn:aws:s3:::bucket", "arn:aws:iam::111122223333:role/x\n",
                                       "arn:aws:iam::111122223333:role/with space", "*"])
@pytest.mark.parametrize("field", ["GranteePrincipal", "RetiringPrincipal"])
def test_bad_principal_arns_in_grants_are_refused(kms, key, principal, field):
    params = {"GranteePrincipal": APP, field: principal}
    with kms_error("ValidationException", field):
        kms.create_grant(KeyId=key["KeyId"], Operations=["Decrypt"], **params)
    assert grants_of(kms, key["KeyId"]) == []


def test_service_and_assumed_role_principals_are_valid_grantees(kms, key):
    for principal in ("s3.amazonaws.com", "arn:aws:sts::111122223333:assumed-role/app/session"):
        kms.create_grant(KeyId=key["KeyId"], GranteePrincipal=principal, Operations=["Decrypt"])
    assert {g["GranteePrincipal"] for g in grants_of(kms, key["KeyId"])} == {
        "s3.amazonaws.com", "arn:aws:sts::111122223333:assumed-role/app/session"}


def test_list_grants_filters_and_pages(kms, key):
    ids = [kms.create_grant(KeyId=key["KeyId"], GranteePrincipal=grantee, Operations=["Decrypt"])["GrantId"]
           for grantee in (APP, APP, OPS)]
    assert {g["GrantId"] for g in grants_of(kms, key["KeyId"])} == set(ids)
    assert [g["GrantId"] for g in grants_of(kms, key["KeyId"], GrantId=ids[1])] == [ids[1]]
    assert {g["GrantId"] for g in grants_of(kms, key["KeyId"], GranteePrincipal=APP)} == set(ids[:2])
    assert grants_of(kms, key["KeyId"], GranteePrincipal="arn:aws:iam::111122223333:role/nobody") == []
    first = kms.list_grants(KeyId=key["KeyId"], Limit=2)
    assert first["Truncated"] is True and len(first["Grants"]) == 2
    rest = kms.list_grants(KeyId=key["KeyId"], Limit=2, Marker=first["NextMarker"])
    assert rest["Truncated"] is False
    assert {g["GrantId"] for g in first["Grants"] + rest["Grants"]} == set(ids)
    with kms_error("InvalidMarkerException"):
        kms.list_grants(KeyId=key["KeyId"], Marker="nope")
    other = kms.create_key()["KeyMetadata"]["KeyId"]
    assert grants_of(kms, other) == []


def test_list_retirable_grants(kms, key):
    retiring = f"arn:aws:iam::111122223333:role/retirer-{uuid.uuid4().hex[:8]}"
    mine = kms.create_grant(KeyId=key["KeyId"], GranteePrincipal=APP, RetiringPrincipal=retiring,
                            Operations=["Decrypt"])["GrantId"]
    kms.create_grant(KeyId=key["KeyId"], GranteePrincipal=APP, RetiringPrincipal=OPS, Operations=["Decrypt"])
    listed = list_all(kms.list_retirable_grants, "Grants", RetiringPrincipal=retiring)
    assert [(g["GrantId"], g["RetiringPrincipal"], g["KeyId"]) for g in listed] == [(mine, retiring, key["Arn"])]
    with kms_error("ValidationException"):
        kms.list_retirable_grants(RetiringPrincipal="not an arn")


def test_retire_grant_by_token_and_by_key_and_id(kms, key):
    by_token = kms.create_grant(KeyId=key["KeyId"], GranteePrincipal=APP, Operations=["Decrypt"])
    by_id = kms.create_grant(KeyId=key["KeyId"], GranteePrincipal=APP, Operations=["Encrypt"])
    assert kms.retire_grant(GrantToken=by_token["GrantToken"]) == {}
    assert {g["GrantId"] for g in grants_of(kms, key["KeyId"])} == {by_id["GrantId"]}
    kms.retire_grant(KeyId=key["Arn"], GrantId=by_id["GrantId"])
    assert grants_of(kms, key["KeyId"]) == []
    with kms_error("NotFoundException"):
        kms.retire_grant(GrantToken=by_token["GrantToken"])
    with kms_error("NotFoundException"):
        kms.retire_grant(KeyId=key["Arn"], GrantId=by_id["GrantId"])


def test_revoke_grant(kms, key):
    grant = kms.create_grant(KeyId=key["KeyId"], GranteePrincipal=APP, Operations=["Decrypt"])
    other = kms.create_key()["KeyMetadata"]["KeyId"]
    with kms_error("NotFoundException"):  # the grant is not on that key
        kms.revoke_grant(KeyId=other, GrantId=grant["GrantId"])
    assert kms.revoke_grant(KeyId=key["KeyId"], GrantId=grant["GrantId"]) == {}
    assert grants_of(kms, key["KeyId"]) == []
    with kms_error("NotFoundException"):
        kms.revoke_grant(KeyId=key["KeyId"], GrantId=grant["GrantId"])


@pytest.mark.parametrize("grant_id", ["", "abc", "G" * 64, "a" * 63, "a" * 65, "a" * 64 + "\n"])
def test_invalid_grant_ids(kms, key, grant_id):
    kms.create_grant(KeyId=key["KeyId"], GranteePrincipal=APP, Operations=["Decrypt"])
    with kms_error("InvalidGrantIdException"):
        kms.revoke_grant(KeyId=key["KeyId"], GrantId=grant_id)
    with kms_error("InvalidGrantIdException"):
        kms.retire_grant(KeyId=key["KeyId"], GrantId=grant_id)
    assert len(grants_of(kms, key["KeyId"])) == 1


@pytest.mark.parametrize("token", ["", "garbage", "a" * 63, "!!!!", "AAAA" * 20, "a" * 64 + "\n"])
def test_invalid_grant_tokens(kms, key, token):
    kms.create_grant(KeyId=key["KeyId"], GranteePrincipal=APP, Operations=["Decrypt"])
    with kms_error("InvalidGrantTokenException"):
        kms.retire_grant(GrantToken=token)
    with kms_error("InvalidGrantTokenException"):
        kms.encrypt(KeyId=key["KeyId"], Plaintext=b"x", GrantTokens=[token])
    assert len(grants_of(kms, key["KeyId"])) == 1


def test_retire_grant_needs_a_token_or_key_and_id(kms, key):
    grant = kms.create_grant(KeyId=key["KeyId"], GranteePrincipal=APP, Operations=["Decrypt"])
    for params in ({}, {"GrantId": grant["GrantId"]}, {"KeyId": key["KeyId"]}):
        with kms_error("ValidationException"):
            kms.retire_grant(**params)
    assert len(grants_of(kms, key["KeyId"])) == 1


def test_valid_grant_tokens_are_accepted_by_crypto_calls(kms, key):
    token = kms.create_grant(KeyId=key["KeyId"], GranteePrincipal=APP, Operations=["Encrypt", "Decrypt"])["GrantToken"]
    blob = kms.encrypt(KeyId=key["KeyId"], Plaintext=b"tokened", GrantTokens=[token])["CiphertextBlob"]
    assert kms.decrypt(CiphertextBlob=blob, GrantTokens=[token])["Plaintext"] == b"tokened"


def test_grants_belong_to_one_region(store, kms):
    second = store.config.regions[1]
    key_id = kms.create_key(MultiRegion=True)["KeyMetadata"]["KeyId"]
    kms.replicate_key(KeyId=key_id, ReplicaRegion=second)
    grant = kms.create_grant(KeyId=key_id, GranteePrincipal=APP, Operations=["Decrypt"])
    replica = store.client(second)
    assert replica.list_grants(KeyId=key_id)["Grants"] == []
    with kms_error("NotFoundException"):
        replica.revoke_grant(KeyId=key_id, GrantId=grant["GrantId"])
    assert len(grants_of(kms, key_id)) == 1
