"""Cryptographic operations: the hot path. Every secret-key and private-key operation runs in the
token; the host only frames blobs, hashes messages, and encrypts with public keys.

Each handler runs every check first, then `call.act()` (where a DryRun request stops), then the
operation. The shared helpers (`decrypter`, `encrypter`) therefore check now and hand back the
operation as a function to run after `act()`: ReEncrypt checks its source and its destination
before it decrypts anything.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from kmsplan.errors import KMSError
from kmsplan.store import ciphertext
from kmsplan.store import params as check
from kmsplan.store.calls import CRYPTO, Call, check_state, operation, resolve
from kmsplan.store.hsm import TokenRejected
from kmsplan.store.keystore import KeyView, hsm_id
from kmsplan.store.specs import (
    DATA_KEY_PAIR_SPECS,
    DATA_KEY_SPECS,
    ENCRYPT_DECRYPT,
    GENERATE_VERIFY_MAC,
    KEY_SPECS,
    MAC_ALGORITHM,
    RSA_ENCRYPTION_ALGORITHMS,
    SIGN_VERIFY,
    SIGNING_ALGORITHMS,
    SYMMETRIC_ENCRYPTION_ALGORITHM,
    encryption_algorithms,
    rsa_max_plaintext,
    signing_algorithms,
)

MAX_PLAINTEXT = 4096
MAX_CIPHERTEXT = 6144


def _invalid_ciphertext() -> KMSError:
    return KMSError("InvalidCiphertextException",
                    "The ciphertext is invalid, was altered, or does not match the encryption context")


def _usage(view: KeyView, usage: str, what: str) -> None:
    if view.record.usage != usage:
        raise KMSError("InvalidKeyUsageException",
                       f"{view.record.arn} has KeyUsage {view.record.usage}; {what} needs a {usage} key")


def _symmetric(view: KeyView, what: str) -> None:
    _usage(view, ENCRYPT_DECRYPT, what)
    if view.record.spec != "SYMMETRIC_DEFAULT":
        raise KMSError("InvalidKeyUsageException",
                       f"{view.record.arn} is a {view.record.spec} key; {what} needs a symmetric encryption key")


def _context(call: Call, name: str = "EncryptionContext") -> dict[str, str]:
    context = call.params.get(name, {})
    if any(not key for key in context):
        raise check.validation_error(f"{name} keys must not be empty")
    return context


def seal(call: Call, view: KeyView, plaintext: bytes, context: dict[str, str]) -> bytes:
    """AES-256-GCM under the key's newest material version, in a self-describing blob."""
    iv = os.urandom(12)
    header = ciphertext.build_header(view.record.key_id, view.current_version, iv)
    sealed = call.store.token_for(view.record.region).encrypt_gcm(
        hsm_id(view.record.key_id, view.current_version), iv, plaintext, header + ciphertext.context_aad(context))
    return header + sealed


def _unsealer(call: Call, blob: bytes, context: dict[str, str], key_param: str, action: str,
              context_param: str) -> tuple[KeyView, Callable[[], bytes]]:
    try:
        header, sealed = ciphertext.parse(blob)
    except ciphertext.MalformedBlob:
        raise _invalid_ciphertext() from None
    if key_param in call.params:
        # Authorized once, through the name the caller used (so kms:RequestAlias is seen).
        view = call.key(key_param, state=CRYPTO, action=action, context_param=context_param)
        if view.record.key_id != header.key_id:
            raise KMSError("IncorrectKeyException",
                           f"The ciphertext was encrypted under {header.key_id}, not under {view.record.arn}")
    else:
        view = resolve(call.store, call.region, header.key_id)
        call.resources.append(view.record.arn)
        call.authorize(view, action, context=context)
        check_state(view, CRYPTO)
    _symmetric(view, "decrypting a symmetric ciphertext")
    if header.version > view.current_version or header.version < 1:
        raise _invalid_ciphertext()

    def unseal() -> bytes:  # only the token can tell a wrong context or an altered blob
        try:
            return call.store.token_for(call.region).decrypt_gcm(
                hsm_id(header.key_id, header.version), header.iv, sealed,
                header.header + ciphertext.context_aad(context))
        except TokenRejected:
            raise _invalid_ciphertext() from None

    return view, unseal


