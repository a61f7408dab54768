"""Symmetric encryption: size limits, the authenticated encryption context, self-describing and
tamper-evident blobs, re-encryption, data keys, data key pairs and random bytes."""

from __future__ import annotations

import base64
import os
import uuid

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kms_support import kms_error, shared_key

from kmsplan.store import ciphertext

CONTEXT = {"tenant": "acme", "purpose": "invoice", "region": "eu"}


@pytest.fixture(scope="module")
def client(store):
    """A module-wide client (hypothesis tests cannot take function-scoped fixtures)."""
    return store.client(store.config.regions[0])


@pytest.fixture(scope="module")
def key(client):
    return client.create_key(Description="symmetric tests")["KeyMetadata"]


@pytest.fixture(scope="module")
def other_key(client):
    return client.create_key(Description="symmetric tests, second key")["KeyMetadata"]


def seal(client, key, plaintext=b"attack at dawn", context=CONTEXT):
    return client.encrypt(KeyId=key["KeyId"], Plaintext=plaintext, EncryptionContext=context)["CiphertextBlob"]


@pytest.mark.parametrize("size", [1, 17, 4096])
def test_plaintexts_up_to_4096_bytes_round_trip(client, key, size):
    plaintext = os.urandom(size)
    response = client.encrypt(KeyId=key["KeyId"], Plaintext=plaintext, EncryptionContext=CONTEXT)
    assert response["KeyId"] == key["Arn"] and response["EncryptionAlgorithm"] == "SYMMETRIC_DEFAULT"
    blob = response["CiphertextBlob"]
    assert isinstance(blob, bytes) and (size < 16 or plaintext not in blob)
    decrypted = client.decrypt(CiphertextBlob=blob, EncryptionContext=CONTEXT)
    assert decrypted == {"KeyId": key["Arn"], "Plaintext": plaintext, "EncryptionAlgorithm": "SYMMETRIC_DEFAULT"}


@pytest.mark.parametrize("size", [0, 4097, 10_000])
def test_plaintexts_outside_1_to_4096_bytes_are_refused(client, key, size):
    with kms_error("ValidationException", "plaintext"):
        client.encrypt(KeyId=key["KeyId"], Plaintext=b"p" * size)


def test_same_plaintext_encrypts_differently_each_time(client, key):
    assert seal(client, key) != seal(client, key)


def test_plaintext_may_be_bytearray_or_memoryview(client, key):
    for value in (bytearray(b"abc"), memoryview(b"abc")):
        blob = client.encrypt(KeyId=key["KeyId"], Plaintext=value)["CiphertextBlob"]
        assert client.decrypt(CiphertextBlob=blob)["Plaintext"] == b"abc"


WRONG_CONTEXTS = [
    pytest.param({**CONTEXT, "tenant": "evil"}, id="different-value"),
    pytest.param({k: v for k, v in CONTEXT.items() if k != "purpose"}, id="missing-pair"),
    pytest.param({**CONTEXT, "extra": "x"}, id="extra-pair"),
    pytest.param({}, id="no-context"),
    pytest.param({"Tenant": "acme", "purpose": "invoice", "region": "eu"}, id="key-case"),
    pytest.param({"tenant": "acme ", "purpose": "invoice", "region": "eu"}, id="trailing-space"),
    pytest.param({"tenant": "acme", "purpose": "invoice", "region": "eu", "": ""}, id="empty-extra"),
]


@pytest.mark.parametrize("context", WRONG_CONTEXTS)
def test_decrypting_with_any_other_context_fails(client, key, context):
    blob = seal(client, key)
    code = "ValidationException" if "" in context else "InvalidCiphertextException"
    with kms_error(code):
        client.decrypt(CiphertextBlob=blob, EncryptionContext=context)


def test_a_blob_sealed_without_context_needs_none(client, key):
    blob = client.encrypt(KeyId=key["KeyId"], Plaintext=b"p")["CiphertextBlob"]
    assert client.decrypt(CiphertextBlob=blob)["Plaintext"] == b"p"
    assert client.decrypt(CiphertextBlob=blob, EncryptionContext={})["Plaintext"] == b"p"
    with kms_error("InvalidCiphertextException"):
        client.decrypt(CiphertextBlob=blob, EncryptionContext={"a": "b"})


def test_context_order_does_not_matter(client, key):
    pairs = [(f"k{i}", f"value {i} ✓") for i in range(12)]
    blob = seal(client, key, b"ordered", dict(pairs))
    assert client.decrypt(CiphertextBlob=blob, EncryptionContext=dict(reversed(pairs)))["Plaintext"] == b"ordered"
    assert client.decrypt(CiphertextBlob=blob, EncryptionContext=dict(sorted(pairs, key=lambda p: p[1][::-1])))[
        "Plaintext"] == b"ordered"


