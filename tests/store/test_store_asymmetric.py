"""Asymmetric and HMAC keys: GetPublicKey's SubjectPublicKeyInfo verifies the store's signatures and
encrypts for its Decrypt, checked with the independent `cryptography` library."""

from __future__ import annotations

import hashlib
import os

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from kms_support import kms_error, shared_key

HASHES = {"256": hashes.SHA256, "384": hashes.SHA384, "512": hashes.SHA512}
RSA_SPECS = ["RSA_2048", "RSA_3072", "RSA_4096"]
EC_SPECS = {"ECC_NIST_P256": ("ECDSA_SHA_256", ec.SECP256R1), "ECC_NIST_P384": ("ECDSA_SHA_384", ec.SECP384R1),
            "ECC_NIST_P521": ("ECDSA_SHA_512", ec.SECP521R1), "ECC_SECG_P256K1": ("ECDSA_SHA_256", ec.SECP256K1)}
RSA_SIGNING = [f"RSASSA_{scheme}_SHA_{bits}" for scheme in ("PSS", "PKCS1_V1_5") for bits in ("256", "384", "512")]
SIGNING_CASES = [(spec, algorithm) for spec in RSA_SPECS for algorithm in RSA_SIGNING] + \
                [(spec, algorithm) for spec, (algorithm, _) in EC_SPECS.items()]


def public_key(kms, key_id: str):
    response = kms.get_public_key(KeyId=key_id)
    loaded = serialization.load_der_public_key(response["PublicKey"])
    # SubjectPublicKeyInfo DER, byte for byte
    assert loaded.public_bytes(serialization.Encoding.DER,
                               serialization.PublicFormat.SubjectPublicKeyInfo) == response["PublicKey"]
    return response, loaded


def verify_independently(public, algorithm: str, message: bytes, signature: bytes, digest: bool) -> None:
    """Raise InvalidSignature unless `signature` is valid for `message` (or its digest)."""
    hash_algorithm = HASHES[algorithm[-3:]]()
    chosen = Prehashed(hash_algorithm) if digest else hash_algorithm
    if algorithm.startswith("ECDSA"):
        public.verify(signature, message, ec.ECDSA(chosen))
    elif "_PSS_" in algorithm:
        public.verify(signature, message,
                      padding.PSS(mgf=padding.MGF1(hash_algorithm), salt_length=hash_algorithm.digest_size), chosen)
    else:
        public.verify(signature, message, padding.PKCS1v15(), chosen)


@pytest.mark.parametrize("spec", [*RSA_SPECS, *EC_SPECS])
def test_get_public_key_describes_a_signing_key(store, kms, spec):
    key_id = shared_key(store, spec, "SIGN_VERIFY")
    response, loaded = public_key(kms, key_id)
    assert (response["KeySpec"], response["CustomerMasterKeySpec"], response["KeyUsage"]) == \
        (spec, spec, "SIGN_VERIFY")
    assert response["KeyId"].endswith(f":key/{key_id}")
    assert "EncryptionAlgorithms" not in response
    if spec in EC_SPECS:
        assert isinstance(loaded, ec.EllipticCurvePublicKey)
        assert isinstance(loaded.curve, EC_SPECS[spec][1])
        assert response["SigningAlgorithms"] == [EC_SPECS[spec][0]]
    else:
        assert isinstance(loaded, rsa.RSAPublicKey) and loaded.key_size == int(spec[4:])
        assert loaded.public_numbers().e == 65537
        assert sorted(response["SigningAlgorithms"]) == sorted(RSA_SIGNING)


@pytest.mark.parametrize("message_type", ["RAW", "DIGEST"])
@pytest.mark.parametrize("spec, algorithm", SIGNING_CASES, ids=[f"{s}-{a}" for s, a in SIGNING_CASES])
def test_signatures_verify_with_the_public_key_and_tampering_is_caught(store, kms, spec, algorithm, message_type):
    key_id = shared_key(store, spec, "SIGN_VERIFY")
    _, public = public_key(kms, key_id)
    text = os.urandom(200)
    message = hashlib.new("sha" + algorithm[-3:], text).digest() if message_type == "DIGEST" else text
    signed = kms.sign(KeyId=key_id, Message=message, SigningAlgorithm=algorithm, MessageType=message_type)
    assert signed["SigningAlgorithm"] == algorithm and signed["KeyId"].endswith(key_id)
    signature = signed["Signature"]
    verify_independently(public, algorithm, message, signature, message_type == "DIGEST")
    if message_type == "DIGEST":  # a digest signature is the signature of the message it digests
        verify_independently(public, algorithm, text, signature, False)
    assert kms.verify(KeyId=key_id, Message=message, Signature=signature, SigningAlgorithm=algorithm,
                      MessageType=message_type)["SignatureValid"] is True

    tampered = bytes([message[0] ^ 0x01]) + message[1:]
    with pytest.raises(InvalidSignature):
        verify_independently(public, algorithm, tampered, signature, message_type == "DIGEST")
    with kms_error("KMSInvalidSignatureException"):
        kms.verify(KeyId=key_id, Message=tampered, Signature=signature, SigningAlgorithm=algorithm,
                   MessageType=message_type)
    bad_signature = signature[:-1] + bytes([signature[-1] ^ 0x80])
    with kms_error("KMSInvalidSignatureException"):
        kms.verify(KeyId=key_id, Message=message, Signature=bad_signature, SigningAlgorithm=algorithm,
                   MessageType=message_type)