def _public_key(view: KeyView):
    return serialization.load_der_public_key(view.record.public_key)


def _rsa_algorithm(view: KeyView, algorithm: str | None) -> str:
    _usage(view, ENCRYPT_DECRYPT, "encryption")
    if algorithm not in RSA_ENCRYPTION_ALGORITHMS:
        raise KMSError("InvalidKeyUsageException" if algorithm else "ValidationException",
                       f"{view.record.arn} is an RSA key: EncryptionAlgorithm must be one of "
                       f"{', '.join(sorted(RSA_ENCRYPTION_ALGORITHMS))}")
    return algorithm


def _fits_rsa(view: KeyView, algorithm: str, plaintext: bytes) -> None:
    limit = rsa_max_plaintext(view.record.spec, algorithm)
    if len(plaintext) > limit:
        raise check.validation_error(f"Plaintext is {len(plaintext)} bytes; {view.record.spec} with {algorithm} "
                                     f"takes at most {limit}")


def encrypter(call: Call, view: KeyView, context: dict[str, str], algorithm: str | None,
              plaintext: bytes | None = None) -> tuple[str, Callable[[bytes], bytes]]:
    """The checks of Encrypt and of ReEncrypt's destination; returns the algorithm and the encryption
    (a blob for symmetric keys, raw RSAES-OAEP for RSA keys) to run after `call.act()`. An RSA key's
    plaintext limit is checked here when the plaintext is known (Encrypt), else when encrypting."""
    if algorithm is not None:  # a name outside AWS's enum is malformed, whatever the key
        check.one_of("EncryptionAlgorithm", algorithm, [SYMMETRIC_ENCRYPTION_ALGORITHM, *RSA_ENCRYPTION_ALGORITHMS])
    if view.record.spec == "SYMMETRIC_DEFAULT":
        _symmetric(view, "Encrypt")
        if algorithm not in (None, SYMMETRIC_ENCRYPTION_ALGORITHM):
            raise KMSError("InvalidKeyUsageException", f"{view.record.arn} supports only SYMMETRIC_DEFAULT encryption")
        return SYMMETRIC_ENCRYPTION_ALGORITHM, lambda data: seal(call, view, data, context)
    algorithm = _rsa_algorithm(view, algorithm)
    if context:
        raise check.validation_error("EncryptionContext is not supported with asymmetric keys")
    if plaintext is not None:
        _fits_rsa(view, algorithm, plaintext)
    hash_algorithm = hashes.SHA1() if algorithm == "RSAES_OAEP_SHA_1" else hashes.SHA256()

    def rsa_encrypt(data: bytes) -> bytes:
        _fits_rsa(view, algorithm, data)
        return _public_key(view).encrypt(
            data, padding.OAEP(mgf=padding.MGF1(hash_algorithm), algorithm=hash_algorithm, label=None))

    return algorithm, rsa_encrypt