def test_decrypt_needs_no_key_id_but_checks_one_if_given(client, key, other_key):
    blob = seal(client, key)
    for reference in (key["KeyId"], key["Arn"]):
        assert client.decrypt(CiphertextBlob=blob, EncryptionContext=CONTEXT, KeyId=reference)["Plaintext"] == \
            b"attack at dawn"
    for reference in (other_key["KeyId"], other_key["Arn"]):
        with kms_error("IncorrectKeyException"):
            client.decrypt(CiphertextBlob=blob, EncryptionContext=CONTEXT, KeyId=reference)
    with kms_error("NotFoundException"):
        client.decrypt(CiphertextBlob=blob, EncryptionContext=CONTEXT, KeyId=str(uuid.uuid4()))


def test_blob_names_its_key_and_material_version(client, key):
    blob = seal(client, key)
    header, sealed = ciphertext.parse(blob)
    assert header.key_id == key["KeyId"] and header.version >= 1
    assert len(sealed) == len(b"attack at dawn") + ciphertext.TAG_SIZE


def flip(blob: bytes, bit: int) -> bytes:
    damaged = bytearray(blob)
    damaged[bit // 8] ^= 1 << (bit % 8)
    return bytes(damaged)


def test_every_single_bit_flip_anywhere_in_a_blob_is_caught(client, key):
    context = {"a": "b"}
    blob = seal(client, key, b"x", context)
    assert len(blob) == ciphertext.HEADER_SIZE + 1 + ciphertext.TAG_SIZE
    for bit in range(len(blob) * 8):
        with kms_error("InvalidCiphertextException"):
            client.decrypt(CiphertextBlob=flip(blob, bit), EncryptionContext=context)
    assert client.decrypt(CiphertextBlob=blob, EncryptionContext=context)["Plaintext"] == b"x"


context_text = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plaintext=st.binary(min_size=1, max_size=600),
       context=st.dictionaries(context_text, st.text(st.characters(blacklist_categories=("Cs",)), max_size=12),
                               max_size=5),
       data=st.data())
def test_property_any_flipped_bit_or_changed_context_fails(client, key, plaintext, context, data):
    blob = client.encrypt(KeyId=key["KeyId"], Plaintext=plaintext, EncryptionContext=context)["CiphertextBlob"]
    assert client.decrypt(CiphertextBlob=blob, EncryptionContext=context)["Plaintext"] == plaintext
    bit = data.draw(st.integers(0, len(blob) * 8 - 1), label="bit")
    with kms_error("InvalidCiphertextException"):
        client.decrypt(CiphertextBlob=flip(blob, bit), EncryptionContext=context)
    changed = data.draw(st.dictionaries(context_text, context_text, max_size=5).filter(lambda c: c != context),
                        label="other context")
    with kms_error("InvalidCiphertextException"):
        client.decrypt(CiphertextBlob=blob, EncryptionContext=changed)


JUNK = [
    pytest.param(b"\x00", id="one-byte"),
    pytest.param(os.urandom(20), id="short-random"),
    pytest.param(os.urandom(53), id="just-under-minimum"),
    pytest.param(os.urandom(54), id="minimum-size-random"),
    pytest.param(os.urandom(300), id="random"),
    pytest.param(os.urandom(6144), id="largest-random"),
    pytest.param(b"\x01" + b"\x00" * 100, id="format-byte-then-zeros"),
    pytest.param(base64.b64encode(os.urandom(60)), id="base64-text"),
]


@pytest.mark.parametrize("blob", JUNK)
def test_junk_blobs_are_invalid_ciphertext(client, blob):
    with kms_error("InvalidCiphertextException"):
        client.decrypt(CiphertextBlob=blob)


@pytest.mark.parametrize("blob", [b"", b"\x00" * 6145])
def test_empty_or_oversized_blobs_are_validation_errors(client, blob):
    with kms_error("ValidationException", "ciphertextBlob"):
        client.decrypt(CiphertextBlob=blob)


def test_truncated_or_extended_blobs_are_invalid(client, key):
    blob = seal(client, key, b"truncate me")
    for cut in range(1, len(blob)):
        with kms_error("InvalidCiphertextException"):
            client.decrypt(CiphertextBlob=blob[:cut], EncryptionContext=CONTEXT)
    for extended in (blob + b"\x00", b"\x00" + blob, blob + blob):
        with kms_error("InvalidCiphertextException"):
            client.decrypt(CiphertextBlob=extended, EncryptionContext=CONTEXT)