@pytest.mark.parametrize("spec", ["RSA_2048", "ECC_NIST_P256"])
def test_signatures_made_by_the_library_verify_in_the_store_only_for_the_right_key(store, kms, spec):
    """Verify checks against this key: a signature by some other private key is invalid."""
    key_id = shared_key(store, spec, "SIGN_VERIFY")
    if spec.startswith("RSA"):
        stranger = rsa.generate_private_key(65537, 2048)
        signature = stranger.sign(b"m", padding.PKCS1v15(), hashes.SHA256())
        algorithm = "RSASSA_PKCS1_V1_5_SHA_256"
    else:
        stranger = ec.generate_private_key(ec.SECP256R1())
        signature = stranger.sign(b"m", ec.ECDSA(hashes.SHA256()))
        algorithm = "ECDSA_SHA_256"
    with kms_error("KMSInvalidSignatureException"):
        kms.verify(KeyId=key_id, Message=b"m", Signature=signature, SigningAlgorithm=algorithm)
    for junk in (b"\x00", b"not a signature at all", os.urandom(600)):
        with kms_error("KMSInvalidSignatureException"):
            kms.verify(KeyId=key_id, Message=b"m", Signature=junk, SigningAlgorithm=algorithm)


def test_digest_of_the_wrong_length_is_refused(store, kms):
    key_id = shared_key(store, "ECC_NIST_P384", "SIGN_VERIFY")
    with kms_error("ValidationException"):
        kms.sign(KeyId=key_id, Message=hashlib.sha256(b"x").digest(), SigningAlgorithm="ECDSA_SHA_384",
                 MessageType="DIGEST")
    with kms_error("ValidationException"):
        kms.sign(KeyId=key_id, Message=b"x", SigningAlgorithm="ECDSA_SHA_384", MessageType="HASHED")


@pytest.mark.parametrize("spec", RSA_SPECS)
@pytest.mark.parametrize("algorithm, hash_class", [("RSAES_OAEP_SHA_1", hashes.SHA1),
                                                   ("RSAES_OAEP_SHA_256", hashes.SHA256)])
def test_data_encrypted_with_the_public_key_decrypts_in_the_store(store, kms, spec, algorithm, hash_class):
    key_id = shared_key(store, spec, "ENCRYPT_DECRYPT")
    response, public = public_key(kms, key_id)
    assert response["EncryptionAlgorithms"] == ["RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256"]
    assert "SigningAlgorithms" not in response
    limit = int(spec[4:]) // 8 - 2 * hash_class.digest_size - 2
    for plaintext in (b"k", os.urandom(limit)):
        blob = public.encrypt(plaintext, padding.OAEP(mgf=padding.MGF1(hash_class()), algorithm=hash_class(),
                                                      label=None))
        result = kms.decrypt(KeyId=key_id, CiphertextBlob=blob, EncryptionAlgorithm=algorithm)
        assert result["Plaintext"] == plaintext and result["EncryptionAlgorithm"] == algorithm
    # and the store's own Encrypt makes ciphertext the same Decrypt reads, at the exact size limit
    blob = kms.encrypt(KeyId=key_id, Plaintext=b"L" * limit, EncryptionAlgorithm=algorithm)["CiphertextBlob"]
    assert len(blob) == int(spec[4:]) // 8
    assert kms.decrypt(KeyId=key_id, CiphertextBlob=blob, EncryptionAlgorithm=algorithm)["Plaintext"] == b"L" * limit
    with kms_error("ValidationException"):
        kms.encrypt(KeyId=key_id, Plaintext=b"L" * (limit + 1), EncryptionAlgorithm=algorithm)
    # the other OAEP hash does not open it
    other = "RSAES_OAEP_SHA_256" if algorithm == "RSAES_OAEP_SHA_1" else "RSAES_OAEP_SHA_1"
    with kms_error("InvalidCiphertextException"):
        kms.decrypt(KeyId=key_id, CiphertextBlob=blob, EncryptionAlgorithm=other)