def decrypter(call: Call, key_param: str, context_param: str, algorithm: str | None,
              action: str) -> tuple[KeyView, str, Callable[[], bytes]]:
    """The checks of Decrypt and of ReEncrypt's source (the blob names its key unless it is an RSA
    ciphertext); returns the key, the algorithm and the decryption to run after `call.act()`."""
    blob, context = _blob(call), _context(call, context_param)
    if algorithm in (None, SYMMETRIC_ENCRYPTION_ALGORITHM):
        view, unseal = _unsealer(call, blob, context, key_param, action, context_param)
        return view, SYMMETRIC_ENCRYPTION_ALGORITHM, unseal
    check.one_of("EncryptionAlgorithm", algorithm, [SYMMETRIC_ENCRYPTION_ALGORITHM, *RSA_ENCRYPTION_ALGORITHMS])
    if key_param not in call.params:
        raise check.validation_error(f"{key_param} is required to decrypt with {algorithm}")
    view = call.key(key_param, state=CRYPTO, action=action, context_param=context_param)
    if view.record.spec == "SYMMETRIC_DEFAULT":
        raise KMSError("InvalidKeyUsageException", f"{view.record.arn} is symmetric: it cannot use {algorithm}")
    _rsa_algorithm(view, algorithm)
    if context:
        raise check.validation_error("EncryptionContext is not supported with asymmetric keys")

    def rsa_decrypt() -> bytes:
        try:
            return call.store.token_for(call.region).rsa_decrypt_oaep(
                hsm_id(view.record.key_id, view.current_version), blob, RSA_ENCRYPTION_ALGORITHMS[algorithm],
                KEY_SPECS[view.record.spec].size // 8)
        except TokenRejected:
            raise _invalid_ciphertext() from None

    return view, algorithm, rsa_decrypt


def _plaintext(call: Call, name: str = "Plaintext") -> bytes:
    check.length(name, call.params[name], 1, MAX_PLAINTEXT)
    return call.params[name]


def _blob(call: Call) -> bytes:
    check.length("CiphertextBlob", call.params["CiphertextBlob"], 1, MAX_CIPHERTEXT)
    return call.params["CiphertextBlob"]


@operation("Encrypt", required=("KeyId", "Plaintext"),
           optional=("EncryptionContext", "GrantTokens", "EncryptionAlgorithm", "DryRun"))
def encrypt(call: Call) -> dict:
    plaintext = _plaintext(call)
    view = call.key(state=CRYPTO)
    algorithm, encrypt_plaintext = encrypter(call, view, _context(call), call.params.get("EncryptionAlgorithm"),
                                             plaintext)
    call.act()
    return {"CiphertextBlob": encrypt_plaintext(plaintext), "KeyId": view.record.arn, "EncryptionAlgorithm": algorithm}


@operation("Decrypt", required=("CiphertextBlob",),
           optional=("EncryptionContext", "GrantTokens", "KeyId", "EncryptionAlgorithm", "DryRun"))
def decrypt(call: Call) -> dict:
    view, algorithm, decrypt_blob = decrypter(call, "KeyId", "EncryptionContext",
                                              call.params.get("EncryptionAlgorithm"), "kms:Decrypt")
    # A dry run has checked the blob's framing, the key, the authorization under the given context,
    # the key's state and usage; a wrong context or an altered blob only the decryption can tell.
    call.act()
    return {"KeyId": view.record.arn, "Plaintext": decrypt_blob(), "EncryptionAlgorithm": algorithm}


@operation("ReEncrypt", required=("CiphertextBlob", "DestinationKeyId"),
           optional=("SourceEncryptionContext", "SourceKeyId", "DestinationEncryptionContext",
                     "SourceEncryptionAlgorithm", "DestinationEncryptionAlgorithm", "GrantTokens", "DryRun"))
def re_encrypt(call: Call) -> dict:
    """Both keys are checked (authorization, state, usage, algorithms) before the source decryption."""
    source, source_algorithm, decrypt_blob = decrypter(
        call, "SourceKeyId", "SourceEncryptionContext", call.params.get("SourceEncryptionAlgorithm"),
        "kms:ReEncryptFrom")
    destination = call.key("DestinationKeyId", state=CRYPTO, action="kms:ReEncryptTo",
                           context_param="DestinationEncryptionContext")
    algorithm, encrypt_plaintext = encrypter(call, destination, _context(call, "DestinationEncryptionContext"),
                                             call.params.get("DestinationEncryptionAlgorithm"))
    call.act()
    blob = encrypt_plaintext(decrypt_blob())
    return {"CiphertextBlob": blob, "SourceKeyId": source.record.arn, "KeyId": destination.record.arn,
            "SourceEncryptionAlgorithm": source_algorithm, "DestinationEncryptionAlgorithm": algorithm}


def _data_key(call: Call) -> tuple[KeyView, bytes, bytes]:
    spec, count = call.params.get("KeySpec"), call.params.get("NumberOfBytes")
    if (spec is None) == (count is None):
        raise check.validation_error("Give exactly one of KeySpec (AES_128, AES_256) and NumberOfBytes")
    size = DATA_KEY_SPECS[check.one_of("KeySpec", spec, DATA_KEY_SPECS)] if spec else \
        check.in_range("NumberOfBytes", count, 1, 1024)
    view = call.key(state=CRYPTO)
    _symmetric(view, call.operation)
    context = _context(call)
    call.act()
    plaintext = call.store.token_for(call.region).random(size)
    return view, plaintext, seal(call, view, plaintext, context)


_DATA_KEY_PARAMS = ("EncryptionContext", "NumberOfBytes", "KeySpec", "GrantTokens", "DryRun")


@operation("GenerateDataKey", required=("KeyId",), optional=_DATA_KEY_PARAMS)
def generate_data_key(call: Call) -> dict:
    view, plaintext, blob = _data_key(call)
    return {"CiphertextBlob": blob, "Plaintext": plaintext, "KeyId": view.record.arn}


@operation("GenerateDataKeyWithoutPlaintext", required=("KeyId",), optional=_DATA_KEY_PARAMS)
def generate_data_key_without_plaintext(call: Call) -> dict:
    view, _, blob = _data_key(call)
    return {"CiphertextBlob": blob, "KeyId": view.record.arn}


_PAIR_CURVES = {"ECC_NIST_P256": ec.SECP256R1, "ECC_NIST_P384": ec.SECP384R1, "ECC_NIST_P521": ec.SECP521R1,
                "ECC_SECG_P256K1": ec.SECP256K1}


def _data_key_pair(call: Call) -> dict:
    spec = check.one_of("KeyPairSpec", call.params["KeyPairSpec"], DATA_KEY_PAIR_SPECS)
    view = call.key(state=CRYPTO)
    _symmetric(view, call.operation)
    context = _context(call)
    call.act()
    if spec.startswith("RSA"):
        private = rsa.generate_private_key(65537, KEY_SPECS[spec].size)
    else:
        private = ec.generate_private_key(_PAIR_CURVES[spec]())
    private_der = private.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption())
    public_der = private.public_key().public_bytes(serialization.Encoding.DER,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo)
    return {"PrivateKeyCiphertextBlob": seal(call, view, private_der, context),
            "PrivateKeyPlaintext": private_der, "PublicKey": public_der, "KeyId": view.record.arn,
            "KeyPairSpec": spec}