def test_re_encrypt_moves_data_to_another_key_and_context(client, key, other_key):
    blob = seal(client, key, b"moving")
    response = client.re_encrypt(CiphertextBlob=blob, SourceEncryptionContext=CONTEXT,
                                 DestinationKeyId=other_key["KeyId"], DestinationEncryptionContext={"new": "ctx"})
    assert response["SourceKeyId"] == key["Arn"] and response["KeyId"] == other_key["Arn"]
    assert response["SourceEncryptionAlgorithm"] == response["DestinationEncryptionAlgorithm"] == "SYMMETRIC_DEFAULT"
    moved = response["CiphertextBlob"]
    assert ciphertext.parse(moved)[0].key_id == other_key["KeyId"]
    assert client.decrypt(CiphertextBlob=moved, EncryptionContext={"new": "ctx"})["Plaintext"] == b"moving"
    with kms_error("InvalidCiphertextException"):
        client.decrypt(CiphertextBlob=moved, EncryptionContext=CONTEXT)
    # the original blob is untouched and still opens with its own context
    assert client.decrypt(CiphertextBlob=blob, EncryptionContext=CONTEXT)["Plaintext"] == b"moving"


def test_re_encrypt_under_the_same_key_changes_only_the_context(client, key):
    blob = seal(client, key, b"same key")
    moved = client.re_encrypt(CiphertextBlob=blob, SourceEncryptionContext=CONTEXT, DestinationKeyId=key["Arn"],
                              DestinationEncryptionContext={"v": "2"})["CiphertextBlob"]
    assert moved != blob
    assert client.decrypt(CiphertextBlob=moved, EncryptionContext={"v": "2"})["Plaintext"] == b"same key"


def test_re_encrypt_checks_the_source_like_decrypt(client, key, other_key):
    blob = seal(client, key, b"guarded")
    with kms_error("InvalidCiphertextException"):
        client.re_encrypt(CiphertextBlob=blob, SourceEncryptionContext={"tenant": "evil"},
                          DestinationKeyId=other_key["KeyId"])
    with kms_error("IncorrectKeyException"):
        client.re_encrypt(CiphertextBlob=blob, SourceEncryptionContext=CONTEXT, SourceKeyId=other_key["KeyId"],
                          DestinationKeyId=other_key["KeyId"])
    with kms_error("InvalidCiphertextException"):
        client.re_encrypt(CiphertextBlob=flip(blob, 300), SourceEncryptionContext=CONTEXT,
                          DestinationKeyId=other_key["KeyId"])
    with kms_error("NotFoundException"):
        client.re_encrypt(CiphertextBlob=blob, SourceEncryptionContext=CONTEXT, DestinationKeyId=str(uuid.uuid4()))


def test_re_encrypt_from_an_rsa_key_to_a_symmetric_key(store, client, key):
    rsa_key = shared_key(store, "RSA_2048", "ENCRYPT_DECRYPT")
    public = serialization.load_der_public_key(client.get_public_key(KeyId=rsa_key)["PublicKey"])
    blob = public.encrypt(b"from outside", padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(),
                                                        label=None))
    moved = client.re_encrypt(CiphertextBlob=blob, SourceKeyId=rsa_key, SourceEncryptionAlgorithm="RSAES_OAEP_SHA_256",
                              DestinationKeyId=key["KeyId"], DestinationEncryptionContext={"from": "rsa"})
    assert moved["SourceEncryptionAlgorithm"] == "RSAES_OAEP_SHA_256"
    assert client.decrypt(CiphertextBlob=moved["CiphertextBlob"], EncryptionContext={"from": "rsa"})["Plaintext"] == \
        b"from outside"


@pytest.mark.parametrize("params, size", [({"KeySpec": "AES_128"}, 16), ({"KeySpec": "AES_256"}, 32),
                                          ({"NumberOfBytes": 1}, 1), ({"NumberOfBytes": 64}, 64),
                                          ({"NumberOfBytes": 1024}, 1024)])
def test_generate_data_key_returns_a_key_and_its_sealed_copy(client, key, params, size):
    response = client.generate_data_key(KeyId=key["KeyId"], EncryptionContext=CONTEXT, **params)
    assert response["KeyId"] == key["Arn"] and len(response["Plaintext"]) == size
    assert client.decrypt(CiphertextBlob=response["CiphertextBlob"], EncryptionContext=CONTEXT)["Plaintext"] == \
        response["Plaintext"]
    with kms_error("InvalidCiphertextException"):
        client.decrypt(CiphertextBlob=response["CiphertextBlob"])
    again = client.generate_data_key(KeyId=key["KeyId"], EncryptionContext=CONTEXT, **params)
    assert size < 4 or again["Plaintext"] != response["Plaintext"]


@pytest.mark.parametrize("params", [{}, {"KeySpec": "AES_256", "NumberOfBytes": 32}, {"NumberOfBytes": 0},
                                    {"NumberOfBytes": 1025}, {"KeySpec": "AES_512"}, {"KeySpec": "RSA_2048"},
                                    {"NumberOfBytes": -1}])