def test_rsa_decrypt_rejects_damaged_or_foreign_ciphertext(store, kms):
    key_id = shared_key(store, "RSA_2048", "ENCRYPT_DECRYPT")
    blob = kms.encrypt(KeyId=key_id, Plaintext=b"secret", EncryptionAlgorithm="RSAES_OAEP_SHA_256")["CiphertextBlob"]
    for damaged in (blob[:-1], blob + b"\x00", bytes([blob[0] ^ 1]) + blob[1:], blob[:100] + bytes([blob[100] ^ 4]) +
                    blob[101:], b"\xff" * len(blob)):
        with kms_error("InvalidCiphertextException"):
            kms.decrypt(KeyId=key_id, CiphertextBlob=damaged, EncryptionAlgorithm="RSAES_OAEP_SHA_256")
    other = shared_key(store, "RSA_3072", "ENCRYPT_DECRYPT")
    with kms_error("InvalidCiphertextException"):
        kms.decrypt(KeyId=other, CiphertextBlob=blob, EncryptionAlgorithm="RSAES_OAEP_SHA_256")
    with kms_error("ValidationException", "KeyId"):
        kms.decrypt(CiphertextBlob=blob, EncryptionAlgorithm="RSAES_OAEP_SHA_256")
    with kms_error("ValidationException"):
        kms.encrypt(KeyId=key_id, Plaintext=b"x", EncryptionAlgorithm="RSAES_OAEP_SHA_256",
                    EncryptionContext={"a": "b"})


WRONG_ALGORITHMS = [
    # (spec, usage, operation, params, code)
    ("ECC_NIST_P256", "SIGN_VERIFY", "sign", {"SigningAlgorithm": "ECDSA_SHA_384"}, "InvalidKeyUsageException"),
    ("ECC_NIST_P384", "SIGN_VERIFY", "sign", {"SigningAlgorithm": "ECDSA_SHA_256"}, "InvalidKeyUsageException"),
    ("ECC_NIST_P521", "SIGN_VERIFY", "sign", {"SigningAlgorithm": "RSASSA_PSS_SHA_512"}, "InvalidKeyUsageException"),
    ("ECC_SECG_P256K1", "SIGN_VERIFY", "sign", {"SigningAlgorithm": "ECDSA_SHA_512"}, "InvalidKeyUsageException"),
    ("RSA_2048", "SIGN_VERIFY", "sign", {"SigningAlgorithm": "ECDSA_SHA_256"}, "InvalidKeyUsageException"),
    ("RSA_2048", "SIGN_VERIFY", "sign", {"SigningAlgorithm": "RSASSA_PSS_SHA_1"}, "ValidationException"),
    ("RSA_2048", "ENCRYPT_DECRYPT", "sign", {"SigningAlgorithm": "RSASSA_PSS_SHA_256"}, "InvalidKeyUsageException"),
    ("RSA_2048", "SIGN_VERIFY", "encrypt", {"EncryptionAlgorithm": "RSAES_OAEP_SHA_256"}, "InvalidKeyUsageException"),
    ("RSA_2048", "ENCRYPT_DECRYPT", "encrypt", {"EncryptionAlgorithm": "SYMMETRIC_DEFAULT"},
     "InvalidKeyUsageException"),
    ("RSA_2048", "ENCRYPT_DECRYPT", "encrypt", {"EncryptionAlgorithm": "RSAES_PKCS1_V1_5"}, "ValidationException"),
    ("HMAC_256", "GENERATE_VERIFY_MAC", "generate_mac", {"MacAlgorithm": "HMAC_SHA_512"}, "InvalidKeyUsageException"),
    ("HMAC_256", "GENERATE_VERIFY_MAC", "generate_mac", {"MacAlgorithm": "HMAC_MD5"}, "ValidationException"),
    ("HMAC_256", "GENERATE_VERIFY_MAC", "sign", {"SigningAlgorithm": "ECDSA_SHA_256"}, "InvalidKeyUsageException"),
    ("HMAC_224", "GENERATE_VERIFY_MAC", "encrypt", {}, "InvalidKeyUsageException"),
    ("ECC_NIST_P256", "SIGN_VERIFY", "generate_mac", {"MacAlgorithm": "HMAC_SHA_256"}, "InvalidKeyUsageException"),
    ("ECC_NIST_P256", "SIGN_VERIFY", "generate_data_key", {"KeySpec": "AES_256"}, "InvalidKeyUsageException"),
    ("RSA_2048", "ENCRYPT_DECRYPT", "generate_data_key", {"KeySpec": "AES_256"}, "InvalidKeyUsageException"),
]