_PAIR_PARAMS = ("EncryptionContext", "GrantTokens", "DryRun")


@operation("GenerateDataKeyPair", required=("KeyId", "KeyPairSpec"), optional=_PAIR_PARAMS)
def generate_data_key_pair(call: Call) -> dict:
    return _data_key_pair(call)


@operation("GenerateDataKeyPairWithoutPlaintext", required=("KeyId", "KeyPairSpec"), optional=_PAIR_PARAMS)
def generate_data_key_pair_without_plaintext(call: Call) -> dict:
    response = _data_key_pair(call)
    del response["PrivateKeyPlaintext"]
    return response


@operation("GenerateRandom", optional=("NumberOfBytes",))
def generate_random(call: Call) -> dict:
    count = check.in_range("NumberOfBytes", call.params.get("NumberOfBytes", 32), 1, 1024)
    call.authorize_identity()
    return {"Plaintext": call.store.token_for(call.region).random(count)}


def _digest(call: Call, view: KeyView) -> tuple[str, str, bytes]:
    algorithm = check.one_of("SigningAlgorithm", call.params["SigningAlgorithm"], SIGNING_ALGORITHMS)
    _usage(view, SIGN_VERIFY, call.operation)
    if algorithm not in signing_algorithms(view.record.spec, view.record.usage):
        raise KMSError("InvalidKeyUsageException",
                       f"{algorithm} is not valid for {view.record.spec}; valid: "
                       f"{', '.join(signing_algorithms(view.record.spec, view.record.usage))}")
    hash_name, scheme = SIGNING_ALGORITHMS[algorithm]
    message = _plaintext(call, "Message")
    message_type = check.one_of("MessageType", call.params.get("MessageType", "RAW"), ("RAW", "DIGEST"))
    if message_type == "DIGEST":
        expected = hashlib.new(hash_name).digest_size
        if len(message) != expected:
            raise check.validation_error(f"A {hash_name} digest is {expected} bytes; the Message is {len(message)}")
        return algorithm, scheme, message
    return algorithm, scheme, hashlib.new(hash_name, message).digest()