@pytest.mark.parametrize("operation", ["generate_data_key", "generate_data_key_without_plaintext"])
def test_generate_data_key_needs_exactly_one_valid_size(client, key, params, operation):
    with kms_error("ValidationException"):
        getattr(client, operation)(KeyId=key["KeyId"], **params)


@pytest.mark.parametrize("params, size", [({"KeySpec": "AES_256"}, 32), ({"NumberOfBytes": 7}, 7)])
def test_generate_data_key_without_plaintext_returns_only_the_sealed_key(client, key, params, size):
    response = client.generate_data_key_without_plaintext(KeyId=key["KeyId"], EncryptionContext={"a": "1"}, **params)
    assert set(response) == {"CiphertextBlob", "KeyId"}
    assert len(client.decrypt(CiphertextBlob=response["CiphertextBlob"], EncryptionContext={"a": "1"})[
        "Plaintext"]) == size


PAIR_SPECS = {"RSA_2048": 2048, "RSA_3072": 3072, "RSA_4096": 4096, "ECC_NIST_P256": ec.SECP256R1,
              "ECC_NIST_P384": ec.SECP384R1, "ECC_NIST_P521": ec.SECP521R1, "ECC_SECG_P256K1": ec.SECP256K1}


def public_der(private) -> bytes:
    return private.public_key().public_bytes(serialization.Encoding.DER,
                                             serialization.PublicFormat.SubjectPublicKeyInfo)


def check_pair(pkcs8: bytes, public: bytes, spec: str) -> None:
    private = serialization.load_der_private_key(pkcs8, password=None)
    assert public_der(private) == public, "the private key must match the public key"
    if spec.startswith("RSA"):
        assert isinstance(private, rsa.RSAPrivateKey) and private.key_size == PAIR_SPECS[spec]
        signature = private.sign(b"pair", padding.PKCS1v15(), hashes.SHA256())
        serialization.load_der_public_key(public).verify(signature, b"pair", padding.PKCS1v15(), hashes.SHA256())
    else:
        assert isinstance(private, ec.EllipticCurvePrivateKey) and isinstance(private.curve, PAIR_SPECS[spec])
        signature = private.sign(b"pair", ec.ECDSA(hashes.SHA256()))
        serialization.load_der_public_key(public).verify(signature, b"pair", ec.ECDSA(hashes.SHA256()))


@pytest.mark.parametrize("spec", list(PAIR_SPECS))
def test_generate_data_key_pair(client, key, spec):
    response = client.generate_data_key_pair(KeyId=key["KeyId"], KeyPairSpec=spec, EncryptionContext=CONTEXT)
    assert response["KeyPairSpec"] == spec and response["KeyId"] == key["Arn"]
    check_pair(response["PrivateKeyPlaintext"], response["PublicKey"], spec)
    opened = client.decrypt(CiphertextBlob=response["PrivateKeyCiphertextBlob"], EncryptionContext=CONTEXT)
    assert opened["Plaintext"] == response["PrivateKeyPlaintext"]


@pytest.mark.parametrize("spec", ["RSA_2048", "ECC_NIST_P384", "ECC_SECG_P256K1"])
def test_generate_data_key_pair_without_plaintext(client, key, spec):
    response = client.generate_data_key_pair_without_plaintext(KeyId=key["KeyId"], KeyPairSpec=spec,
                                                               EncryptionContext={"pair": spec})
    assert "PrivateKeyPlaintext" not in response and response["KeyPairSpec"] == spec
    pkcs8 = client.decrypt(CiphertextBlob=response["PrivateKeyCiphertextBlob"],
                           EncryptionContext={"pair": spec})["Plaintext"]
    check_pair(pkcs8, response["PublicKey"], spec)


@pytest.mark.parametrize("spec", ["RSA_1024", "SYMMETRIC_DEFAULT", "HMAC_256", "ECC_NIST_P255"])
def test_generate_data_key_pair_refuses_other_specs(client, key, spec):
    with kms_error("ValidationException"):
        client.generate_data_key_pair(KeyId=key["KeyId"], KeyPairSpec=spec)


@pytest.mark.parametrize("count", [1, 32, 1024])
def test_generate_random_returns_the_bytes_asked_for(client, count):
    first = client.generate_random(NumberOfBytes=count)["Plaintext"]
    assert isinstance(first, bytes) and len(first) == count
    if count >= 16:
        assert client.generate_random(NumberOfBytes=count)["Plaintext"] != first


@pytest.mark.parametrize("count", [0, -5, 1025, 2**40])
def test_generate_random_limits(client, count):
    with kms_error("ValidationException", "numberOfBytes"):
        client.generate_random(NumberOfBytes=count)