@pytest.mark.parametrize("spec, usage, operation, params, code", WRONG_ALGORITHMS,
                         ids=[f"{op}-{s}-{next(iter(p.values()), 'none')}" for s, _, op, p, _ in WRONG_ALGORITHMS])
def test_an_algorithm_or_operation_the_key_does_not_support_is_refused(store, kms, spec, usage, operation, params,
                                                                       code):
    key_id = shared_key(store, spec, usage)
    message = {"sign": "Message", "generate_mac": "Message", "encrypt": "Plaintext"}.get(operation)
    with kms_error(code):
        getattr(kms, operation)(KeyId=key_id, **params, **({message: b"m"} if message else {}))


def test_symmetric_keys_have_no_public_key_and_refuse_rsa_algorithms(kms):
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    with kms_error("UnsupportedOperationException"):
        kms.get_public_key(KeyId=key_id)
    with kms_error("InvalidKeyUsageException"):
        kms.encrypt(KeyId=key_id, Plaintext=b"x", EncryptionAlgorithm="RSAES_OAEP_SHA_1")
    with kms_error("InvalidKeyUsageException"):
        kms.decrypt(KeyId=key_id, CiphertextBlob=b"x" * 256, EncryptionAlgorithm="RSAES_OAEP_SHA_256")
    with kms_error("InvalidKeyUsageException"):
        kms.sign(KeyId=key_id, Message=b"m", SigningAlgorithm="ECDSA_SHA_256")


def test_hmac_keys_have_no_public_key(store, kms):
    with kms_error("UnsupportedOperationException"):
        kms.get_public_key(KeyId=shared_key(store, "HMAC_512", "GENERATE_VERIFY_MAC"))


@pytest.mark.parametrize("spec, size", [("HMAC_224", 28), ("HMAC_256", 32), ("HMAC_384", 48), ("HMAC_512", 64)])
def test_macs_verify_and_tampering_is_caught(store, kms, spec, size):
    key_id = shared_key(store, spec, "GENERATE_VERIFY_MAC")
    algorithm = "HMAC_SHA_" + spec[5:]
    response = kms.generate_mac(KeyId=key_id, Message=b"payload", MacAlgorithm=algorithm)
    mac = response["Mac"]
    assert len(mac) == size and response["MacAlgorithm"] == algorithm
    assert kms.generate_mac(KeyId=key_id, Message=b"payload", MacAlgorithm=algorithm)["Mac"] == mac, "deterministic"
    assert kms.verify_mac(KeyId=key_id, Message=b"payload", Mac=mac, MacAlgorithm=algorithm)["MacValid"] is True
    for message, bad_mac in ((b"payloaD", mac), (b"payload", mac[:-1] + bytes([mac[-1] ^ 1])),
                             (b"payload", mac[:-1]), (b"payload", mac + b"\x00")):
        with kms_error("KMSInvalidMacException"):
            kms.verify_mac(KeyId=key_id, Message=message, Mac=bad_mac, MacAlgorithm=algorithm)
    other = kms.create_key(KeySpec=spec, KeyUsage="GENERATE_VERIFY_MAC")["KeyMetadata"]["KeyId"]
    assert kms.generate_mac(KeyId=other, Message=b"payload", MacAlgorithm=algorithm)["Mac"] != mac
    with kms_error("KMSInvalidMacException"):
        kms.verify_mac(KeyId=other, Message=b"payload", Mac=mac, MacAlgorithm=algorithm)


@pytest.mark.parametrize("operation, field", [("sign", "Message"), ("generate_mac", "Message")])
def test_messages_are_limited_to_4096_bytes(store, kms, operation, field):
    if operation == "sign":
        key_id, params = shared_key(store, "ECC_NIST_P256", "SIGN_VERIFY"), {"SigningAlgorithm": "ECDSA_SHA_256"}
    else:
        key_id, params = shared_key(store, "HMAC_256", "GENERATE_VERIFY_MAC"), {"MacAlgorithm": "HMAC_SHA_256"}
    getattr(kms, operation)(KeyId=key_id, **params, **{field: b"m" * 4096})
    for size in (0, 4097):
        with kms_error("ValidationException", field[0].lower() + field[1:]):
            getattr(kms, operation)(KeyId=key_id, **params, **{field: b"m" * size})