@operation("Sign", required=("KeyId", "Message", "SigningAlgorithm"),
           optional=("MessageType", "GrantTokens", "DryRun"))
def sign(call: Call) -> dict:
    view = call.key(state=CRYPTO)
    algorithm, scheme, digest = _digest(call, view)
    call.act()
    signature = call.store.token_for(call.region).sign_digest(
        hsm_id(view.record.key_id, view.current_version), scheme, SIGNING_ALGORITHMS[algorithm][0], digest)
    return {"KeyId": view.record.arn, "Signature": signature, "SigningAlgorithm": algorithm}


@operation("Verify", required=("KeyId", "Message", "Signature", "SigningAlgorithm"),
           optional=("MessageType", "GrantTokens", "DryRun"))
def verify(call: Call) -> dict:
    view = call.key(state=CRYPTO)
    algorithm, scheme, digest = _digest(call, view)
    check.length("Signature", call.params["Signature"], 1, 6144)
    call.act()  # a dry run cannot tell whether the signature is valid: only the verification can
    valid = call.store.token_for(call.region).verify_digest(
        hsm_id(view.record.key_id, view.current_version), scheme, SIGNING_ALGORITHMS[algorithm][0], digest,
        call.params["Signature"], (KEY_SPECS[view.record.spec].size + 7) // 8)
    if not valid:
        raise KMSError("KMSInvalidSignatureException", "The signature is not valid for this message and key")
    return {"KeyId": view.record.arn, "SignatureValid": True, "SigningAlgorithm": algorithm}


@operation("GetPublicKey", required=("KeyId",), optional=("GrantTokens",))
def get_public_key(call: Call) -> dict:
    view = call.key(state=CRYPTO)
    record = view.record
    if record.public_key is None:
        raise KMSError("UnsupportedOperationException", f"{record.arn} is a {record.spec} key: it has no public key")
    response = {"KeyId": record.arn, "PublicKey": record.public_key, "CustomerMasterKeySpec": record.spec,
                "KeySpec": record.spec, "KeyUsage": record.usage}
    if record.usage == ENCRYPT_DECRYPT:
        response["EncryptionAlgorithms"] = encryption_algorithms(record.spec, record.usage)
    else:
        response["SigningAlgorithms"] = signing_algorithms(record.spec, record.usage)
    return response


def _mac_key(call: Call) -> tuple[KeyView, str, bytes]:
    view = call.key(state=CRYPTO)
    _usage(view, GENERATE_VERIFY_MAC, call.operation)
    algorithm = check.one_of("MacAlgorithm", call.params["MacAlgorithm"], MAC_ALGORITHM.values())
    if algorithm != MAC_ALGORITHM[view.record.spec]:
        raise KMSError("InvalidKeyUsageException",
                       f"{algorithm} is not valid for {view.record.spec}; use {MAC_ALGORITHM[view.record.spec]}")
    return view, algorithm, _plaintext(call, "Message")


@operation("GenerateMac", required=("Message", "KeyId", "MacAlgorithm"), optional=("GrantTokens", "DryRun"))
def generate_mac(call: Call) -> dict:
    view, algorithm, message = _mac_key(call)
    call.act()
    mac = call.store.token_for(call.region).mac(hsm_id(view.record.key_id, view.current_version),
                                                KEY_SPECS[view.record.spec].size, message)
    return {"Mac": mac, "MacAlgorithm": algorithm, "KeyId": view.record.arn}


@operation("VerifyMac", required=("Message", "KeyId", "MacAlgorithm", "Mac"), optional=("GrantTokens", "DryRun"))
def verify_mac(call: Call) -> dict:
    view, algorithm, message = _mac_key(call)
    check.length("Mac", call.params["Mac"], 1, 6144)
    call.act()  # as Verify: whether the MAC is valid only the verification can tell
    valid = call.store.token_for(call.region).verify_mac(hsm_id(view.record.key_id, view.current_version),
                                                         KEY_SPECS[view.record.spec].size, message, call.params["Mac"])
    if not valid:
        raise KMSError("KMSInvalidMacException", "The MAC is not valid for this message and key")
    return {"KeyId": view.record.arn, "MacValid": True, "MacAlgorithm": algorithm}
